"""Model-state memory per rank for every strategy: ``python -m benchmarks.memory``.

Launches one real 2-step training per (strategy, optimizer) through ``torchrun train.py
--strategy S`` and reads the bytes each rank holds in parameters, gradients, optimizer state and
the engine's flat buffers (unique storages; logged by the loop at step 1, see
``yolofuse_scale.engine.perf.model_state_bytes``). Prints a Markdown table of the largest
rank's bytes and the ratio to DDP, and writes ``memory.json``. This is model state, not RSS or
peak allocation: activations and communication buffers come on top (see benchmarks.scaling).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

STRATEGIES = ["ddp", "fsdp", "zero1", "zero2", "zero3", "zero3_offload"]


def measure(strategy: str, optimizer: str, args: argparse.Namespace, data_yaml: Path, out: Path) -> list[dict]:
    run = common.run_training(["--data", str(data_yaml), "--model", args.model, "--fusion", args.fusion, "--imgsz",
                               str(args.imgsz), "--batch-size", "2", "--epochs", "1", "--max-steps", "2", "--no-val",
                               "--no-plots", "--workers", "0", "--optimizer", optimizer, "--strategy", strategy,
                               "--output-dir", str(out)],
                              launcher="torchrun", nproc=args.nproc, threads=1, timeout=args.run_timeout)
    if not run.ok:
        raise RuntimeError(f"{strategy}/{optimizer} failed ({run.error(args.run_timeout)[:200]}):\n"
                           f"{run.output[-3000:]}")
    return common.read_log(out)[0]["model_state_bytes"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--optimizers", default="sgd,adamw")
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--fusion", default="mid")
    p.add_argument("--imgsz", type=int, default=64, help="image size (model state does not depend on it)")
    p.add_argument("--nproc", type=int, default=2, help="processes (ranks)")
    p.add_argument("--run-timeout", type=int, default=900, help="seconds before one run counts as failed")
    p.add_argument("--out", default="reports/memory", help="folder for memory.json")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    env = common.environment(threads=1, command=[sys.executable, "-m", "benchmarks.memory", *argv])
    from yolofuse_scale.data import write_synthetic_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_dataset(Path(tmp) / "data", n_train=4 * args.nproc, n_val=2, imgsz=args.imgsz, seed=0)
        for optimizer in args.optimizers.split(","):
            for strategy in args.strategies.split(","):
                per_rank = measure(strategy, optimizer, args, data, Path(tmp) / f"{strategy}_{optimizer}")
                rows.append({"strategy": strategy, "optimizer": optimizer, "per_rank": per_rank})
                print(f"measured {strategy}/{optimizer}", file=sys.stderr)
    mib = 2**20
    lines = [f"Model-state bytes per rank, {args.model} {args.fusion} fusion, {args.nproc} ranks, fp32 "
             f"({env['machine_label'] or env['host']}, {env['cpu']})", "",
             "| optimizer | strategy | params MiB | grads MiB | optimizer MiB | engine MiB | total MiB | vs DDP |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        worst = max(row["per_rank"], key=lambda r: r["total"])
        ddp = next(r for r in rows if r["strategy"] == "ddp" and r["optimizer"] == row["optimizer"])
        ddp_total = max(r["total"] for r in ddp["per_rank"])
        row["ratio_to_ddp"] = worst["total"] / ddp_total
        lines.append(f"| {row['optimizer']} | {row['strategy']} | " + " | ".join(
            f"{worst[k] / mib:.2f}" for k in ("params", "grads", "optimizer", "engine_buffers", "total"))
            + f" | {row['ratio_to_ddp']:.2f} |")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps({"model": args.model, "fusion": args.fusion, "nproc": args.nproc,
                                                  "rows": rows, "environment": env}, indent=1))
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
