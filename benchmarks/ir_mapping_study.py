"""16-bit IR mapping study: the same radiometric data trained under each ``ir_mapping``, with the same budget and seeds.

The data: ``yolofuse-scale synth --scene thermal16`` (16-bit IR in centi-Kelvin; people at body temperature in cold
and in warm surroundings, among person-shaped distractors at temperatures a person does not have, and hot spots on
half the frames; yolofuse_scale/data/synth/thermal16.py). Each mapping gets its own data.yaml over the same files
(``ir_mapping:`` is the only difference), and every run goes through the real entry points, as a user runs them:
``train.py`` in a fresh process, then ``yolofuse-scale val`` on its ``weights/last.pt`` (which maps IR as it was
trained: the weights record the mapping, a percentile's levels included).

Default budget (4 mappings x 3 seeds, IR-only models so that the mapping is all that differs; two runs at a time, one
thread each, ~25 min on a shared 2-core CPU): 192 train / 128 val pairs at 128 px, yolov8t, 30 epochs of batch 8.

    python benchmarks/ir_mapping_study.py --out benchmarks/results/thermal16_2core_cpu
    python benchmarks/ir_mapping_study.py --fusion mid --seeds 0 1      # a fusion model instead of IR alone

Each run is also evaluated on the cold and on the warm validation frames apart (which kind a frame is comes from the
generator's own draw), to show where a mapping loses people. Results: ``results.json`` (every run, per-mapping mean
and spread, the environment) and ``results.md`` (the table). A finished run's records are kept in
``<work>/<mapping>_s<seed>/result.json`` and ``kinds.json`` and reused on a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks/ is on sys.path, the checkout is not

from benchmarks import common  # noqa: E402

#: the mappings compared, as data.yaml states them (the scene's temperatures span about -13..150 C)
MAPPINGS = {
    "minmax": "minmax",
    "shift8": "shift8",
    "range": "{range: [-10, 60], raw_per_degree: 100, raw_at_zero: 27315}",
    "percentile": "{percentile: [1, 99]}",
}
METRICS = ("mAP50", "mAP50-95")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/thermal16", help="results.json and results.md")
    p.add_argument("--work", default="runs/ir_mapping_study", help="data, runs, weights and logs")
    p.add_argument("--mappings", nargs="+", default=list(MAPPINGS), choices=list(MAPPINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--fusion", default="ir", help="the model's fusion (default: ir, IR alone)")
    p.add_argument("--train", type=int, default=192, help="synthetic train pairs (default: 192)")
    p.add_argument("--val", type=int, default=128, help="synthetic val pairs (default: 128)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic set (the same for every run)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--model", default="yolov8t")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (default: 2; the machine is shared)")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per run (default: 1)")
    p.add_argument("--label", default=f"{os.cpu_count()}-core CPU", help="machine label written with the numbers")
    p.add_argument("--train-args", default="--warmup-epochs 1", help="extra train.py flags")
    return p.parse_args(argv)


def write_data(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The thermal16 set once, and one data.yaml per mapping over its files."""
    from yolofuse_scale.data import write_synthetic_dataset

    base = write_synthetic_dataset(work / "data", args.train, args.val, args.imgsz, args.data_seed, scene="thermal16")
    text = base.read_text()
    out = {}
    for name in args.mappings:
        path = base.with_name(f"data_{name}.yaml")
        path.write_text(text + f"ir_mapping: {MAPPINGS[name]}\n")
        out[name] = path
    return out


def frame_kinds(base: Path, args: argparse.Namespace) -> dict[str, Path]:
    """``val_cold.txt`` and ``val_warm.txt`` beside ``base``: the validation frames of each kind, as the generator drew
    them (``render_pair``'s ``meta["warm"]``, from the same ``(seed, split, index)``)."""
    from yolofuse_scale.data.synth import render_pair
    from yolofuse_scale.data.synth.common import pair_rng

    h, w = args.imgsz, int(round(args.imgsz * 1.25 / 2) * 2)
    kinds: dict[str, list[str]] = {"cold": [], "warm": []}
    for i in range(args.val):
        warm = render_pair(pair_rng(args.data_seed, "val", i), h, w, "thermal16")[3]["warm"]
        kinds["warm" if warm else "cold"].append(f"images/val/val_{i:05d}.png")
    out = {}
    for kind, names in kinds.items():
        out[kind] = base.with_name(f"val_{kind}.txt")
        out[kind].write_text("".join(n + "\n" for n in names))
    return out


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    result = common.run_command(cmd, env, log=log)
    if not result.ok:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.error()[:200]}); see {log}:\n{result.output[-3000:]}")


def train_and_validate(args: argparse.Namespace, data: Path, mapping: str, seed: int, folder: Path,
                       env: dict[str, str]) -> dict:
    """One run: train.py then ``yolofuse-scale val`` on its last weights; its record."""
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run(common.train_command(["--data", str(data), "--model", args.model, "--fusion", args.fusion, "--imgsz",
                              str(args.imgsz), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                              "--lr", str(args.lr), "--seed", str(seed), "--workers", "0", "--no-val",
                              "--keep-last", "1", "--log-every", "1000", "--output-dir", str(folder / "train"),
                              *args.train_args.split()]),
        env, folder / "train.log")
    train_s = time.monotonic() - t0
    run([sys.executable, "-m", "yolofuse_scale", "val", "--weights", str(folder / "train/weights/last.pt"),
         "--data", str(data), "--imgsz", str(args.imgsz), "--workers", "0", "--no-plots", "--out", str(folder / "val")],
        env, folder / "val.log")
    metrics = common.read_metrics(folder / "val")
    record = {"mapping": mapping, "seed": seed, "train_s": round(train_s, 1), **{k: metrics[k] for k in METRICS},
              "precision": metrics["precision"], "recall": metrics["recall"]}
    done.write_text(json.dumps(record, indent=1))
    return record


