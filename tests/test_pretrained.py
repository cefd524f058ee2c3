"""--pretrained: an Ultralytics checkpoint (built and saved here, offline, with Ultralytics' own saver)
or one of our weights files, mapped layer by layer into every stream of every fusion.

The expected layer indices below are written out by hand from each fusion's layout (3 input rows, then
the branches), so they check ``fusion_origins`` rather than repeat it.
"""

from __future__ import annotations

import copy
import json
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, launch
from yolofuse_scale.model import build_model
from yolofuse_scale.model.pretrained import apply_pretrained
from yolofuse_scale.model.pretrained.checkpoint import PretrainedError
from yolofuse_scale.model.variants import Origin, family_yaml, fusion_origins


def write_ultralytics_checkpoint(path: Path, family: str = "yolo11", scale: str = "t", nc: int = 80,
                                 seed: int = 0, strip: bool = True, task: str = "detect") -> Path:
    """A checkpoint shaped as Ultralytics' releases: its trainer's last.pt dict (EMA model in fp16, the
    optimizer's state), finalised by Ultralytics' own ``strip_optimizer`` (model fp16, no optimizer;
    ``strip=False``: the last.pt as the trainer leaves it). Random weights, so that every copied tensor is
    recognisable (BN's defaults would make many equal by chance). ``task="obb"``: an ``-obb`` release (an
    ``OBBModel`` of the family's ``-obb`` YAML, as ``yolo11n-obb.pt``)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel, OBBModel
    from ultralytics.utils.torch_utils import strip_optimizer

    model = (OBBModel if task == "obb" else DetectionModel)(family_yaml(family, scale, task), nc=nc, verbose=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if not strip:  # a momentum buffer per parameter, as a real last.pt holds (strip_optimizer drops it)
        sum((p * p).sum() for p in model.parameters()).backward()
        optimizer.step()
    last = path if not strip else path.with_name(path.stem + "_last.pt")
    torch.save({"epoch": 3, "best_fitness": 0.1, "model": None, "ema": copy.deepcopy(model).half(), "updates": 30,
                "optimizer": optimizer.state_dict(), "train_args": dict(DEFAULT_CFG_DICT), "date": "2025-01-01",
                "version": "8.4"}, last)
    if strip:
        strip_optimizer(last, path)
        last.unlink()
    return path


def _reference(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as Ultralytics itself loads them (a trusted file we wrote), in fp32."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    return {k: v.float() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def yolo11t_ckpt(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = write_ultralytics_checkpoint(tmp_path_factory.mktemp("ul") / "yolo11t.pt")
    return path, _reference(path)


def _layer(sd: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith(f"model.{i}.")}


def _same(dst: dict[str, torch.Tensor], i: int, src: dict[str, torch.Tensor], j: int, skip=()) -> int:
    """Layer ``i`` of dst equals layer ``j`` of src, tensor by tensor (``skip``: names left out); the count."""
    a, b = _layer(dst, i), _layer(src, j)
    assert set(a) == set(b), (i, j)
    n = 0
    for name in a:
        if name not in skip:
            assert torch.equal(a[name], b[name].to(a[name].dtype)), f"model.{i}.{name} != model.{j}.{name}"
            n += 1
    return n


YOLO11_LAYERS = 24  # 11 backbone rows (0..10) + 13 head rows (11..23, Detect last)


def test_fusion_origins_say_where_each_layer_comes_from():
    base = family_yaml("yolo11", "t")
    mid = fusion_origins(base, "mid")
    assert mid[:3] == [None, None, None]  # IdentityInput, two ModalitySelectors: no weights
    assert mid[3] == Origin(0, "rgb") and mid[14] == Origin(0, "ir") and mid[13] == Origin(10, "rgb")
    assert [j for j, o in enumerate(mid) if o and o.stream == "fusion"] == [26, 28, 30]
    assert mid[31] == Origin(11, "shared") and mid[-1] == Origin(23, "shared")
    late = fusion_origins(base, "late")
    assert late[26] == Origin(0, "ir") and late[-1].levels == ((0, "rgb"), (1, "rgb"), (2, "rgb"), (0, "ir"),
                                                               (1, "ir"), (2, "ir"))
    assert fusion_origins(base, "rgb")[1:] == [Origin(i, "rgb") for i in range(YOLO11_LAYERS)]


def test_rgb_is_the_checkpoint_as_is(yolo11t_ckpt):
    path, src = yolo11t_ckpt
    model = build_model("yolo11t", "rgb", nc=80, ir_channels=1)
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    assert sum(_same(sd, i + 1, src, i) for i in range(YOLO11_LAYERS)) == len(src)
    assert report.placed == report.countable == len(src) and report.counts["rgb"]["loaded"] == len(src)
    assert not report.reinit and not report.skipped and not report.adapted


def test_mid_both_backbones_from_the_checkpoint_ir_stem_summed_fusion_averaged(yolo11t_ckpt):
    path, src = yolo11t_ckpt
    model = build_model("yolo11t", "mid", nc=80, ir_channels=1)
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    for i in range(11):  # backbone rows
        _same(sd, 3 + i, src, i)
        _same(sd, 14 + i, src, i, skip={"conv.weight"} if i == 0 else ())
    # 1-channel IR: the sum over the RGB input channels (a gray image answers as in RGB)
    assert torch.equal(sd["model.14.conv.weight"], src["model.0.conv.weight"].sum(1, keepdim=True))
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(torch.conv2d(x, sd["model.14.conv.weight"]),
                               torch.conv2d(x.expand(1, 3, 8, 8), src["model.0.conv.weight"]))
    for j in (26, 28, 30):  # fusion convs: output channel c = (rgb_c + ir_c) / 2
        w = sd[f"model.{j}.conv.weight"][:, :, 0, 0]
        c = w.shape[0]
        assert torch.equal(w, torch.cat([torch.eye(c), torch.eye(c)], 1) / 2)
    for i in range(11, YOLO11_LAYERS):  # neck and head, the class layers too (same class count)
        _same(sd, i + 20, src, i)
    counts = report.counts
    assert counts["ir"]["adapted"] == 1 and counts["fusion"]["new"] == 18 and report.share == 1.0
    assert counts["rgb"]["loaded"] == counts["ir"]["loaded"] + 1 == sum(len(_layer(src, i)) for i in range(11))
    assert report.adapted == ["model.14.conv.weight [8,1,3,3] <- model.0.conv.weight [8,3,3,3]: sum over the 3 "
                              "RGB input channels -> 1 IR channel"]


def test_class_layers_are_reinitialised_when_the_class_count_differs(yolo11t_ckpt):
    path, src = yolo11t_ckpt
    model = build_model("yolo11t", "mid", nc=1, ir_channels=3)
    before = copy.deepcopy(model.state_dict())
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    head = _layer(sd, 43)
    class_convs = [k for k in head if re.match(r"cv3\.\d\.2\.", k)]
    assert len(class_convs) == 6  # weight + bias x 3 levels
    reinit = []
    for k in head:
        theirs = src[f"model.23.{k}"]
        # the class convs, and the class branch's convs whose width Ultralytics derives from the class count:
        # the model's own (Ultralytics') init; the rest of the class branch (its depthwise convs), box branch, DFL:
        # the checkpoint's
        if k in class_convs or (k.startswith("cv3.") and theirs.shape != head[k].shape):
            assert torch.equal(head[k], before[f"model.43.{k}"]), k
            reinit.append(f"model.43.{k}")
        else:
            assert torch.equal(head[k], theirs), k
    assert len(reinit) > len(class_convs)
    _same(sd, 14, src, 0)  # 3-channel IR: the stem copied as it is
    assert report.counts["shared"]["reinit"] == len(report.reinit) == len(reinit) and report.reinit == reinit
    assert report.share == 1.0 and report.placed == len(src) - len(report.reinit_src)
    assert any("re-initialised (class-dependent; 1 class(es) here, 80 in the file)" in ln for ln in report.lines())


def test_late_both_branches_and_each_branchs_detect_levels(yolo11t_ckpt):
    path, src = yolo11t_ckpt
    model = build_model("yolo11t", "late", nc=80, ir_channels=1)
    apply_pretrained(model, path)
    sd = model.state_dict()
    for i in range(YOLO11_LAYERS - 1):
        _same(sd, 3 + i, src, i)
        _same(sd, 26 + i, src, i, skip={"conv.weight"} if i == 0 else ())
    head, src_head = _layer(sd, 49), _layer(src, 23)
    for k, v in head.items():  # levels 0-2 read the RGB branch, 3-5 the IR branch: both from levels 0-2
        m = re.match(r"(cv2|cv3)\.(\d)\.(.+)", k)
        there = f"{m.group(1)}.{int(m.group(2)) % 3}.{m.group(3)}" if m else k
        assert torch.equal(v, src_head[there]), k


def test_early_both_stems_and_the_trunk(yolo11t_ckpt):
    path, src = yolo11t_ckpt
    model = build_model("yolo11t", "early", nc=80, ir_channels=3)
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    for i in range(2):
        _same(sd, 3 + i, src, i)
        _same(sd, 5 + i, src, i)
    for i in range(2, YOLO11_LAYERS):
        _same(sd, i + 7, src, i)
    assert report.fusion_init == [8] and report.share == 1.0


@pytest.mark.parametrize("ir_channels", [1, 3])
def test_data_level_stem_gets_half_of_each(yolo11t_ckpt, ir_channels):
    path, src = yolo11t_ckpt
    model = build_model("yolo11t", "data", nc=80, ir_channels=ir_channels)
    apply_pretrained(model, path)
    sd = model.state_dict()
    w = src["model.0.conv.weight"]
    ir = w.sum(1, keepdim=True) if ir_channels == 1 else w
    assert torch.equal(sd["model.0.conv.weight"], torch.cat([w, ir], 1) / 2)
    x = torch.rand(1, 3, 8, 8)  # IR = the RGB image's content: the stem answers as the pretrained one
    x_ir = x.sum(1, keepdim=True) / 3 if ir_channels == 1 else x
    gray = x_ir.expand(1, 3, 8, 8) if ir_channels == 1 else x
    torch.testing.assert_close(torch.conv2d(torch.cat([gray, x_ir], 1), sd["model.0.conv.weight"]),
                               torch.conv2d(gray, w))
    _same(sd, 0, src, 0, skip={"conv.weight"})
    for i in range(1, YOLO11_LAYERS):
        _same(sd, i, src, i)


def test_yolo26_trainer_last_pt_and_its_one_to_one_class_layers(tmp_path):
    """The trainer's own last.pt (model None, EMA, optimizer state); YOLO26's one-to-one class convs too."""
    path = write_ultralytics_checkpoint(tmp_path / "last.pt", "yolo26", "t", strip=False)
    src = _reference(path)
    model = build_model("yolo26t", "ir", nc=2, ir_channels=3)
    before = copy.deepcopy(model.state_dict())
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    for i in range(YOLO11_LAYERS - 1):
        _same(sd, i + 1, src, i)
    head, src_head = _layer(sd, YOLO11_LAYERS), _layer(src, YOLO11_LAYERS - 1)
    class_convs = [k for k in head if re.match(r"(one2one_)?cv3\.\d\.2\.", k)]
    assert len(class_convs) == 12 and all(torch.equal(head[k], before[f"model.24.{k}"]) for k in class_convs)
    assert all(torch.equal(v, src_head[k]) for k, v in head.items() if re.match(r"(one2one_)?cv2\.", k))
    assert report.counts["ir"]["loaded"] == report.placed and report.share == 1.0
    assert "Ultralytics 8.4 checkpoint" in report.lines()[0] and "fp16 -> fp32" in report.lines()[0]


@pytest.mark.parametrize(("family", "scale"), [("yolov8", "t"), ("yolo11", "n")])
def test_another_family_or_scale_is_refused_and_changes_nothing(tmp_path, family, scale):
    path = write_ultralytics_checkpoint(tmp_path / f"{family}{scale}.pt", family, scale)
    model = build_model("yolo11t", "mid", nc=1, ir_channels=1)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PretrainedError, match=re.escape(f"--pretrained {path}: only ") + r"\d+ of its \d+ tensors "
                       r"\(\d+%\) fit yolo11t fusion=mid .*another architecture: .*same family and scale"):
        apply_pretrained(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class _Touch:
    """Unpickling it creates a file: what a malicious pickle does, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


