"""``yolofuse-scale export-onnx``: an ONNX graph of a trained detector, checked against PyTorch.

Inputs (``--inputs``), float32 in [0, 1], the letterboxed pair (one letterbox for both: the IR frame is
resized to the RGB frame first, as in training):

- ``stacked`` (default, the graph of earlier versions): ONE input ``images`` ``(B, 3 + C_ir, S, S)``, RGB
  channels first, then the IR channel(s), exactly the tensor the PyTorch model takes;
- ``pair``: TWO named inputs, ``rgb`` ``(B, 3, S, S)`` and ``ir`` ``(B, C_ir, S, S)``, each in its own
  channel count, as a deployment with two cameras has them; the graph concatenates them (one ``Concat``
  node, a copy of the input: microseconds beside the network).

The batch axis is dynamic, the image size is fixed at export (``--imgsz``, default the trained size).
The output ``output0`` is ``(B, 4 + nc, N)``: box centre x, y, width, height in input pixels, then
per-class scores, before NMS (Ultralytics' layout). An oriented-box model (``--task obb``) adds one row,
the angle in radians: ``(B, 4 + nc + 1, N)``, Ultralytics' OBB export, for a rotated NMS after it (its
``--nms-free`` top-k rows are x, y, w, h, score, class, angle). Class names, channel counts, size, inputs,
task and layout go into the model's metadata.

The file is self-contained: the weights are inside the ``.onnx`` (torch's ``torch.export``-based
exporter writes them to a separate ``<file>.onnx.data`` by default, ``external_data=True``, which
then had to travel with the graph; ONNX's 2 GB protobuf limit is far above any YOLO detector).

Exporter: torch's ``torch.export``-based exporter (``dynamo=True``, the default since torch 2.9) is
used by default: it is the maintained path, needs ``onnx`` + ``onnxscript`` (the ``onnx`` extra) and
takes ~30-60 s on CPU for a small model. ``--exporter torchscript`` selects the legacy tracer (deprecated
by torch, faster, no onnxscript) for runtimes that choke on the new exporter's graphs. Either way the
export is checked with onnxruntime against the PyTorch model on the same random inputs before it is
reported done.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the model load only when an export runs: `yolofuse-scale --help` stays fast
    from yolofuse_scale.model import FusionDetectionModel

EXPORTERS = ("dynamo", "torchscript")
INPUTS = ("stacked", "pair")


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SystemExit(f"ONNX export needs the '{module}' package: pip install 'yolofuse-scale[onnx]'")


def onnx_ready(model: FusionDetectionModel) -> FusionDetectionModel:
    """Prepare an eval model for export: Conv+BN fused, Detect returns only its decoded predictions."""
    model = model.eval()
    model.fuse(verbose=False)
    head = model.model[-1]
    head.export, head.format = True, "onnx"  # Ultralytics' Detect: return y, not (y, feature maps)
    return model


def _pair_inputs(model: FusionDetectionModel):
    """``model`` behind two inputs, ``rgb`` and ``ir``, concatenated on the channel axis inside the graph."""
    import torch

    class PairInputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, rgb: torch.Tensor, ir: torch.Tensor):
            return self.inner(torch.cat((rgb, ir), 1))

    return PairInputs(model)


def input_names(inputs: str) -> list[str]:
    """The graph's input names for ``--inputs``."""
    return ["rgb", "ir"] if inputs == "pair" else ["images"]


def describe_inputs(inputs: str, rgb_channels: int, ir_channels: int, imgsz: int) -> str:
    """The inputs in words (the CLI's report and the model's metadata)."""
    size = f"{imgsz}, {imgsz}"
    if inputs == "pair":
        return f"rgb: float32 (B, {rgb_channels}, {size}) and ir: float32 (B, {ir_channels}, {size})"
    return f"images: float32 (B, {rgb_channels}+{ir_channels}, {size}), RGB channels first then IR"


