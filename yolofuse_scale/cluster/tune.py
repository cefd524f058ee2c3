"""``yolofuse-scale tune``: a Ray Tune sweep whose every trial is a Ray Train run of the one training loop.

    yolofuse-scale tune --space sweep.yaml --data data.yaml --model yolov8n --epochs 30 --output-dir runs/tune

The training flags give every trial's base configuration; ``--space`` says what varies, which metric compares
trials and how (``space.py``). Each trial is ``trial.workers`` Ray Train workers (``driver.torch_trainer``, the
same as ``train --engine ray``) whose rank 0 reports every validated epoch's metrics with its checkpoint
(``report.py``); the scheduler (ASHA, or the median stopping rule) reads that per-epoch metric and stops the
trials that fall behind. A trial's run folder is ``<output-dir>/runs/<trial id>``: a complete run folder
(config.yaml, train_log.jsonl, checkpoints, weights, metrics.json) that ``train --config`` can rerun.

What the experiment folder (``--output-dir``) ends with:

- ``results.csv`` and ``results.md``: one row per trial (its values, how it ended, epochs, the metric at its
  last epoch and its best), best first;
- ``best/config.yaml``: the best trial's configuration (the trial that reached the most epochs, then the
  best metric there), its output folder ``best/``: ``yolofuse-scale train --config <output-dir>/best/config.yaml``
  trains it again (bit for bit, under the same launcher and world size: trials are deterministic given their
  settings, the seed included);
- ``sweep.json`` (the sweep file and base configuration it was started with) and Ray Tune's experiment state.

**Resumable**: the same command again continues an interrupted experiment (Ray Tune's restore: finished trials
are kept, unfinished and errored ones continue, each from its run folder's newest checkpoint), refused when the
sweep file or the base flags differ from ``sweep.json``. Tune keeps its experiment state pickled: restore only
experiment folders this tool wrote (trusted local state, as checkpoints are: docs/tune.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from yolofuse_scale.cluster.settings import RaySettings
from yolofuse_scale.cluster.space import SweepSpec, apply_overrides, read_sweep
from yolofuse_scale.config import RunConfig
from yolofuse_scale.errors import ConfigError

SWEEP_FILE = "sweep.json"
DEFAULT_OUTPUT = "runs/tune"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from yolofuse_scale.config import add_train_arguments

    parser.add_argument("--space", required=True, metavar="FILE",
                        help="the sweep: settings to vary, metric, scheduler, trial resources (docs/tune.md)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="the Ray cluster (default: $RAY_ADDRESS, else a local cluster of this machine)")
    add_train_arguments(parser)  # every trial's base configuration; --output-dir is the experiment folder


def trial_settings(spec: SweepSpec, address: str | None) -> RaySettings:
    return RaySettings(spec.workers, spec.workers, spec.cpus_per_worker, spec.gpus_per_worker, spec.max_failures,
                       address)


# ------------------------------------------------------------------------------------------ one trial
def tune_trial(config: dict[str, Any], base: dict[str, dict[str, Any]], settings: RaySettings,
               runs_dir: str, launch_id: str) -> None:
    """One Tune trial (in its trial actor): the base configuration with the trial's values, trained by Ray Train
    workers into ``runs_dir/<trial id>``; a restarted trial continues its run folder (``--resume auto``)."""
    from yolofuse_scale.startup import collector_paused

    # A trial actor is a fresh Ray worker: these import Ray Tune, Ray Train and PyTorch (startup.py; 3.2 s of CPU
    # with the collector paused, 3.6 s without, 4 alternating runs on a 2-core Xeon VM)
    with collector_paused():
        from ray import tune
        from ray.train.torch import TorchTrainer  # noqa: F401 - what torch_trainer imports
        from ray.tune.integration.ray_train import TuneReportCallback

        from yolofuse_scale.cluster.driver import torch_trainer

    trial_id = tune.get_context().get_trial_id()
    values = apply_overrides(base, config)
    values["checkpoint"].update(output_dir=str(Path(runs_dir) / trial_id), resume="auto", overwrite=False)
    cfg = RunConfig.from_dict(values)
    loop = {"run": cfg.to_dict(), "launch_id": f"{launch_id}-{trial_id}", "validated_only": True}
    result = torch_trainer(cfg, settings, loop, callbacks=[TuneReportCallback()]).fit()
    outcome = result.return_value or {}
    if "error" in outcome:
        raise RuntimeError(outcome["error"])


def trials_that_fit(spec: SweepSpec) -> int:
    """How many trials the cluster holds at once now (its CPUs and GPUs over a trial's workers'; at least 1).

    Trials beyond that would each start a Ray Train run that waits for workers while another run holds them
    (seen here: a waiting run did not start when the CPUs came free, until its worker-group start timed out):
    the limit makes the next trial start when one ends. An autoscaling cluster grows only for what waits, so
    there give ``max_concurrent_trials`` in the sweep file."""
    import ray

    total = ray.cluster_resources()
    fits = [int(total.get("CPU", 0) // (spec.workers * spec.cpus_per_worker))] if spec.cpus_per_worker else []
    if spec.gpus_per_worker:
        fits.append(int(total.get("GPU", 0) // (spec.workers * spec.gpus_per_worker)))
    return max(1, min(fits, default=1))


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _scheduler(spec: SweepSpec, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    s = spec.scheduler
    if s.kind == "asha":  # time is the number of epochs done: the rungs are epoch counts
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor)
    if s.kind == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=s.grace_period, min_samples_required=3)
    return FIFOScheduler()


# ------------------------------------------------------------------------------------------ the experiment
def _sweep_record(spec: SweepSpec, base: dict[str, Any]) -> dict[str, Any]:
    """What an experiment was started with (``sweep.json``): the sweep file's text and the base configuration."""
    return {"space": Path(spec.path).read_text(), "base": base}


