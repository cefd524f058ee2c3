"""What ``--activation-checkpointing`` buys and costs: ``python -m benchmarks.activation_checkpointing``.

Runs the real loop (one process, so peak memory is one process's) with and without activation
checkpointing and reports the median step time (first step excluded) and the process's peak RSS.
Both variants run side by side in one invocation on one machine, so only their ratio is meant to
be read; on GPUs the scaling benchmark's peak allocated memory is the better measure.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402


def run_once(ac: bool, args: argparse.Namespace, data_yaml: Path, out: Path) -> dict:
    run = common.run_training(["--data", str(data_yaml), "--model", args.model, "--fusion", args.fusion, "--imgsz",
                               str(args.imgsz), "--batch-size", str(args.batch_size), "--epochs", "1", "--max-steps",
                               str(args.steps), "--no-val", "--no-plots", "--workers", "0", "--no-augment",
                               "--output-dir", str(out),
                               "--activation-checkpointing" if ac else "--no-activation-checkpointing"],
                              threads=args.threads, timeout=args.run_timeout)
    if not run.ok:
        raise RuntimeError(f"{run.error(args.run_timeout)[:200]}\n{run.output[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return {"step_time_s": statistics.median(r["step_time_s"] for r in common.read_log(out)[1:]),
            "peak_rss_mib": peak_kib / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--fusion", default="mid")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (OMP_NUM_THREADS; 0: inherit)")
    p.add_argument("--run-timeout", type=int, default=1800, help="seconds before one run counts as failed")
    p.add_argument("--out", default="reports/activation_checkpointing")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    env = common.environment(threads=args.threads or None,
                             command=[sys.executable, "-m", "benchmarks.activation_checkpointing", *argv])
    from yolofuse_scale.data import write_synthetic_dataset

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_dataset(Path(tmp) / "data", n_train=args.batch_size * args.steps, n_val=2,
                                       imgsz=args.imgsz, seed=0)
        # Checkpointed first: RUSAGE_CHILDREN keeps the maximum over all children, so the smaller
        # run must come first for both peaks to be visible.
        for ac in (True, False):
            results["checkpointed" if ac else "plain"] = run_once(ac, args, data, Path(tmp) / f"ac{int(ac)}")
    plain, ac = results["plain"], results["checkpointed"]
    lines = [f"{args.model} {args.fusion}, {args.imgsz} px, batch {args.batch_size}, 1 process "
             f"({env['machine_label'] or env['host']}, {env['cpu']}, {env['threads_per_process']} thread(s))",
             "", "| | median step s | peak RSS MiB |", "|---|---|---|",
             f"| plain | {plain['step_time_s']:.3f} | {plain['peak_rss_mib']:.0f} |",
             f"| --activation-checkpointing | {ac['step_time_s']:.3f} | {ac['peak_rss_mib']:.0f} |",
             "", f"step time x{ac['step_time_s'] / plain['step_time_s']:.2f}, peak RSS x"
             f"{ac['peak_rss_mib'] / plain['peak_rss_mib']:.2f} (RSS includes ~the interpreter, torch and the data)"]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results, "environment": env},
                                                   indent=1))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
