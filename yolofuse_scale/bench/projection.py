"""Project scaling efficiency to device counts a machine does not have: an alpha-beta ring model.

Inputs are measurements, not guesses: the per-step compute time at one device (and its forward and
backward parts) and the payload bytes of each collective kind per step, both logged by the training
loop (``--time-phases``, ``--measure-comm``; see ``yolofuse_scale/engine/perf.py``). The payloads of
these strategies do not depend on N (an all-reduce reduces the whole gradient, an all-gather returns
whole parameters), so they are measured once at N >= 2 and reused for every N.

Model, per collective kind over N ranks on a ring (Thakur et al.; what NCCL and gloo rings do):

    all-reduce          t = calls * 2(N-1) * alpha + 2(N-1)/N * payload / beta
    all-gather,
    reduce-scatter      t = calls *  (N-1) * alpha +  (N-1)/N * payload / beta
    broadcast, all2all  t = calls *  (N-1) * alpha +  (N-1)/N * payload / beta

alpha: per-hop latency (s); beta: per-rank bus bandwidth (bytes/s). Beyond one node the ring's
slowest link sets both (one NIC per GPU assumed, as on DGX/HGX systems; NCCL's trees and
hierarchical rings do somewhat better at large N, so this is conservative).

Overlap: gradient reduction (all-reduce, reduce-scatter) can hide behind backward; under FSDP and
ZeRO-3 the parameter all-gathers hide behind forward and backward too (prefetch), while ZeRO-1/2's
all-gather of updated parameters after the optimizer step cannot hide. With overlap fraction o:

    exposed = max(0, t_hideable - o * window) + t_not_hideable
    efficiency(N) = T(1) / (T(1) + exposed(N))       (weak scaling: the per-device batch is fixed)

:func:`projections` applies the model to a sweep's runs: per ``--topologies`` preset and strategy,
the efficiency at each ``--project`` count and the 1-device step time each needs for
``--target-efficiency``; with a link fitted on this machine (``collectives.py``), projection beside
measurement and the overlap that would reproduce it.

What a projection is worth is decided by that comparison (:func:`fit_check`). The model's only cost of
more devices is communication, so the step time N devices added on this machine must lie between the
exposed communication at overlap 1 and at overlap 0. Above it ("no overlap in [0, 1] fits", measured
below the projection), more devices cost something the model has no term for (a straggler, the input
pipeline, BatchNorm sync, on a CPU the reductions competing with compute): every projection of that
strategy is then an upper bound, never a finding. Below it, the model counts more than was paid.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolofuse_scale.errors import ConfigError


@dataclass(frozen=True)
class Link:
    name: str
    alpha_s: float  #: per-hop latency
    beta_bytes_per_s: float  #: per-rank bus bandwidth a collective achieves
    note: str = ""


#: Named interconnects. Bandwidths are what NCCL's bus-bandwidth tests typically reach, not line rate.
LINKS: dict[str, Link] = {
    "nvswitch": Link("nvswitch", 3e-6, 370e9, "NVLink4/NVSwitch (H100/H200 HGX): ~370 GB/s busbw"),
    "nvlink3": Link("nvlink3", 3e-6, 230e9, "NVLink3/NVSwitch (A100 HGX): ~230 GB/s busbw"),
    "pcie4": Link("pcie4", 8e-6, 20e9, "PCIe Gen4 x16 without NVLink: ~20 GB/s"),
    "pcie5": Link("pcie5", 8e-6, 40e9, "PCIe Gen5 x16 without NVLink: ~40 GB/s"),
    "ib100": Link("ib100", 10e-6, 11.5e9, "100 Gb/s InfiniBand/RoCE, one NIC per GPU"),
    "ib200": Link("ib200", 10e-6, 23e9, "200 Gb/s InfiniBand (HDR), one NIC per GPU"),
    "ib400": Link("ib400", 10e-6, 46e9, "400 Gb/s InfiniBand (NDR), one NIC per GPU"),
}

#: Default (intra-node, inter-node) pairs the report projects for.
DEFAULT_TOPOLOGIES = ("nvswitch+ib400", "nvswitch+ib100", "pcie4+ib100")

SHARDED_PARAMS = ("fsdp", "zero3", "zero3_offload")  # parameters gathered in forward/backward


def ring_time(kind: str, calls: float, payload: float, n: int, link: Link) -> float:
    """Seconds one step's ``calls`` collectives of ``kind`` moving ``payload`` bytes in total take."""
    if n <= 1:
        return 0.0
    if kind == "all_reduce":
        return calls * 2 * (n - 1) * link.alpha_s + 2 * (n - 1) / n * payload / link.beta_bytes_per_s
    return calls * (n - 1) * link.alpha_s + (n - 1) / n * payload / link.beta_bytes_per_s


