"""--pretrained into model YAMLs (YOLOFuse's, DEYOLO's, YOLOv11-RGBT's schemas), matched by structure; an
Ultralytics 8.3 checkpoint with the older depth_multiple/width_multiple keys; class names that differ.

The expected layer pairs below are written out by hand from each YAML's rows (a ``SilenceChannel``,
``ChannelToNumber`` or ``NumberToChannel`` row builds two layers, ``ADD`` / ``DEA`` / ``DEFA`` three,
``C2f_BiFocus`` two) and the family's rows, so they check the structural matching rather than repeat it.
Every layer of the model is checked: the expected ones hold the file's tensors, every other one its own.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import ROOT
from tests.test_pretrained import _layer, _reference, _same
from yolofuse_scale.model import build_model
from yolofuse_scale.model.pretrained import apply_pretrained, map_pretrained
from yolofuse_scale.model.pretrained.checkpoint import read_source
from yolofuse_scale.model.pretrained.identify import identify
from yolofuse_scale.model.variants import family_yaml

ASSETS = ROOT / "tests" / "assets"
NAMES = {0: "person", 1: "car"}


def model_dict(family: str, scale: str) -> dict:
    """A family's single-stream dictionary at ``scale``: ours (t..x) for yolov8/11/26, Ultralytics' file for yolo12."""
    if family != "yolo12":
        return family_yaml(family, scale)
    d = yaml.safe_load(importlib.resources.files("ultralytics.cfg.models").joinpath("12/yolo12.yaml").read_text())
    d["scale"] = scale
    return d


def write_checkpoint(path: Path, d: dict, nc: int = 2, names: dict | None = None, version: str = "8.3.40",
                     seed: int = 0) -> Path:
    """A released Ultralytics checkpoint of the model dictionary ``d``: the trainer's last.pt (EMA model)
    finalised by Ultralytics' own ``strip_optimizer`` (fp16), with the class ``names`` and ``version`` given.
    Random weights, so that every copied tensor is recognisable."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import strip_optimizer

    model = DetectionModel(copy.deepcopy(d), nc=nc, verbose=False)
    model.names = dict(names or {i: f"class{i}" for i in range(nc)})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    last = path.with_name(path.stem + "_last.pt")
    torch.save({"epoch": 3, "model": None, "ema": model, "updates": 30, "optimizer": None, "date": "2024-11-01"},
               last)
    strip_optimizer(last, path, updates={"version": version})
    last.unlink()
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    folder = tmp_path_factory.mktemp("ul")
    out = {}
    for family, scale in (("yolov8", "t"), ("yolo11", "t"), ("yolo12", "n")):
        path = write_checkpoint(folder / f"{family}{scale}.pt", model_dict(family, scale))
        out[family] = (path, _reference(path))
    return out


def _pairs(text: str) -> list[tuple[int, int]]:
    """``"3-5<-0-2, 9<-4"`` -> [(3, 0), (4, 1), (5, 2), (9, 4)]: target layer <- file layer."""
    out = []
    for run in filter(None, (r.strip() for r in text.split(","))):
        dst, src = run.split("<-")
        a, b = (dst.split("-") + [dst])[:2]
        c = int(src.split("-")[0])
        out += [(j, c + k) for k, j in enumerate(range(int(a), int(b) + 1))]
    return out


