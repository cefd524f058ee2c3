"""Bad model files: model dictionaries (a ``--model`` YAML, a weights file's ``model_yaml``, a checkpoint's
``run_meta.json``, an Ultralytics checkpoint given to ``--pretrained``) that would hang or exhaust the
machine, numbers past the budget, and files that used to end in a traceback; a model YAML with code in it (an
activation expression, a module that is not allowed), refused with nothing run; and the other side of the
allow-list: every model config Ultralytics ships, as a two-stream model, passes the check.

Most cases run the command's own entry in-process (``cli.main`` or ``errors.run_entry`` around the function
the command calls: the same one ``error:`` line, without an interpreter start per case); one of each carrier
(``val --weights``, ``train --model``, ``train --pretrained``) runs as a real subprocess. Timings are of the
check functions themselves and only guard against a hang (:data:`HANG_GUARD_S`): a refusal takes milliseconds to
~1.5 s, and where the budget stops is asserted as the work done (modules built), not as seconds.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.bad_input_helpers import _code, assert_clean_error, assert_user_error, run_cli, small_data_template  # noqa: F401
from tests.helpers import ROOT
from yolofuse_scale.model import ModelConfigError
from yolofuse_scale.model.safe_config.budget import MAX_NODES
from yolofuse_scale.model.safe_config.schema import check_model_dict
from yolofuse_scale.model.safe_config.size import check_model_size

ASSETS = ROOT / "tests" / "assets"
TINY = ["--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val"]


# ------------------------------------------------------------------------------------------ helpers
def _variant() -> dict:
    """A real model dictionary to plant things in: yolov8 scale t, mid fusion (what a weights file holds)."""
    from yolofuse_scale.model import fusion_yaml

    return copy.deepcopy(fusion_yaml("mid", 2, "t"))


def _bomb(levels: int, width: int = 2) -> list:
    """A list holding the same list ``width`` times, ``levels`` deep: width**(levels + 1) values to anything that
    walks or serialises it, a few hundred bytes pickled (pickle stores a shared object once)."""
    x: list = [0] * width
    for _ in range(levels):
        x = [x] * width
    return x


def _deep(depth: int) -> list:
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


def _with_arg(d: dict, value) -> dict:
    """``d`` with ``value`` as an extra argument of its fourth layer (a Conv)."""
    d["backbone"][3][3] = [*d["backbone"][3][3], value]
    return d


#: A hang guard, not a speed target: every refusal here takes milliseconds to ~1.5 s (the module count on a 2-core
#: Xeon), 2.6 s measured under CI's load; what the checks stop would walk or build for minutes (the module case:
#: 770,239 registrations, 104 s unguarded) or forever (a cycle). What they guarantee is asserted as work done.
HANG_GUARD_S = 20.0


def _refused(fn, *needles: str) -> float:
    """``fn()`` raises ModelConfigError naming every needle, well before :data:`HANG_GUARD_S`; returns the seconds
    taken."""
    t = time.perf_counter()
    with pytest.raises(ModelConfigError) as info:
        fn()
    took = time.perf_counter() - t
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    assert took < HANG_GUARD_S, f"refused after {took:.2f} s"
    return took


def _weights_file(path: Path, model_yaml) -> Path:
    """A weights file as training writes it, carrying ``model_yaml`` (tensors do not matter: the refusal
    comes first). torch.save of dicts and lists only: it passes ``torch.load(weights_only=True)``."""
    torch.save({"model": {}, "model_yaml": model_yaml, "rgb_channels": 3, "ir_channels": 1,
                "names": {0: "person", 1: "car"}, "imgsz": 64}, path)
    return path


def _yaml_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _cli(capsys, *argv: str) -> str:
    """``yolofuse-scale ARGV`` in-process: exit code 1 and exactly one ``error:`` line; returns it."""
    from yolofuse_scale.cli import main

    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _predict(capsys, weights: Path, data: Path, tmp: Path) -> str:
    rgb = sorted((data / "images" / "val").iterdir())[0]
    return _cli(capsys, "predict", "--weights", str(weights), "--rgb", str(rgb),
                "--ir", str(data / "imagesIR" / "val" / rgb.name), "--out", str(tmp / "pred"))


@pytest.fixture(scope="module", autouse=True)
def _meta_kernels():
    """PyTorch imports its meta kernels on first use (~1 s, once per process; the training and inference
    commands have them already): done here, so that the timings below are the checks' own."""
    from yolofuse_scale.model.detector import prepare_model_dict

    d = _variant()
    check_model_size(prepare_model_dict(d, 3, 1), 4, None, "warm-up")