def _check_resume(out: Path, record: dict[str, Any], can_restore: bool) -> bool:
    """Whether ``out`` holds this experiment to continue (True), nothing (False), or something else (refused)."""
    saved_path = out / SWEEP_FILE
    if not saved_path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"--output-dir {out}: not empty and not a sweep's folder (no {SWEEP_FILE}); give a new "
                              "--output-dir for the experiment", settings=("output_dir",))
        return False
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{saved_path}: unreadable ({e}); give a new --output-dir") from None
    differs = [what for what, key in (("the sweep file differs", "space"), ("the training flags differ", "base"))
               if saved.get(key) != record[key]]
    if differs:
        raise ConfigError(f"--output-dir {out} holds an experiment started with other settings "
                          f"({' and '.join(differs)} from {saved_path}); continue it with the same command, or "
                          "give a new --output-dir", settings=("output_dir",))
    return can_restore


def run_experiment(base: RunConfig, spec: SweepSpec, out: Path, address: str | None = None) -> list[dict[str, Any]]:
    """Run (or continue) the sweep ``spec`` over ``base`` in ``out``; the results' rows (``results.csv``)."""
    from yolofuse_scale.cluster.driver import absolute_paths
    from yolofuse_scale.cluster.session import ray_missing_error, ray_session

    try:
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator
    except ImportError:
        raise ray_missing_error() from None
    out = out.resolve()
    base = absolute_paths(replace(base, checkpoint=replace(base.checkpoint, output_dir=str(out))))
    base_values = base.to_dict()
    record = _sweep_record(spec, {s: {k: v for k, v in d.items() if k != "output_dir"} for s, d in base_values.items()})
    settings = trial_settings(spec, address)
    started = time.monotonic()
    resume = _check_resume(out, record, tune.Tuner.can_restore(str(out)))  # refused before Ray starts
    with ray_session(address):
        concurrent = spec.max_concurrent_trials or trials_that_fit(spec)
        trainable = tune.with_resources(
            tune.with_parameters(tune_trial, base=base_values, settings=settings, runs_dir=str(out / "runs"),
                                 launch_id=uuid.uuid4().hex),
            # A trial's driver only waits on its Ray Train run, whose workers hold the CPUs and GPUs; Tune refuses
            # a trial without any resource, so it asks for 1 MiB of memory (a logical amount, nothing reserved).
            {"cpu": 0, "memory": 1 << 20})
        if resume:
            print(f"continuing the experiment in {out}", flush=True)
            tuner = tune.Tuner.restore(str(out), trainable, resume_unfinished=True, resume_errored=True,
                                       param_space=spec.param_space())
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / SWEEP_FILE).write_text(json.dumps(record, indent=1))
            tuner = tune.Tuner(
                trainable, param_space=spec.param_space(),
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode, scheduler=_scheduler(spec, base.train.epochs),
                    # the limit is the generator's own (TuneConfig's max_concurrent_trials ignores a generator)
                    search_alg=BasicVariantGenerator(random_state=spec.seed, max_concurrent=concurrent),
                    num_samples=spec.num_samples, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=out.name, storage_path=str(out.parent)))
        print(f"sweep {spec.path}: {spec.trials} trial(s), {concurrent} at a time, each {settings.describe()}; "
              f"metric {spec.metric} "
              f"({spec.mode}), scheduler {spec.scheduler.kind}; experiment folder {out}", flush=True)
        grid = tuner.fit()
    rows = result_rows(grid, spec, base.train.epochs, out)
    write_results(out, rows, spec, base_values, time.monotonic() - started)
    return rows


