"""Recipe ablation: each change of the training recipe undone one at a time, same data, several seeds.

Our data-level yolov8n exactly as ``benchmarks/compare_ultralytics.py`` trains it (same flags, same
synthetic set, validated on the same pairs), once with today's recipe and once per ablation that
brings back one earlier choice:

- ``partners=micro_batch``: mosaic/mixup partners from the sample's own micro-batch (before: 8
  distinct images per batch of 8 mosaics, four copies of one image at batch 1); today from a pool of the
  micro-batch and as many other pairs (16 distinct images per batch of 8, at most 2 decodes a sample);
- ``partners=dataset``: partners from the whole set (the default until the pool; ~32 distinct images per batch
  of 8, 4 decodes a mosaic unless the set fits the buffer of decoded pairs);
- ``no warm-up floor``: ``--warmup-min-steps 0``, Ultralytics 8.4's warm-up (min(warmup_epochs,
  epochs - 1) epochs) instead of ours, which is at least 100 steps (Ultralytics <= 8.3) within that cap;
- ``both``: the two together (best.pt's fitness and the confusion matrix's conf do not change the final
  mAP measured here, so they have no row);
- ``no HSV``: ``--hsv-h 0 --hsv-s 0 --hsv-v 0``. Ours jitters hue, saturation and value of the RGB
  channels of every pair; Ultralytics applies its HSV only to 3-channel images, so on a 4-channel
  (RGB+IR) image it does none: this row is Ultralytics' behaviour there;
- ``per-epoch decay``: ``--decay-every epoch``, Ultralytics' staircase (lf(epoch) held for the whole
  epoch) instead of our per-step evaluation of the same curve.

``--arms`` runs a subset (``today`` is always run: every difference is paired with it).

Per ablation: mean ± sd of mAP50-95 and mAP50 over seeds and the paired difference to today's recipe,
seed by seed. Results: ``results.json`` and ``results.md``.

    python -m benchmarks.recipe_ablation --out benchmarks/results/recipe_ablation_2core_cpu --seeds 0 1 2

``--engine ray`` runs the arms x seeds as one Ray Tune experiment (``benchmarks/sweeps.py``; each arm a bundle
of settings in the sweep file), side by side on a cluster (``--ray-address``), each run a Ray Train run of
``--ray-workers`` workers; with one worker the numbers are the sequential runner's for the same seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.compare.runs import run_ours  # noqa: E402
from benchmarks.compare.seeds import spread  # noqa: E402
from benchmarks.compare.tiff import paired_yaml  # noqa: E402

SCHEMA = "recipe_ablation/1"


def ablations() -> dict[str, tuple[list[str], dict[str, Any]]]:
    """name -> (extra train.py flags, settings overrides)."""
    old_partners, no_floor = ["--mosaic-partners", "micro_batch"], ["--warmup-min-steps", "0"]
    return {"today": ([], {}), "partners=micro_batch": (old_partners, {}),
            "partners=dataset": (["--mosaic-partners", "dataset"], {}), "no warm-up floor": (no_floor, {}),
            "both": ([*old_partners, *no_floor], {}),
            "no HSV": (["--hsv-h", "0", "--hsv-s", "0", "--hsv-v", "0"], {}),
            "per-epoch decay": (["--decay-every", "epoch"], {})}


def summarise(runs: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any]:
    base = {r["seed"]: r[key] for r in runs["today"] if r.get(key) is not None}
    out = {}
    for name, rs in runs.items():
        vals = [r[key] for r in rs if r.get(key) is not None]
        diffs = [r[key] - base[r["seed"]] for r in rs if r.get(key) is not None and r["seed"] in base]
        out[name] = {"values": vals, **spread(vals), "paired_difference": spread(diffs)}
    return out


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]

    def cell(d: dict[str, Any]) -> str:
        if d["mean"] is None:
            return "–"
        return f"{d['mean']:.3f}" + (f" ± {d['sd']:.3f}" if d["sd"] is not None else "")

    lines = [f"### Recipe ablation: {s['model']} data-level, {s['imgsz']} px, {s['epochs']} epochs of batch "
             f"{s['batch']}, {s['train_pairs']} {s['scene']} synthetic pairs, seeds {', '.join(map(str, s['seeds']))}",
             "", "| recipe | mAP50-95 mean ± sd | paired diff. to today (range) | mAP50 mean ± sd | paired diff. |",
             "|---|---|---|---|---|"]
    a, b = result["summary"]["mAP50-95"], result["summary"]["mAP50"]
    for name in a:
        da, db = a[name]["paired_difference"], b[name]["paired_difference"]
        rng = "" if da["min"] is None else f" ({da['min']:+.3f}...{da['max']:+.3f})"
        lines.append(f"| {name} | {cell(a[name])} | {'–' if da['mean'] is None else format(da['mean'], '+.3f')}{rng} "
                     f"| {cell(b[name])} | {'–' if db['mean'] is None else format(db['mean'], '+.3f')} |")
    lines += ["", f"Flags per row: {json.dumps({k: v for k, v in result['ablations'].items()})}; "
              f"{result['environment']['cpu']} ({s['label']})."]
    return "\n".join(lines) + "\n"


def sweep_runs(args: argparse.Namespace, data_yaml: Path, base: dict[str, Any], table: dict, work: Path
               ) -> dict[str, list[dict[str, Any]]]:
    """--engine ray: the arms (bundles of settings) x seeds as one Tune experiment; per arm, its runs' metrics."""
    from benchmarks.compare.runs import _ours_args
    from benchmarks.sweeps import flags_to_overrides, run_study

    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))  # the workers'
    arms = {name: flags_to_overrides(flags) for name, (flags, _) in table.items()}
    base_flags = ["--data", str(data_yaml), "--model", args.model, "--fusion", "data",
                  *_ours_args({**base, "seed": args.seeds[0]})]
    rows = run_study(base_flags, {"recipe": list(arms.values()), "seed": args.seeds}, work,
                     workers=args.ray_workers, threads=args.threads, address=args.ray_address)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in table}
    for seed in args.seeds:
        for name, overrides in arms.items():
            row = next(r for r in rows if r["seed"] == seed and r["recipe"] == overrides)
            metrics = (common.read_metrics(Path(row["run"])).get("metrics") or {}) if row["status"] == "done" else {}
            runs[name].append({"seed": seed, "status": "ok" if row["status"] == "done" else "failed",
                               "mAP50": metrics.get("mAP50"), "mAP50-95": metrics.get("mAP50-95"),
                               "command": f"ray trial {row['trial']} ({row['run']})",
                               "error": None if row["status"] == "done" else row["status"]})
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/recipe_ablation")
    p.add_argument("--work", default="runs/recipe_ablation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-pairs", type=int, default=256)
    p.add_argument("--val-pairs", type=int, default=64)
    p.add_argument("--scene", choices=["easy", "hard"], default="easy")
    p.add_argument("--lr", type=float, default=0.08)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--close-mosaic", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default=f"{os.cpu_count()}-core CPU")
    p.add_argument("--arms", nargs="+", choices=list(ablations()), default=None,
                   help="rows to run besides 'today' (default: all)")
    p.add_argument("--engine", choices=["sequential", "ray"], default="sequential",
                   help="sequential: one run after another here (default); ray: all runs as one Ray Tune experiment")
    p.add_argument("--ray-workers", type=int, default=1, help="--engine ray: Ray Train workers per run (default: 1)")
    p.add_argument("--ray-address", default=None, help="--engine ray: the Ray cluster (default: a local one)")
    args = p.parse_args(argv)
    from yolofuse_scale.data import write_synthetic_dataset

    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = write_synthetic_dataset(work / "data", args.train_pairs, args.val_pairs, args.imgsz, seed=0,
                                   scene=args.scene)
    ours_yaml = paired_yaml(data, work / "ours_data.yaml", ir_channels=1)
    base = {"model": args.model, "imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs, "workers": 0,
            "threads": args.threads, "lr": args.lr, "warmup_epochs": args.warmup_epochs,
            "close_mosaic": args.close_mosaic, "skip_steps": 5}
    table = {k: v for k, v in ablations().items() if args.arms is None or k == "today" or k in args.arms}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in table}
    if args.engine == "ray":
        runs = sweep_runs(args, ours_yaml, base, table, work)
    for seed in args.seeds if args.engine == "sequential" else []:
        for name, (flags, overrides) in table.items():
            s = {**base, **overrides, "seed": seed}
            r = run_ours(ours_yaml, ["--model", args.model, "--fusion", "data", *flags], s,
                         work / f"{name.split()[0].replace('=', '_')}_s{seed}")
            runs[name].append({"seed": seed, "status": r["status"], "mAP50": r.get("mAP50"),
                               "mAP50-95": r.get("mAP50-95"), "command": r.get("command"), "error": r.get("error")})
    result = {"schema": SCHEMA, "settings": {**vars(args), **base}, "ablations": table, "runs": runs,
              "summary": {k: summarise(runs, k) for k in ("mAP50-95", "mAP50")},
              "environment": common.environment(threads=args.threads, machine_label=args.label)}
    common.write_results(out, result, markdown(result), report="results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