# --------------------------------------------------------------------------- 1. files that hang or exhaust
def _cycle() -> list:
    loop: list = [1]
    loop.append(loop)
    return loop


@pytest.mark.parametrize("value,needle", [
    (_bomb(30), "nested more than 8 levels deep"),  # the report's file: 2**30 values, nested 30 times
    (_bomb(2, width=2000), f"more than {MAX_NODES} values"),  # 8e9 values, as shallow as real args
    (_cycle(), "nested more than 8 levels deep"),  # a list that holds itself: endless
], ids=["binary-30-deep", "wide", "cycle"])
def test_shared_references_are_refused_by_the_check_in_milliseconds(value, needle):
    """Values reachable through shared references were walked path by path (minutes, or a RecursionError
    for a cycle); the budget stops the walk at the first value past a bound."""
    _refused(lambda: check_model_dict(_with_arg(_variant(), value), "best.pt: model_yaml"), "backbone[3][3][3]",
             needle)
    rows = _variant()
    rows["head"] = value  # as the rows themselves
    _refused(lambda: check_model_dict(rows, "best.pt: model_yaml"), "head", needle)


def test_a_20000_deep_argument_is_refused_without_recursion():
    d = _with_arg(_variant(), _deep(20_000))
    _refused(lambda: check_model_dict(d, "best.pt: model_yaml"), "backbone[3][3][3]", "nested more than 8 levels")


def test_val_refuses_a_small_weights_file_whose_model_dict_is_exponentially_large(small_data_template, tmp_path):  # noqa: F811 (the imported fixture)
    """The report's case: a weights file of a few KB (the bomb pickles in 30 levels) made `val` walk 2**30
    values for minutes; through the real command it is one message."""
    bad = _weights_file(tmp_path / "best.pt", _with_arg(_variant(), _bomb(30)))
    assert bad.stat().st_size < 20_000
    t = time.perf_counter()
    proc = run_cli("val", "--weights", str(bad), "--data", str(small_data_template / "data.yaml"), "--workers", "0",
                   "--out", str(tmp_path / "val"), timeout=120)
    assert_clean_error(proc, f"{bad}: model_yaml: backbone[3][3][3]", "nested more than 8 levels deep")
    assert time.perf_counter() - t < 60


