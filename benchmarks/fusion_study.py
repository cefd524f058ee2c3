"""Fusion study: rgb, ir, data, early, mid and late trained with the same budget and seeds, then compared.

Every run goes through the real entry points, as a user would run them: ``train.py`` (the one
training loop) in a fresh process per run, then ``yolofuse-scale val`` on its ``weights/last.pt``.
Results: ``results.json`` (every run + per-variant mean and spread, with the environment),
``results.md`` (the table) and ``fusion_study.png`` (bar chart, whiskers = min..max over seeds).

Default budget (6 variants x 2 seeds, ~20 min of runs on a 2-core CPU): the synthetic set at 128 px
(128x160 frames), 192 train / 128 val pairs, yolov8t, 30 epochs of batch 8 (720 steps) with the full
training recipe (mosaic until the last 10 epochs). Shorter is not meaningful: at 10 epochs (240 steps,
mosaic already closed) the two-stream models had learnt the IR people and no cars yet (mid 0.48
mAP50, below RGB alone), measured on this machine.
Scale it up with flags; with real data (``--data``) nothing is synthesised:

    python benchmarks/fusion_study.py                                    # synthetic, CPU
    python benchmarks/fusion_study.py --data LLVIP/data.yaml --model yolov8n --imgsz 640 \\
        --epochs 100 --batch-size 16 --workers 8 --launch "torchrun --nproc_per_node 8" \\
        --train-args "--warmup-epochs 3" --label 8xH100 --out benchmarks/results/llvip   # the real comparison

A finished run's result is kept in ``<work>/<variant>_s<seed>/result.json`` and reused when the study
is restarted with the same ``--work``, so an interrupted study only pays for what is missing.

Oriented boxes and per-modality labels (issue 26): ``--scene aerial`` (the DroneVehicle-like synthetic set, ``task:
obb``; ``--task obb`` is then passed to train.py), ``--label-policies rgb ir union`` (each variant trained once per
policy, every run scored against the ``--score-policy`` labels, the IR ones by default, as DroneVehicle's papers
score), ``--published FILE`` (published numbers on the real dataset, shown in a table of their own: other data)::

    python benchmarks/fusion_study.py --scene aerial --variants rgb ir early mid late \
        --label-policies rgb ir union --out benchmarks/results/fusion_study_aerial_2core_cpu
``--engine ray`` runs the variants x seeds as one Ray Tune experiment instead (``benchmarks/sweeps.py``): every
run a Ray Train run of ``--ray-workers`` workers, side by side on a cluster (``--ray-address``), then the same
``val`` of each run's last weights. With one worker per run the numbers equal the sequential runner's for the
same seeds (tests/test_fusion_study.py); an interrupted sweep continues when restarted with the same ``--work``.

    python benchmarks/fusion_study.py --engine ray --ray-address auto --ray-workers 8 --data LLVIP/data.yaml ...

``--before OTHER/results.json`` adds a before/after table of mAP50-95 to ``results.md`` (the same variants in
another study: another recipe, another commit) and, per variant that reads both modalities, whether it is at
or above the best single modality (``rgb``, ``ir``) of its own study (per label policy): the misregistration
study's target (issue 25: ``benchmarks/results/fusion_misreg_2core_cpu``, both families, hard and easy scenes; a
variant's default for the misregistration, ``Variant.misregistration``, follows from it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks/ is on sys.path, the checkout is not

from benchmarks import common  # noqa: E402
from yolofuse_scale.model.variants import FUSIONS  # noqa: E402

VARIANTS = ("rgb", "ir", "data", "early", "mid", "late")
METRICS = ("mAP50", "mAP50-95")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/fusion_study", help="results.json/md and the png")
    p.add_argument("--work", default="runs/fusion_study", help="synthetic data, runs, weights and logs")
    p.add_argument("--data", default=None, help="data.yaml to use instead of the synthetic set")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=FUSIONS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="training seeds (default: 0 1)")
    p.add_argument("--train", type=int, default=192, help="synthetic train pairs (default: 192)")
    p.add_argument("--val", type=int, default=128, help="synthetic val pairs (default: 128)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic set (same for every run)")
    p.add_argument("--scene", choices=["easy", "hard", "aerial"], default="easy",
                   help="the synthetic set's generator setting (yolofuse-scale synth --scene; default: easy; aerial: "
                   "oriented boxes, RGB and IR labelled each on its own)")
    p.add_argument("--task", choices=["detect", "obb"], default=None,
                   help="train.py --task (default: none passed; obb with --scene aerial)")
    p.add_argument("--label-policies", nargs="+", choices=["rgb", "ir", "union"], default=None,
                   help="train every variant once per data.yaml label_policy (the data needs labels_ir); default: "
                   "the data.yaml's own")
    p.add_argument("--score-policy", choices=["rgb", "ir", "union"], default="ir",
                   help="with --label-policies: the labels every run is scored against (default: ir)")
    p.add_argument("--published", default=None,
                   help="JSON list of published results on the real dataset ({method, venue, modality, mAP50, "
                   "source}), tabled apart from the study's numbers")
    p.add_argument("--imgsz", type=int, default=128, help="input size; the synthetic frames are this high")
    p.add_argument("--model", default="yolov8t", help="model scale (default: yolov8t)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    # One thread: on a small shared CPU, OpenMP's spin-waiting threads stall each other; 2 threads on a
    # busy 2-core box measured 10-15 s per step against 0.3 s with 1.
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process (default: 0)")
    p.add_argument("--launch", default="", help="launcher prefix for train.py, e.g. 'torchrun --nproc_per_node 8'")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per run (default: 1)")
    p.add_argument("--label", default=f"{os.cpu_count()}-core CPU", help="machine label written with the numbers")
    p.add_argument("--train-args", default="--warmup-epochs 1",
                   help="extra train.py flags (default: '--warmup-epochs 1', as in the committed study)")
    p.add_argument("--before", default=None, metavar="RESULTS_JSON",
                   help="another study's results.json: results.md gets a before/after table of mAP50-95")
    p.add_argument("--engine", choices=["sequential", "ray"], default="sequential",
                   help="sequential: one run after another here (default); ray: all runs as one Ray Tune experiment")
    p.add_argument("--ray-workers", type=int, default=1, help="--engine ray: Ray Train workers per run (default: 1)")
    p.add_argument("--ray-address", default=None, help="--engine ray: the Ray cluster (default: a local one)")
    args = p.parse_args(argv)
    if args.engine == "ray" and args.launch:
        p.error("--launch starts the sequential runs; with --engine ray give --ray-workers")
    if args.engine == "ray" and args.label_policies:
        p.error("--label-policies runs with the sequential engine only (one sweep per data.yaml is not written yet)")
    return args


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    """Run a command, keep its output in ``log``; raise with the log's tail if it fails."""
    result = common.run_command(cmd, env, log=log)
    if not result.ok:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.error()[:200]}); see {log}:\n{result.output[-3000:]}")


