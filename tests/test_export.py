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

from tests.helpers import launch
from yolofuse_scale.model.align import FlowAlign


def _weights(tmp_path, fusion: str, ir_channels: int):
    from yolofuse_scale.model import build_model
    from yolofuse_scale.weights import write_weights

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
    with torch.no_grad():  # class scores near 0.5 instead of the prior's 0.01: detections for the NMS to sort
        for branch in model.model[-1].cv3:
            branch[-1].bias.zero_()
    path = tmp_path / f"{fusion}.pt"
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3,
                                             "ir_channels": ir_channels, "names": {0: "person", 1: "car"},
                                             "imgsz": 96})
    return path, model.eval()


@pytest.mark.parametrize(("exporter", "fusion", "ir_channels", "inputs"), [
    # the dynamo exporter traces for ~8 s; it is the one that wrote the weights beside the graph
    pytest.param("dynamo", "mid", 1, "pair", marks=pytest.mark.slow),
    ("torchscript", "late", 3, "stacked"),
    ("torchscript", "mid", 3, "pair"),
    ("torchscript", "mid-align", 1, "stacked"),  # FlowAlign's grid_sample: ONNX GridSample (opset 16+)
])
def test_onnx_export_matches_pytorch(tmp_path, exporter, fusion, ir_channels, inputs):
    import onnx
    import onnxruntime as ort

    weights, model = _weights(tmp_path, fusion, ir_channels)
    out = tmp_path / "onnx" / "model.onnx"
    layout = ["--inputs", "pair"] if inputs == "pair" else []  # stacked: the default
    run = launch("python", 1, ["-m", "yolofuse_scale", "export-onnx", "--weights", str(weights), "--format", "onnx",
                               "--out", str(out), "--exporter", exporter, *layout], tmp_path)
    assert "onnxruntime vs PyTorch: max relative difference" in run.proc.stdout and "(ok," in run.proc.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # self-contained: no model.onnx.data
    proto = onnx.load(str(out), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["names"]) == {"0": "person", "1": "car"} and meta["imgsz"] == "96"
    assert meta["ir_channels"] == str(ir_channels) and meta["inputs"] == inputs
    # the -align variants' warp is ONNX's GridSample, one per FlowAlign (P3/P4/P5), not a traced constant
    assert sum(n.op_type == "GridSample" for n in proto.graph.node) == (3 if fusion == "mid-align" else 0)
    # Independently of the CLI's own check: the UNFUSED model that was saved, a batch size other than
    # the export example's (the batch axis is dynamic), real-looking uint8-derived input.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 256, (3, 3 + ir_channels, 96, 96), generator=torch.Generator().manual_seed(1)) / 255.0
    if inputs == "pair":  # two named inputs, each in its own channel count
        assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("rgb", [3, 96, 96]),
                                                                          ("ir", [ir_channels, 96, 96])]
        assert "rgb: float32 (B, 3, 96, 96) and ir: float32" in meta["input"]
        feed = {"rgb": x[:, :3].numpy(), "ir": x[:, 3:].numpy()}
    else:
        (inp,) = session.get_inputs()
        assert inp.name == "images" and inp.shape[1:] == [3 + ir_channels, 96, 96]
        assert "RGB channels first then IR" in meta["input"]
        feed = {"images": x.numpy()}
    with torch.no_grad():
        ref = model(x)[0].numpy()
    got = session.run(None, feed)[0]
    anchors = sum((96 // s) ** 2 for s in (8, 16, 32)) * (2 if fusion == "late" else 1)  # late: two branches
    assert got.shape == ref.shape == (3, 4 + 2, anchors)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    if inputs == "pair" and exporter == "torchscript":
        _check_deployment_example(out, weights)


def _check_deployment_example(onnx_path, weights):
    """docs/inference.md's two-camera example (less its camera loop) on this graph gives what the Python
    API gives: the same input tensors (a non-square RGB frame, an IR frame of another size), the same
    mapping back, and the same detections (boxes compared where the score is not tied: an untrained
    model answers some anchors with equal scores, and which of a tie NMS keeps is not defined)."""
    import re

    import cv2

    from tests.helpers import ROOT
    from yolofuse_scale import FusionDetector

    text = (ROOT / "docs" / "inference.md").read_text()
    block = re.search(r"```python\n(  import json\n.*?)```", text, re.S).group(1)
    code = "\n".join(line[2:] for line in block.splitlines())
    code = code[: code.index("rgb_cam, ir_cam =")].replace('"best.onnx"', repr(str(onnx_path)))
    example: dict = {}
    exec(compile(code, "docs/inference.md", "exec"), example)  # the documentation's own code, as printed
    det = FusionDetector.load(weights, device="cpu", conf=0.25)
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (72, 120, 3), np.uint8), (5, 5), 1)  # OpenCV's BGR
    ir = rng.integers(0, 256, (36, 60, 3), np.uint8)
    feed, back, size = example["preprocess"](rgb, ir)
    x, shape, ratio_pad = det.preprocess(rgb[..., ::-1].copy(), ir[..., ::-1].copy())  # the API takes RGB order
    np.testing.assert_array_equal(np.concatenate([feed["rgb"], feed["ir"]], 1), x.numpy())
    assert size == (shape[1], shape[0]) and back == (ratio_pad[0][0], *ratio_pad[1])
    for frame in (rgb, cv2.resize(rgb, (96, 96))):  # letterboxed, and filling the input exactly
        boxes, scores, classes = example["detect"](frame, ir)
        ref = det(frame[..., ::-1].copy(), ir[..., ::-1].copy())
        assert len(ref) > 5 and len(boxes) == len(ref)
        np.testing.assert_allclose(np.sort(scores), np.sort(ref.scores), rtol=1e-4)
        for i in np.flatnonzero(np.sum(np.abs(ref.scores[:, None] - ref.scores[None]) < 1e-4, 1) == 1):
            j = int(np.argmin(np.abs(scores - ref.scores[i])))
            assert classes[j] == ref.classes[i]
            np.testing.assert_allclose(boxes[j], ref.boxes[i], atol=0.05)


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

    from tests.helpers import ENV, ROOT

    for old, new in (("export", "export-onnx"), ("export-weights", "checkpoint-to-weights")):
        r = subprocess.run([sys.executable, "-m", "yolofuse_scale", old, "--help"], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: yolofuse-scale" in r.stdout, r.stderr
        listing = subprocess.run([sys.executable, "-m", "yolofuse_scale", "--help"], cwd=ROOT, env=ENV,
                                 capture_output=True, text=True, timeout=60).stdout
        assert f"{new} ({old})" in listing, listing
