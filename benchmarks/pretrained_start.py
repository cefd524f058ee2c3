"""Pretrained start: does an RGB model trained elsewhere make a fusion detector learn faster and better?

What a user does with ``--pretrained yolov8n.pt`` (COCO) before fine-tuning on LLVIP, scaled down to
what runs offline on a CPU (no pretrained weights exist here, so the source model is trained first):

1. *source*: a single-stream RGB model (``--fusion rgb``, exactly Ultralytics' model behind a stream
   selector) trained on one synthetic set (``--source-scene``, data seed 1);
2. *target*: on another synthetic set (``--target-scene``, data seed 2: other scenes, and by default
   the harder generator setting), the fusion model (``--fusion``) trained twice per seed with the same
   budget: from scratch, and with ``--pretrained <source>/weights/last.pt`` (every stream from the RGB
   model, the per-stream load report in its log);
3. validation every epoch; per run the final mAP50 / mAP50-95 and the optimizer steps until mAP50-95
   first reached 90 % of the *scratch* run's final value (the same target for both starts, so "steps
   to 90 %" compares speed of learning, not each run against itself).

Per-epoch metrics are read from the training's own ``val epoch N: mAP50 .. mAP50-95 ..`` lines. Results:
``results.json`` (every run, its per-epoch curve, mean and spread) and ``results.md``.

    python -m benchmarks.pretrained_start --out benchmarks/results/pretrained_start_2core_cpu   # ~15 min, 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks/ is on sys.path, the checkout is not

from benchmarks import common  # noqa: E402

SCHEMA = "pretrained_start/1"
VAL_LINE = re.compile(r"val epoch (\d+): mAP50 ([0-9.]+) mAP50-95 ([0-9.]+)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/pretrained_start", help="results.json and results.md")
    p.add_argument("--work", default="runs/pretrained_start", help="data, runs and logs (finished runs are reused)")
    p.add_argument("--model", default="yolov8t", help="model and scale (default: yolov8t)")
    p.add_argument("--fusion", default="mid", help="fusion of the target model (default: mid)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="target training seeds (default: 0 1)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--source-scene", choices=["easy", "hard"], default="easy")
    p.add_argument("--target-scene", choices=["easy", "hard"], default="hard")
    p.add_argument("--source-train", type=int, default=192, help="source synthetic train pairs (default: 192)")
    p.add_argument("--source-epochs", type=int, default=30)
    p.add_argument("--target-train", type=int, default=128, help="target synthetic train pairs (default: 128)")
    p.add_argument("--val", type=int, default=64, help="val pairs of each set (default: 64)")
    p.add_argument("--epochs", type=int, default=15, help="target fine-tuning epochs (default: 15)")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per run (default: 1)")
    p.add_argument("--label", default=f"{os.cpu_count()}-core CPU", help="machine label written with the numbers")
    p.add_argument("--train-args", default="--warmup-epochs 1 --close-mosaic 3",
                   help="extra train.py flags for every run (default: '--warmup-epochs 1 --close-mosaic 3')")
    return p.parse_args(argv)


def val_curve(output: str, steps_per_epoch: int) -> list[dict[str, float]]:
    """``[{epoch, step, mAP50, mAP50-95}]`` from a training's console output, in epoch order."""
    return [{"epoch": int(m[1]), "step": int(m[1]) * steps_per_epoch, "mAP50": float(m[2]), "mAP50-95": float(m[3])}
            for m in VAL_LINE.finditer(output)]


def steps_to(curve: list[dict[str, float]], target: float, key: str = "mAP50-95") -> int | None:
    """The first validated step at which ``key`` reached ``target`` (None: never)."""
    return next((p["step"] for p in curve if p[key] >= target), None)


def _train(args: argparse.Namespace, data: Path, folder: Path, env: dict[str, str], extra: list[str],
           epochs: int, seed: int, fusion: str) -> dict[str, Any]:
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cmd = common.train_command(["--data", str(data), "--model", args.model, "--fusion", fusion,
                                "--imgsz", str(args.imgsz), "--batch-size", str(args.batch_size),
                                "--epochs", str(epochs), "--lr", str(args.lr), "--seed", str(seed),
                                "--workers", "0", "--keep-last", "1", "--log-every", "1000",
                                "--output-dir", str(folder / "train"), *args.train_args.split(), *extra])
    t0 = time.monotonic()
    result = common.run_command(cmd, env, log=folder / "train.log")
    if not result.ok:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.error()[:200]}); see {folder / 'train.log'}")
    summary = common.read_metrics(folder / "train")
    steps_per_epoch = summary["step"] // epochs
    record = {"seed": seed, "fusion": fusion, "steps": summary["step"], "train_s": round(time.monotonic() - t0, 1),
              "params": summary["params"], "final": {k: summary["metrics"][k] for k in ("mAP50", "mAP50-95")},
              "curve": val_curve(result.output, steps_per_epoch),
              "pretrained": summary.get("pretrained")}  # the per-stream load report (metrics.json)
    done.write_text(json.dumps(record, indent=1))
    return record


