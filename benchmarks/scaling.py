"""Throughput and scaling efficiency per strategy and device count, as a report a team can read.

    python -m benchmarks.scaling --strategies ddp,fsdp,zero1,zero2,zero3 --devices 1,2,4,8 \\
        --model yolov8s --fusion mid --imgsz 640 --batch-size 16 --out reports/scaling
    yolofuse-scale bench ...                      # the same, from a source checkout

Every measurement is a short real training: ``torchrun`` (or ``accelerate launch`` with
``configs/accelerate/<strategy>.yaml``, ``--launcher accelerate``) runs ``train.py`` with the
strategy, and the loop's own per-step log (``train_log.jsonl``: step time, data wait, forward,
backward, optimizer, collective bytes; ``metrics.json``: peak memory) is what is reported. On GPUs a
device is a GPU; on a CPU machine a device is a process with ``--threads`` intra-op threads.

Writes to ``--out``: ``results.json`` (schema below), ``report.md`` (tables, definitions, the
environment), ``throughput.png``, ``efficiency.png``, ``memory.png``, ``breakdown.png``, and
``runs/<label>/rep<k>/`` (each run's log, config and stdout; checkpoints are deleted).

results.json (``schema_version`` 1; fields are only ever added):
  environment   benchmarks/common.py's record: host, machine_label, cpu, cores, gpus, threads per process,
                versions, git commit (+dirty), command
  config        the benchmark's arguments
  runs[]        one per configuration: label, strategy, devices, scaling (weak|strong|option|no_sync),
                per_device_batch, global_batch, option, repeats[] (per repeat: images_per_s, step_s,
                phases_s, comm, peak_memory, model_state_bytes, mfu, error), and the medians over
                repeats: images_per_s {median,min,max}, images_per_s_per_device, step_s, phases_s,
                data_share, comm_bytes_per_step, comm, peak_memory_max, model_state_bytes_max, mfu,
                efficiency (vs the same strategy at 1 device), vs_ddp, overhead_vs_1_s,
                exposed_comm_s (vs the --no-sync-baseline run), error
  link_fit      alpha/beta fitted from all-reduce timings at the largest device count (if >= 2)
  projection    per topology and strategy: efficiency at each --project count; measured_vs_projected
  comparisons   optional sections (Ultralytics' own trainer, YOLOFuse's)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks import projection as proj  # noqa: E402
from yolofuse_scale.io import write_atomic  # noqa: E402

SCHEMA_VERSION = 1
PHASES = ("data", "forward", "backward", "optim")
#: ``--vary`` names that are not train.py flags of the same name
VARY_FLAGS = {"precision": "--mixed-precision"}


@dataclass
class RunSpec:
    strategy: str
    devices: int
    batch_size: int
    scaling: str  # weak | strong | option | no_sync
    option: str = ""  # "name=value" for --vary runs
    extra: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        tail = f"_{self.option.replace('=', '-')}" if self.option else ""
        return f"{self.scaling}_{self.strategy}_n{self.devices}_b{self.batch_size}{tail}"


# ------------------------------------------------------------------------------------------- plan
def parse_vary(text: str) -> list[tuple[str, str]]:
    """``"batch_size=32,64 compile=on"`` -> [("batch_size", "32"), ("batch_size", "64"), ("compile", "on")]."""
    out = []
    for item in text.split():
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--vary item {item!r}: expected NAME=V1[,V2...]")
        out += [(name, v) for v in values.split(",")]
    return out


def vary_args(name: str, value: str) -> list[str]:
    flag = VARY_FLAGS.get(name, "--" + name.replace("_", "-"))
    if value in ("on", "off"):
        return [flag if value == "on" else "--no-" + flag[2:]]
    return [flag, value]


def plan(args: argparse.Namespace) -> list[RunSpec]:
    strategies = args.strategies.split(",")
    devices = sorted({int(d) for d in args.devices.split(",")})
    specs: list[RunSpec] = []
    if args.scaling in ("weak", "both"):
        specs += [RunSpec(s, n, args.batch_size, "weak") for s in strategies for n in devices]
    if args.scaling in ("strong", "both"):
        g = args.global_batch_size or args.batch_size * max(devices)
        for s in strategies:
            for n in devices:
                if g % n:
                    raise ValueError(f"--global-batch-size {g} is not divisible by {n} devices")
                specs.append(RunSpec(s, n, g // n, "strong"))
    if args.no_sync_baseline:  # step time without gradient communication (DDP, FSDP only)
        specs += [RunSpec(s, n, args.batch_size, "no_sync", extra=["--benchmark-skip-grad-sync"])
                  for s in strategies if s in ("ddp", "fsdp") for n in devices if n > 1]
    for name, value in parse_vary(args.vary):  # one-factor-at-a-time, first strategy, fewest devices
        bs = int(value) if name == "batch_size" else args.batch_size
        extra = [] if name == "batch_size" else vary_args(name, value)
        specs.append(RunSpec(strategies[0], devices[0], bs, "option", f"{name}={value}", extra))
    return specs


def train_command(spec: RunSpec, args: argparse.Namespace, data_yaml: Path, out: Path) -> list[str]:
    steps = args.warmup + args.steps
    return common.train_command(
        ["--data", str(data_yaml), "--model", args.model, "--fusion", args.fusion, "--imgsz", str(args.imgsz),
         "--batch-size", str(spec.batch_size), "--epochs", "1", "--max-steps", str(steps), "--no-val",
         "--workers", str(args.workers), "--strategy", spec.strategy, "--time-phases", "--measure-comm",
         "--keep-last", "1", "--log-every", str(steps), "--output-dir", str(out), *shlex.split(args.train_args),
         *spec.extra],
        args.launcher, spec.devices, accelerate_config=spec.strategy)


# ---------------------------------------------------------------------------------------- measure
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
    cmd = train_command(spec, args, data_yaml, out)
    run = common.run_command(cmd, common.train_env(args.threads), args.run_timeout, log=out / "stdout.txt")
    for name in ("checkpoints", "weights", "synthetic", "scan_cache", "pair_cache"):
        shutil.rmtree(out / name, ignore_errors=True)
    result: dict[str, Any] = {"wall_s": run.wall_s, "command": shlex.join(cmd)}
    if not run.ok:
        return {**result, "error": run.error(f"--run-timeout {args.run_timeout}")}
    result.update(summarize_log(common.read_log(out), args.warmup, spec.batch_size * spec.devices))
    result["peak_memory"] = common.read_metrics(out).get("peak_memory", [])
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


def derive(runs: list[dict[str, Any]]) -> None:
    """Efficiency vs the same strategy at 1 device, ratio to DDP, overhead and exposed communication."""
    def find(scaling, strategy, n):
        return next((r for r in runs if (r["scaling"], r["strategy"], r["devices"]) == (scaling, strategy, n)
                     and "error" not in r), None)

    for r in runs:
        if "error" in r or r["scaling"] not in ("weak", "strong"):
            continue
        base = find(r["scaling"], r["strategy"], 1) or find(r["scaling"], "ddp", 1)
        if base:
            r["efficiency"] = r["images_per_s"]["median"] / (r["devices"] * base["images_per_s"]["median"])
        ddp = find(r["scaling"], "ddp", r["devices"])
        if ddp:
            r["vs_ddp"] = r["images_per_s"]["median"] / ddp["images_per_s"]["median"]
        if r["scaling"] == "weak" and base and r["devices"] > 1:
            r["overhead_vs_1_s"] = r["step_s"] - base["step_s"]
        nosync = find("no_sync", r["strategy"], r["devices"])
        if r["scaling"] == "weak" and nosync:
            r["exposed_comm_s"] = r["step_s"] - nosync["step_s"]


# -------------------------------------------------------------------------------------- projection
def fit_measured_link(args: argparse.Namespace, n: int, out: Path) -> dict[str, Any] | None:
    """All-reduce timings over ``n`` launched processes -> fitted alpha/beta (None if it fails)."""
    target = out / "allreduce.json"
    cmd = [*common.launcher_command("torchrun", n), "-m", "benchmarks.collectives", "--out", str(target)]
    run = common.run_command(cmd, common.train_env(args.threads), timeout=300)
    if not run.ok:
        return {"error": run.error(300) if run.timed_out else run.output[-1500:]}
    data = json.loads(target.read_text())
    link = proj.fit_link([tuple(p) for p in data["points"]])
    return {"backend": data["backend"], "devices": n, "points": data["points"], "alpha_s": link.alpha_s,
            "beta_bytes_per_s": link.beta_bytes_per_s}


def projections(runs: list[dict[str, Any]], args: argparse.Namespace, link_fit: dict | None) -> dict[str, Any]:
    weak = {(r["strategy"], r["devices"]): r for r in runs if r["scaling"] == "weak" and "error" not in r}
    counts = [int(n) for n in args.project.split(",") if n]
    compute, compute_note = _compute_source(args, weak)
    out: dict[str, Any] = {"overlap": args.overlap, "gpus_per_node": args.gpus_per_node, "topologies": {},
                           "target_efficiency": args.target_efficiency,
                           "measured_vs_projected": [], "inputs": {}, "compute_from": compute_note}
    for strategy in args.strategies.split(","):
        one = compute.get(strategy) or compute.get("ddp")
        multi = [weak[k] for k in sorted(weak) if k[0] == strategy and k[1] > 1]
        if not one or not multi:
            continue  # needs a 1-device step time and a communication measurement at N >= 2
        comm = multi[-1]["comm"]
        inputs = {"step_1_s": one["step_s"], "forward_s": one["phases_s"]["forward"],
                  "backward_s": one["phases_s"]["backward"], "comm": comm, "comm_measured_at": multi[-1]["devices"],
                  "compute_strategy": one["strategy"]}
        out["inputs"][strategy] = inputs
        kw = {k: inputs[k] for k in ("step_1_s", "forward_s", "backward_s", "comm")}
        for topo in args.topologies.split(","):
            intra, inter = proj.parse_topology(topo)
            rows = [proj.project(strategy, n=n, intra=intra, inter=inter, per_node=args.gpus_per_node,
                                 overlap=args.overlap, **kw) for n in counts]
            for row in rows:  # what a device must take per step for the target efficiency at this N
                row["step_needed_s"] = proj.step_needed(
                    strategy, args.target_efficiency, kw["forward_s"] / kw["step_1_s"],
                    kw["backward_s"] / kw["step_1_s"], comm, row["devices"], intra, inter, args.gpus_per_node,
                    args.overlap)
            out["topologies"].setdefault(topo, {})[strategy] = rows
        if link_fit and "error" not in link_fit and not args.compute_from:
            link = proj.Link("measured", link_fit["alpha_s"], link_fit["beta_bytes_per_s"])
            for r in multi:
                p = proj.project(strategy, n=r["devices"], intra=link, inter=link, per_node=r["devices"],
                                 overlap=args.overlap, **kw)
                measured = r.get("efficiency")
                implied = _implied_overlap(strategy, kw, r, link)
                out["measured_vs_projected"].append({
                    "strategy": strategy, "devices": r["devices"], "projected_efficiency": p["efficiency"],
                    "measured_efficiency": measured,
                    "error": None if measured is None else p["efficiency"] - measured,
                    "implied_overlap": implied})
    return out


def _compute_source(args: argparse.Namespace, weak: dict) -> tuple[dict[str, dict], str]:
    """1-device runs per strategy: this run's, or those of ``--compute-from`` (e.g. a one-GPU session).

    Payloads depend on the model only, so a CPU run's 2-process communication measurement combined
    with a GPU's 1-device step time projects a multi-GPU machine neither run had.
    """
    if not args.compute_from:
        return {s: r for (s, n), r in weak.items() if n == 1}, "this run's 1-device runs"
    other = json.loads(Path(args.compute_from).read_text())
    keys = ("model", "fusion", "imgsz", "batch_size")
    mismatch = [k for k in keys if other["config"].get(k) != getattr(args, k)]
    if mismatch:
        raise ValueError(f"--compute-from {args.compute_from}: its {', '.join(mismatch)} differ from this run's; "
                         "the step time must be of the same model, image size and per-device batch")
    runs = {r["strategy"]: r for r in other["runs"]
            if r["scaling"] == "weak" and r["devices"] == 1 and "error" not in r}
    env = other["environment"]
    return runs, f"{args.compute_from} ({', '.join(env['gpus']) or env['cpu']})"


def _implied_overlap(strategy: str, kw: dict, run: dict, link: proj.Link) -> float | None:
    """The overlap fraction at which the model reproduces the measured step time (None: out of [0, 1])."""
    target = run["step_s"] - kw["step_1_s"]
    lo, hi = 0.0, 1.0
    f = lambda o: proj.exposed_comm(strategy, kw["comm"], run["devices"], link, kw["forward_s"],  # noqa: E731
                                    kw["backward_s"], o)["exposed_s"]
    if not f(hi) <= target <= f(lo):
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return (lo + hi) / 2


# ------------------------------------------------------------------------------------- environment
def environment(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The shared record (:func:`benchmarks.common.environment`) for this sweep's command line."""
    return common.environment(threads=args.threads, machine_label=args.machine_label,
                              command=[sys.executable, "-m", "benchmarks.scaling", *argv])