def export_onnx(
    weights: str | Path,
    out: str | Path | None = None,
    imgsz: int | None = None,
    opset: int = 18,
    exporter: str = "dynamo",
    nms_free: bool = False,
    inputs: str = "stacked",
) -> tuple[Path, FusionDetectionModel, int]:
    """Export a weights file to one self-contained ONNX file; return (path, the exported PyTorch model, size).

    ``inputs``: ``"stacked"`` (one input ``images``) or ``"pair"`` (``rgb`` and ``ir``), see the module
    docstring. ``nms_free`` (end-to-end heads, YOLO26): the graph ends in the one-to-one branch's top-k,
    output ``(B, max_det, 6)`` x1, y1, x2, y2, score, class (an oriented-box model: ``(B, max_det, 7)`` x, y, w, h,
    score, class, angle), and needs no NMS after it.
    """
    import torch

    from yolofuse_scale.inference import load_weights_model
    from yolofuse_scale.model import use_one_to_one_head

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    _require("onnx")
    if exporter == "dynamo":
        _require("onnxscript")
    model, payload = load_weights_model(weights)
    if nms_free:
        use_one_to_one_head(model)
    model = onnx_ready(model)
    imgsz = imgsz or int(payload.get("imgsz", 640))
    stride = int(model.stride.max())
    if imgsz % stride:
        raise ValueError(f"--imgsz {imgsz} is not a multiple of the model stride {stride}")
    out = Path(out) if out else Path(weights).with_suffix(".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = input_names(inputs)
    examples = ((torch.zeros(2, model.rgb_channels, imgsz, imgsz), torch.zeros(2, model.ir_channels, imgsz, imgsz))
                if inputs == "pair" else (torch.zeros(2, model.rgb_channels + model.ir_channels, imgsz, imgsz),))
    kwargs: dict = {"input_names": names, "output_names": ["output0"], "opset_version": opset}
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=1024)  # one Dim: the inputs share their batch size
        kwargs["dynamic_shapes"] = tuple({0: batch} for _ in names)
        # weights inside the .onnx: torch's default (True) writes them to <out>.data beside it
        kwargs["dynamo"], kwargs["verbose"], kwargs["external_data"] = True, False, False
    else:
        kwargs["dynamic_axes"] = {**{n: {0: "batch"} for n in names}, "output0": {0: "batch"}}
        kwargs["dynamo"] = False
    # Export a copy: torch.export leaves fake tensors in Detect's cached anchors of the module it traced,
    # and the caller's model must stay usable (the onnxruntime check runs it).
    traced = copy.deepcopy(model)
    with torch.no_grad():
        torch.onnx.export(_pair_inputs(traced) if inputs == "pair" else traced, examples, str(out), **kwargs)
    _write_metadata(out, payload, model, imgsz, inputs)
    return out, model, imgsz


def _write_metadata(path: Path, payload: dict, model: FusionDetectionModel, imgsz: int, inputs: str) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise RuntimeError(f"{path}: the exporter left weights outside the file; it must be self-contained")
    meta = {
        "names": json.dumps({int(k): v for k, v in payload["names"].items()}),
        "imgsz": str(imgsz),
        "stride": str(int(model.stride.max())),
        "rgb_channels": str(model.rgb_channels),
        "ir_channels": str(model.ir_channels),
        "inputs": inputs,
        "input": describe_inputs(inputs, model.rgb_channels, model.ir_channels, imgsz)
        + " in [0, 1], letterboxed (grey 114 padding), IR resized to the RGB frame first",
        "task": model.task,
        "output": "output0: " + describe_output(model, detail=True),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))


def describe_output(model: FusionDetectionModel, detail: bool = False) -> str:
    """``output0``'s layout in words (the CLI's report; ``detail``: the metadata's longer form)."""
    obb = model.task == "obb"
    if model.end2end:
        rows = "x, y, w, h, score, class, angle (radians)" if obb else "x1, y1, x2, y2, score, class"
        return (f"(B, max_det, {7 if obb else 6}) {rows}" + (" in input pixels" if detail else "")
                + "; no NMS needed")
    nc = int(model.model[-1].nc)
    if not detail:
        return f"(B, 4+{nc}{'+1' if obb else ''}, N) before {'rotated ' if obb else ''}NMS"
    return (f"(B, 4 + nc{' + 1' if obb else ''}, N) box cx, cy, w, h in input pixels, then class scores"
            + (", then the angle in radians; before a rotated NMS" if obb else "; before NMS"))


