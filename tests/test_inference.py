"""The Python API and ``yolofuse-scale predict`` on a really trained tiny model.

The trained run is the session's shared 2-process DDP run (also read by test_ddp.py), so this file
adds no training of its own when the whole suite runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.helpers import ENV, ROOT


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (n, 4) and (m, 4) xyxy boxes."""
    from ultralytics.utils.metrics import box_iou

    return box_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()


def _gt_xyxy(label_file, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.loadtxt(label_file, ndmin=2).reshape(-1, 5)
    xc, yc, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    return rows[:, 0].astype(int), np.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2], 1)


@pytest.fixture(scope="module")
def weights(train_run):
    return train_run("torchrun", 2, 1).out / "weights" / "last.pt"


def test_import_is_light():
    """`import yolofuse_scale` must not pull torch or Ultralytics (CLIs and --help stay fast, offline)."""
    code = "import sys, yolofuse_scale; print('torch' in sys.modules, 'ultralytics' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.stdout.split() == ["False", "False"], r.stderr


class _KnownOutput(torch.nn.Module):
    """A stand-in network whose raw output is known: one confident box per given letterboxed xywh box.

    The thing under test is the API around the network (reading, letterbox, NMS, mapping back), so
    the network is a fixture here; it also records the tensor it was given.
    """

    def __init__(self, xywh: np.ndarray, classes: np.ndarray, nc: int = 2):
        super().__init__()
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.ir_channels = 1
        self.xywh, self.classes, self.nc, self.seen = torch.from_numpy(xywh).float(), classes, nc, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        # 84 anchors, the rest scoring 0: a last dimension of 6 would read as an end-to-end model's output
        out = torch.zeros(x.shape[0], 4 + self.nc, 84)
        out[:, :4, : len(self.xywh)] = self.xywh.T
        out[:, 4 + torch.from_numpy(self.classes), torch.arange(len(self.xywh))] = 0.9
        return out


def test_api_maps_boxes_back_to_original_coordinates(tiny_data):
    """Boxes come back in the original 160x128 frame: a network that answers exactly the ground truth
    in letterboxed coordinates (r = 0.8, 13 px bands above and below, computed here by hand) gives the
    ground truth back within the letterbox's rounding (< 1 px), and the pad bands are where they belong."""
    from yolofuse_scale import FusionDetector

    rgb = sorted((tiny_data.parent / "images" / "val").glob("*.png"))[0]
    ir = tiny_data.parent / "imagesIR" / "val" / rgb.name
    h, w = cv2.imread(str(rgb)).shape[:2]
    assert (h, w) == (128, 160)  # letterboxed, not square: the scaling back is exercised
    cls, gt = _gt_xyxy(tiny_data.parent / "labels" / "val" / f"{rgb.stem}.txt", h, w)
    assert len(gt) >= 1
    r, top = 128 / 160, (128 - round(128 * 128 / 160)) / 2  # 0.8 and 13 px
    lb = gt * r + np.array([0, top, 0, top])
    xywh = np.stack([(lb[:, 0] + lb[:, 2]) / 2, (lb[:, 1] + lb[:, 3]) / 2, lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1]], 1)
    net = _KnownOutput(xywh, cls)
    res = FusionDetector(net, {0: "person", 1: "car"}, imgsz=128, device="cpu", conf=0.25, iou=0.99)(rgb, ir)
    assert res.shape == (h, w) and res.boxes.dtype == np.float32 and res.classes.dtype == np.int64
    assert net.seen.shape == (1, 4, 128, 128) and net.seen.dtype == torch.float32
    pad = 114 / 255
    assert torch.all(net.seen[0, :, :13] == pad) and torch.all(net.seen[0, :, -13:] == pad)
    assert not torch.all(net.seen[0, :, 13:-13] == pad)
    order = np.lexsort((res.boxes[:, 0], res.boxes[:, 1]))
    want = np.lexsort((gt[:, 0], gt[:, 1]))
    np.testing.assert_allclose(res.boxes[order], np.clip(gt[want], 0, [w, h, w, h]), atol=1.0)
    np.testing.assert_array_equal(res.classes[order], cls[want])
    np.testing.assert_allclose(res.scores, 0.9, atol=1e-6)


def test_api_on_trained_weights_returns_boxes_inside_the_frame(weights, tiny_data):
    """The really trained model through the API: types, shapes and boxes inside the original frame.
    How many boxes a short CPU training finds is a property of that CPU's numerics, not of the API."""
    from yolofuse_scale import FusionDetector

    det = FusionDetector.load(weights, device="cpu", conf=0.05)
    found = 0
    for rgb in sorted((tiny_data.parent / "images" / "val").glob("*.png"))[:6]:
        res = det(rgb, tiny_data.parent / "imagesIR" / "val" / rgb.name)
        h, w = cv2.imread(str(rgb)).shape[:2]
        assert res.shape == (h, w) and res.boxes.dtype == np.float32 and res.classes.dtype == np.int64
        assert len(res.scores) == len(res.classes) == len(res.boxes)
        found += len(res)
        if len(res):
            assert res.boxes[:, [0, 2]].min() >= 0 and res.boxes[:, [0, 2]].max() <= w
            assert res.boxes[:, [1, 3]].min() >= 0 and res.boxes[:, [1, 3]].max() <= h
            assert np.all(res.boxes[:, 2:] >= res.boxes[:, :2])
    assert found > 0