# ------------------------------------------------------------------------------------------ results
def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "(base)"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def result_rows(grid, spec: SweepSpec, epochs: int, out: Path) -> list[dict[str, Any]]:
    """One row per trial, in trial order: its values, how it ended, epochs, last and best metric, run folder."""
    # Tune's status of each trial (the result grid has none): TERMINATED, ERROR, or unfinished
    statuses = {t.trial_id: t.status for t in grid._experiment_analysis.trials}
    rows = []
    for result in grid:
        config = result.config or {}
        history = result.metrics_dataframe
        reports = [] if history is None or spec.metric not in history else \
            [(int(e), float(m)) for e, m in zip(history["epoch"], history[spec.metric])]
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        reached = reports[-1][0] if reports else 0
        if result.error is not None:
            status = f"error: {str(result.error).strip().splitlines()[-1][:200]}"
        elif statuses.get(trial_id, "TERMINATED") != "TERMINATED":
            status = "unfinished (the same command continues it)"
        elif reached < epochs and spec.scheduler.kind != "none":
            status = f"stopped by {spec.scheduler.kind} after epoch {reached}"
        else:
            status = "done"
        best = (max if spec.mode == "max" else min)(reports, key=lambda r: r[1]) if reports else (None, None)
        rows.append({"trial": trial_id, "status": status,
                     **{d.name: config.get(d.name) for d in spec.dimensions},
                     "epochs": reached, spec.metric: reports[-1][1] if reports else None,
                     f"best {spec.metric}": best[1], "best epoch": best[0],
                     "wall_s": round(float(metrics.get("time_total_s", 0.0)), 1),
                     "run": str(out / "runs" / trial_id)})
    rows.sort(key=lambda r: r["trial"])
    return rows


def _score(row: dict[str, Any], metric: str, mode: str) -> tuple:
    """How good a trial is: the epochs it reached, then its ``metric`` at its last one (higher is better here)."""
    value = row[metric]
    return (row["epochs"], -math.inf if value is None else value if mode == "max" else -value)


def best_row(rows: list[dict[str, Any]], metric: str, mode: str = "max") -> dict[str, Any] | None:
    """The trial that reached the most epochs, then the best ``metric`` at its last one (errors excluded)."""
    ok = [r for r in rows if not r["status"].startswith(("error", "unfinished")) and r[metric] is not None]
    return max(ok, key=lambda r: _score(r, metric, mode)) if ok else None


def write_results(out: Path, rows: list[dict[str, Any]], spec: SweepSpec, base: dict[str, Any],
                  wall_s: float) -> None:
    """results.csv, results.md and best/config.yaml (module docstring); the table on stdout."""
    metric = spec.metric
    best = best_row(rows, metric, spec.mode)
    ordered = sorted(rows, key=lambda r: _score(r, metric, spec.mode), reverse=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    for r in ordered:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
    (out / "results.csv").write_text(buf.getvalue())
    dims = [d.name for d in spec.dimensions]
    head = ["trial", "status", *dims, "epochs", metric, f"best {metric} (epoch)", "wall s"]
    lines = [f"### Sweep {Path(spec.path).name}: {len(rows)} trial(s), metric {metric} ({spec.mode}), scheduler "
             f"{spec.scheduler.kind}", "",
             f"Each trial: {trial_settings(spec, None).describe()}; {spec.max_concurrent_trials or 'as many as fit'} "
             f"at once; experiment wall time {wall_s:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ordered:
        value = "–" if r[metric] is None else f"{r[metric]:.4f}"
        peak = "–" if r[f"best {metric}"] is None else f"{r[f'best {metric}']:.4f} ({r['best epoch']})"
        lines.append("| " + " | ".join([r["trial"] + (" **best**" if r is best else ""), r["status"],
                                        *(_value_text(r[d]) for d in dims), str(r["epochs"]), value, peak,
                                        f"{r['wall_s']:.0f}"]) + " |")
    if best is not None:
        values = apply_overrides(base, {d: best[d] for d in dims})
        values["checkpoint"].update(output_dir=str(out / "best"), resume="", overwrite=False)
        (out / "best").mkdir(exist_ok=True)
        RunConfig.from_dict(values).save(out / "best" / "config.yaml")
        lines += ["", f"Best: {best['trial']} ({metric} {best[metric]:.4f} at epoch {best['epochs']}); train it again "
                      f"with `yolofuse-scale train --config {out / 'best' / 'config.yaml'}`."]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    """``yolofuse-scale tune``: the command's entry point (``cli.py``)."""
    from yolofuse_scale.config import config_from_args

    if getattr(args, "checkpoint.output_dir", None) is None:
        setattr(args, "checkpoint.output_dir", DEFAULT_OUTPUT)
    base = config_from_args(args)
    for flag, given in (("--resume", base.checkpoint.resume), ("--overwrite", base.checkpoint.overwrite),
                        ("--save-on-each-node", base.checkpoint.save_on_each_node)):
        if given:
            raise ConfigError(f"{flag} with tune: each trial's run folder is the experiment's (a continued experiment "
                              "resumes its trials by itself); drop it", settings=(flag[2:].replace("-", "_"),))
    spec = read_sweep(args.space, base)
    run_experiment(base, spec, Path(base.checkpoint.output_dir), args.ray_address)
    return 0