# asset: (family, scale, ir_channels, {target <- file layer}, stems (target, kind), parts {target: (prefix, file
# layer)}, fusion convs averaged, head (target, file, {level: file level}, skipped head units (regex))). A head
# reading P3 of both branches concatenated has other shapes in its level-0 box conv and, since Ultralytics sizes
# the class branch by the P3 width (max(P3 width, classes)), in its class branch but for the depthwise convs
# of the levels whose input width is the file's.
V8_HEAD = {0: 0, 1: 1, 2: 2}
CASES = {
    "yolofuse_mid_schema": ("yolov8", "t", 1, "3<-0, 5<-1, 7<-2, 9<-3, 12<-5, 15<-7, 6<-1, 8<-2, 10<-3, 13<-5, "
                            "16<-7, 25<-16, 27-28<-18-19, 30<-21", [(4, 0, "ir")], {}, [], (31, 22, V8_HEAD, None)),
    "deyolo_schema": ("yolov8", "t", 3, "3-4<-0-1, 7-13<-3-9, 14-15<-0-1, 18-24<-3-9, 36<-12, 39-40<-15-16, "
                      "42-43<-18-19, 45<-21", [], {5: ("blocks.0.c2f.", 2), 16: ("blocks.0.c2f.", 2)}, [],
                      (46, 22, V8_HEAD, None)),
    "defa_schema": ("yolov8", "t", 3, "3-4<-0-1, 7-13<-3-9, 14-15<-0-1, 18-24<-3-9, 36<-12, 39-40<-15-16, "
                    "42-43<-18-19, 45<-21", [], {5: ("blocks.0.c2f.", 2), 16: ("blocks.0.c2f.", 2)}, [],
                    (46, 22, V8_HEAD, None)),
    "yolofuse_data_level_schema": ("yolov8", "t", 3, "2-4<-1-3, 6<-5, 8<-7, 9<-9", [(1, 0, "shared")], {}, [],
                                   (10, 22, V8_HEAD, None)),
    "rgbt_earlyfusion_schema": ("yolo11", "t", 1, "4-13<-1-10, 16<-13, 19-20<-16-17, 22-23<-19-20, 25<-22",
                                [(3, 0, "shared")], {}, [], (26, 23, V8_HEAD, None)),
    "rgbt_midfusion_schema": ("yolo11", "t", 1, "3-11<-0-8, 15-22<-1-8, 27<-10, 34<-17, 36-37<-19-20, 39<-22",
                              [(14, 0, "ir")], {}, [], (40, 23, V8_HEAD, None)),
    "rgbt_midfusion-P3_schema": ("yolo11", "t", 1, "3-7<-0-4, 11-14<-1-4, 17-22<-5-10, 25<-13, 28-29<-16-17, "
                                 "31-32<-19-20, 34<-22", [(10, 0, "ir")], {}, [16], (35, 23, V8_HEAD, None)),
    "rgbt_midfusion-P3P4_schema": ("yolo11", "t", 1, "3-9<-0-6, 13-18<-1-6, 22-24<-8-10, 31<-17, 33-34<-19-20, "
                                   "36<-22", [(12, 0, "ir")], {}, [], (37, 23, V8_HEAD, None)),
    "rgbt_midfusion-add_schema": ("yolo11", "t", 1, "3-11<-0-8, 15-22<-1-8, 32-33<-9-10, 36<-13, 39-40<-16-17, "
                                  "42-43<-19-20, 45<-22", [(14, 0, "ir")], {}, [], (46, 23, V8_HEAD, None)),
    "rgbt_latefusion_schema": ("yolo11", "t", 1, "3-13<-0-10, 17-26<-1-10, 29<-13, 32-33<-16-17, 35-36<-19-20, "
                               "38<-22, 41<-13, 44-45<-16-17, 47-48<-19-20, 50<-22", [(16, 0, "ir")], {}, [],
                               (54, 23, V8_HEAD, r"^(cv2\.\d\.0|cv3)\.")),
    "rgbt_scorefusion_schema": ("yolo11", "t", 1, "3-13<-0-10, 17-26<-1-10, 29<-13, 32-33<-16-17, 35-36<-19-20, "
                                "38<-22, 41<-13, 44-45<-16-17, 47-48<-19-20, 50<-22", [(16, 0, "ir")], {}, [],
                                (51, 23, {0: 0, 1: 1, 2: 2, 3: 0, 4: 1, 5: 2}, None)),
    "rgbt_mid-to-late-fusion_schema": ("yolo11", "t", 1, "3-13<-0-10, 17-26<-1-10, 29<-13, 32<-16, 35<-13, 38<-16, "
                                       "45<-20", [(16, 0, "ir")], {}, [],
                                       (48, 23, V8_HEAD, r"^(cv2\.0\.0|cv3\.0|cv3\.\d\.(0\.1|1|2))\.")),
    "rgbt_share_schema": ("yolo11", "t", 1, "3-13<-0-10, 26<-17, 28-29<-19-20", [], {}, [], (32, 23, V8_HEAD, None)),
    # YOLOFuse's YOLO12 layouts group their P2/P3 convs (2 and 4 groups); Ultralytics 8.4's yolo12 does not
    "yolofuse_easy_schema": ("yolo12", "n", 1, "3<-0, 5<-2, 7-11<-4-8, 14<-2, 16-20<-4-8", [(12, 0, "ir")], {}, [],
                             (27, 21, V8_HEAD, None)),
    "yolofuse_decision_schema": ("yolo12", "n", 1, "3<-0, 5<-2, 7-11<-4-8, 14<-2, 16-20<-4-8, 23<-11, 26-27<-14-15, "
                                 "29-30<-17-18, 32<-20, 35<-11, 38-39<-14-15, 41-42<-17-18, 44<-20", [(12, 0, "ir")],
                                 {}, [], (45, 21, {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}, None)),
}