# ---------------------------------------------------------------------------------------- report
def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


DEFINITIONS = """\
- **images/s**: images per optimizer step / median step time over the timed steps (warm-up steps
  excluded; validation never runs), median over repeats, [min-max] over repeats. Step time is the
  wall time from taking a batch to the end of the EMA update, on rank 0; collectives make ranks wait
  for each other, so the slowest rank sets it.
- **efficiency**: images/s at N / (N x images/s of the same strategy at 1 device). Weak scaling keeps
  the per-device batch; strong scaling keeps the global batch (per-device batch = global / N).
- **vs DDP**: images/s / DDP's images/s at the same device count.
- **data, fwd, bwd, opt**: median per-step seconds waiting for the loader (+ host-to-device copy), in
  forward + loss, in backward (with the gradient communication it does not hide; under DeepSpeed also
  the engine's optimizer step), in clipping + optimizer step + EMA (ZeRO-1/2: the parameter
  all-gather). The GPU is synchronised at each boundary (`--time-phases`).
- **overhead vs 1**: step time at N minus step time at 1 device, same strategy and per-device batch:
  communication, waiting for the slowest rank, and (on a CPU) memory-bandwidth contention.
- **exposed comm**: step time minus the step time of the same run with gradient synchronisation
  switched off (`--benchmark-skip-grad-sync`, DDP and FSDP; `--no-sync-baseline`).
- **comm/step**: payload bytes of this rank's collectives per step (whole tensors reduced or gathered,
  logged by `--measure-comm`); a ring moves 2(N-1)/N of an all-reduce's payload per rank.
- **peak mem**: the largest rank's peak: CPU RSS (includes the Python process and libraries) or CUDA
  max allocated / reserved. **model state**: the largest rank's parameters + gradients + optimizer
  state + engine buffers (unique storages, at step 1).
"""


