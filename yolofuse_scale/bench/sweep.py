"""Throughput and scaling efficiency per strategy and device count, as a report a team can read.

    yolofuse-scale bench --strategies ddp,fsdp,zero1,zero2,zero3 --devices 1,2,4,8 \\
        --model yolov8s --fusion mid --imgsz 640 --batch-size 16 --out reports/scaling
    python -m benchmarks.scaling ...     # the same from a source checkout, plus --compare-ultralytics/--yolofuse

Every measurement is a short real training: ``torchrun`` (or ``accelerate launch`` with the packaged
``configs/accelerate/<strategy>.yaml``, ``--launcher accelerate``) runs ``-m yolofuse_scale train``
with the strategy, and the loop's own per-step log (``train_log.jsonl``: step time, data wait,
forward, backward, optimizer, collective bytes; ``metrics.json``: peak memory) is what is reported.
On GPUs a device is a GPU; on a CPU machine a device is a process with ``--threads`` intra-op threads.

Writes to ``--out``: ``results.json`` (schema below), ``report.md`` (warnings first, then tables,
definitions, the environment), ``throughput.png``, ``efficiency.png``, ``memory.png``, ``breakdown.png``,
and ``runs/<label>/rep<k>/`` (each run's log, config and stdout; checkpoints are deleted).
``--render-only results.json`` writes report.md and the plots again beside that file and runs nothing.

results.json (``schema_version`` 1; fields are only ever added):
  environment   the shared record (yolofuse_scale/bench/environment.py): host, machine_label, cpu, cores,
                gpus, threads per process, versions, git commit (+dirty), command
  config        the benchmark's arguments
  runs[]        one per configuration: label, strategy, devices, scaling (weak|strong|option|no_sync),
                per_device_batch, global_batch, option, repeats[] (per repeat: images_per_s, step_s,
                phases_s, comm, peak_memory, model_state_bytes, mfu, load, sequence, error), and the medians over
                repeats: images_per_s {median,min,max}, images_per_s_per_device, step_s, phases_s,
                data_share, comm_bytes_per_step, comm, peak_memory_max, model_state_bytes_max, mfu,
                efficiency (vs the same strategy at 1 device; a ratio of medians), efficiency_per_round
                {median,min,max,rounds} (--order rounds, 2+ repeats: repeat k against the baseline's
                repeat k, which ran in the same round), vs_ddp, overhead_vs_1_s,
                exposed_comm_s (vs the --no-sync-baseline run), error
  load          cores, cores the largest run needs, other processes' CPU use and steal before, during
                and after the runs (yolofuse_scale/bench/load.py; each repeat has its own "load")
  link_fit      alpha/beta fitted from all-reduce timings at the largest device count (if >= 2)
  projection    per topology and strategy: efficiency at each --project count; measured_vs_projected
                (with the fit check: overhead_s, exposed_no_overlap_s, exposed_full_overlap_s, verdict)
  comparisons   optional sections (a checkout's benchmarks/scaling.py: Ultralytics' own trainer, YOLOFuse's)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolofuse_scale.bench import checks, load, projection
from yolofuse_scale.bench.collectives import fit_measured_link
from yolofuse_scale.bench.environment import environment
from yolofuse_scale.bench.measure import combine, derive, measure
from yolofuse_scale.bench.plan import RunSpec, pairs_needed, plan
from yolofuse_scale.bench.plots import plots
from yolofuse_scale.bench.report import report
from yolofuse_scale.errors import ArgumentParser, ConfigError
from yolofuse_scale.io import write_atomic

SCHEMA_VERSION = 1
#: a report section of another trainer beside ours: (arguments, --out folder) -> {title: section}
Comparisons = Callable[[argparse.Namespace, Path], dict[str, Any]]


def build_parser(prog: str = "yolofuse-scale bench") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--order", default="rounds", choices=["rounds", "blocks"],
                   help="rounds: repeat k of every configuration before repeat k+1 of any, so a machine that "
                   "drifts (cloud VMs, thermal limits) slows every configuration alike and the ratios between "
                   "them hold; blocks: all repeats of one configuration, then the next")
    p.add_argument("--launcher", default="torchrun", choices=["torchrun", "accelerate"])
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads per process (OMP_NUM_THREADS; 0: inherit); on CPU: cores / max devices")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--data", default="", help="data.yaml (default: a synthetic set in --out/data)")
    p.add_argument("--train-pairs", type=int, default=0,
                   help="synthetic training pairs (default: enough for every run without an epoch end)")
    p.add_argument("--train-args", default="",
                   help="extra `yolofuse-scale train` (= train.py) flags for every run, e.g. '--no-ema'")
    p.add_argument("--vary", default="",
                   help="options measured one at a time on the first strategy at the fewest devices, e.g. "
                   "'batch_size=32,64 precision=bf16 compile=on cache=ram workers=0,8 activation_checkpointing=on'")
    p.add_argument("--no-sync-baseline", action="store_true",
                   help="also run DDP/FSDP at N>1 without gradient sync, to measure exposed communication")
    p.add_argument("--project", default="8,16,64,256", help="device counts to project to")
    p.add_argument("--topologies", default=",".join(projection.DEFAULT_TOPOLOGIES),
                   help=f"INTRA[+INTER] link presets: {', '.join(projection.LINKS)}")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--overlap", type=float, default=0.75, help="fraction of hideable communication hidden")
    p.add_argument("--target-efficiency", type=float, default=0.97,
                   help="the report gives the 1-device step time each projection needs to reach this")
    p.add_argument("--compute-from", default="",
                   help="results.json of another run (e.g. one GPU) whose 1-device step times the projection "
                   "uses with this run's communication payloads (same model, imgsz, batch)")
    p.add_argument("--run-timeout", type=int, default=1800, help="seconds before one run counts as failed")
    p.add_argument("--machine-label", default="", help="how the report names this machine (default: hostname)")
    p.add_argument("--out", default="reports/scaling")
    p.add_argument("--render-only", default="", metavar="RESULTS_JSON",
                   help="run nothing: write report.md and the plots again from a sweep's results.json, beside it")
    return p


def main(argv: list[str] | None = None) -> int:
    """``yolofuse-scale bench ARGS`` (the CLI runs it through ``errors.run_entry``)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    return run(args, [sys.executable, "-m", "yolofuse_scale", "bench", *argv])


