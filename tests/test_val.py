"""``yolofuse-scale val`` outputs: the per-class table, one JSON line, metrics.json, PNG plots, no downloads."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from tests.helpers import launch


def test_val_writes_table_json_and_plots(train_run, tiny_data, tmp_path):
    weights = train_run("torchrun", 2, 1).out / "weights" / "last.pt"
    out = tmp_path / "val"
    run = launch("python", 1, ["-m", "yolofuse_scale", "val", "--weights", str(weights), "--data", str(tiny_data),
                               "--batch-size", "8", "--workers", "0", "--out", str(out)], out)
    lines = run.proc.stdout.splitlines()
    metrics = json.loads([ln for ln in lines if ln.startswith("{")][-1])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["class", "images"])
    assert [ln.split()[0] for ln in lines[header + 1: header + 4]] == ["all", "person", "car"]
    for name in ("BoxPR_curve.png", "BoxF1_curve.png", "confusion_matrix.png", "confusion_matrix_normalized.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
    # Confusion matrix: columns are true classes; every ground-truth box lands in its column exactly once
    # (matched to some class, or missed = background row), so column sums are the instance counts.
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (3, 3)
    per_class = metrics["per_class"]
    assert cm[:, 0].sum() == per_class["person"]["instances"] and cm[:, 1].sum() == per_class["car"]["instances"]
    assert per_class["person"]["instances"] + per_class["car"]["instances"] == metrics["instances"]
    assert cm[0, 0] + cm[1, 1] > 0, "a trained model gets some boxes right"


def test_plotting_never_reaches_for_the_network(monkeypatch, tmp_path):
    """Ultralytics' check_font downloads Arial (after a network probe) when it is not installed. Ours is
    local-only: a missing font gives None, the Annotator falls back to PIL's built-in font, no socket opens."""
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network disabled in this test")

    def no_dns(*a, **k):
        attempts.append(a)
        raise OSError("DNS disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    # Our package first (as every entry point does): it sets YOLO_OFFLINE before Ultralytics' import-time
    # DNS probe, and importing evaluate installs the local-only font lookup.
    import importlib

    import yolofuse_scale.engine.evaluate  # noqa: F401

    checks = importlib.import_module("ultralytics.utils.checks")
    plotting = importlib.import_module("ultralytics.utils.plotting")

    assert checks.check_font("NoSuchFont-yolofuse.ttf") is None
    ann = plotting.Annotator(np.zeros((64, 64, 3), np.uint8), pil=True, font="NoSuchFont-yolofuse.ttf")
    ann.box_label([4, 4, 40, 40], "person 0.9")
    assert ann.result().any()
    assert attempts == []


@pytest.mark.parametrize("bad", ["missing", "junk"])
def test_val_bad_weights_are_named(tiny_data, tmp_path, bad):
    path = tmp_path / "w.pt"
    if bad == "junk":
        path.write_text("not weights")
    run = launch("python", 1, ["-m", "yolofuse_scale", "val", "--weights", str(path), "--data", str(tiny_data)],
                 tmp_path, check=False)
    assert run.proc.returncode != 0
    want = "w.pt: weights file not found" if bad == "missing" else "w.pt: not a yolofuse-scale weights file"
    assert want in run.output


def test_no_val_still_validates_the_final_epoch_and_best_is_a_validated_one(train_run):
    """--no-val: no validation until the last epoch, which is validated; best.pt is chosen among validated
    epochs only, so it is the final weights (before: the epoch-1 model, kept for ever, with no metrics)."""
    import torch

    run = train_run("python", 1, 1, "--no-val", "--epochs", "2", "--max-steps", "0")
    summary = json.loads((run.out / "metrics.json").read_text())
    assert summary["metrics"]["mAP50-95"] >= 0 and summary["validated"] == "final epoch only (--no-val)"
    assert run.output.count("val epoch") == 1 and "val epoch 2:" in run.output
    best = torch.load(run.out / "weights" / "best.pt", weights_only=True)
    last = torch.load(run.out / "weights" / "last.pt", weights_only=True)
    assert best["epoch"] == last["epoch"] == 2 and best["metrics"] == summary["metrics"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert summary["best_weights"] == str(run.out / "weights" / "best.pt")
    assert summary["best_fitness"] == summary["metrics"]["fitness"]


class _FixedDetector(torch.nn.Module):
    """A detector whose raw head output is given: Ultralytics' (B, 4 + nc, anchors) layout, xywh pixels
    then class scores. Everything after the head (NMS, matching, DetMetrics, the matrix) is the real code."""

    def __init__(self, boxes_xywh: list[list[float]], scores: list[list[float]]):
        super().__init__()
        self.register_buffer("raw", torch.cat([torch.tensor(boxes_xywh), torch.tensor(scores)], 1).T[None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.raw.expand(len(images), -1, -1)


def test_fitness_is_map50_95_and_the_matrix_counts_detections_above_the_val_conf():
    """Ultralytics 8.4: best.pt's fitness is mAP50-95 alone (DetMetrics.fitness; was 0.1 mAP50 + 0.9 mAP50-95),
    and the validator fills the confusion matrix with its own conf (0.001), not ConfusionMatrix's 0.25.
    One person box (10, 10)-(40, 40) of a 64 px image, one detection of it at IoU 0.87 and confidence 0.1."""
    from accelerate import Accelerator

    from yolofuse_scale.engine.evaluate import evaluate

    model = _FixedDetector([[25, 23, 30, 26], [5, 5, 4, 4]], [[0.1, 0.0], [0.0, 0.0]])
    batch = {"img": torch.zeros(1, 4, 64, 64, dtype=torch.uint8), "batch_idx": torch.zeros(1),
             "bboxes": torch.tensor([[25 / 64, 25 / 64, 30 / 64, 30 / 64]]), "cls": torch.zeros(1, 1),
             "index": torch.tensor([0]), "im_file": ["a.png"]}
    m = evaluate(model, [batch], Accelerator(cpu=True), {0: "person", 1: "car"})
    assert m["mAP50"] == pytest.approx(0.995, abs=0.01) and m["mAP50-95"] < 0.9 * m["mAP50"]
    assert m["fitness"] == m["mAP50-95"]
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 0], [0, 0, 0]], "the 0.1-confidence detection is a TP"


def test_validation_nms_runs_torchvisions_kernel():
    # Ultralytics' NMS picks torchvision's C++ kernel only if torchvision is already imported, else a Python loop
    # (25x slower on our validation, profiled): the first suppression must import it, and the training's modules
    # must not (~1.2 s of CPU per process that never validates, engine/boxes.py).
    import subprocess
    import sys

    from tests.helpers import ENV, ROOT

    code = ("import sys, torch, yolofuse_scale.engine.trainer, yolofuse_scale.engine.evaluate as ev\n"
            "before = 'torchvision' in sys.modules\n"
            "ev.suppress(torch.rand(1, 4 + 2, 30) * 50, 0.001, 0.7, 300, True)\n"
            "print(before, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False True", out.stderr[-2000:]