def _spread(xs: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(xs) if xs else None, "min": min(xs) if xs else None,
            "max": max(xs) if xs else None}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per start (scratch, pretrained): final mAP mean and range over seeds; steps to 90 % of the
    scratch run's final mAP50-95 of the same seed (None where a run never got there)."""
    targets = {r["seed"]: 0.9 * r["final"]["mAP50-95"] for r in runs["scratch"]}
    out: dict[str, Any] = {}
    for start, rs in runs.items():
        reached = [steps_to(r["curve"], targets[r["seed"]]) for r in rs]
        own = [steps_to(r["curve"], 0.9 * r["final"]["mAP50-95"]) for r in rs]
        out[start] = {"mAP50": _spread([r["final"]["mAP50"] for r in rs]),
                      "mAP50-95": _spread([r["final"]["mAP50-95"] for r in rs]),
                      "steps_to_90pct_of_scratch_final": reached, "steps_to_90pct_of_own_final": own}
    return out


def markdown(result: dict[str, Any]) -> str:
    s, summ = result["settings"], result["summary"]

    def cell(d: dict[str, float | None]) -> str:
        return "–" if d["mean"] is None else f"{d['mean']:.3f} ({d['min']:.3f}...{d['max']:.3f})"

    lines = [f"### Pretrained start vs scratch: {s['model']} {s['fusion']} on the {s['target_scene']} synthetic set",
             "", f"Source: `--fusion rgb`, {s['source_epochs']} epochs on {s['source_train']} pairs of the "
             f"{s['source_scene']} set (data seed 1), final mAP50-95 {result['source']['final']['mAP50-95']:.3f}. "
             f"Target: {s['target_train']} train / {s['val']} val pairs (data seed 2), {s['epochs']} epochs of "
             f"batch {s['batch_size']}, lr {s['lr']}, `{s['train_args']}`, seeds {', '.join(map(str, s['seeds']))}; "
             f"{result['environment'].get('cpu', '')} ({s['label']}).", "",
             "| start | mAP50: mean (range) | mAP50-95: mean (range) | steps to 90 % of scratch's final mAP50-95, "
             "per seed | steps to 90 % of its own final |", "|---|---|---|---|---|"]

    def steps(ns: list[int | None]) -> str:
        return ", ".join("never" if n is None else str(n) for n in ns)

    for start, d in summ.items():
        lines.append(f"| {start} | {cell(d['mAP50'])} | {cell(d['mAP50-95'])} | "
                     f"{steps(d['steps_to_90pct_of_scratch_final'])} | {steps(d['steps_to_90pct_of_own_final'])} |")
    lines += ["", "Per-epoch mAP50-95 (seed: scratch / pretrained):", ""]
    for a, b in zip(result["runs"]["scratch"], result["runs"]["pretrained"]):
        pairs = " ".join(f"{x['mAP50-95']:.2f}/{y['mAP50-95']:.2f}" for x, y in zip(a["curve"], b["curve"]))
        lines.append(f"- seed {a['seed']}: {pairs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from yolofuse_scale.data import write_synthetic_dataset

    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = common.train_env(args.threads)
    source_data = write_synthetic_dataset(work / "source_data", args.source_train, args.val, args.imgsz, seed=1,
                                          scene=args.source_scene)
    target_data = write_synthetic_dataset(work / "target_data", args.target_train, args.val, args.imgsz, seed=2,
                                          scene=args.target_scene)
    source = _train(args, source_data, work / "source", env, [], args.source_epochs, 0, "rgb")
    weights = work / "source" / "train" / "weights" / "last.pt"
    runs: dict[str, list[dict[str, Any]]] = {"scratch": [], "pretrained": []}
    for seed in args.seeds:
        runs["scratch"].append(_train(args, target_data, work / f"scratch_s{seed}", env, [], args.epochs, seed,
                                      args.fusion))
        runs["pretrained"].append(_train(args, target_data, work / f"pretrained_s{seed}", env,
                                         ["--pretrained", str(weights)], args.epochs, seed, args.fusion))
    result = {"schema": SCHEMA, "settings": vars(args), "source": source, "runs": runs,
              "summary": summarise(runs), "environment": common.environment(threads=args.threads,
                                                                               machine_label=args.label)}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