def run(args: argparse.Namespace, command: list[str], comparisons: Comparisons | None = None) -> int:
    """The sweep: plan, one measurement per run and repeat, ratios, link fit, projection, report, plots.

    ``command``: the command line the environment record names; ``comparisons``: report sections of
    other trainers (a checkout's ``benchmarks/scaling.py`` adds Ultralytics' and YOLOFuse's).
    """
    if args.render_only:
        return render(Path(args.render_only))
    specs = plan(args)  # bad flags end here, before any run
    projection.check_arguments(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = Path(args.data).resolve() if args.data else _synthetic_data(args, specs, out)
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION,
                               "environment": environment(threads=args.threads, machine_label=args.machine_label,
                                                          command=command),
                               "config": vars(args), "runs": []}
    n_max = max(s.devices for s in specs)
    # other processes' CPU use before, around each run and after (the report warns on a loaded machine)
    results["load"] = load.start(n_max, args.threads, bool(results["environment"]["gpus"]))
    first = load.sample()
    repeats: list[list[dict[str, Any]]] = [[] for _ in specs]
    failed: set[int] = set()
    for n, (i, k) in enumerate(measurement_order(len(specs), args.repeats, args.order)):
        if i in failed:
            continue  # a configuration that fails once (e.g. out of memory) fails again
        spec = specs[i]
        print(f"[{i + 1}/{len(specs)}] {spec.label} repeat {k + 1}/{args.repeats}", file=sys.stderr, flush=True)
        before = load.sample()
        rep = measure(spec, args, data_yaml, out / "runs" / spec.label / f"rep{k}")
        rep["load"], rep["sequence"] = load.usage(before, load.sample()), n
        repeats[i].append(rep)
        if "error" in rep:
            print(f"  failed: {rep['error'][-300:]}", file=sys.stderr)
            failed.add(i)
        results["runs"] = [_run_entry(s, r) for s, r in zip(specs, repeats, strict=True) if r]
        # after every measurement: a sweep cut short by a time limit keeps what it measured
        write_atomic(out / "results.json", json.dumps(results, indent=1))
    results["load"]["during"] = load.usage(first, load.sample())
    results["load"]["after"] = load.idle_window()
    derive(results["runs"], args.order)
    results["link_fit"] = fit_measured_link(n_max, args.threads, out) if n_max > 1 else None
    results["projection"] = projection.projections(results["runs"], args, results["link_fit"])
    results["comparisons"] = comparisons(args, out) if comparisons else {}
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    write_report(results, out)
    return 0