def check_onnx(path: str | Path, model: FusionDetectionModel, imgsz: int, batch: int = 2, seed: int = 0) -> float:
    """Run the ONNX file with onnxruntime and the PyTorch model on the same random input (split into
    ``rgb`` and ``ir`` for a graph with two inputs).

    Returns the largest absolute difference of the outputs, relative to the largest output magnitude
    (boxes are in pixels, scores in [0, 1]: a relative measure serves both).
    """
    _require("onnxruntime")
    import numpy as np
    import onnxruntime as ort
    import torch

    x = torch.rand(batch, model.rgb_channels + model.ir_channels, imgsz, imgsz,
                   generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x.numpy()
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {"rgb": feed[:, : model.rgb_channels], "ir": feed[:, model.rgb_channels:]}
                      if names == ["rgb", "ir"] else {names[0]: feed})[0]
    if got.shape != ref.shape:
        raise RuntimeError(f"{path}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
    scale = max(float(np.abs(ref).max()), 1e-6)
    if not model.end2end:
        return float(np.abs(got - ref).max() / scale)
    # A top-k output lists near-tied detections in an order float rounding decides (an untrained model on
    # random input has many): each of PyTorch's upper half of rows is matched to ONNX's nearest row of its
    # class, away from the k-th row, where rounding may swap which detections make the cut.
    worst = 0.0
    keep = [i for i in range(ref.shape[-1]) if i != 5]  # every column but the class (an oriented box's angle too)
    for r, g in zip(ref, got):
        for row in r[np.argsort(-r[:, 4])][: len(r) // 2]:
            same = g[g[:, 5] == row[5]]
            worst = max(worst, float(np.abs(same[:, keep] - row[keep]).max(1).min()) if len(same) else float("inf"))
    return worst / scale


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``parser``."""
    parser.add_argument("--weights", required=True, help="weights file written by training (weights/best.pt)")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format (onnx)")
    parser.add_argument("--out", default=None, help="output file (default: the weights path with .onnx)")
    parser.add_argument("--imgsz", type=int, default=None, help="fixed input size (default: the size trained at)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    parser.add_argument("--inputs", default="stacked", choices=INPUTS,
                        help="stacked: one input 'images' (B, 3+C_ir, S, S) (default); pair: two named inputs 'rgb' "
                             "(B, 3, S, S) and 'ir' (B, C_ir, S, S), one per camera")
    parser.add_argument("--exporter", default="dynamo", choices=EXPORTERS,
                        help="torch.export-based (default) or the legacy TorchScript tracer")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative output difference vs PyTorch accepted by the check (default: 1e-4)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.add_argument("--nms-free", action="store_true",
                        help="end-to-end models (yolo26): export the one-to-one head's top-k, (B, max_det, 6), no NMS")


def run(args: argparse.Namespace) -> int:
    """Export, then check with onnxruntime; exit non-zero if the outputs differ beyond --tolerance."""
    from yolofuse_scale.errors import CheckpointError

    try:
        path, model, imgsz = export_onnx(args.weights, args.out, args.imgsz, args.opset, args.exporter, args.nms_free,
                                         args.inputs)
    except (FileNotFoundError, ValueError, CheckpointError) as e:  # bad input: the message names it
        raise SystemExit(f"error: {e}") from e
    output = describe_output(model)
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mb:.1f} MB, weights included): input(s) "
          f"{describe_inputs(args.inputs, model.rgb_channels, model.ir_channels, imgsz)}, output 'output0' {output}")
    if not args.no_check:
        diff = check_onnx(path, model, imgsz)
        ok = diff <= args.tolerance
        print(f"onnxruntime vs PyTorch: max relative difference {diff:.2e} ({'ok' if ok else 'FAILED'}, "
              f"tolerance {args.tolerance:.0e})")
        if not ok:
            return 1
    return 0