def parse_topology(spec: str, custom: dict[str, Link] | None = None) -> tuple[Link, Link]:
    """``"nvswitch+ib400"`` -> (intra, inter); a single name means one link everywhere."""
    table = {**LINKS, **(custom or {})}
    names = spec.split("+")
    unknown = [n for n in names if n not in table]
    if unknown or len(names) > 2:
        raise ConfigError(f"--topologies item {spec!r}: expected INTRA[+INTER] from {', '.join(table)}")
    intra = table[names[0]]
    return intra, table[names[-1]]


def link_for(n: int, intra: Link, inter: Link, per_node: int) -> Link:
    """The link a flat ring over ``n`` devices is limited by: intra-node up to ``per_node``, else the slower."""
    if n <= per_node:
        return intra
    return Link(f"{intra.name}+{inter.name}", max(intra.alpha_s, inter.alpha_s),
                min(intra.beta_bytes_per_s, inter.beta_bytes_per_s))


def exposed_comm(strategy: str, comm: dict[str, list[float]], n: int, link: Link, forward_s: float,
                 backward_s: float, overlap: float) -> dict[str, float]:
    """Communication time per step and how much of it stays exposed after overlap."""
    hideable = not_hideable = 0.0
    for kind, (calls, payload) in comm.items():
        t = ring_time(kind, calls, payload, n, link)
        if kind in ("all_reduce", "reduce_scatter") or (kind == "all_gather" and strategy in SHARDED_PARAMS):
            hideable += t
        else:
            not_hideable += t
    window = backward_s + (forward_s if strategy in SHARDED_PARAMS else 0.0)
    exposed = max(0.0, hideable - overlap * window) + not_hideable
    return {"comm_s": hideable + not_hideable, "exposed_s": exposed}


def project(strategy: str, step_1_s: float, forward_s: float, backward_s: float, comm: dict[str, list[float]],
            n: int, intra: Link, inter: Link, per_node: int, overlap: float) -> dict[str, float]:
    """Projected weak-scaling step time, throughput ratio and efficiency at ``n`` devices."""
    link = link_for(n, intra, inter, per_node)
    c = exposed_comm(strategy, comm, n, link, forward_s, backward_s, overlap)
    step = step_1_s + c["exposed_s"]
    return {"devices": n, "link": link.name, "comm_s": c["comm_s"], "exposed_s": c["exposed_s"],
            "step_s": step, "efficiency": step_1_s / step}


def fit_link(points: list[tuple[int, float, float]], name: str = "measured") -> Link:
    """Least-squares alpha, beta from all-reduce timings ``(n, payload bytes, seconds)`` of one call each.

    t = 2(n-1) alpha + 2(n-1)/n S / beta is linear in (alpha, 1/beta).
    """
    import numpy as np

    a = np.array([[2 * (n - 1), 2 * (n - 1) / n * s] for n, s, _ in points], dtype=float)
    t = np.array([p[2] for p in points], dtype=float)
    (alpha, inv_beta), *_ = np.linalg.lstsq(a, t, rcond=None)
    alpha = max(float(alpha), 0.0)
    inv_beta = max(float(inv_beta), 1e-15)
    return Link(name, alpha, 1.0 / inv_beta, "fitted from all-reduce timings on this machine")