def test_api_arrays_paths_and_scale_agree(weights, tiny_data):
    """Arrays (RGB order, IR 1 or 3 channels) give what paths give; a 2x larger pair gives 2x boxes."""
    from yolofuse_scale import Detections, FusionDetector

    det = FusionDetector.load(weights, device="cpu", conf=0.1)
    rgb_path = sorted((tiny_data.parent / "images" / "val").glob("*.png"))[0]
    ir_path = tiny_data.parent / "imagesIR" / "val" / rgb_path.name
    from_paths = det(rgb_path, ir_path)
    assert isinstance(from_paths, Detections) and len(from_paths) > 0
    rgb = cv2.cvtColor(cv2.imread(str(rgb_path)), cv2.COLOR_BGR2RGB)
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    for ir_arr in (ir, ir[..., None], np.repeat(ir[..., None], 3, axis=2)):
        res = det(rgb, ir_arr)
        np.testing.assert_allclose(res.boxes, from_paths.boxes, atol=1e-4)
        np.testing.assert_array_equal(res.classes, from_paths.classes)
    # the same scene at twice the size letterboxes to (almost) the same input tensor, and the same
    # network answer maps to boxes twice as large (which boxes a trained model finds near its
    # confidence threshold is numerics, so the mapping is checked on a network with a known answer)
    rgb2, ir2 = cv2.resize(rgb, None, fx=2, fy=2), cv2.resize(ir, None, fx=2, fy=2)
    x1, x2 = det.preprocess(rgb, ir)[0], det.preprocess(rgb2, ir2)[0]
    assert x1.shape == x2.shape and (x1 - x2).abs().mean() < 0.02
    net = _KnownOutput(np.array([[40.0, 50.0, 20.0, 30.0], [90.0, 70.0, 16.0, 40.0]]), np.array([0, 1]))
    known = FusionDetector(net, det.names, imgsz=det.imgsz, device="cpu", conf=0.25, iou=0.99)
    small, big = known(rgb, ir), known(rgb2, ir2)
    np.testing.assert_allclose(big.boxes, small.boxes * 2, atol=0.5)
    # a BGR/RGB swap changes the input: proves arrays are read as RGB, not silently reinterpreted
    swapped = det.preprocess(rgb[..., ::-1].copy(), ir)[0]
    assert not torch.equal(swapped, det.preprocess(rgb, ir)[0])
    listed = from_paths.to_list()
    assert set(listed[0]) == {"box", "score", "class", "name"} and listed[0]["name"] in ("person", "car")


def test_api_bad_input_names_the_problem(weights, tmp_path):
    from yolofuse_scale import FusionDetector
    from yolofuse_scale.engine.checkpoint import CheckpointError

    with pytest.raises(FileNotFoundError, match="nope.pt: weights file not found"):
        FusionDetector.load(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a yolofuse-scale weights file"):
        FusionDetector.load(junk)
    det = FusionDetector.load(weights, device="cpu")
    with pytest.raises(FileNotFoundError, match="missing.png: IR image not found"):
        det(np.zeros((64, 80, 3), np.uint8), tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"RGB array: expected an HxW.*shape \(64, 80, 5\)"):
        det(np.zeros((64, 80, 5), np.uint8), np.zeros((64, 80), np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    with pytest.raises(Exception, match="broken.png: cannot be decoded"):
        det(broken, broken)


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolofuse_scale", "predict", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_predict_folders_and_single_pair(weights, tiny_data, tmp_path):
    from yolofuse_scale import FusionDetector

    root = tiny_data.parent
    rgb_dir, ir_dir = tmp_path / "visible", tmp_path / "infrared"
    rgb_dir.mkdir()
    ir_dir.mkdir()
    names = [p.name for p in sorted((root / "images" / "val").glob("*.png"))[:3]]
    for n in names:  # IR as .jpg: folders are matched by stem, not by the full name
        (rgb_dir / n).write_bytes((root / "images" / "val" / n).read_bytes())
        cv2.imwrite(str(ir_dir / n.replace(".png", ".jpg")), cv2.imread(str(root / "imagesIR" / "val" / n)))
    out = tmp_path / "pred"
    r = _predict("--weights", str(weights), "--rgb", str(rgb_dir), "--ir", str(ir_dir), "--out", str(out),
                 "--conf", "0.2", "--max-det", "5")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(x["rgb"]).name for x in lines] == names
    assert all(len(x["detections"]) <= 5 and x["width"] == 160 and x["height"] == 128 for x in lines)
    assert all(d["score"] >= 0.2 for x in lines for d in x["detections"])
    ir0 = ir_dir / names[0].replace(".png", ".jpg")
    api = FusionDetector.load(weights, device="cpu", conf=0.2, max_det=5)(rgb_dir / names[0], ir0)
    # the CLI is the API: the same detections; a subprocess computes with its own thread count, so
    # scores and boxes agree to float rounding (1e-4 of a score, 0.02 px), not to the last digit
    cli_dets, api_dets = lines[0]["detections"], api.to_list()
    assert [(d["class"], d["name"]) for d in cli_dets] == [(d["class"], d["name"]) for d in api_dets]
    for a, b in zip(cli_dets, api_dets):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["box"] == pytest.approx(b["box"], abs=0.02)
    drawn = cv2.imread(str(out / names[0].replace(".png", ".jpg")))
    assert drawn.shape == (128, 320, 3)  # RGB | IR side by side
    # single pair
    single = tmp_path / "one"
    r = _predict("--weights", str(weights), "--rgb", str(rgb_dir / names[0]), "--ir", str(ir0),
                 "--out", str(single), "--no-images")
    assert r.returncode == 0 and len((single / "predictions.jsonl").read_text().splitlines()) == 1
    assert not list(single.glob("*.jpg"))
    # an RGB image without its IR partner is named before anything runs
    (rgb_dir / "lonely.png").write_bytes((rgb_dir / names[0]).read_bytes())
    r = _predict("--weights", str(weights), "--rgb", str(rgb_dir), "--ir", str(ir_dir), "--out", str(out))
    assert r.returncode != 0 and "lonely.png" in r.stderr and "no IR partner" in r.stderr