def policy_data(data: Path, policy: str, score: str, work: Path) -> Path:
    """A copy of ``data`` (a data.yaml with ``labels_ir``) whose ``label_policy`` trains on ``policy`` and scores
    against ``score``; ``path:`` made absolute so the copy finds the same files."""
    import yaml

    from yolofuse_scale.data import load_data_config

    spec = yaml.safe_load(data.read_text())
    spec["path"] = str(load_data_config(data).root)
    spec["label_policy"] = {"train": policy, "val": score, "test": score}
    out = work / f"data_{policy}" / "data.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {data} with label_policy train {policy}, scored against {score}\n"
                   + yaml.safe_dump(spec, sort_keys=False))
    load_data_config(out)  # refused here (one message) rather than in every run
    return out


def train_flags(args: argparse.Namespace, data: Path) -> list[str]:
    """The train flags every run shares (``--fusion`` and ``--seed`` come per run; ``--task`` only when the study
    names one)."""
    task = ["--task", args.task] if args.task else []
    return ["--data", str(data), "--model", args.model, *task, "--imgsz", str(args.imgsz), "--batch-size",
            str(args.batch_size), "--epochs", str(args.epochs), "--lr", str(args.lr), "--workers", str(args.workers),
            "--no-val", "--keep-last", "1", "--log-every", "1000", *args.train_args.split()]