def by_frame_kind(args: argparse.Namespace, data: Path, lists: dict[str, Path], folder: Path, env: dict[str, str]
                  ) -> dict:
    """The run's last weights evaluated on the cold and on the warm validation frames apart (``yolofuse-scale val``
    with the mapping's data.yaml pointed at each list)."""
    done = folder / "kinds.json"
    if done.is_file():
        return json.loads(done.read_text())
    out = {}
    for kind, listed in lists.items():
        y = data.with_name(f"{data.stem}_{kind}.yaml")
        y.write_text(data.read_text().replace("val: images/val", f"val: {listed.name}"))
        run([sys.executable, "-m", "yolofuse_scale", "val", "--weights", str(folder / "train/weights/last.pt"),
             "--data", str(y), "--imgsz", str(args.imgsz), "--workers", "0", "--no-plots", "--out",
             str(folder / f"val_{kind}")], env, folder / f"val_{kind}.log")
        metrics = common.read_metrics(folder / f"val_{kind}")
        out[kind] = {k: metrics[k] for k in (*METRICS, "images", "instances")}
    done.write_text(json.dumps(out, indent=1))
    return out


def summarise(records: list[dict], mappings: list[str]) -> list[dict]:
    rows = []
    for name in mappings:
        rs = [r for r in records if r["mapping"] == name]
        row = {"mapping": name, "stated": MAPPINGS[name], "seeds": [r["seed"] for r in rs]}
        for m in (*METRICS, "precision", "recall"):
            vals = [r[m] for r in rs]
            row[m] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals),
                      "spread": max(vals) - min(vals), "per_seed": vals}
        for kind in ("cold", "warm"):
            vals = [r["kinds"][kind]["mAP50-95"] for r in rs if "kinds" in r]
            if vals:
                row[f"mAP50-95 {kind}"] = {"mean": statistics.mean(vals), "spread": max(vals) - min(vals),
                                           "per_seed": vals, "images": rs[0]["kinds"][kind]["images"]}
        rows.append(row)
    return rows


def markdown(rows: list[dict], env: dict) -> str:
    kinds = [k for k in ("cold", "warm") if f"mAP50-95 {k}" in rows[0]]
    head = ["ir_mapping", "mAP50-95", "mAP50", *[f"mAP50-95 {k} frames ({rows[0][f'mAP50-95 {k}']['images']})"
                                                  for k in kinds], "P", "R", "per seed (mAP50-95)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['stated']}`"]
        cells += [f"{r[m]['mean']:.3f} ± {r[m]['spread'] / 2:.3f}" for m in ("mAP50-95", "mAP50", *[
            f"mAP50-95 {k}" for k in kinds])]
        cells += [f"{r[m]['mean']:.3f}" for m in ("precision", "recall")]
        cells.append(", ".join(f"{v:.3f}" for v in r["mAP50-95"]["per_seed"]))
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nmean over seeds {rows[0]['seeds']} ± half the min..max spread; {env['data']}; {env['model']} "
            f"--fusion {env['fusion']}, {env['epochs']} epochs of batch {env['batch_size']}; machine: {env['label']}; "
            f"torch {env['torch']}.\n")
    return "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    argv_used = sys.argv[1:] if argv is None else argv
    args = parse_args(argv_used)
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = common.train_env(args.threads)
    data = write_data(work, args)
    lists = frame_kinds(next(iter(data.values())), args)
    import torch

    t0 = time.monotonic()
    jobs = [(name, seed) for seed in args.seeds for name in args.mappings]  # seed-major: an early stop still compares
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        def one(name: str, seed: int) -> dict:
            folder = work / f"{name}_s{seed}"
            record = train_and_validate(args, data[name], name, seed, folder, env)
            return {**record, "kinds": by_frame_kind(args, data[name], lists, folder, env)}

        futures = [pool.submit(one, n, s) for n, s in jobs]
        records = []
        for f in futures:
            r = f.result()
            print(f"{r['mapping']:>10} seed {r['seed']}: mAP50 {r['mAP50']:.3f}  mAP50-95 {r['mAP50-95']:.3f}  "
                  f"({r['train_s']:.0f} s)", flush=True)
            records.append(r)
    rows = summarise(records, args.mappings)
    environment = {**common.environment(threads=args.threads, machine_label=args.label,
                                        command=[sys.executable, "benchmarks/ir_mapping_study.py", *argv_used]),
                   "label": args.label, "torch": torch.__version__, "model": args.model, "fusion": args.fusion,
                   "imgsz": args.imgsz, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "parallel": args.parallel, "train_args": args.train_args,
                   "data": (f"synthetic thermal16 set (`yolofuse-scale synth --scene thermal16`), {args.train} train / "
                            f"{args.val} val pairs, {args.imgsz}x{int(args.imgsz * 1.25)} px, seed {args.data_seed}"),
                   "study_wall_s": round(time.monotonic() - t0, 1)}
    (out / "results.json").write_text(json.dumps({"environment": environment, "summary": rows, "runs": records},
                                                 indent=1))
    (out / "results.md").write_text(markdown(rows, environment))
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