def step_needed(strategy: str, target: float, forward_share: float, backward_share: float,
                comm: dict[str, list[float]], n: int, intra: Link, inter: Link, per_node: int,
                overlap: float) -> float:
    """The shortest 1-device step time (s) at which weak-scaling efficiency reaches ``target`` at ``n``.

    Forward and backward keep their measured shares of the step; efficiency grows with the step time
    (more compute to hide the same bytes behind), so a bisection finds it. ``inf`` if never reached.
    """
    link = link_for(n, intra, inter, per_node)

    def eff(t: float) -> float:
        c = exposed_comm(strategy, comm, n, link, forward_share * t, backward_share * t, overlap)
        return t / (t + c["exposed_s"])

    lo, hi = 1e-7, 1e4
    if eff(hi) < target:
        return float("inf")
    for _ in range(100):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if eff(mid) < target else (lo, mid)
    return hi


# ------------------------------------------------------------------------------------ a sweep's projection
def projections(runs: list[dict[str, Any]], args: argparse.Namespace, link_fit: dict | None) -> dict[str, Any]:
    """The report's projection section from a sweep's weak-scaling runs (see the module docstring)."""
    weak = {(r["strategy"], r["devices"]): r for r in runs if r["scaling"] == "weak" and "error" not in r}
    counts = project_counts(args.project)
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
            intra, inter = parse_topology(topo)
            rows = [project(strategy, n=n, intra=intra, inter=inter, per_node=args.gpus_per_node,
                            overlap=args.overlap, **kw) for n in counts]
            for row in rows:  # what a device must take per step for the target efficiency at this N
                row["step_needed_s"] = step_needed(
                    strategy, args.target_efficiency, kw["forward_s"] / kw["step_1_s"],
                    kw["backward_s"] / kw["step_1_s"], comm, row["devices"], intra, inter, args.gpus_per_node,
                    args.overlap)
            out["topologies"].setdefault(topo, {})[strategy] = rows
        if link_fit and "error" not in link_fit and not args.compute_from:
            link = Link("measured", link_fit["alpha_s"], link_fit["beta_bytes_per_s"])
            for r in multi:
                p = project(strategy, n=r["devices"], intra=link, inter=link, per_node=r["devices"],
                            overlap=args.overlap, **kw)
                measured = r.get("efficiency")
                implied = _implied_overlap(strategy, kw, r, link)
                entry = {"strategy": strategy, "devices": r["devices"], "projected_efficiency": p["efficiency"],
                         "measured_efficiency": measured,
                         "error": None if measured is None else p["efficiency"] - measured,
                         "implied_overlap": implied}
                entry.update(fit_check(entry, inputs, r, weak.get((strategy, 1)), link_fit, args.overlap))
                out["measured_vs_projected"].append(entry)
    return out


# ------------------------------------------------------------------------ does the model fit the measurement
#: what a projection is, given how the model met this machine's multi-device measurement
VERDICTS = {
    "fits": "the model reproduces the measurement at an overlap in [0, 1]",
    "fits_spread": "the projection lies inside the measured efficiency's spread over repeats",
    "upper_bound": "measured below the model even with no overlap at all: the loss is not (only) communication; "
                   "the projection is an upper bound",
    "lower_bound": "measured above the model even with full overlap: the model counts more communication than "
                   "this machine paid; the projection is pessimistic",
    "unchecked": "no measured efficiency to compare with",
}


def efficiency_range(run: dict[str, Any], base: dict[str, Any] | None) -> tuple[float, float] | None:
    """The lowest and highest efficiency the repeats allow: slowest N-device repeat over fastest 1-device
    repeat, and the other way round (one repeat each: both equal the median's efficiency)."""
    if not base:
        return None
    n, ips, ips1 = run["devices"], run["images_per_s"], base["images_per_s"]
    return ips["min"] / (n * ips1["max"]), ips["max"] / (n * ips1["min"])


