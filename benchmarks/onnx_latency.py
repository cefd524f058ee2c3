"""Latency of the exported ONNX model in ONNX Runtime beside the PyTorch model it came from, on this CPU.

    python -m benchmarks.onnx_latency --out benchmarks/results/onnx_latency_2core_cpu

For each image size: a model (``--model``/``--fusion``, random weights: latency does not depend on
their values) is written as a weights file, exported with ``export-onnx``'s own code (default exporter,
``--inputs pair``: what a two-camera deployment runs) and checked against PyTorch; then the two are
timed in this one process on the same batch-1 input, in alternating order round after round (so that
other work on a shared machine falls on both alike): PyTorch is the fused eval model under
``torch.inference_mode`` (what ``FusionDetector`` runs), ONNX Runtime the CPU execution provider with
its default graph optimisations. Both use the same intra-op thread count, each of ``--threads`` in
turn (one inter-op thread). Warm-up runs are excluded;
the report gives the median and the 10th..90th percentile of ``--repeats`` timed runs. The network
only: letterbox, NMS and drawing are the same for both and are not timed.

Writes ``results.json`` (every timing, the environment record) and ``report.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

SCHEMA = "onnx_latency/1"


def _weights(path: Path, model_name: str, fusion: str, ir_channels: int, nc: int) -> Path:
    import torch

    from yolofuse_scale.model import build_model
    from yolofuse_scale.weights import write_weights

    torch.manual_seed(0)
    model = build_model(model_name, fusion, nc=nc, ir_channels=ir_channels)
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3, "ir_channels": ir_channels,
                                             "names": {i: f"class{i}" for i in range(nc)}, "imgsz": 640})
    return path


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def measure(weights: Path, imgsz: int, threads: list[int], warmup: int, repeats: int, exporter: str, work: Path
            ) -> dict[str, Any]:
    """Export at ``imgsz``, check, then time PyTorch and ONNX Runtime alternately at each thread count."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from yolofuse_scale.export import check_onnx, export_onnx

    t0 = time.perf_counter()
    path, model, _ = export_onnx(weights, work / f"model_{imgsz}.onnx", imgsz=imgsz, exporter=exporter,
                                 inputs="pair")
    export_s = time.perf_counter() - t0
    diff = check_onnx(path, model, imgsz)
    x = torch.rand(1, model.rgb_channels + model.ir_channels, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    feed = {"rgb": x[:, : model.rgb_channels].numpy(), "ir": x[:, model.rgb_channels:].numpy()}
    runs = []
    for n in threads:
        torch.set_num_threads(n)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = n, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_torch() -> None:
            with torch.inference_mode():
                model(x)

        def run_ort(session=session) -> None:
            session.run(None, feed)

        runners = {"pytorch": run_torch, "onnxruntime": run_ort}
        for _ in range(warmup):
            for fn in runners.values():
                fn()
        times: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(repeats):
            for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):  # alternate who goes first
                t = time.perf_counter()
                runners[name]()
                times[name].append(time.perf_counter() - t)
        summary = {k: {"median_ms": 1e3 * float(np.median(v)), "p10_ms": 1e3 * _percentile(v, 10),
                       "p90_ms": 1e3 * _percentile(v, 90)} for k, v in times.items()}
        runs.append({"threads": n, "summary": summary, "times_s": times,
                     "speedup": summary["pytorch"]["median_ms"] / summary["onnxruntime"]["median_ms"]})
    return {"imgsz": imgsz, "onnx_bytes": path.stat().st_size, "export_s": export_s, "max_rel_diff": diff,
            "runs": runs}


def report(result: dict[str, Any]) -> str:
    a, env = result["args"], result["environment"]
    lines = [f"# ONNX Runtime vs PyTorch latency, {a['model']} {a['fusion']} fusion, batch 1 ({env['cpu']}, "
             f"{env['cpu_cores']} cores)", ""]
    if a["machine_note"]:
        lines += [a["machine_note"], ""]
    load = result["loadavg_1_5_15min"]
    lines += [f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.1f}' for v in load['before'])}; after: "
              f"{', '.join(f'{v:.1f}' for v in load['after'])}.", ""]
    lines += [f"Exporter `{a['exporter']}`, inputs `pair` (rgb, ir), {a['nc']} class(es), random weights. Per cell: "
              f"median (10th..90th percentile) of {a['repeats']} timed runs, after {a['warmup']} warm-up runs, the "
              f"two runtimes alternating. The network only (no letterbox, no NMS). torch "
              f"{env['versions']['torch']}, onnxruntime {result['onnxruntime']}.", "",
              "| size | threads | PyTorch ms | ONNX Runtime ms | PyTorch / ORT | .onnx MB | max rel. diff |",
              "|---|---|---|---|---|---|---|"]
    for r in result["sizes"]:
        for run in r["runs"]:
            p, o = run["summary"]["pytorch"], run["summary"]["onnxruntime"]
            cells = [f"{t['median_ms']:.1f} ({t['p10_ms']:.1f}..{t['p90_ms']:.1f})" for t in (p, o)]
            lines.append(f"| {r['imgsz']} | {run['threads']} | {cells[0]} | {cells[1]} | {run['speedup']:.2f}x | "
                         f"{r['onnx_bytes'] / 2**20:.1f} | {r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--fusion", default="mid")
    p.add_argument("--ir-channels", type=int, default=1)
    p.add_argument("--nc", type=int, default=1, help="classes (default 1: LLVIP's person)")
    p.add_argument("--sizes", type=int, nargs="+", default=[640, 320])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="intra-op thread counts, each for both runtimes (default: 1 2)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    p.add_argument("--machine-note", default="", help="a sentence on the machine's state (quiet, shared ...)")
    p.add_argument("--out", default="reports/onnx_latency", help="folder for results.json and report.md")
    args = p.parse_args(argv)

    import onnxruntime as ort

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()  # how busy the machine was: other work inflates both columns
    with tempfile.TemporaryDirectory() as tmp:
        weights = _weights(Path(tmp) / "model.pt", args.model, args.fusion, args.ir_channels, args.nc)
        sizes = [measure(weights, s, args.threads, args.warmup, args.repeats, args.exporter, Path(tmp))
                 for s in args.sizes]
    result = {"schema": SCHEMA, "args": vars(args), "onnxruntime": ort.__version__, "sizes": sizes,
              "loadavg_1_5_15min": {"before": load_before, "after": os.getloadavg()},
              "environment": common.environment(threads=" ".join(map(str, args.threads)))}
    common.write_results(out, result, report(result), report="report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