def test_every_yaml_asset_is_a_case():
    # every peer model layout is a case; config_v1.yaml is a run config (tests/test_config.py), not a model
    assert sorted(CASES) == sorted(p.stem for p in ASSETS.glob("*_schema.yaml"))


@pytest.mark.parametrize("asset", sorted(CASES))
def test_a_yaml_takes_its_familys_checkpoint_by_structure(ckpts, asset):
    family, scale, ir, expected, stems, parts, averaged, (head, src_head, levels, skipped) = CASES[asset]
    path, src = ckpts[family]
    model = build_model(str(ASSETS / f"{asset}.yaml"), nc=2, ir_channels=ir, scale=scale)
    before = copy.deepcopy(model.state_dict())
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    pairs = dict(_pairs(expected))
    for j, i in pairs.items():  # the whole layer is the file's
        _same(sd, j, src, i)
    for j, i, kind in stems:  # a stem reading 1 IR channel or the stacked 3 + C_ir: adapted as built-in variants
        _same(sd, j, src, i, skip={"conv.weight"})
        w = src[f"model.{i}.conv.weight"]
        gray = w.sum(1, keepdim=True)
        want = gray if kind == "ir" else torch.cat([w, gray if ir == 1 else w], 1) / 2
        assert torch.equal(sd[f"model.{j}.conv.weight"], want), j
    for j, (prefix, i) in parts.items():  # the file's C2f inside DEYOLO's C2f_BiFocus; the rest its own
        for rest, t in _layer(sd, j).items():
            want = src[f"model.{i}.{rest[len(prefix):]}"] if rest.startswith(prefix) else before[f"model.{j}.{rest}"]
            assert torch.equal(t, want.to(t.dtype)), (j, rest)
    for j in averaged:  # a YAML's 1x1 fusion conv: the two streams' average, as the built-in fusion convs
        w = sd[f"model.{j}.conv.weight"][:, :, 0, 0]
        c = w.shape[0]
        assert torch.equal(w, torch.cat([torch.eye(c), torch.eye(c)], 1) / 2)
    src_head_t = _layer(src, src_head)
    for rest, t in _layer(sd, head).items():  # the head: level k from the file's level levels[k]
        m = re.match(r"(cv2|cv3)\.(\d)\.(.+)", rest)
        there = f"{m.group(1)}.{levels[int(m.group(2))]}.{m.group(3)}" if m else rest
        own = skipped is not None and re.match(skipped, rest)
        assert torch.equal(t, before[f"model.{head}.{rest}"] if own else src_head_t[there]), rest
    done = {j for j, _, _ in stems} | set(pairs) | set(parts) | set(averaged) | {head}
    for key, t in sd.items():  # every other layer keeps its own initialisation
        if int(key.split(".")[1]) not in done:
            assert torch.equal(t, before[key]), key
    lines = report.lines()
    assert report.stream_share > 0.5 and "matched by structure" in lines[1] and not report.names_differ
    assert f"-> {asset}.yaml scale {scale} (2 class(es), IR {ir} channel(s))" in lines[0]
    assert report.summary()["matched_by"] == "structure"