class _Dict(OrderedDict):
    """A class of our own (an OrderedDict subclass): not in the allow-list."""


class _BuildsAModel:
    """A pickle that *calls* an allowed class: DetectionModel(cfg) parses cfg, and Ultralytics eval()s
    its activation. Rebuilding allowed classes is fine; calling them is refused."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel

        cfg = {"nc": 1, "activation": f"__import__('pathlib').Path({str(self.marker)!r}).touch() or nn.SiLU()",
               "backbone": [[-1, 1, "Conv", [8, 3, 2]]], "head": [[-1, 1, "Detect", ["nc"]]]}
        return (DetectionModel, (cfg,))


@pytest.mark.parametrize(("payload", "needle"), [
    (lambda marker: {"model": _Touch(marker)}, "it holds builtins.getattr, pathlib.Path, pathlib.PosixPath, which are"),
    (lambda marker: {"model": _Dict(a=torch.zeros(1))}, f"it holds {_Dict.__module__}._Dict, which is not"),
    (lambda marker: {"model": _BuildsAModel(marker)}, "the pickle calls DetectionModel(...) instead of rebuilding"),
])
def test_a_checkpoint_holding_anything_else_is_refused_and_runs_nothing(tmp_path, payload, needle):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save(payload(marker), path)
    with pytest.raises(PretrainedError, match=re.escape(f"--pretrained {path}: refused") + ".*" + re.escape(needle)
                       + ".*nothing in the file was run"):
        apply_pretrained(build_model("yolo11t", "rgb", nc=1, ir_channels=1), path)
    assert not marker.exists()


def test_the_build_a_model_gadget_does_run_code_under_a_plain_allow_list(tmp_path):
    """Why allowed classes are rebuild-only: with the real classes allow-listed, the same file runs code."""
    from ultralytics.nn.tasks import DetectionModel

    marker = tmp_path / "marker"
    torch.save({"model": _BuildsAModel(marker)}, tmp_path / "evil.pt")
    with torch.serialization.safe_globals([DetectionModel]):
        try:
            torch.load(tmp_path / "evil.pt", weights_only=True)
        except Exception:
            pass  # the model it builds may fail after the activation ran
    assert marker.exists()


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("yolo11n\n")
    with pytest.raises(PretrainedError, match=re.escape(f"--pretrained {path}: not a PyTorch checkpoint")):
        apply_pretrained(build_model("yolo11t", "rgb", nc=1, ir_channels=1), path)
    torch.save({"model": 1}, path)  # a loadable checkpoint of something else
    with pytest.raises(PretrainedError, match="neither an Ultralytics detection checkpoint"):
        apply_pretrained(build_model("yolo11t", "rgb", nc=1, ir_channels=1), path)


def our_random_weights_file(tmp_path: Path, fusion: str, model: str = "yolo11t"):
    """A weights file of ours for ``model``/``fusion`` with random weights: (model, its state dict, path)."""
    from yolofuse_scale.weights import plain_meta, write_weights

    src_model = build_model(model, fusion, nc=2, ir_channels=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in src_model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    path = tmp_path / "last.pt"
    write_weights(path, src_model.state_dict(), plain_meta({"model_yaml": src_model.yaml, "rgb_channels": 3,
                                                             "ir_channels": 1, "names": {0: "a", 1: "b"},
                                                             "imgsz": 64}))
    return src_model, src_model.state_dict(), path


@pytest.mark.parametrize("fusion", ["rgb", "mid"])
def test_our_weights_file_maps_by_the_same_origins(tmp_path, fusion):
    """An rgb run's weights (its layer i + 1 is single-stream layer i) or a mid run's (fusion convs too) into mid."""
    src_model, src, path = our_random_weights_file(tmp_path, fusion)
    model = build_model("yolo11t", "mid", nc=2, ir_channels=1)
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    if fusion == "mid":
        assert all(torch.equal(v, src[k]) for k, v in sd.items()) and report.counts["fusion"]["loaded"] == 18
    else:
        for i in range(11):
            _same(sd, 3 + i, src, i + 1)
            _same(sd, 14 + i, src, i + 1, skip={"conv.weight"} if i == 0 else ())
        assert torch.equal(sd["model.14.conv.weight"], src["model.1.conv.weight"].sum(1, keepdim=True))
        for i in range(11, YOLO11_LAYERS):
            _same(sd, i + 20, src, i + 1)
    assert report.share == 1.0 and "yolofuse-scale weights (yolo11t fusion=" in report.lines()[0]


def test_a_model_yaml_of_another_family_is_refused(yolo11t_ckpt):
    """A model YAML is matched by structure (tests/test_pretrained_yaml.py); a YOLOv8-based one takes no yolo11."""
    model = build_model(str(ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml"), nc=1, ir_channels=1, scale="t")
    with pytest.raises(PretrainedError, match="yolo11t.pt is yolo11 scale t; this run builds yolofuse_mid_schema.yaml"):
        apply_pretrained(model, yolo11t_ckpt[0])


@pytest.mark.slow
def test_train_py_logs_the_report_and_resume_does_not_reapply_it(tiny_data, tmp_path):
    ckpt = write_ultralytics_checkpoint(tmp_path / "yolov8t.pt", "yolov8", "t")
    out = tmp_path / "run"
    args = ["train.py", "--data", str(tiny_data), "--model", "yolov8t", "--fusion", "mid", "--imgsz", "64",
            "--batch-size", "8", "--epochs", "1", "--max-steps", "1", "--workers", "0", "--no-val",
            "--pretrained", str(ckpt), "--output-dir", str(out)]
    run = launch("python", 1, args, out)
    text = run.output
    assert f"--pretrained {ckpt}: Ultralytics 8.4 checkpoint" in text, text[-3000:]
    assert "-> yolov8t fusion=mid (2 class(es), IR 1 channel(s)): placed" in text
    assert "  stream    loaded  adapted  skipped  re-init   new" in text
    assert "sum over the 3 RGB input channels -> 1 IR channel" in text
    recorded = json.loads((out / "metrics.json").read_text())["pretrained"]
    assert recorded["path"] == str(ckpt) and recorded["share"] == 1.0 and recorded["counts"]["ir"]["adapted"] == 1
    resumed = launch("python", 1, [*args[:-4], "--max-steps", "2", "--pretrained", str(ckpt), "--output-dir",
                                   str(out), "--resume", "auto"], out)
    assert f"--pretrained {ckpt}: not applied, resuming from" in resumed.output
    assert "placed" not in resumed.output
