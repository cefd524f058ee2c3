"""Oriented boxes, the model side (issue 26): ``--task obb`` builds every fusion of every family from Ultralytics'
``-obb`` YAMLs with its ``OBB``/``OBB26`` head, trains with its criterion, validates as its ``OBBValidator``
(rotated NMS, probabilistic-IoU matching), predicts, draws and writes labels as its OBB results, exports to ONNX and
starts from its ``-obb`` checkpoints (and from detection ones for the backbone).

Batches are the contract's (issue26.md): ``bboxes`` (N, 5) = cx, cy, w, h normalised and the angle in radians.
Ultralytics is the reference wherever it has the function: its ``OBBModel`` and its loss, its validator's
matching, its predictor's mapping back and its ``Results.save_txt``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ultralytics.utils.loss import E2ELoss, v8OBBLoss

from yolofuse_scale.engine.boxes import ROTATED
from yolofuse_scale.engine.task import TASKS, DetectionTask, OBBTask, make_task
from yolofuse_scale.model import FUSIONS, build_model, fusion_yaml
from yolofuse_scale.model.variants import FAMILIES, TASK_HEADS


def obb_batch(ch: int, n: int = 2, size: int = 64, seed: int = 0) -> dict:
    """A contract batch: uint8 images, three oriented boxes over two images (angles in radians)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "img": (torch.rand(n, ch, size, size, generator=g) * 255).to(torch.uint8),
        "batch_idx": torch.tensor([0.0, 1.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0], [0.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.5, 0.2, 0.4], [0.3, 0.3, 0.3, 0.15, 1.2], [0.7, 0.6, 0.4, 0.2, -0.3]]),
    }


# ------------------------------------------------------------------------------------------------ the models
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_of_every_family_derives_with_the_obb_head(family, fusion):
    """Derived from the family's -obb YAML: the same rows as the detection variant but the head, the family's
    OBB head reading the same maps (late: all six), with one angle per anchor."""
    obb, det = fusion_yaml(fusion, 2, "s", family, "obb"), fusion_yaml(fusion, 2, "s", family)
    head, det_head = obb["backbone"][-1], det["backbone"][-1]
    assert head[2] == ("OBB26" if family == "yolo26" else "OBB") and head[2] in TASK_HEADS["obb"]
    assert head[0] == det_head[0] and head[3] == ["nc", 1]
    assert obb["backbone"][:-1] == det["backbone"][:-1]
    assert {k: v for k, v in obb.items() if k != "backbone"} == {k: v for k, v in det.items() if k != "backbone"}


@pytest.mark.parametrize(("name", "fusion", "criterion"), [
    ("yolo11t-obb", "late", v8OBBLoss), ("yolo26t-obb", "dea", E2ELoss)])