def train_and_validate(args: argparse.Namespace, data: Path, variant: str, seed: int, folder: Path,
                       env: dict[str, str], policy: str | None = None) -> dict:
    """One run: train.py then `yolofuse-scale val` on its last weights; returns the run's record."""
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run(common.train_command([*train_flags(args, data), "--fusion", variant, "--seed", str(seed), "--output-dir",
                              str(folder / "train")], args.launch.split()),
        env, folder / "train.log")
    return validate(args, data, variant, seed, folder / "train", folder, env, time.monotonic() - t0, policy)


def validate(args: argparse.Namespace, data: Path, variant: str, seed: int, train_dir: Path, folder: Path,
             env: dict[str, str], train_s: float, policy: str | None = None) -> dict:
    """`yolofuse-scale val` on a finished run's last weights (into ``folder/val``); the run's record."""
    run([sys.executable, "-m", "yolofuse_scale", "val", "--weights", str(train_dir / "weights/last.pt"),
         "--data", str(data), "--imgsz", str(args.imgsz), "--workers", str(args.workers), "--no-plots",
         "--out", str(folder / "val")], env, folder / "val.log")
    metrics = common.read_metrics(folder / "val")
    summary = common.read_metrics(train_dir)
    record = {"variant": variant, "seed": seed, "policy": policy, "ground_truth": metrics.get("ground_truth"),
              "params": summary["params"], "gflops": summary["gflops"],
              "steps": summary["step"], "train_s": round(train_s, 1), **{k: metrics[k] for k in METRICS},
              "precision": metrics["precision"], "recall": metrics["recall"], "per_class": metrics["per_class"]}
    (folder / "result.json").write_text(json.dumps(record, indent=1))
    return record


def sweep_records(args: argparse.Namespace, data: Path, work: Path, env: dict[str, str]) -> list[dict]:
    """--engine ray: every (variant, seed) as a trial of one Tune experiment, then each run's `val`."""
    from benchmarks.sweeps import run_study

    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in env})  # the workers'
    rows = run_study(train_flags(args, data), {"fusion": args.variants, "seed": args.seeds}, work,
                     workers=args.ray_workers, threads=args.threads, address=args.ray_address)
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        points = [(r["fusion"], r["seed"], r["status"]) for r in failed]
        raise RuntimeError(f"{len(failed)} run(s) did not finish: {points}")
    by_point = {(r["fusion"], r["seed"]): r for r in rows}
    records = []
    for seed in args.seeds:  # the sequential runner's order
        for v in args.variants:
            row = by_point[(v, seed)]
            records.append(validate(args, data, v, seed, Path(row["run"]), work / f"{v}_s{seed}", env, row["wall_s"]))
    return records


def summarise(records: list[dict], variants: list[str], policies: list[str | None] = (None,)) -> list[dict]:
    """Per variant (and label policy): mean, min, max and spread (max - min) over seeds of each metric."""
    rows = []
    for v, policy in ((v, p) for p in policies for v in variants):
        rs = [r for r in records if r["variant"] == v and r.get("policy") == policy]
        row = {"variant": v, "policy": policy, "params": rs[0]["params"], "gflops": rs[0]["gflops"],
               "seeds": [r["seed"] for r in rs], "train_s": round(statistics.mean(r["train_s"] for r in rs), 1),
               "ground_truth": rs[0].get("ground_truth")}
        for m in METRICS:
            vals = [r[m] for r in rs]
            row[m] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals),
                      "spread": max(vals) - min(vals), "per_seed": vals}
        for name in rs[0]["per_class"]:
            row[f"mAP50 {name}"] = statistics.mean(r["per_class"][name]["mAP50"] for r in rs if name in r["per_class"])
        rows.append(row)
    return rows


