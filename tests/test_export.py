"""``yolofuse-scale export --format onnx``: the graph runs in onnxruntime and matches PyTorch.

Weights come from a freshly built model written with ``write_weights`` (numerical equality does not
need a trained model, and building one costs a second instead of a training run). Needs the ``onnx``
extra, which ``make install`` installs: a missing package fails here rather than skipping silently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import launch
from yolofuse_scale.model.align import FlowAlign


def _weights(tmp_path, fusion: str, ir_channels: int):
    from yolofuse_scale.engine.checkpoint import write_weights
    from yolofuse_scale.model import build_model

    torch.manual_seed(0)
    model = build_model("yolov8t", fusion, nc=2, ir_channels=ir_channels)
    # Non-trivial BatchNorm statistics, so that fusing Conv+BN for export is really exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
        if isinstance(m, FlowAlign):  # offsets that are not zero: the exported warp really resamples
            with torch.no_grad():
                m.offset.weight.normal_(0, 0.05)
    path = tmp_path / f"{fusion}.pt"
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3,
                                             "ir_channels": ir_channels, "names": {0: "person", 1: "car"},
                                             "imgsz": 96})
    return path, model.eval()


@pytest.mark.parametrize(("exporter", "fusion", "ir_channels"), [
    pytest.param("dynamo", "mid", 1, marks=pytest.mark.slow),  # the dynamo exporter traces for ~8 s
    ("torchscript", "late", 3),
    ("torchscript", "mid-align", 1),  # FlowAlign's grid_sample: ONNX GridSample (opset 16+)
])
def test_onnx_export_matches_pytorch(tmp_path, exporter, fusion, ir_channels):
    import onnx
    import onnxruntime as ort

    weights, model = _weights(tmp_path, fusion, ir_channels)
    out = tmp_path / "model.onnx"
    run = launch("python", 1, ["-m", "yolofuse_scale", "export-onnx", "--weights", str(weights), "--format", "onnx",
                               "--out", str(out), "--exporter", exporter], tmp_path)
    assert "onnxruntime vs PyTorch: max relative difference" in run.proc.stdout and "(ok," in run.proc.stdout
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["names"]) == {"0": "person", "1": "car"} and meta["imgsz"] == "96"
    assert meta["ir_channels"] == str(ir_channels) and "RGB channels first then IR" in meta["input"]
    # Independently of the CLI's own check: the UNFUSED model that was saved, a batch size other than
    # the export example's (the batch axis is dynamic), real-looking uint8-derived input.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.shape[1:] == [3 + ir_channels, 96, 96]
    x = torch.randint(0, 256, (3, 3 + ir_channels, 96, 96), generator=torch.Generator().manual_seed(1)) / 255.0
    with torch.no_grad():
        ref = model(x)[0].numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    anchors = sum((96 // s) ** 2 for s in (8, 16, 32)) * (2 if fusion == "late" else 1)  # late: two branches
    assert got.shape == ref.shape == (3, 4 + 2, anchors)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_export_refuses_bad_input(tmp_path):
    weights, _ = _weights(tmp_path, "early", 1)
    run = launch("python", 1, ["-m", "yolofuse_scale", "export-onnx", "--weights", str(weights), "--imgsz", "100"],
                 tmp_path, check=False)
    assert run.proc.returncode != 0 and "--imgsz 100 is not a multiple of the model stride 32" in run.output
    run = launch("python", 1, ["-m", "yolofuse_scale", "export-onnx", "--weights", str(tmp_path / "none.pt")],
                 tmp_path, check=False)
    assert run.proc.returncode != 0 and "none.pt: weights file not found" in run.output


@pytest.mark.slow  # two CLI processes, ~6 s
def test_old_command_names_still_work():
    """``export`` and ``export-weights`` (the names before 0.2) are aliases of ``export-onnx`` and
    ``checkpoint-to-weights``: scripts written for them keep working."""
    import subprocess
    import sys

    from tests.conftest import ENV, ROOT

    for old, new in (("export", "export-onnx"), ("export-weights", "checkpoint-to-weights")):
        r = subprocess.run([sys.executable, "-m", "yolofuse_scale", old, "--help"], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: yolofuse-scale" in r.stdout, r.stderr
        listing = subprocess.run([sys.executable, "-m", "yolofuse_scale", "--help"], cwd=ROOT, env=ENV,
                                 capture_output=True, text=True, timeout=60).stdout
        assert f"{new} ({old})" in listing, listing