def report(results: dict[str, Any]) -> str:
    env, cfg = results["environment"], results["config"]
    lines = [f"# Scaling report: {cfg['model']} {cfg['fusion']} fusion, {cfg['imgsz']} px",
             "", f"Machine: **{env['machine_label'] or env['host']}**: {env['cpu']} ({env['cpu_cores']} cores); "
             f"GPUs: {', '.join(env['gpus']) or 'none (a device is a process with '}"
             + ("" if env["gpus"] else f"{env['threads_per_process']} thread(s))"), "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
             + f"; commit `{env['git_commit'][:12]}`{' (dirty)' if env['git_dirty'] else ''}", "",
             f"Command: `{env['command']}`", "",
             f"Launcher: {cfg['launcher']}; {cfg['warmup']} warm-up + {cfg['steps']} timed steps per run, "
             f"{cfg['repeats']} repeat(s); {cfg['workers']} loader worker(s) per process.", ""]
    runs = results["runs"]
    for scaling in ("weak", "strong"):
        rows = [r for r in runs if r["scaling"] == scaling]
        if not rows:
            continue
        lines += [f"## {scaling.capitalize()} scaling", "",
                  "| strategy | devices | batch/dev | images/s [min-max] | /device | efficiency | vs DDP | step ms "
                  "| data % | overhead vs 1 (ms) | exposed comm (ms) | comm/step | peak mem | model state |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['strategy']} | {r['devices']} | {r['per_device_batch']} | failed: "
                             f"{r['error'][:160]} |||||||||||")
                continue
            ips = r["images_per_s"]
            peak = r["peak_memory_max"]
            mem = (_fmt_bytes(peak.get("cuda_max_allocated_bytes")) + " alloc" if "cuda_max_allocated_bytes" in peak
                   else _fmt_bytes(peak.get("rss_bytes")) + " RSS")
            over = r.get("overhead_vs_1_s")
            exp = r.get("exposed_comm_s")
            lines.append(
                f"| {r['strategy']} | {r['devices']} | {r['per_device_batch']} | {ips['median']:.1f} "
                f"[{ips['min']:.1f}-{ips['max']:.1f}] | {r['images_per_s_per_device']:.1f} | "
                f"{_f(r.get('efficiency'))} | {_f(r.get('vs_ddp'))} | {r['step_s'] * 1e3:.0f} | "
                f"{r['data_share'] * 100:.0f} | {'-' if over is None else f'{over * 1e3:.0f}'} | "
                f"{'-' if exp is None else f'{exp * 1e3:.0f}'} | {_fmt_bytes(r['comm_bytes_per_step'])} | {mem} | "
                f"{_fmt_bytes(r['model_state_bytes_max'])} |")
        lines += ["", f"### Where a {scaling}-scaling step goes (median ms per step)", "",
                  "| strategy | devices | data | forward | backward | optimizer | collectives (calls: payload) |"
                  + (" MFU |" if any("mfu" in r for r in rows) else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if any("mfu" in r for r in rows) else "")]
        for r in rows:
            if "error" in r:
                continue
            ph = r["phases_s"]
            comm = ", ".join(f"{k} {v[0]:.0f}: {_fmt_bytes(v[1])}" for k, v in r["comm"].items()) or "none"
            lines.append(f"| {r['strategy']} | {r['devices']} | " + " | ".join(
                f"{ph[p] * 1e3:.0f}" for p in PHASES) + f" | {comm} |"
                + (f" {r['mfu']:.1%} |" if "mfu" in r else ""))
        lines.append("")
    options = [r for r in runs if r["scaling"] == "option"]
    if options:
        base = next((r for r in runs if r["scaling"] == "weak" and "error" not in r
                     and (r["strategy"], r["devices"]) == (options[0]["strategy"], options[0]["devices"])), None)
        lines += ["## Options that change speed (one at a time against the baseline)", "",
                  f"Baseline: {options[0]['strategy']} on {options[0]['devices']} device(s), batch "
                  f"{cfg['batch_size']}/device: {_f(base and base['images_per_s']['median'], '.1f')} images/s.", "",
                  "| option | images/s [min-max] | vs baseline | step ms | data % | peak mem |",
                  "|---|---|---|---|---|---|"]
        for r in options:
            if "error" in r:
                lines.append(f"| {r['option']} | failed: {r['error'][:160]} |||||")
                continue
            ratio = r["images_per_s"]["median"] / base["images_per_s"]["median"] if base else None
            peak = r["peak_memory_max"]
            mem = _fmt_bytes(peak.get("cuda_max_allocated_bytes", peak.get("rss_bytes")))
            lines.append(f"| {r['option']} | {r['images_per_s']['median']:.1f} [{r['images_per_s']['min']:.1f}-"
                         f"{r['images_per_s']['max']:.1f}] | {_f(ratio)} | {r['step_s'] * 1e3:.0f} | "
                         f"{r['data_share'] * 100:.0f} | {mem} |")
        lines.append("")
    lines += _projection_lines(results)
    for name, section in results.get("comparisons", {}).items():
        lines += [f"## Side by side: {name}", "", section.get("markdown", json.dumps(section)), ""]
    lines += ["## Targets (measured here, never asserted by tests)", "", *_target_lines(runs), "",
              "## Definitions", "", DEFINITIONS]
    return "\n".join(lines)