def test_a_weights_file_of_ours_into_a_yaml(tmp_path):
    """Our rgb run's weights (its layer i + 1 is single-stream layer i) into YOLOFuse's mid layout."""
    from tests.test_pretrained import our_random_weights_file

    _, src, path = our_random_weights_file(tmp_path, "rgb", "yolov8t")
    model = build_model(str(ASSETS / "yolofuse_mid_schema.yaml"), nc=2, ir_channels=3, scale="t")
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    for j, i in _pairs(CASES["yolofuse_mid_schema"][3]) + [(4, 0), (31, 22)]:
        _same(sd, j, src, i + 1)
    assert report.stream_share == 1.0 and "yolofuse-scale weights (yolov8t fusion=rgb" in report.lines()[0]


def old_style(family: str, scale: str) -> dict:
    """``family`` at ``scale`` as Ultralytics 8.3 checkpoints may store it: depth_multiple / width_multiple, no
    ``scales`` table."""
    d = model_dict(family, scale)
    depth, width, _cap = d.pop("scales")[d.pop("scale")]
    return {**d, "depth_multiple": depth, "width_multiple": width}


@pytest.fixture(scope="module")
def yolov8n_83(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A third-party Ultralytics 8.3 yolov8n: old scale keys, fp16, two classes named otherwise than ours."""
    path = write_checkpoint(tmp_path_factory.mktemp("ul83") / "yolov8n.pt", old_style("yolov8", "n"), nc=2,
                            names={0: "cat", 1: "dog"}, version="8.3.40")
    return path, _reference(path)


@pytest.mark.parametrize("target", ["yolov8n", "yolofuse_mid_schema"])
def test_an_ultralytics_83_checkpoint_with_old_scale_keys_and_other_class_names(yolov8n_83, target):
    path, src = yolov8n_83
    model = (build_model("yolov8n", "mid", nc=2, ir_channels=1, names=NAMES) if target == "yolov8n" else
             build_model(str(ASSETS / f"{target}.yaml"), nc=2, ir_channels=1, scale="n", names=NAMES))
    report = apply_pretrained(model, path)
    lines = report.lines()
    assert "Ultralytics 8.3.40 checkpoint (yolov8 scale n (from depth_multiple 0.33, width_multiple 0.25), 2 " \
           "class(es), fp16 -> fp32)" in lines[0]
    assert not any("another architecture" in ln for ln in lines) and report.difference is None
    warning = [ln for ln in lines if "class names differ" in ln]
    assert warning == ["  WARNING class names differ (id 0: 'cat' in the file, 'person' here; id 1: 'dog' in the file, "
                       "'car' here): the class layers are loaded all the same (the class counts agree), so each id "
                       "starts as the file's class of that id"]
    assert report.summary()["class_names_differ"] == [{"id": 0, "file": "cat", "here": "person"},
                                                      {"id": 1, "file": "dog", "here": "car"}]
    head = len(model.model) - 1
    sd = model.state_dict()
    for k in range(3):  # the class convs are the file's (same count)
        assert torch.equal(sd[f"model.{head}.cv3.{k}.2.weight"], src[f"model.22.cv3.{k}.2.weight"])
    if target == "yolov8n":
        assert report.share == 1.0 and not report.reinit
    else:
        assert report.stream_share == 1.0
    # no warning where the names agree, where the model has none (Ultralytics' default {0: '0', ...}), or where
    # the counts differ (the class layers are re-initialised: the report says so)
    for names in ({0: "cat", 1: "dog"}, {0: "0", 1: "1"}):
        model.names = names
        assert not map_pretrained(model, read_source(path), write=False).names_differ
    model.names = NAMES
    fewer = map_pretrained(model, dataclasses.replace(read_source(path), nc=1, names={0: "cat"}), write=False)
    assert not fewer.names_differ and fewer.reinit
    assert any("re-initialised (class-dependent; 2 class(es) here, 1 in the file)" in ln for ln in fewer.lines())
    assert not any("class names differ" in ln for ln in fewer.lines())


@pytest.mark.parametrize(("d", "said"), [
    (lambda: old_style("yolov8", "s"), "yolov8 scale s (from depth_multiple 0.33, width_multiple 0.5)"),
    (lambda: old_style("yolo11", "s"), "yolo11 scale s (from depth_multiple 0.5, width_multiple 0.5)"),
    # uncapped [1.0, 1.0] is not scale l ([1.0, 1.0, 512]): its P5 layers are 1024 wide
    (lambda: old_style("yolov8", "l"), "yolov8 at scale [1.0, 1.0, 1024] [depth, width, max_channels], none of "
                                       "yolov8's scales (from depth_multiple 1.0, width_multiple 1.0)"),
    (lambda: family_yaml("yolo26", "x"), "yolo26 scale x"),
    (lambda: {**model_dict("yolo12", "n"), "yaml_file": "yolo12n.yaml"},
     "yolo12n.yaml (not a yolov8/yolo11/yolo26 model), scale n"),
])
def test_identify_names_family_and_scale_old_keys_included(d, said):
    assert identify(d()) == said


def yaml_run_weights(tmp_path: Path, asset: str, nc: int = 2):
    """The weights file of a run of a model YAML (random weights): the model, its state dict (a copy), the path."""
    from yolofuse_scale.weights import plain_meta, write_weights

    model = build_model(str(ASSETS / f"{asset}.yaml"), nc=nc, ir_channels=1, scale="t")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    path = tmp_path / "last.pt"
    write_weights(path, model.state_dict(), plain_meta({"model_yaml": model.yaml, "rgb_channels": 3, "ir_channels": 1,
                                                        "names": {i: f"c{i}" for i in range(nc)}, "imgsz": 64}))
    return model, copy.deepcopy(model.state_dict()), path


def test_a_yaml_runs_weights_start_the_same_yaml(tmp_path):
    """A new run from <run>/weights/last.pt of a YAML model (what --resume's refusals advise): tensor by name."""
    same, src, path = yaml_run_weights(tmp_path, "rgbt_midfusion-P3_schema", nc=3)
    with torch.no_grad():  # the same YAML, other weights
        for t in same.state_dict().values():
            t.zero_()
    report = apply_pretrained(same, path)
    assert all(torch.equal(v, src[k]) for k, v in same.state_dict().items()) and report.share == 1.0
    assert report.counts["ir"]["loaded"] == sum(len(_layer(src, j)) for j in range(10, 15))
    fewer = build_model(str(ASSETS / "rgbt_midfusion-P3_schema.yaml"), nc=1, ir_channels=1, scale="t")
    before = copy.deepcopy(fewer.state_dict())
    report = apply_pretrained(fewer, path)
    sd = fewer.state_dict()
    for k, v in sd.items():  # the class convs (and those sized by the class count) keep their own init
        reinit = re.match(r"model\.35\.cv3\.\d\.2\.", k) or v.shape != src[k].shape
        assert torch.equal(v, before[k] if reinit else src[k]), k
    assert report.reinit and all(k.startswith("model.35.cv3.") for k in report.reinit)