def fit_check(entry: dict[str, Any], inputs: dict[str, Any], run: dict[str, Any], base: dict[str, Any] | None,
              link_fit: dict[str, Any], overlap: float) -> dict[str, Any]:
    """How the model at this machine's measured link meets one measured run (``measured_vs_projected``'s entry).

    ``overhead_s``: the step time N devices added (measured); ``exposed_no_overlap_s`` and
    ``exposed_full_overlap_s``: the most and the least the model's communication can add (overlap 0 and 1).
    An overhead outside that interval is what "no overlap fits" means (``implied_overlap`` None): above it,
    N devices cost time the communication model has no term for; below it, less than the model's
    communication. ``verdict``: a key of :data:`VERDICTS`.
    """
    link = Link("measured", link_fit["alpha_s"], link_fit["beta_bytes_per_s"])

    def exposed(o: float) -> float:
        return exposed_comm(entry["strategy"], inputs["comm"], run["devices"], link, inputs["forward_s"],
                            inputs["backward_s"], o)["exposed_s"]

    out = {"overhead_s": run["step_s"] - inputs["step_1_s"], "exposed_no_overlap_s": exposed(0.0),
           "exposed_full_overlap_s": exposed(1.0), "exposed_assumed_s": exposed(overlap)}
    span = efficiency_range(run, base)
    if entry["implied_overlap"] is not None:
        out["verdict"] = "fits"
    elif entry["measured_efficiency"] is None:
        out["verdict"] = "unchecked"
    elif span and span[0] <= entry["projected_efficiency"] <= span[1]:
        out["verdict"] = "fits_spread"
    else:
        out["verdict"] = "upper_bound" if entry["error"] > 0 else "lower_bound"
    return out


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad projection flags before the sweep spends its runs: the projection is computed last."""
    for topology in args.topologies.split(","):
        parse_topology(topology)
    project_counts(args.project)
    if args.compute_from:
        _compute_from(args)


def project_counts(text: str) -> list[int]:
    """``--project "8,16,64"`` -> [8, 16, 64]."""
    try:
        counts = [int(n) for n in text.split(",") if n]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--project {text!r}: expected a comma list of device counts >= 1, e.g. 8,16,64,256")
    return counts


def _compute_source(args: argparse.Namespace, weak: dict) -> tuple[dict[str, dict], str]:
    """1-device runs per strategy: this run's, or those of ``--compute-from`` (e.g. a one-GPU session).

    Payloads depend on the model only, so a CPU run's 2-process communication measurement combined
    with a GPU's 1-device step time projects a multi-GPU machine neither run had.
    """
    if not args.compute_from:
        return {s: r for (s, n), r in weak.items() if n == 1}, "this run's 1-device runs"
    return _compute_from(args)


def _compute_from(args: argparse.Namespace) -> tuple[dict[str, dict], str]:
    """``--compute-from``'s 1-device weak-scaling runs per strategy, refused where they are of another setting."""
    keys = ("model", "fusion", "imgsz", "batch_size")
    try:
        other = json.loads(Path(args.compute_from).read_text())
        mismatch = [k for k in keys if other["config"].get(k) != getattr(args, k)]
        runs = {r["strategy"]: r for r in other["runs"]
                if r["scaling"] == "weak" and r["devices"] == 1 and "error" not in r}
        machine = ", ".join(other["environment"]["gpus"]) or other["environment"]["cpu"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # a file of another kind: one message
        raise ConfigError(f"--compute-from {args.compute_from}: not a scaling benchmark's results.json "
                          f"({type(e).__name__}: {e})") from None
    if mismatch:
        raise ConfigError(f"--compute-from {args.compute_from}: its {', '.join(mismatch)} differ from this run's; "
                          "the step time must be of the same model, image size and per-device batch")
    return runs, f"{args.compute_from} ({machine})"


def _implied_overlap(strategy: str, kw: dict, run: dict, link: Link) -> float | None:
    """The overlap fraction at which the model reproduces the measured step time (None: out of [0, 1])."""
    target = run["step_s"] - kw["step_1_s"]
    lo, hi = 0.0, 1.0
    f = lambda o: exposed_comm(strategy, kw["comm"], run["devices"], link, kw["forward_s"],  # noqa: E731
                               kw["backward_s"], o)["exposed_s"]
    if not f(hi) <= target <= f(lo):
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return (lo + hi) / 2