def _projection_lines(results: dict[str, Any]) -> list[str]:
    p = results.get("projection") or {}
    if not p.get("topologies"):
        return ["## Projection", "", "Not computed: it needs weak-scaling runs at 1 device and at >= 2 devices "
                "of the same strategy.", ""]
    lines = ["## Projected weak-scaling efficiency (alpha-beta ring model)", "",
             f"From each strategy's measured 1-device step time (forward, backward) and its measured "
             f"collective payloads per step; overlap fraction {p['overlap']} of the hideable communication "
             f"(see benchmarks/projection.py), {p['gpus_per_node']} devices per node. Step times from "
             f"{p['compute_from']}: a faster device makes the same communication relatively larger.", ""]
    for topo, per_strategy in p["topologies"].items():
        counts = [row["devices"] for row in next(iter(per_strategy.values()))]
        lines += [f"**{topo}**", "", "| strategy | " + " | ".join(str(n) for n in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for strategy, rows in per_strategy.items():
            lines.append(f"| {strategy} | " + " | ".join(f"{row['efficiency']:.3f}" for row in rows) + " |")
        lines += ["", f"1-device step time needed for efficiency >= {p['target_efficiency']} (ms):", "",
                  "| strategy | " + " | ".join(str(n) for n in counts) + " |", "|---|" + "---|" * len(counts)]
        for strategy, rows in per_strategy.items():
            lines.append(f"| {strategy} | " + " | ".join(f"{row['step_needed_s'] * 1e3:.1f}" for row in rows) + " |")
        lines.append("")
    fit = results.get("link_fit")
    if fit and "error" not in fit:
        lines += [f"Measured link ({fit['backend']}, {fit['devices']} processes): alpha {fit['alpha_s'] * 1e6:.1f} us, "
                  f"beta {fit['beta_bytes_per_s'] / 1e9:.2f} GB/s (least squares over all-reduce of 4 KiB-16 MiB).", "",
                  "| strategy | devices | projected | measured | error | overlap that fits |",
                  "|---|---|---|---|---|---|"]
        for m in p["measured_vs_projected"]:
            fits = "none in [0,1]" if m["implied_overlap"] is None else format(m["implied_overlap"], ".2f")
            lines.append(f"| {m['strategy']} | {m['devices']} | {m['projected_efficiency']:.3f} | "
                         f"{_f(m['measured_efficiency'], '.3f')} | {_f(m['error'], '+.3f')} | {fits} |")
        lines.append("")
    return lines


def _target_lines(runs: list[dict[str, Any]]) -> list[str]:
    weak = {(r["strategy"], r["devices"]): r for r in runs if r["scaling"] == "weak" and "error" not in r}
    out = []
    for (s, n), r in sorted(weak.items()):
        if n < 2:
            continue
        if s == "ddp" and "efficiency" in r:
            out.append(f"- DDP weak-scaling efficiency at {n}: {r['efficiency']:.3f} (target >= 0.90): "
                       f"{'met' if r['efficiency'] >= 0.9 else 'NOT met'}")
        elif "vs_ddp" in r:
            goal = 0.95 if s in ("zero1", "zero2") else 0.85
            out.append(f"- {s} at {n}: {r['vs_ddp']:.3f} x DDP (target >= {goal}): "
                       f"{'met' if r['vs_ddp'] >= goal else 'NOT met (see the breakdown table)'}")
    return out or ["- no multi-device runs"]


def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weak = [r for r in results["runs"] if r["scaling"] == "weak" and "error" not in r]
    if not weak:
        return []
    strategies = list(dict.fromkeys(r["strategy"] for r in weak))
    labels = [f"{r['strategy']}\nN={r['devices']}" for r in weak]
    xs = list(range(len(weak)))
    written = []

    def save(fig, ax, name: str, **labels_and_limits) -> None:
        ax.set(**labels_and_limits)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in strategies:
        rows = sorted((r for r in weak if r["strategy"] == s), key=lambda r: r["devices"])
        ax.plot([r["devices"] for r in rows], [r["images_per_s"]["median"] for r in rows], "o-", label=s)
        base = next((r for r in rows if r["devices"] == 1), None)
        if base and s == "ddp":
            ns = [r["devices"] for r in rows]
            ax.plot(ns, [n * base["images_per_s"]["median"] for n in ns], "k--", label="ideal (DDP x N)")
    save(fig, ax, "throughput.png", xlabel="devices", ylabel="images/s (train phase)", title="Weak-scaling throughput")

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in strategies:
        rows = sorted((r for r in weak if r["strategy"] == s and "efficiency" in r), key=lambda r: r["devices"])
        ax.plot([r["devices"] for r in rows], [r["efficiency"] for r in rows], "o-", label=f"{s} measured")
    for s, rows in (results.get("projection") or {}).get("topologies", {}).get(
            results["config"]["topologies"].split(",")[0], {}).items():
        ax.plot([r["devices"] for r in rows], [r["efficiency"] for r in rows], ":", label=f"{s} projected")
    ax.axhline(1.0, color="k", lw=0.8)
    save(fig, ax, "efficiency.png", xlabel="devices", ylabel="efficiency", xscale="log",
         title="Weak-scaling efficiency", ylim=(0, 1.05))

    fig, ax = plt.subplots(figsize=(max(6, len(weak) * 0.8), 4))
    peak = [r["peak_memory_max"].get("cuda_max_allocated_bytes", r["peak_memory_max"].get("rss_bytes", 0)) / 2**20
            for r in weak]
    ax.bar([x - 0.2 for x in xs], peak, 0.4, label="peak (largest rank)")
    ax.bar([x + 0.2 for x in xs], [(r["model_state_bytes_max"] or 0) / 2**20 for r in weak], 0.4,
           label="model state (largest rank)")
    ax.set_xticks(xs, labels, fontsize=7)
    save(fig, ax, "memory.png", ylabel="MiB", title="Memory per rank")

    fig, ax = plt.subplots(figsize=(max(6, len(weak) * 0.8), 4))
    bottom = [0.0] * len(weak)
    for p in PHASES:
        vals = [r["phases_s"][p] * 1e3 for r in weak]
        ax.bar(xs, vals, 0.6, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(xs, labels, fontsize=7)
    save(fig, ax, "breakdown.png", ylabel="ms per step", title="Step time breakdown (weak scaling)")
    return written


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="ddp", help="comma list of ddp,fsdp,zero1,zero2,zero3,zero3_offload")
    p.add_argument("--devices", default="1,2", help="comma list of device (GPU, or CPU process) counts")
    p.add_argument("--scaling", default="weak", choices=["weak", "strong", "both"],
                   help="weak: fixed per-device batch; strong: fixed global batch")
    p.add_argument("--model", default="yolov8n")
    p.add_argument("--fusion", default="mid")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=16, help="per-device batch (weak scaling and options)")
    p.add_argument("--global-batch-size", type=int, default=0,
                   help="strong scaling's global batch (default: batch-size x the largest device count)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps per run (allocator, compile, caches)")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (median and spread)")
    p.add_argument("--launcher", default="torchrun", choices=["torchrun", "accelerate"])
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads per process (OMP_NUM_THREADS; 0: inherit); on CPU: cores / max devices")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--data", default="", help="data.yaml (default: a synthetic set in --out/data)")
    p.add_argument("--train-pairs", type=int, default=0,
                   help="synthetic training pairs (default: enough for every run without an epoch end)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every run, e.g. '--no-ema'")
    p.add_argument("--vary", default="",
                   help="options measured one at a time on the first strategy at the fewest devices, e.g. "
                   "'batch_size=32,64 precision=bf16 compile=on cache=ram workers=0,8 activation_checkpointing=on'")
    p.add_argument("--no-sync-baseline", action="store_true",
                   help="also run DDP/FSDP at N>1 without gradient sync, to measure exposed communication")
    p.add_argument("--project", default="8,16,64,256", help="device counts to project to")
    p.add_argument("--topologies", default=",".join(proj.DEFAULT_TOPOLOGIES),
                   help=f"INTRA[+INTER] link presets: {', '.join(proj.LINKS)}")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--overlap", type=float, default=0.75, help="fraction of hideable communication hidden")
    p.add_argument("--target-efficiency", type=float, default=0.97,
                   help="the report gives the 1-device step time each projection needs to reach this")
    p.add_argument("--compute-from", default="",
                   help="results.json of another run (e.g. one GPU) whose 1-device step times the projection "
                   "uses with this run's communication payloads (same model, imgsz, batch)")
    p.add_argument("--compare-ultralytics", action="store_true",
                   help="add a section: Ultralytics' own trainer vs ours on data-level fusion, same data and batch")
    p.add_argument("--yolofuse", default="", help="a YOLOFuse checkout: add its trainer vs ours (mid fusion)")
    p.add_argument("--run-timeout", type=int, default=1800, help="seconds before one run counts as failed")
    p.add_argument("--machine-label", default="", help="how the report names this machine (default: hostname)")
    p.add_argument("--out", default="reports/scaling")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    specs = plan(args)
    data_yaml = Path(args.data).resolve() if args.data else _synthetic_data(args, specs, out)
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "environment": environment(args, argv),
                               "config": vars(args), "runs": []}
    for i, spec in enumerate(specs):
        repeats = []
        for k in range(args.repeats):
            print(f"[{i + 1}/{len(specs)}] {spec.label} repeat {k + 1}/{args.repeats}", file=sys.stderr, flush=True)
            repeats.append(measure(spec, args, data_yaml, out / "runs" / spec.label / f"rep{k}"))
            if "error" in repeats[-1]:
                print(f"  failed: {repeats[-1]['error'][-300:]}", file=sys.stderr)
                break  # a configuration that fails once (e.g. out of memory) fails again
        results["runs"].append({"label": spec.label, "strategy": spec.strategy, "devices": spec.devices,
                                "scaling": spec.scaling, "per_device_batch": spec.batch_size,
                                "global_batch": spec.batch_size * spec.devices, "option": spec.option,
                                "repeats": repeats, **combine(repeats, spec.devices)})
        # after every configuration: a sweep cut short by a time limit keeps what it measured
        write_atomic(out / "results.json", json.dumps(results, indent=1))
    derive(results["runs"])
    n_max = max(s.devices for s in specs)
    results["link_fit"] = fit_measured_link(args, n_max, out) if n_max > 1 else None
    results["projection"] = projections(results["runs"], args, results["link_fit"])
    results["comparisons"] = _comparisons(args, out)
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    results["plots"] = plots(results, out)
    (out / "report.md").write_text(report(results))
    print(report(results))
    print(f"\nwrote {out / 'results.json'}, {out / 'report.md'} and {len(results['plots'])} plots", file=sys.stderr)
    return 0


def pairs_needed(args: argparse.Namespace, specs: list[RunSpec]) -> int:
    """Training pairs for every run of the plan to reach its last step within its first epoch."""
    return max(s.batch_size * s.devices for s in specs) * (args.warmup + args.steps)


def _synthetic_data(args: argparse.Namespace, specs: list[RunSpec], out: Path) -> Path:
    from yolofuse_scale.data import write_synthetic_dataset

    n = args.train_pairs or pairs_needed(args, specs)
    yaml_path = out / "data" / "data.yaml"
    if yaml_path.is_file():
        return yaml_path
    return write_synthetic_dataset(out / "data", n_train=n, n_val=8, imgsz=args.imgsz, seed=0)


def _comparisons(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    if args.compare_ultralytics or args.yolofuse:
        from benchmarks import compare_ultralytics

        result = compare_ultralytics.compare(out / "compare", model=args.model, imgsz=args.imgsz, batch=args.batch_size,
                                             workers=args.workers, threads=args.threads or None,
                                             yolofuse=args.yolofuse or None)
        sections["Ultralytics' and YOLOFuse's own trainers"] = {**result,
                                                                "markdown": compare_ultralytics.markdown(result)}
    return sections


if __name__ == "__main__":
    raise SystemExit(main())