def measurement_order(configurations: int, repeats: int, order: str) -> list[tuple[int, int]]:
    """(configuration index, repeat index) in the order they run.

    ``rounds`` (the default) runs one repeat of every configuration per round. On a machine whose speed
    drifts over minutes (a cloud VM's neighbours, a thermal limit: on a 2-core Xeon VM the same 1-process
    run measured 18.4 and 25.1 img/s six minutes apart) ``blocks`` puts each configuration's repeats in one
    window, so an efficiency compares two windows; rounds spread every configuration over the whole sweep."""
    if order == "blocks":
        return [(i, k) for i in range(configurations) for k in range(repeats)]
    return [(i, k) for k in range(repeats) for i in range(configurations)]


def _run_entry(spec: RunSpec, repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's results.json entry: what it is, its repeats and their medians."""
    return {"label": spec.label, "strategy": spec.strategy, "devices": spec.devices, "scaling": spec.scaling,
            "per_device_batch": spec.batch_size, "global_batch": spec.batch_size * spec.devices,
            "option": spec.option, "repeats": repeats, **combine(repeats, spec.devices)}


def write_report(results: dict[str, Any], out: Path) -> None:
    """``report.md`` and the plots into ``out``; the report on stdout, its warnings again on stderr."""
    text = report(results)  # first: a results.json that cannot be rendered writes nothing
    names = plots(results, out)
    write_atomic(out / "report.md", text)
    print(text)
    for line in checks.warnings(results):
        print(f"warning: {line.replace('**', '')}", file=sys.stderr)
    print(f"\nwrote {out / 'report.md'} and {len(names)} plots ({', '.join(names)}) from {out / 'results.json'}",
          file=sys.stderr)


#: a results.json larger than this is not a sweep's (a 1000-run sweep writes a few MiB)
MAX_RESULTS_BYTES = 64 << 20


def render(path: Path) -> int:
    """``--render-only``: report.md and the plots again from a finished sweep's ``results.json``, beside it."""
    results = load_results(path)
    try:
        write_report(results, path.parent)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ConfigError(f"{path}: not a complete scaling benchmark results.json ({type(e).__name__}: {e}); "
                          "nothing was written") from None
    return 0


def load_results(path: Path) -> dict[str, Any]:
    """A sweep's ``results.json``, refused with one message naming the file (and the line) when it is not one."""
    if not path.is_file():
        raise ConfigError(f"--render-only {path}: no such file")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes, more than a sweep's results.json "
                          f"({MAX_RESULTS_BYTES >> 20} MiB at most)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than Python's JSON reader goes; not a sweep's results.json") from None
    if not isinstance(results, dict) or "schema_version" not in results:
        raise ConfigError(f"{path}: not a scaling benchmark results.json (no schema_version)")
    if results["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(f"{path}: schema_version {results['schema_version']!r}; this version renders "
                          f"{SCHEMA_VERSION}")
    for key, kind in (("environment", dict), ("config", dict), ("runs", list)):
        if not isinstance(results.get(key), kind):
            raise ConfigError(f"{path}: not a scaling benchmark results.json ({key!r} is not a {kind.__name__})")
    return results


def _synthetic_data(args: argparse.Namespace, specs: list[RunSpec], out: Path) -> Path:
    from yolofuse_scale.data import write_synthetic_dataset

    n = args.train_pairs or pairs_needed(args, specs)
    yaml_path = out / "data" / "data.yaml"
    if yaml_path.is_file():
        return yaml_path
    return write_synthetic_dataset(out / "data", n_train=n, n_val=8, imgsz=args.imgsz, seed=0)
