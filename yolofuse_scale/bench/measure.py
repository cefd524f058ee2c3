"""One run's numbers from the loop's own files, the median over repeats, and the ratios between runs.

A measurement is a short real training (:func:`measure`): its ``train_log.jsonl`` has each step's
time, data wait, forward, backward, optimizer and collective payloads (``--time-phases``,
``--measure-comm``), its ``metrics.json`` every rank's peak memory. Nothing here times anything itself.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
from pathlib import Path
from typing import Any

from yolofuse_scale.bench import launch
from yolofuse_scale.bench.plan import RunSpec, train_args

PHASES = ("data", "forward", "backward", "optim")
#: what a finished run leaves that the report does not read (checkpoints and weights are large)
DROPPED = ("checkpoints", "weights", "synthetic", "scan_cache", "pair_cache")


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-step records (``train_log.jsonl``: step, step_time_s, phases, comm, ...)."""
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines() if line]


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's summary (``metrics.json``: step, metrics, params, gflops, peak_memory, ...)."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def summarize_log(records: list[dict], warmup: int, images_per_step: int) -> dict[str, Any]:
    """One run's numbers from its per-step log: medians over the steps after ``warmup``."""
    timed = [r for r in records if r["step"] > warmup]
    if not timed:
        raise ValueError(f"no steps after the {warmup} warm-up steps (log has {len(records)})")
    step_s = statistics.median(r["step_time_s"] for r in timed)
    phases = {p: statistics.median(r.get(f"time_{p}_s", 0.0) for r in timed) for p in PHASES}
    comm: dict[str, list[float]] = {}
    kinds = {k for r in timed for k in r.get("comm", {})}
    for k in sorted(kinds):
        comm[k] = [statistics.median(r.get("comm", {}).get(k, [0, 0])[i] for r in timed) for i in (0, 1)]
    out = {"steps_timed": len(timed), "step_s": step_s, "images_per_s": images_per_step / step_s,
           "phases_s": phases, "comm": comm}
    mfu = [r["mfu"] for r in timed if "mfu" in r]
    if mfu:
        out["mfu"] = statistics.median(mfu)
    if "model_state_bytes" in records[0]:
        out["model_state_bytes"] = records[0]["model_state_bytes"]
    return out


def measure(spec: RunSpec, args: argparse.Namespace, data_yaml: Path, out: Path) -> dict[str, Any]:
    """Launch one run, return its numbers (or ``error``); keep the log, drop checkpoints and weights."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    run = launch.run_training(train_args(spec, args, data_yaml, out), launcher=args.launcher, nproc=spec.devices,
                              threads=args.threads, timeout=args.run_timeout, log=out / "stdout.txt",
                              accelerate_config=spec.strategy, module=spec.module)
    for name in DROPPED:
        shutil.rmtree(out / name, ignore_errors=True)
    result: dict[str, Any] = {"wall_s": run.wall_s, "command": shlex.join(run.command)}
    if not run.ok:
        return {**result, "error": run.error(f"--run-timeout {args.run_timeout}")}
    result.update(summarize_log(read_log(out), args.warmup, spec.batch_size * spec.devices))
    result["peak_memory"] = read_metrics(out).get("peak_memory", [])
    return result


def combine(repeats: list[dict[str, Any]], devices: int) -> dict[str, Any]:
    """Median over the repeats that succeeded, with the spread of throughput."""
    ok = [r for r in repeats if "error" not in r]
    if not ok:
        return {"error": repeats[-1]["error"] if repeats else "not run"}
    ips = [r["images_per_s"] for r in ok]
    step = statistics.median(r["step_s"] for r in ok)
    phases = {p: statistics.median(r["phases_s"][p] for r in ok) for p in PHASES}
    kinds = sorted({k for r in ok for k in r["comm"]})
    comm = {k: [statistics.median(r["comm"].get(k, [0, 0])[i] for r in ok) for i in (0, 1)] for k in kinds}
    out: dict[str, Any] = {
        "images_per_s": {"median": statistics.median(ips), "min": min(ips), "max": max(ips)},
        "images_per_s_per_device": statistics.median(ips) / devices,
        "step_s": step, "phases_s": phases, "data_share": phases["data"] / step if step else 0.0,
        "comm": comm, "comm_bytes_per_step": sum(v[1] for v in comm.values()),
        "peak_memory_max": _peak_max([r["peak_memory"] for r in ok]),
        "model_state_bytes_max": max((rank["total"] for r in ok for rank in r.get("model_state_bytes", [])),
                                     default=None),
    }
    mfu = [r["mfu"] for r in ok if "mfu" in r]
    if mfu:
        out["mfu"] = statistics.median(mfu)
    return out


def _peak_max(per_repeat: list[list[dict[str, int]]]) -> dict[str, int]:
    """The largest rank's value of each peak-memory field, over repeats (the rank that runs out first)."""
    out: dict[str, int] = {}
    for ranks in per_repeat:
        for rank in ranks:
            for k, v in rank.items():
                out[k] = max(out.get(k, 0), v)
    return out


def round_ratios(run: dict[str, Any], base: dict[str, Any]) -> list[float]:
    """Efficiency within each round: ``run``'s repeat k over ``devices`` x ``base``'s repeat k, for every k where
    both succeeded (a configuration that failed stops repeating, so its list is the shorter)."""
    return [a["images_per_s"] / (run["devices"] * b["images_per_s"])
            for a, b in zip(run["repeats"], base["repeats"]) if "error" not in a and "error" not in b]


def derive(runs: list[dict[str, Any]], order: str = "rounds") -> None:
    """Efficiency vs the same strategy at 1 device, ratio to DDP, overhead and exposed communication.

    ``order``: how the sweep ran its repeats (``sweep.measurement_order``). In ``rounds`` repeat k of every
    configuration ran in round k, minutes apart at most, so each run also gets ``efficiency_per_round``: the
    ratio within each round (repeat k against its baseline's repeat k), median and range. On a machine whose
    speed drifts this is the steadier estimate: the ratio of medians can pair a fast window with a slow one."""
    def find(scaling, strategy, n):
        return next((r for r in runs if (r["scaling"], r["strategy"], r["devices"]) == (scaling, strategy, n)
                     and "error" not in r), None)

    for r in runs:
        if "error" in r or r["scaling"] not in ("weak", "strong"):
            continue
        base = find(r["scaling"], r["strategy"], 1) or find(r["scaling"], "ddp", 1)
        if base:
            r["efficiency"] = r["images_per_s"]["median"] / (r["devices"] * base["images_per_s"]["median"])
            per_round = round_ratios(r, base) if order == "rounds" and base is not r else []
            if len(per_round) >= 2:
                r["efficiency_per_round"] = {"median": statistics.median(per_round), "min": min(per_round),
                                             "max": max(per_round), "rounds": len(per_round)}
        ddp = find(r["scaling"], "ddp", r["devices"])
        if ddp:
            r["vs_ddp"] = r["images_per_s"]["median"] / ddp["images_per_s"]["median"]
        if r["scaling"] == "weak" and base and r["devices"] > 1:
            r["overhead_vs_1_s"] = r["step_s"] - base["step_s"]
        nosync = find("no_sync", r["strategy"], r["devices"])
        if r["scaling"] == "weak" and nosync:
            r["exposed_comm_s"] = r["step_s"] - nosync["step_s"]