def markdown(rows: list[dict], env: dict, published: list[dict] | None = None) -> str:
    classes = [k[6:] for k in rows[0] if k.startswith("mAP50 ")]
    policies = any(r.get("policy") for r in rows)
    head = ["fusion", *(["trained on"] if policies else []), "mAP50", "mAP50-95", *[f"mAP50 {c}" for c in classes],
            "params (M)", f"GFLOPs @{env['imgsz']}", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], *([f"{r['policy']} labels"] if policies else [])]
        cells += [f"{r[m]['mean']:.3f} ± {r[m]['spread'] / 2:.3f}" for m in METRICS]
        cells += [f"{r[f'mAP50 {c}']:.3f}" for c in classes]
        cells += [f"{r['params'] / 1e6:.3f}", f"{r['gflops']:.3f}", f"{r['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    scored = f"; scored against {rows[0]['ground_truth']}" if rows[0].get("ground_truth") else ""
    note = (f"\nmean over seeds {rows[0]['seeds']} ± half the min..max spread; {env['data']}{scored}; "
            f"{env['model']}, {env['epochs']} epochs of batch {env['batch_size']}; machine: {env['label']}; "
            f"torch {env['torch']}, Python {env['python']}.\n")
    return "\n".join(lines) + "\n" + note + published_table(published or [])


def published_table(entries: list[dict]) -> str:
    """The published results of ``--published``, as a table of their own: another dataset (the real one), other
    models, schedules and input sizes; they place the study's numbers, they are not comparable with them."""
    if not entries:
        return ""
    lines = ["\n**Published on the real dataset (different data: not comparable with the table above)**\n",
             "| method | venue | modality | mAP50 | source |", "|---|---|---|---|---|"]
    lines += [f"| {e['method']} | {e['venue']} | {e['modality']} | {e['mAP50']} | {e['source']} |" for e in entries]
    return "\n".join(lines) + "\n"


SINGLE = ("rgb", "ir")


def before_after(before: list[dict], after: list[dict], metric: str = "mAP50-95") -> str:
    """Markdown: per row of ``after``, its ``metric`` before (``before``'s row of the same variant and label
    policy, if any) and after, the change, and for a fusion whether it is at or above the best single modality of
    the same study trained on the same labels (``--label-policies``: one row per variant and policy)."""
    def best_single(rows: list[dict], policy: str | None) -> float | None:
        values = [r[metric]["mean"] for r in rows if r["variant"] in SINGLE and r.get("policy") == policy]
        return max(values) if values else None

    def cell(r: dict | None) -> str:
        return f"{r[metric]['mean']:.3f} ± {r[metric]['spread'] / 2:.3f}" if r else "-"

    def verdict(r: dict | None, best: float | None) -> str:
        if r is None or r["variant"] in SINGLE or best is None:
            return ""
        return "yes" if r[metric]["mean"] >= best else f"no ({r[metric]['mean'] - best:+.3f})"

    was = {(r["variant"], r.get("policy")): r for r in before}
    policies = any(r.get("policy") for r in (*before, *after))
    lines = [f"| fusion{' | trained on' if policies else ''} | {metric} before | after | change "
             "| ≥ best single before | ≥ best single after |",
             "|---|---|---|---|---|---|" + ("---|" if policies else "")]
    for r in after:
        policy = r.get("policy")
        old = was.get((r["variant"], policy))
        change = f"{r[metric]['mean'] - old[metric]['mean']:+.3f}" if old else "-"
        lines.append(f"| {r['variant']}{f' | {policy} labels' if policies else ''} | {cell(old)} | {cell(r)} | "
                     f"{change} | {verdict(old, best_single(before, policy))} | "
                     f"{verdict(r, best_single(after, policy))} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for j, m in enumerate(METRICS):
        xs = [i + (j - 0.5) * width for i in range(len(rows))]
        means = [r[m]["mean"] for r in rows]
        err = [[r[m]["mean"] - r[m]["min"] for r in rows], [r[m]["max"] - r[m]["mean"] for r in rows]]
        ax.bar(xs, means, width, yerr=err, capsize=3, label=m)
    ax.set_xticks(range(len(rows)), [r["variant"] + (f"\n{r['policy']}" if r.get("policy") else "") for r in rows],
                  fontsize=9 if len(rows) <= 8 else 7)
    ax.set_ylim(0, 1.12)  # headroom for the legend above the bars
    ax.set_ylabel("validation mAP")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv_used = sys.argv[1:] if argv is None else argv
    args = parse_args(argv_used)
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = common.train_env(args.threads)
    if args.data:
        data, data_desc = Path(args.data).resolve(), f"data {args.data}"
    else:
        from yolofuse_scale.data import write_synthetic_dataset

        data = write_synthetic_dataset(work / "data", args.train, args.val, args.imgsz, args.data_seed,
                                       scene=args.scene)
        data_desc = (f"synthetic set (`yolofuse-scale synth --scene {args.scene}`), {args.train} train / "
                     f"{args.val} val pairs, "
                     f"{args.imgsz}x{int(args.imgsz * 1.25)} px, seed {args.data_seed}")
    if args.task is None and args.scene == "aerial" and not args.data:
        args.task = "obb"
    policies: list[str | None] = list(args.label_policies or [None])
    datas = {p: data if p is None else policy_data(data, p, args.score_policy, work) for p in policies}
    published = json.loads(Path(args.published).read_text()) if args.published else []
    import torch

    t0 = time.monotonic()
    def say(r: dict) -> dict:
        policy = r.get("policy")
        print(f"{r['variant']:>6}{'' if policy is None else f' ({policy} labels)'} seed {r['seed']}: mAP50 "
              f"{r['mAP50']:.3f}  mAP50-95 {r['mAP50-95']:.3f}  ({r['train_s']:.0f} s)", flush=True)
        return r

    if args.engine == "ray":
        records = [say(r) for r in sweep_records(args, data, work, env)]
    else:  # seed-major: a study stopped early still has every variant for the first seed
        records = [say(train_and_validate(args, datas[p], v, seed, work / (f"{v}_s{seed}" if p is None else
                                                                            f"{v}_{p}_s{seed}"), env, p))
                   for seed in args.seeds for p in policies for v in args.variants]
    rows = summarise(records, args.variants, policies)
    shared = common.environment(threads=args.threads, machine_label=args.label,
                                command=[sys.executable, "benchmarks/fusion_study.py", *argv_used])
    environment = {**shared, "label": args.label, "cpu_count": os.cpu_count(), "torch": torch.__version__,
                   "data": data_desc,
                   "model": args.model, "imgsz": args.imgsz, "epochs": args.epochs, "batch_size": args.batch_size,
                   "lr": args.lr, "threads": args.threads, "task": args.task,
                   "launch": f"ray ({args.ray_workers} worker(s) per run)" if args.engine == "ray" else
                   args.launch or "python",
                   "label_policies": args.label_policies, "score_policy": args.score_policy if args.label_policies
                   else None,
                   "train_args": args.train_args,
                   # this invocation only (finished runs are reused); train_s_total sums every run's train.py
                   "study_wall_s": round(time.monotonic() - t0, 1),
                   "train_s_total": round(sum(r["train_s"] for r in records), 1)}
    (out / "results.json").write_text(json.dumps({"environment": environment, "summary": rows, "runs": records,
                                                  "published": published}, indent=1))
    text = markdown(rows, environment, published)
    if args.before:
        before = json.loads(Path(args.before).read_text())
        text += (f"\nBefore: {args.before} ({before['environment'].get('train_args', '')}, commit "
                 f"{before['environment'].get('git_commit')}); after: this study ({args.train_args}).\n\n"
                 + before_after(before["summary"], rows))
    (out / "results.md").write_text(text)
    short = "synthetic set" if not args.data else Path(args.data).parent.name
    title = (f"{short}, {args.model} @{args.imgsz}, {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}"
             f"\n{args.label}")
    bar_chart(rows, out / "fusion_study.png", title)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'fusion_study.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
