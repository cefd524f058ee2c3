"""What Ray costs against torchrun, measured side by side in one run on this machine (issue 27).

    python benchmarks/ray_overhead.py --out benchmarks/results/ray_overhead_2core_cpu

**Launch**: the same 2-process training (same data, model, flags, seed) started three ways, alternated
``--repeats`` times so a drift of the machine falls on every launcher alike:

- ``torchrun --nproc_per_node 2 -m yolofuse_scale train ...``
- ``yolofuse-scale train ... --engine ray --ray-workers 2`` with a local Ray cluster the command starts and stops
  (what a user without a cluster pays), and
- the same against an already running local cluster (``--ray-address``: what a run on a standing cluster pays).

Per run: the wall time, the **time to the first step** (from the command's start until ``train_log.jsonl`` holds
its first step, polled every 20 ms: interpreter, imports, Ray's start and worker group, process group, data
scan, model build), and the median images/s of the steps after ``--warmup`` (the loop itself; Ray adds nothing
inside a step, so the ratio should be ~1).

**Sweep**: 4 trials (``--lr`` over 4 values, ``--sweep-epochs`` epochs, validated every epoch) run by
``yolofuse-scale tune`` with ASHA (grace 1 epoch, reduction factor 2, 2 trials at a time, 1 worker and 1 thread
each) against the sequential runner (the 4 trainings one after another, each with both threads). The wall
times and the epochs each spent: ASHA stops trials that fall behind, so it trains fewer epochs.

Results: ``results.json`` and ``report.md`` in ``--out``. CPU only (gloo); each process 1 thread, so 2 processes
use the 2 cores of the machine this was written on.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from yolofuse_scale.bench.measure import summarize_log  # noqa: E402

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_METRICS_ENABLED": "0",
           "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_AUTH_MODE": "token"}

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/ray_overhead"))
    p.add_argument("--work", type=Path, default=None, help="run folders (default: <out>/work, removed at the end)")
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--steps", type=int, default=30, help="training steps of each launch run")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the images/s median")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sweep-epochs", type=int, default=4)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-launch", action="store_true",
                   help="keep the launch rows of <out>/results.json (measured before) and run the sweep only")
    p.add_argument("--sweep-metric", default="val_loss",
                   help="the sweep's metric (default: val_loss, which moves from the first epoch; a tiny run's mAP "
                        "is 0 for its first epochs, and ASHA then has nothing to stop on)")
    p.add_argument("--label", default="", help="the machine, for the report")
    return p.parse_args(argv)


def timed_run(cmd: list[str], env: dict[str, str], run_dir: Path, log: Path, timeout: float = 900) -> dict:
    """Run ``cmd`` through the shared launcher (``common.run_command``: its timeout stops the whole tree); its wall
    time, and when ``run_dir/train_log.jsonl`` first held a line (polled every 20 ms from a thread beside it)."""
    first: list[float] = []
    done = threading.Event()
    t0 = time.perf_counter()

    def watch() -> None:
        train_log = run_dir / "train_log.jsonl"
        while not done.is_set():
            if train_log.is_file() and train_log.stat().st_size > 0:
                first.append(time.perf_counter() - t0)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    run = common.run_command(cmd, env, timeout, log=log)
    done.set()
    watcher.join()
    if not run.ok:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}:\n{run.output[-3000:]}")
    return {"wall_s": round(run.wall_s, 2), "first_step_s": round(first[0], 2) if first else None}


def launch_arms(args: argparse.Namespace, data: Path, work: Path, env: dict[str, str]) -> list[dict]:
    """Every (launcher, repeat) run, alternated."""
    flags = ["--data", str(data), "--model", args.model, "--imgsz", str(args.imgsz), "--batch-size",
             str(args.batch_size), "--max-steps", str(args.steps), "--epochs", "100", "--no-val", "--workers", "0",
             "--seed", "0", "--log-every", "1000"]
    # the standing cluster: a local Ray cluster this process starts and holds (its driver), which the runs join
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    address = ray.get_runtime_context().gcs_address
    rows = []
    try:
        for r in range(args.repeats):
            for arm in ("torchrun", "ray_local", "ray_standing"):
                out = work / f"{arm}_{r}"
                shutil.rmtree(out, ignore_errors=True)
                if arm == "torchrun":
                    cmd = common.train_command([*flags, "--output-dir", str(out)], "torchrun", 2)
                else:
                    ray_flags = ["--engine", "ray", "--ray-workers", "2", "--ray-cpus-per-worker", "1"]
                    if arm == "ray_standing":
                        ray_flags += ["--ray-address", address]
                    cmd = common.train_command([*flags, *ray_flags, "--output-dir", str(out)], "python", 1)
                work.mkdir(parents=True, exist_ok=True)
                row = {"arm": arm, "repeat": r, **timed_run(cmd, env, out, work / f"{arm}_{r}.log")}
                steps = common.read_log(out)
                row.update(images_per_s=round(summarize_log(steps, args.warmup, 2 * args.batch_size)
                                              ["images_per_s"], 1), steps=len(steps))
                print(f"{arm:>13} repeat {r}: wall {row['wall_s']:6.1f} s, first step at {row['first_step_s']:5.1f} s, "
                      f"{row['images_per_s']:6.1f} images/s", flush=True)
                rows.append(row)
    finally:
        ray.shutdown()
    return rows


def sweep_arms(args: argparse.Namespace, data: Path, work: Path, env: dict[str, str]) -> dict:
    """The 4-trial ASHA sweep and the sequential runner of the same 4 trainings."""
    lrs = [0.00001, 0.002, 0.01, 0.02]  # one clearly poor setting, as a real sweep has
    flags = ["--data", str(data), "--model", args.model, "--imgsz", str(args.imgsz), "--batch-size",
             str(args.batch_size), "--epochs", str(args.sweep_epochs), "--workers", "0", "--seed", "0",
             "--log-every", "1000", "--warmup-epochs", "0"]
    seq_dir = work / "sequential"
    shutil.rmtree(seq_dir, ignore_errors=True)
    seq_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    seq = []
    for lr in lrs:
        out = seq_dir / f"lr{lr}"
        timed_run(common.train_command([*flags, "--lr", str(lr), "--output-dir", str(out)], "python", 1),
                  {**env, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, out, seq_dir / f"lr{lr}.log")
        seq.append({"lr": lr, "epochs": args.sweep_epochs,
                    "mAP50-95": common.read_metrics(out)["metrics"]["mAP50-95"]})
    seq_wall = time.perf_counter() - t0
    print(f"sequential: 4 trainings in {seq_wall:.1f} s", flush=True)

    tune_dir = work / "tune"
    shutil.rmtree(tune_dir, ignore_errors=True)
    tune_dir.mkdir(parents=True)
    space = tune_dir.parent / "sweep.yaml"
    space.write_text(
        f"metric: {args.sweep_metric}\nscheduler: {{type: asha, grace_period: 1, reduction_factor: 2}}\n"
        "num_samples: 1\n"
        "max_concurrent_trials: 2\ntrial: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0, max_failures: 0}\n"
        f"space:\n  lr: {{grid: {lrs}}}\n")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "yolofuse_scale", "tune", "--space", str(space), *flags, "--output-dir",
           str(tune_dir / "exp")]
    done = common.run_command(cmd, {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, 1800,
                              log=tune_dir / "tune.log")
    tune_wall = time.perf_counter() - t0
    if not done.ok:
        raise RuntimeError(f"tune failed; see {tune_dir / 'tune.log'}:\n{done.output[-3000:]}")
    trials = list(csv.DictReader((tune_dir / "exp" / "results.csv").open()))
    print(f"tune (ASHA): 4 trials in {tune_wall:.1f} s", flush=True)
    return {"lrs": lrs, "epochs": args.sweep_epochs, "metric": args.sweep_metric,
            "sequential_wall_s": round(seq_wall, 1), "sequential": seq,
            "tune_wall_s": round(tune_wall, 1), "tune_trials": trials,
            "tune_epochs_total": sum(int(t["epochs"]) for t in trials),
            "sequential_epochs_total": len(lrs) * args.sweep_epochs}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for arm in ("torchrun", "ray_local", "ray_standing"):
        rs = [r for r in rows if r["arm"] == arm]
        out[arm] = {k: {"median": statistics.median(r[k] for r in rs), "min": min(r[k] for r in rs),
                        "max": max(r[k] for r in rs)} for k in ("wall_s", "first_step_s", "images_per_s")}
    base = out["torchrun"]
    for arm in ("ray_local", "ray_standing"):
        out[arm]["images_per_s_ratio"] = round(out[arm]["images_per_s"]["median"] / base["images_per_s"]["median"], 3)
        out[arm]["extra_first_step_s"] = round(out[arm]["first_step_s"]["median"] - base["first_step_s"]["median"], 2)
    return out


def report(result: dict) -> str:
    env, s = result["environment"], result["summary"]
    lines = [f"# Ray against torchrun ({env.get('label') or 'this machine'})", "",
             f"{result['setup']}; {result['repeats']} repeats, alternated; medians (min-max).", "",
             "| launcher | wall s | first step at s | images/s | images/s vs torchrun |", "|---|---|---|---|---|"]
    for arm, name in (("torchrun", "torchrun, 2 processes"), ("ray_local", "--engine ray, local cluster started"),
                      ("ray_standing", "--engine ray, standing cluster")):
        a = s[arm]

        def cell(k: str, a: dict = a) -> str:
            return f"{a[k]['median']:.1f} ({a[k]['min']:.1f}-{a[k]['max']:.1f})"

        lines.append(f"| {name} | {cell('wall_s')} | {cell('first_step_s')} | {cell('images_per_s')} | "
                     f"{a.get('images_per_s_ratio', 1.0):.3f} |")
    sw = result.get("sweep")
    if sw:
        lines += ["", f"**Sweep**: 4 trials (lr {sw['lrs']}), {sw['epochs']} epochs each, validated every epoch; ASHA "
                  f"reads {sw.get('metric', 'mAP50-95')} per epoch.", "",
                  "| runner | wall s | epochs trained |", "|---|---|---|",
                  f"| sequential (one after another, 2 threads each) | {sw['sequential_wall_s']} | "
                  f"{sw['sequential_epochs_total']} |",
                  f"| tune, ASHA (grace 1, factor 2), 2 trials at a time, 1 thread each | {sw['tune_wall_s']} | "
                  f"{sw['tune_epochs_total']} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from yolofuse_scale.data import write_synthetic_dataset

    work = args.work or args.out / "work"
    data = write_synthetic_dataset(work / "data", n_train=64, n_val=16, imgsz=args.imgsz, seed=0)
    env = common.train_env(threads=1, **RAY_ENV)
    if args.skip_launch:
        import json

        rows = json.loads((args.out / "results.json").read_text())["runs"]
    else:
        rows = launch_arms(args, data, work / "launch", env)
    result = {"environment": {**common.environment(threads=1, machine_label=args.label,
                                                   command=[sys.executable, "benchmarks/ray_overhead.py",
                                                            *(argv if argv is not None else sys.argv[1:])]),
                              "label": args.label},
              "setup": f"{args.model} mid fusion, {args.imgsz} px, batch {args.batch_size} per process, "
                       f"{args.steps} steps, 2 processes x 1 thread, gloo", "repeats": args.repeats,
              "runs": rows, "summary": summarise(rows)}
    if not args.skip_sweep:
        result["sweep"] = sweep_arms(args, data, work / "sweep", env)
    text = report(result)
    common.write_results(args.out, result, text)
    print(text)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