def _anchor_bomb_yaml(levels: int = 30) -> str:
    """A 2 KB model YAML whose Conv row's last argument holds ``levels`` anchors, each two aliases of the last."""
    chain = ", ".join(["&a0 [0, 0]"] + [f"&a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels + 1)])
    text = (ASSETS / "yolofuse_mid_schema.yaml").read_text()
    return text.replace("[3, 1, Conv, [128, 3, 2]]", f"[3, 1, Conv, [128, 3, 2, 1, 1, 1, True, [{chain}]]]")


def test_train_refuses_a_2kb_model_yaml_with_anchors_and_aliases(small_data_template, tmp_path):  # noqa: F811 (the imported fixture)
    bad = _yaml_file(tmp_path / "bomb.yaml", _anchor_bomb_yaml())
    assert bad.stat().st_size < 3000
    _refused(lambda: check_model_dict(yaml.safe_load(bad.read_text()), str(bad)), "nested more than 8 levels deep")
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", str(bad), "--scale", "t",
                   *TINY, "--output-dir", str(tmp_path / "r"), timeout=120)
    assert_clean_error(proc, f"{bad}: backbone[5][3][7]", "nested more than 8 levels deep")
    assert not (tmp_path / "r" / "weights").exists()


def test_pretrained_refuses_our_weights_file_with_a_huge_model_dict_before_serialising_it(tmp_path, capsys):
    """--pretrained compared the file's model_yaml with the built-in variants through json.dumps (2**30 values
    until MemoryError); it is checked first. (4 million values here: past the budget, harmless to old code.)"""
    from yolofuse_scale.model.pretrained.checkpoint import read_source

    bad = _weights_file(tmp_path / "last.pt", _with_arg(_variant(), _bomb(1, width=2000)))
    t = time.perf_counter()
    err = assert_user_error(lambda: read_source(bad), f"--pretrained {bad}: model_yaml: ",
                            f"more than {MAX_NODES} values", capsys=capsys)
    assert time.perf_counter() - t < HANG_GUARD_S, err


def _ultralytics_checkpoint(path: Path, edit) -> Path:
    """A pickled Ultralytics DetectionModel (yolov8 scale t), as its releases hold one, after ``edit(model)``."""
    from ultralytics.nn.tasks import DetectionModel

    from yolofuse_scale.model.variants import family_yaml

    model = DetectionModel(family_yaml("yolov8", "t"), nc=2, verbose=False).half()
    edit(model)
    torch.save({"model": model, "version": "8.4"}, path)
    return path


def test_pretrained_refuses_an_ultralytics_checkpoint_with_a_huge_model_dict(tmp_path, capsys):
    from yolofuse_scale.model import build_model
    from yolofuse_scale.model.pretrained import apply_pretrained

    bad = _ultralytics_checkpoint(tmp_path / "yolov8t.pt",
                                  lambda m: m.yaml["backbone"][0][3].append(_bomb(1, width=2000)))
    model = build_model("yolov8t", "mid", nc=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.perf_counter()
    assert_user_error(lambda: apply_pretrained(model, bad), f"--pretrained {bad}: its model dictionary (yaml): ",
                      f"more than {MAX_NODES} values", capsys=capsys)
    assert time.perf_counter() - t < HANG_GUARD_S
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _checkpoint_folder(folder: Path, meta_text: str) -> Path:
    """A checkpoint folder whose manifest matches its files (so only run_meta.json's content is left to refuse)."""
    from yolofuse_scale.engine.checkpoint.folder import COMPLETE_MARKER, _write_manifest

    folder.mkdir()
    (folder / "run_meta.json").write_text(meta_text)
    (folder / "train_state.json").write_text("{}")
    _write_manifest(folder)
    (folder / COMPLETE_MARKER).write_text("")
    return folder


@pytest.mark.parametrize("plant,needle", [
    (lambda meta: meta["model_yaml"]["backbone"][3][3].append(list(range(30_000))), f"more than {MAX_NODES} values"),
    ("deep", "unreadable (nested too deeply)"),
], ids=["30000-values", "20000-deep"])
def test_checkpoint_to_weights_refuses_a_run_meta_past_the_budget(tmp_path, capsys, plant, needle):
    meta = {"model_yaml": _variant(), "rgb_channels": 3, "ir_channels": 1, "names": {"0": "a", "1": "b"}, "imgsz": 64}
    if plant == "deep":
        text = json.dumps(meta).replace('"imgsz": 64', '"imgsz": 64, "notes": ' + "[" * 20_000 + "]" * 20_000)
    else:
        plant(meta)
        text = json.dumps(meta)
    folder = _checkpoint_folder(tmp_path / "step_2", text)
    err = _cli(capsys, "checkpoint-to-weights", str(folder), str(tmp_path / "out.pt"))
    assert f"{folder / 'run_meta.json'}: " in err and needle in err, err
    assert not (tmp_path / "out.pt").exists()


# ------------------------------------------------------------------------------------- the number budget
def _row(d: dict, i: int, row: list) -> dict:
    d["backbone"][i] = row
    return d


@pytest.mark.parametrize("edit,needle", [
    (lambda d: _row(d, 9, [-1, 100_000_000, "C2f", [128, True]]), "repeats 100000000 must be an integer from 1 to 64"),
    (lambda d: d.update(activation="nn.PReLU(1000000000000000000)"), "numbers of magnitude at most 4096"),
    (lambda d: d.update(nc=1_000_000), "nc 1000000 must be an integer from 1 to 100000"),
    (lambda d: d.update(reg_max=10_000), "reg_max 10000 must be an integer from 1 to 64"),
    (lambda d: d.update(ch=100_000), "ch 100000 must be an integer from 1 to 64"),
    (lambda d: _row(d, 3, [1, 1, "Conv", [1_000_000, 3, 2]]), "argument 0: 1000000 is out of bounds (at most 4096 "),
    (lambda d: d["backbone"][-1][3].__setitem__(0, 200_000), "argument 0: 200000 is out of bounds (at most 100000 "),
    (lambda d: d["backbone"].extend([[-1, 1, "Conv", [8, 1, 1]]] * 1100), "layers; at most 1024"),
    (lambda d: d.update(scales={"t": [0.33, 1e9, 512]}), "is out of bounds (depth and width in (0, 4]"),
    (lambda d: d.update(depth_multiple=1e9), "depth_multiple 1000000000.0 must be a number in (0, 4]"),
    (lambda d: _row(d, 9, [-1, 10**5000, "C2f", [128, True]]), "backbone[9][1]: an integer of 16610 bits"),
], ids=["repeats-1e8", "prelu-1e18", "nc-1e6", "reg_max-1e4", "ch-1e5", "conv-width-1e6", "detect-nc-2e5",
        "1100-rows", "width-1e9", "depth-1e9", "repeats-5000-digits"])
def test_numbers_past_the_budget_are_refused_by_the_check(edit, needle):
    """Refused by the check, before anything is built: nothing here is ever allocated (the old check let
    ``repeats: 1e8`` reach the parser, 67 GB of modules, and built the PReLU while checking)."""
    d = _variant()
    edit(d)
    _refused(lambda: check_model_dict(d, "m.yaml"), "m.yaml: ", needle)


def _single(*rows: list) -> dict:
    return {"nc": 2, "backbone": [*rows, [[len(rows) - 1], 1, "Detect", ["nc"]]], "head": []}


@pytest.mark.parametrize("d,needle", [
    (_single([-1, 1, "Conv", [4096, 3, 2]], [-1, 1, "Conv", [4096, 63, 1]]),
     "more than 2,000,000,000 parameters implied"),
    (_single([-1, 1, "Conv", [64, 3, 2]], *[[-1, 64, "C3k2", [64, True]]] * 200), "more than 10000 modules"),
    (_single([-1, 1, "Conv", [4096, 3, 2]], [[0] * 8, 1, "Concat", [1]], [-1, 1, "Conv", [8, 1, 1]]),
     "Conv2d is 32768 -> 8 channels wide; at most 16384"),
    (_single([-1, 1, "Conv", [16, 3, 2]], [-1, 1, "nn.Upsample", [None, 1000, "nearest"]]),
     "Upsample has scale_factor 1000.0; at most 8"),
    (_single([-1, 1, "Conv", [16, 3, 2, 1000]]), "Conv2d has padding (1000, 1000); at most 64"),
], ids=["params", "modules", "width", "upsample", "padding"])
def test_a_model_past_the_size_budget_is_refused_before_anything_is_allocated(d, needle):
    """Every number within its bound, the model they make is not: counted on the meta device, stopped at the
    first module or parameter past the budget (the module case builds 770,239 modules unguarded, 104 s on a 2-core
    Xeon; the budget stops it at the 10,001st registration, ~1.5 s). Counted here by a registration hook of the
    test's own, not timed: what the code guarantees is where it stops."""
    from torch.nn.modules import module as torch_module

    from yolofuse_scale.model.detector import prepare_model_dict
    from yolofuse_scale.model.safe_config.size import MAX_MODULES, MAX_PARAMS

    check_model_dict(d, "m.yaml")
    parsed = prepare_model_dict(d, 3, 1, "m.yaml")
    built = {"modules": 0, "params": 0, "largest": 0}

    def module_built(parent, name, child):
        built["modules"] += 1

    def param_built(parent, name, param):
        if param is not None:
            built["params"] += param.numel()
            built["largest"] = max(built["largest"], param.numel())

    hooks = [torch_module.register_module_module_registration_hook(module_built),
             torch_module.register_module_parameter_registration_hook(param_built)]
    try:
        _refused(lambda: check_model_size(parsed, 4, None, "m.yaml"), "m.yaml: ", needle)
    finally:
        for h in hooks:
            h.remove()
    assert built["modules"] <= MAX_MODULES + 1, built  # ours runs first: it counts the 10,001st too
    assert built["params"] <= MAX_PARAMS + built["largest"], built


# ------------------------------------------------------------ 2. what Ultralytics ships passes the check
def _absolute(i: int, f) -> list[int]:
    return [i + x if x < 0 else x for x in (f if isinstance(f, list) else [f])]


def two_stream(base: dict) -> dict:
    """A single-stream Ultralytics config as a YOLOFuse-style two-stream one: IdentityInput and a
    ModalitySelector per modality, the backbone once per modality, each backbone map the head reads joined
    by a Concat of the two streams, then the head unchanged (its inputs renumbered)."""
    rows = base["backbone"] + base["head"]
    nb = len(base["backbone"])
    out = [[-1, 1, "IdentityInput", []], [0, 1, "ModalitySelector", [1]], [0, 1, "ModalitySelector", [2]]]
    streams = []
    for selector in (1, 2):
        index: dict[int, int] = {}
        for i in range(nb):
            f, n, m, args = rows[i]
            refs = [selector if x < 0 else index[x] for x in _absolute(i, f)]
            index[i] = len(out)
            out.append([refs if isinstance(f, list) else refs[0], n, m, copy.deepcopy(args)])
        streams.append(index)
    joined: dict[int, int] = {}
    for t in sorted({x for i in range(nb, len(rows)) for x in _absolute(i, rows[i][0]) if x < nb}):
        joined[t] = len(out)
        out.append([[streams[0][t], streams[1][t]], 1, "Concat", [1]])
    n_backbone = len(out)
    for i in range(nb, len(rows)):
        f, n, m, args = rows[i]
        refs = [joined[x] for x in _absolute(i, f)]
        joined[i] = len(out)
        out.append([refs if isinstance(f, list) else refs[0], n, m, copy.deepcopy(args)])
    meta = {k: v for k, v in base.items() if k not in ("backbone", "head")}
    return {**meta, "ch": 6, "backbone": out[:n_backbone], "head": out[n_backbone:]}


def _shipped() -> dict[str, dict]:
    import importlib.resources

    root = importlib.resources.files("ultralytics.cfg.models")
    return {f"{folder.name}/{f.name}": yaml.safe_load(f.read_text())
            for folder in sorted(root.iterdir(), key=lambda p: p.name) if folder.is_dir()
            for f in sorted(folder.iterdir(), key=lambda p: p.name) if f.name.endswith(".yaml")}


def test_every_model_config_ultralytics_ships_passes_the_check_as_a_two_stream_model():
    """All 66 of Ultralytics 8.4's model YAMLs (detection, segmentation, pose, OBB, classification, RT-DETR,
    YOLO-World, YOLOE; v3 to YOLO26), at every scale they list; the one naming TorchVision is refused with
    the reason (it downloads weights when built)."""
    shipped = _shipped()
    assert len(shipped) >= 60
    checked = 0
    for name, base in shipped.items():
        d = two_stream(base)
        if name == "11/yolo11-cls-resnet18.yaml":
            with pytest.raises(ModelConfigError, match="module 'TorchVision' is refused: .* downloads pretrained"):
                check_model_dict(d, name)
            continue
        for scale in d.get("scales") or [None]:
            check_model_dict({**d, "scale": scale} if scale else d, f"{name} scale {scale}")
            checked += 1
    assert checked > 200


#: The largest config of each family Ultralytics ships (parameters, rows or widths), at its largest scale.
LARGEST = ["v3/yolov3-spp.yaml", "v5/yolov5-p6.yaml", "v6/yolov6.yaml", "v8/yolov8-seg-p6.yaml", "v9/yolov9e.yaml",
           "v10/yolov10x.yaml", "11/yolo11-seg.yaml", "12/yolo12.yaml", "26/yolo26-p6.yaml", "rt-detr/rtdetr-x.yaml",
           "rt-detr/rtdetr-resnet101.yaml"]


def test_the_largest_real_models_fit_the_size_budget():
    """The budget admits every real model: the largest of each family as a two-stream model at scale x
    (YOLOv6x: ~280M parameters), our late-fusion variants at scale x, and a 100,000-class head."""
    from yolofuse_scale.model.detector import load_model_dict, prepare_model_dict

    shipped = _shipped()
    dicts = {}
    for name in LARGEST:
        d = two_stream(shipped[name])
        if d.get("scales"):
            d["scale"] = list(d["scales"])[-1]
        dicts[name] = d
    for model in ("yolov8x", "yolo11x", "yolo26x"):
        dicts[f"{model} late"] = load_model_dict(model, "late", 80)
    dicts["yolov8x late, 100000 classes"] = load_model_dict("yolov8x", "late", 100_000)
    params = {}
    for name, d in dicts.items():
        check_model_dict(d, name)
        params[name] = check_model_size(prepare_model_dict(d, 3, 3, name), 6, None, name)
    assert 250e6 < max(params.values()) < 2e9, params


#: A representative subset that our builder builds (the head is Detect or v10Detect), for the block families
#: beyond YOLOv8/YOLO11/YOLO26's (which the built-in variants build): YOLOv3's padding and pooling layers,
#: YOLOv6's transposed convs and ReLU activation, YOLOv9's GELAN blocks (RepNCSPELAN4, ADown, SPPELAN),
#: YOLOv10's blocks and end-to-end head (SCDown, C2fCIB, PSA, v10Detect). YOLO12's area attention is built
#: by the YOLOFuse test below. The others are only checked: building all would take a minute.
BUILD = ["v3/yolov3-tiny.yaml", "v6/yolov6.yaml", "v9/yolov9t.yaml", "v10/yolov10n.yaml"]


def _tiny(d: dict, name: str) -> dict:
    """``d`` at a tiny scale (its first scale row at half the width; YOLO12's area attention needs its own)."""
    if d.get("scales"):
        depth, width, cap = next(iter(d["scales"].values()))
        d["scales"], d["scale"] = {"t": [depth, width if name.startswith("12/") else width / 2, cap]}, "t"
    else:
        d["depth_multiple"], d["width_multiple"] = 0.33, 0.125
    return d


@pytest.mark.parametrize("name", BUILD)
def test_shipped_detection_configs_build_and_train_a_step_as_two_stream_models(name):
    from yolofuse_scale.engine.task import DetectionTask
    from yolofuse_scale.model.detector import FusionDetectionModel

    model = FusionDetectionModel(_tiny(two_stream(_shipped()[name]), name), 3, 1, nc=2, source=name)
    assert model.two_stream and model.stride.max() in (32, 64)
    g = torch.Generator().manual_seed(0)
    batch = {"img": (torch.rand(2, 4, 64, 64, generator=g) * 255).to(torch.uint8),
             "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.6], [0.3, 0.3, 0.2, 0.2]])}
    loss, items = DetectionTask(model).step(model, batch)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and items.shape == (3,)


def test_a_config_with_another_head_passes_the_check_but_is_not_built():
    from yolofuse_scale.model.detector import FusionDetectionModel

    d = _tiny(two_stream(_shipped()["v8/yolov8-seg.yaml"]), "v8/yolov8-seg.yaml")
    check_model_dict(d, "seg.yaml")
    with pytest.raises(ModelConfigError, match="seg.yaml: its last layer is Segment; this toolkit trains detectors, "
                                               "whose last layer is Detect or OBB or OBB26 or v10Detect"):
        FusionDetectionModel(d, 3, 1, nc=2, source="seg.yaml")


def test_yolofuse_area_attention_configs_pass_the_check_and_build():
    """Our mirrors of YOLOFuse's Decision-level-Fusion.yaml and Easy-level-Feature-Fusion.yaml (YOLO12's
    A2C2f, refused before): both checked, the smaller one built and run."""
    from yolofuse_scale.model import build_model

    for name in ("decision", "easy"):
        path = ASSETS / f"yolofuse_{name}_schema.yaml"
        check_model_dict(yaml.safe_load(path.read_text()), str(path))
    model = build_model(str(ASSETS / "yolofuse_easy_schema.yaml"), nc=2, ir_channels=1, scale="n").eval()
    assert any(type(m).__name__ == "A2C2f" for m in model.model)
    with torch.no_grad():
        assert model(torch.rand(1, 4, 64, 64))[0].shape == (1, 4 + 2, 8 * 8 + 4 * 4 + 2 * 2)


# ------------------------------------------------------------------ 3. tracebacks that are one message now
def _mid_yaml(**edits: str) -> str:
    """Our mid-fusion asset's text with lines replaced (``old=new``)."""
    text = (ASSETS / "yolofuse_mid_schema.yaml").read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    return text


BAD_YAML = {
    "width-inf": ("scales:\n  t: [0.33, 0.125, 512]\n  n: [0.33, 0.25, 1024]\n",
                  "width_multiple: .inf\n", "width_multiple: inf is not a finite number"),
    "scales-nan": ("t: [0.33, 0.125, 512]", "t: [0.33, .nan, 512]", "scales.t[1]: nan is not a finite number"),
    "selector-3": ("[-2, 1, ModalitySelector, [2]]", "[-2, 1, ModalitySelector, [3]]",
                   "ModalitySelector [3]: its argument is the modality, [1] (RGB) or [2] (IR)"),
    "selector-word": ("[-2, 1, ModalitySelector, [2]]", '[-2, 1, ModalitySelector, ["nearest"]]',
                      "ModalitySelector ['nearest']: its argument is the modality"),
    "selector-1.9": ("[-2, 1, ModalitySelector, [2]]", "[-2, 1, ModalitySelector, [1.9]]",
                     "ModalitySelector [1.9]: its argument is the modality"),
    "20000-deep": ("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, SPPF, [1024, 5, " + "[" * 20_000 + "]" * 20_000 + "]]",
                   "nested too deeply to read"),
    "python-tag": ("nc: 80", "nc: !!python/object/apply:os.system ['true']",
                   "(line 5): not a plain YAML model file: could not determine a constructor for the tag "
                   "'tag:yaml.org,2002:python/object/apply:os.system'"),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_a_bad_model_yaml_is_one_message_not_a_traceback(tmp_path, capsys, case):
    """What ``train --model FILE.yaml`` calls, under the command's error handling: each used to end in an
    OverflowError, ValueError, RecursionError or ConstructorError traceback ([1.9] was read as RGB)."""
    from yolofuse_scale.model import build_model

    old, new, needle = BAD_YAML[case]
    bad = _yaml_file(tmp_path / "m.yaml", _mid_yaml(**{old: new}))
    assert_user_error(lambda: build_model(str(bad), nc=2, ir_channels=1, scale="t"), f"{bad}", needle, capsys=capsys)


def test_a_non_finite_width_in_a_weights_file_is_one_message(small_data_template, tmp_path, capsys):  # noqa: F811 (the imported fixture)
    d = _variant()
    d["scales"]["t"][1] = math.inf
    bad = _weights_file(tmp_path / "best.pt", d)
    err = _predict(capsys, bad, small_data_template, tmp_path)
    assert f"{bad}: model_yaml: scales.t[1]: inf is not a finite number" in err


def test_a_negative_activation_argument_is_accepted(tmp_path):
    from ultralytics.nn.modules import Conv

    from yolofuse_scale.model import build_model

    path = _yaml_file(tmp_path / "m.yaml", "activation: nn.LeakyReLU(-0.1)\n" + _mid_yaml())
    model = build_model(str(path), nc=2, ir_channels=1, scale="t")
    slopes = {getattr(m.act, "negative_slope", None) for m in model.modules() if isinstance(m, Conv)}
    assert slopes - {None} == {-0.1}


def _modules_a_list(model) -> None:
    inner = model.model
    vars(inner)["_modules"] = list(vars(inner)["_modules"].values())


def _nc_a_string(model) -> None:
    model.model[-1].nc = "many"


@pytest.mark.parametrize("edit,needle", [
    (_modules_a_list, "its _modules is a list, not a table of names"),
    (_nc_a_string, "its head's class count nc 'many' is not an integer from 1 to 100000"),
], ids=["modules-list", "nc-string"])
def test_a_crafted_ultralytics_checkpoint_is_one_message(tmp_path, capsys, edit, needle):
    """--pretrained reads an Ultralytics checkpoint's module tree from its tables, running nothing: a table
    of the wrong type, or a head whose class count is no number, used to end in a traceback."""
    from yolofuse_scale.model.pretrained.checkpoint import read_source

    bad = _ultralytics_checkpoint(tmp_path / "yolov8t.pt", edit)
    assert_user_error(lambda: read_source(bad), f"--pretrained {bad}: ", needle, capsys=capsys)


def test_train_with_a_crafted_pretrained_checkpoint_stops_with_one_message(small_data_template, tmp_path):  # noqa: F811 (the imported fixture)
    bad = _ultralytics_checkpoint(tmp_path / "yolov8t.pt", _modules_a_list)
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", "yolov8t", "--fusion",
                   "mid", *TINY, "--pretrained", str(bad), "--output-dir", str(tmp_path / "r"))
    assert_clean_error(proc, f"--pretrained {bad}: ", "its _modules is a list")
    assert not (tmp_path / "r" / "weights").exists()


class _Touch:
    """A pickled object whose unpickling would create a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("kind", ["torch-save", "plain-pickle"])
def test_a_refused_weights_file_is_not_told_to_load_it_unsafely(small_data_template, tmp_path, capsys, kind):  # noqa: F811 (the imported fixture)
    """torch's refusal advises ``weights_only=False`` (and allow-listing the class): that would run the
    file's code. The one message keeps torch's reason only, and no warning line precedes it."""
    import pickle

    marker = tmp_path / "marker"
    bad = tmp_path / "best.pt"
    if kind == "torch-save":
        torch.save({"state": _Touch(marker)}, bad)
    else:
        bad.write_bytes(pickle.dumps(_Touch(marker), protocol=4))
    err = _predict(capsys, bad, small_data_template, tmp_path)
    assert f"{bad}: not a yolofuse-scale weights file (UnpicklingError: Unsupported " in err
    for advice in ("weights_only", "safe_globals", "trust", "pickle protocol"):
        assert advice not in err, err
    assert not marker.exists()


def _yaml_activation_code(text: str, marker: Path) -> str:
    return f"activation: {_code(marker) + ' or torch.nn.SiLU()'!r}\n" + text


def _yaml_module_not_allowed(text: str, marker: Path) -> str:
    return text.replace("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, os.system, ['touch marker']]")


@pytest.mark.parametrize("edit,needle", [
    (_yaml_activation_code, "is not an allowed activation"),
    (_yaml_module_not_allowed, "module 'os.system' is not an allowed module"),
])
def test_model_yaml_with_code_is_refused_and_runs_nothing(small_data_template, tmp_path, edit, needle):  # noqa: F811 (the imported fixture)
    from yolofuse_scale.model import ModelConfigError, build_model

    marker = tmp_path / "marker"
    src = (ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml").read_text()
    bad = tmp_path / "evil.yaml"
    bad.write_text(edit(src, marker))
    with pytest.raises(ModelConfigError, match=re.escape(f"{bad}: ") + ".*" + re.escape(needle)):
        build_model(str(bad), nc=2, ir_channels=1, scale="t")
    assert not marker.exists()
    # through `train --model FILE.yaml` too: refused by name before anything is built
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", str(bad), "--scale", "t",
                   "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--output-dir", str(tmp_path / "r"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in out, out[-3000:]
    assert not marker.exists()