def test_obb_model_trains_with_ultralytics_obb_criterion(name, fusion, criterion):
    """One step on a contract batch: the OBB task is chosen by the head, its criterion is Ultralytics' (YOLO26:
    E2ELoss over v8OBBLoss), every parameter gets a gradient (the angle branch included), the eval output has
    the angle row. (YOLOv8's OBB step: test_rgb_obb_variant_is_ultralytics_obb_model_and_loss.)"""
    model = build_model(name, fusion, nc=2, ir_channels=1)
    assert model.task == "obb" and type(model.model[-1]).__name__ in TASK_HEADS["obb"]
    task = make_task(model)
    assert type(task) is OBBTask and isinstance(task.criterion, criterion)
    if criterion is E2ELoss:
        assert isinstance(task.criterion.one2one, v8OBBLoss) and task.loss_names == ("box", "cls", "l1", "angle")
    else:
        assert task.loss_names == ("box", "cls", "dfl", "angle")
    loss, items = task.step(model, obb_batch(4))
    assert loss.ndim == 0 and torch.isfinite(loss) and items.shape == (4,) and items[3] > 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "cv4." in n)  # the angle branch learns
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(2, 4, 64, 64))[0]
    levels = 2 if fusion == "late" else 1
    assert y.shape == (2, 4 + 2 + 1, sum((64 // s) ** 2 for s in (8, 16, 32)) * levels)


@pytest.mark.parametrize("family", ["yolov8", "yolo26"])
def test_rgb_obb_variant_is_ultralytics_obb_model_and_loss(family):
    """The single-stream OBB baseline is Ultralytics' OBBModel of the same -obb YAML, parameter for parameter, and
    our task's loss items on a batch are its own ``model.loss`` on the same weights and RGB images."""
    from ultralytics.nn.tasks import OBBModel

    from yolofuse_scale.model.variants import family_yaml

    ours = build_model(f"{family}t-obb", "rgb", nc=2, ir_channels=1)
    theirs = OBBModel(family_yaml(family, "t", "obb"), ch=3, nc=2, verbose=False)
    assert [type(m).__name__ for m in ours.model[1:]] == [type(m).__name__ for m in theirs.model]
    sd = {f"model.{int(k.split('.')[1]) - 1}.{k.split('.', 2)[2]}": v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(sd)
    theirs.args = ours.args
    batch = obb_batch(4)
    _, items = make_task(ours, channels_last=False).step(ours, batch)
    _, ref = theirs.loss({**batch, "img": batch["img"][:, :3].float() / 255})
    ref = torch.stack(list(ref.values())) if isinstance(ref, dict) else ref
    torch.testing.assert_close(items, ref.detach(), rtol=1e-5, atol=1e-6)


def test_the_task_is_chosen_once_by_the_models_head():
    """TASKS is the one seam: each task's class, its boxes; a detection task refuses an OBB model (its targets have
    another form) and the registries agree: model heads, weights, config choices."""
    from yolofuse_scale.config.sections import ModelConfig, allowed, type_hints
    from yolofuse_scale.weights import TASKS as WEIGHT_TASKS

    assert set(TASKS) == set(TASK_HEADS) == set(WEIGHT_TASKS) == set(allowed(type_hints(ModelConfig)["task"])) - {None}
    assert TASKS["obb"].boxes is ROTATED and TASKS["detect"].boxes is not ROTATED
    model = build_model("yolov8t", "rgb", nc=2, ir_channels=1, task="obb")
    with pytest.raises(ValueError, match="DetectionTask trains --task detect; this model's head is a --task obb"):
        DetectionTask(model)
    assert type(make_task(build_model("yolov8t", "rgb", nc=2, ir_channels=1))) is DetectionTask


def test_task_follows_the_model_name_then_the_dataset():
    """``yolo11n-obb`` is an OBB model (as Ultralytics names it); without a name's word, --task is the dataset's
    (resolved when data.yaml is read: None until then); a name and --task that disagree are refused."""
    from yolofuse_scale.config.sections import ModelConfig
    from yolofuse_scale.model.detector import resolve_task

    assert ModelConfig(model="yolo11n-obb").task == "obb" and ModelConfig().task is None
    assert ModelConfig(model="yolo11n", task="obb").task == "obb"
    assert resolve_task("yolo26s-obb", None) == "obb" and resolve_task("yolo26s", None) == "detect"
    with pytest.raises(ValueError, match="--model yolo26s-obb is an OBB model, --task detect asks for another"):
        resolve_task("yolo26s-obb", "detect")


# ----------------------------------------------------------------------------------------------- evaluation
class FixedOutput(torch.nn.Module):
    """An oriented-box model whose decoded output is given (test input for ``evaluate``): per image, rows of
    (cx, cy, w, h in pixels, class, score, angle), padded with empty anchors."""

    task, end2end = "obb", False

    def __init__(self, rows: list[list[tuple]], nc: int = 2, anchors: int = 16):
        super().__init__()
        out = torch.zeros(len(rows), 4 + nc + 1, anchors)
        for i, image in enumerate(rows):
            for j, (cx, cy, w, h, c, score, angle) in enumerate(image):
                out[i, :4, j] = torch.tensor([cx, cy, w, h])
                out[i, 4 + int(c), j] = score
                out[i, -1, j] = angle
        self.register_buffer("out", out)

    def forward(self, x):
        return self.out[: len(x)], None


def _val_batch(boxes: list[list[tuple]], size: int = 64) -> dict:
    """A validation batch of the contract: boxes per image as (cx, cy, w, h in pixels, class, angle)."""
    rows = [(i, *b) for i, image in enumerate(boxes) for b in image]
    return {"img": torch.zeros(len(boxes), 4, size, size, dtype=torch.uint8),
            "batch_idx": torch.tensor([float(r[0]) for r in rows]),
            "cls": torch.tensor([[float(r[5])] for r in rows]),
            "bboxes": torch.tensor([[r[1] / size, r[2] / size, r[3] / size, r[4] / size, r[6]] for r in rows]),
            "index": torch.arange(len(boxes)), "im_file": [f"im{i}.png" for i in range(len(boxes))],
            "ratio_pad": [((1.0, 1.0), (0.0, 0.0))] * len(boxes)}


GT = [[(20.0, 24.0, 30.0, 8.0, 0, 0.5), (44.0, 40.0, 24.0, 6.0, 1, -0.9)], [(32.0, 32.0, 40.0, 10.0, 0, 1.1)]]


@pytest.mark.parametrize(("change", "perfect"), [
    (lambda cx, cy, w, h, a: (cx, cy, w, h, a), True),  # the boxes themselves
    (lambda cx, cy, w, h, a: (cx, cy, h, w, a + math.pi / 2), True),  # the same rectangles, other parameters
    (lambda cx, cy, w, h, a: (cx, cy, w, h, a + math.pi / 4), False),  # turned by 45 degrees
])
def test_validation_matches_oriented_boxes_by_rotated_iou(change, perfect):
    """evaluate() on an OBB model: rotated NMS, matching by probabilistic IoU of (cx, cy, w, h, angle) as
    OBBValidator; a rectangle written as (h, w, angle + 90 degrees) is the same box, one turned by 45 degrees
    (elongated, 3-5:1) is no match at IoU 0.5, though its centre and size are right."""
    from accelerate import Accelerator

    from yolofuse_scale.engine.evaluate import evaluate

    preds = [[(*change(cx, cy, w, h, a), c, 0.9) for cx, cy, w, h, c, a in image] for image in GT]
    preds = [[(cx, cy, w, h, c, s, a) for cx, cy, w, h, a, c, s in image] for image in preds]
    m = evaluate(FixedOutput(preds), [_val_batch(GT)], Accelerator(cpu=True), {0: "a", 1: "b"},
                 batch_to_device=lambda b: b)
    assert m["instances"] == 3 and m["images"] == 2
    if perfect:
        # 0.995: Ultralytics' interpolated AP of a perfect set, at every IoU threshold
        assert m["mAP50"] == pytest.approx(0.995) and m["mAP50-95"] == pytest.approx(0.995)
        assert m["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]
    else:
        assert m["mAP50"] == 0.0 and m["confusion_matrix"][-1][:2] == [2, 1]  # every box missed


def test_per_image_statistics_are_obb_validators():
    """image_stats' true positives at IoU 0.5:0.95 are OBBValidator._process_batch's (its probiou and matching) on
    random oriented boxes."""
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.models.yolo.obb.val import OBBValidator

    from yolofuse_scale.engine.evaluate import IOU_THRESHOLDS, image_stats

    g = torch.Generator().manual_seed(0)
    gt = torch.cat([torch.rand(12, 2, generator=g) * 60, torch.rand(12, 2, generator=g) * 20 + 4,
                    torch.rand(12, 1, generator=g) * 3 - 1], 1)
    gt_cls = torch.randint(0, 3, (12,), generator=g).float()
    noise = torch.randn(40, 5, generator=g) * torch.tensor([2, 2, 2, 2, 0.2])
    pred = gt[torch.randint(0, 12, (40,), generator=g)] + noise
    det = torch.cat([pred[:, :4], torch.rand(40, 1, generator=g), torch.randint(0, 3, (40, 1), generator=g).float(),
                     pred[:, 4:]], 1)
    holder = SimpleNamespace(niou=10, iouv=IOU_THRESHOLDS)
    holder.match_predictions = lambda *a: BaseValidator.match_predictions(holder, *a)
    ref = OBBValidator._process_batch(holder, {"cls": det[:, 5], "bboxes": ROTATED.boxes(det)},
                                      {"cls": gt_cls, "bboxes": gt})["tp"]
    ours = image_stats(det, gt_cls, gt, ROTATED)["tp"]
    assert ref.any() and not ref.all() and np.array_equal(ours, ref)


# ------------------------------------------------------------------------------------------ predict, drawing
@pytest.fixture(scope="module")
def obb_weights(tmp_path_factory) -> Path:
    """A freshly built yolov8t-obb mid model (class bias raised: detections to compare) as a weights file."""
    from yolofuse_scale.weights import write_weights

    torch.manual_seed(0)
    model = build_model("yolov8t-obb", "mid", nc=2, ir_channels=1)
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias.zero_()
    path = tmp_path_factory.mktemp("obbw") / "obb.pt"
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3, "ir_channels": 1,
                                             "names": {0: "car", 1: "truck"}, "imgsz": 64, "task": "obb"})
    return path


def test_oriented_detections_are_ultralytics_obb_results(obb_weights, tmp_path):
    """On a non-square pair the API's oriented detections are what Ultralytics' OBB predictor makes of the same
    rotated NMS output (its construct_result maps them back), and --save-txt writes its OBB format: xywhr,
    corners, enclosing boxes and the label lines (``cls x1 y1 ... x4 y4 conf``) all equal."""
    from ultralytics.models.yolo.obb.predict import OBBPredictor

    from yolofuse_scale import FusionDetector
    from yolofuse_scale.engine.evaluate import detect

    det = FusionDetector.load(obb_weights, device="cpu", conf=0.3, max_det=20)
    rng = np.random.default_rng(0)
    # 40 x 80 letterboxes to exactly 32 x 64 (no rounding): the letterbox's ratio_pad and Ultralytics' gains from
    # the shapes agree
    rgb, ir = rng.integers(0, 256, (40, 80, 3), np.uint8), rng.integers(0, 256, (40, 80), np.uint8)
    ours = det(rgb, ir)
    assert ours.oriented and 3 <= len(ours) <= 20
    x, _, _ = det.preprocess(rgb, ir)
    raw = detect(det.model, x, 0.3, 0.7, 20, multi_label=False)[0]
    holder = SimpleNamespace(model=SimpleNamespace(names=det.names))
    ref = OBBPredictor.construct_result(holder, raw.clone(), x, rgb, "pair.png").obb
    np.testing.assert_allclose(ours.xywhr, ref.xywhr.numpy(), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(ours.corners, ref.xyxyxyxy.numpy(), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(ours.boxes, ref.xyxy.numpy(), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(ours.classes, ref.cls.numpy().astype(np.int64))
    from ultralytics.engine.results import Results

    Results(rgb, path="pair.png", names=det.names, obb=ref.data).save_txt(tmp_path / "theirs.txt", save_conf=True)
    assert ours.save_txt(tmp_path / "ours.txt", save_conf=True).read_text() == (tmp_path / "theirs.txt").read_text()
    first = ours.to_list()[0]
    assert len(first["xywhr"]) == 5 and len(first["corners"]) == 4 and len(ours.txt_lines()[0].split()) == 9


def test_oriented_boxes_are_drawn_rotated():
    """plot() draws an oriented box as its outline: the rotated corners are coloured, the corners of the box
    enclosing it (what an axis-aligned drawing would have drawn) are not."""
    from yolofuse_scale.inference import Detections

    xywhr = np.array([[50.0, 50.0, 60.0, 20.0, math.pi / 4]], np.float32)
    d = Detections(boxes=np.zeros((1, 4), np.float32), scores=np.array([0.9], np.float32),
                   classes=np.array([0]), names={0: "car"}, shape=(100, 100), rgb=np.zeros((100, 100, 3), np.uint8),
                   ir=np.zeros((100, 100), np.uint8), xywhr=xywhr)
    img = d.plot(show="rgb", labels=False, line_width=1)
    for x, y in np.round(d.corners[0]).astype(int):
        assert img[y - 1: y + 2, x - 1: x + 2].any(), (x, y)
    lo, hi = np.floor(d.corners[0].min(0)).astype(int), np.ceil(d.corners[0].max(0)).astype(int)
    assert not img[lo[1], lo[0]].any() and not img[hi[1] - 1, hi[0] - 1].any()


def test_obb_onnx_export_matches_pytorch_with_the_angle_row(obb_weights, tmp_path):
    """The OBB head exports (torchscript exporter, in process): output (B, 4 + nc + 1, N), checked with
    onnxruntime, the task in the metadata."""
    import onnx

    from yolofuse_scale.export import check_onnx, export_onnx

    path, model, imgsz = export_onnx(obb_weights, tmp_path / "obb.onnx", exporter="torchscript")
    assert check_onnx(path, model, imgsz) <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["task"] == "obb" and "(B, 4 + nc + 1, N)" in meta["output"] and "angle" in meta["output"]


# ------------------------------------------------------------------------------------------------ pretrained
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from tests.test_pretrained import write_ultralytics_checkpoint

    folder = tmp_path_factory.mktemp("ul_obb")
    return {task: write_ultralytics_checkpoint(folder / f"yolo11t{'-obb' if task == 'obb' else ''}.pt", task=task)
            for task in ("obb", "detect")}


def _reference(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # a trusted file written above
    return {k: v.float() for k, v in ckpt["model"].state_dict().items()}


def test_an_obb_checkpoint_starts_every_stream_and_the_angle_branch(checkpoints):
    """yolo11t-obb.pt into late fusion: both branches from its layers, and the six-level OBB head's levels (the
    angle branch cv4 too) from its three levels, per branch; everything placed."""
    from yolofuse_scale.model.pretrained import apply_pretrained

    src = _reference(checkpoints["obb"])
    model = build_model("yolo11t-obb", "late", nc=80, ir_channels=3)
    report = apply_pretrained(model, checkpoints["obb"])
    assert report.placed == report.countable == len(src) and report.tasks is None and not report.skipped
    sd, head = model.state_dict(), len(model.model) - 1
    for k in range(6):  # levels 0-2: RGB branch, 3-5: IR branch, each from level k % 3
        for name in ("cv4.{}.2.weight", "cv2.{}.0.conv.weight", "cv3.{}.2.bias"):
            assert torch.equal(sd[f"model.{head}.{name.format(k)}"], src[f"model.23.{name.format(k % 3)}"])
    assert "yolo11-obb scale t" in report.lines()[0] and "-> yolo11t-obb fusion=late" in report.lines()[0]


@pytest.mark.parametrize(("source", "name"), [("detect", "yolo11t-obb"), ("obb", "yolo11t")])
def test_a_checkpoint_of_the_other_task_starts_the_backbone_and_not_the_head(checkpoints, source, name):
    """yolo11t.pt for --task obb (and an -obb one for detection): backbone and neck loaded, the head keeps the
    model's own initialisation (it predicts another kind of box), said in the report; the file's head tensors are
    not counted against it."""
    from yolofuse_scale.model.pretrained import apply_pretrained

    src = _reference(checkpoints[source])
    model = build_model(name, "mid", nc=80, ir_channels=1)
    head = len(model.model) - 1
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(f"model.{head}.")}
    report = apply_pretrained(model, checkpoints[source])
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in before.items())  # the head untouched
    assert torch.equal(sd["model.3.conv.weight"], src["model.0.conv.weight"])  # the RGB stem loaded
    assert torch.equal(sd[f"model.{head - 1}.cv2.conv.weight"], src["model.22.cv2.conv.weight"])  # the neck's last
    assert report.tasks == (source, "detect" if source == "obb" else "obb") and report.difference is None
    assert report.placed == report.countable == len([k for k in src if not k.startswith("model.23.")])
    assert len(report.other_task) == len(before) and report.summary()["head"].startswith("re-initialised")
    said = f"  head re-initialised (the file is a --task {source} model"
    assert any(line.startswith(said) for line in report.lines())


def test_obb_weights_of_a_run_start_another_obb_variant(tmp_path):
    """Our own weights file of an OBB variant is recognised as one (its -obb family), and starts another fusion."""
    from yolofuse_scale.model.pretrained import apply_pretrained
    from yolofuse_scale.weights import write_weights

    torch.manual_seed(1)
    rgb = build_model("yolo26t-obb", "rgb", nc=2, ir_channels=1)
    path = tmp_path / "last.pt"
    write_weights(path, rgb.state_dict(), {"model_yaml": rgb.yaml, "rgb_channels": 3, "ir_channels": 1,
                                           "names": {0: "a", 1: "b"}, "task": "obb"})
    mid = build_model("yolo26t-obb", "mid", nc=2, ir_channels=1)
    report = apply_pretrained(mid, path)
    assert "yolofuse-scale weights (yolo26t-obb fusion=rgb" in report.what and report.tasks is None
    assert report.placed == report.countable and report.share == 1.0
    angle = "one2one_cv4.2.2.weight"  # the one-to-one branch's angle conv at P5
    assert torch.equal(mid.state_dict()[f"model.{len(mid.model) - 1}.{angle}"],
                       rgb.state_dict()[f"model.{len(rgb.model) - 1}.{angle}"])


# --------------------------------------------------------------------------------- strategies, resume, val
OBB_STEPS = ["--max-steps", "5", "--no-val", "--lr", "0.002"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", pytest.param("zero3", marks=pytest.mark.nightly)])
def test_obb_trains_under_a_sharded_strategy_as_under_ddp(train_run, tiny_obb_data, strategy):
    """The strategies that look at the model's modules: FSDP2 shards the OBB head as its own unit (model/units.py),
    ZeRO-3 partitions every parameter behind module hooks (the angle branch included). Both train the OBB task as
    DDP does, within float rounding (test_strategies.py's bounds). ZeRO-1/2 partition the flat gradients and
    optimizer state whatever the modules are: the detection matrix covers them."""
    from tests.test_strategies import _params, relative_difference

    ddp = train_run("torchrun", 2, 1, *OBB_STEPS, "--data", str(tiny_obb_data))
    run = train_run("torchrun", 2, 1, *OBB_STEPS, "--data", str(tiny_obb_data), "--strategy", strategy)
    assert "task=obb" in run.output and len(run.log) == len(ddp.log) == 5
    assert all({"box", "cls", "dfl", "angle"} <= set(r) for r in run.log) and all(r["angle"] > 0 for r in run.log)
    for a, b in zip(ddp.log, run.log):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a, b)
    assert relative_difference(_params(ddp), _params(run)) <= 1e-5


@pytest.mark.slow
def test_obb_run_validates_identically_at_one_and_two_processes(train_run, tiny_obb_data):
    """A DDP run on oriented boxes learns them (mAP50 well above an untrained model's 0), and `val` of its
    last.pt gives, with 1 and with 2 processes, exactly the metrics the run reported: the rotated NMS and
    matching are per image, gathered in dataset order."""
    from tests.helpers import launch

    # From scratch it took 12 epochs (BatchNorm's running statistics, momentum 0.03, need ~100 steps to leave their
    # initial values; at 6 epochs the eval-mode model still scored 0). Started from the session's detection run
    # (test_ddp.py; --pretrained places all but the head), 3 epochs train the OBB head to mAP50 0.77 here.
    detect = train_run("torchrun", 2, 1).out / "weights" / "last.pt"
    run = train_run("torchrun", 2, 1, "--data", str(tiny_obb_data), "--epochs", "3", "--pretrained", str(detect))
    reported = json.loads((run.out / "metrics.json").read_text())["metrics"]
    assert reported["mAP50"] > 0.3, reported
    for nproc in (1, 2):
        out = run.out / f"val_{nproc}"
        args = ["-m", "yolofuse_scale", "val", "--weights", str(run.out / "weights" / "last.pt"), "--data",
                str(tiny_obb_data), "--batch-size", "8", "--workers", "0", "--no-plots", "--out", str(out)]
        launch("python" if nproc == 1 else "torchrun", nproc, args, out)
        assert json.loads((out / "metrics.json").read_text()) == reported, nproc
