"""The scaling report people read (``report.md``): the machine and versions, weak and strong scaling
tables, where a step's time goes, the options table, the projection, any side-by-side sections,
the targets, and the definitions of every column.

Rendered from ``results.json`` alone (:func:`report`), so a sweep's report can be rendered again.
"""

from __future__ import annotations

import json
from typing import Any

from yolofuse_scale.bench import checks, projection
from yolofuse_scale.bench.measure import PHASES


def fmt_bytes(n: float | None) -> str:
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
  the per-device batch; strong scaling keeps the global batch (per-device batch = global / N). The
  medians are over repeats; **per round** (2+ repeats in rounds): the median of repeat k's images/s at N over
  N x repeat k's at 1, each pair measured in the same round.
- **vs DDP**: images/s / DDP's images/s at the same device count.
- **data, fwd, bwd, opt**: median per-step seconds waiting for the loader (+ host-to-device copy), in
  forward + loss, in backward (with the gradient communication it does not hide; under DeepSpeed also
  the engine's optimizer step), in clipping + optimizer step + EMA (ZeRO-1/2: the parameter
  all-gather). The GPU is synchronised at each boundary (`--time-phases`).
- **overhead vs 1**: step time at N minus step time at 1 device, same strategy and per-device batch:
  communication, waiting for the slowest rank, and (on a CPU) memory-bandwidth contention.
- **exposed comm**: step time minus the step time of the same run with gradient synchronisation
  switched off (`--no-sync-baseline`: `python -m yolofuse_scale.bench.no_sync`, DDP and FSDP).
- **comm/step**: payload bytes of this rank's collectives per step (whole tensors reduced or gathered,
  logged by `--measure-comm`); a ring moves 2(N-1)/N of an all-reduce's payload per rank.
- **peak mem**: the largest rank's peak: CPU RSS (includes the Python process and libraries) or CUDA
  max allocated / reserved. **model state**: the largest rank's parameters + gradients + optimizer
  state + engine buffers (unique storages, at step 1).
- **Does the model fit** (projection): *step grew* is the step time at N minus at 1 device (same
  strategy); *model's comm, overlap 0-1* is the communication the model leaves exposed on the measured
  link with all of the hideable part hidden (1) or none (0). The model fits when the growth lies in
  that interval (the overlap that fits) or the projection lies in the measured efficiency's range over
  repeats. Above it, more devices cost something the model has no term for: that strategy's projected
  efficiencies are upper bounds (≤). Below it, the model counts more than was paid (≥, pessimistic).
- **Read this first**: the warnings (too few timed steps or repeats, a wide spread, a loaded machine,
  CPU steal) and their thresholds are in docs/benchmarks.md and yolofuse_scale/bench/checks.py.
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
    lines += read_first(results)
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
            mem = (fmt_bytes(peak.get("cuda_max_allocated_bytes")) + " alloc" if "cuda_max_allocated_bytes" in peak
                   else fmt_bytes(peak.get("rss_bytes")) + " RSS")
            over = r.get("overhead_vs_1_s")
            exp = r.get("exposed_comm_s")
            lines.append(
                f"| {r['strategy']} | {r['devices']} | {r['per_device_batch']} | {ips['median']:.1f} "
                f"[{ips['min']:.1f}-{ips['max']:.1f}] | {r['images_per_s_per_device']:.1f} | "
                f"{_f(r.get('efficiency'))} | {_f(r.get('vs_ddp'))} | {r['step_s'] * 1e3:.0f} | "
                f"{r['data_share'] * 100:.0f} | {'-' if over is None else f'{over * 1e3:.0f}'} | "
                f"{'-' if exp is None else f'{exp * 1e3:.0f}'} | {fmt_bytes(r['comm_bytes_per_step'])} | {mem} | "
                f"{fmt_bytes(r['model_state_bytes_max'])} |")
        lines += _per_round_lines(rows)
        lines += ["", f"### Where a {scaling}-scaling step goes (median ms per step)", "",
                  "| strategy | devices | data | forward | backward | optimizer | collectives (calls: payload) |"
                  + (" MFU |" if any("mfu" in r for r in rows) else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if any("mfu" in r for r in rows) else "")]
        for r in rows:
            if "error" in r:
                continue
            ph = r["phases_s"]
            comm = ", ".join(f"{k} {v[0]:.0f}: {fmt_bytes(v[1])}" for k, v in r["comm"].items()) or "none"
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
            mem = fmt_bytes(peak.get("cuda_max_allocated_bytes", peak.get("rss_bytes")))
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
    checked = fit_checks(results)
    lines = ["## Projected weak-scaling efficiency (alpha-beta ring model)", "",
             "What a projection is: the efficiency N devices would reach if the communication this run measured "
             "(each strategy's collective payloads per step) were the only cost of more devices, on the named "
             f"links, with {p['overlap']:.0%} of the hideable communication hidden behind compute "
             "(yolofuse_scale/bench/projection.py). It has no term for anything else more devices cost (waiting for "
             "the slowest rank, the input pipeline, BatchNorm and loss synchronisation; on a CPU, the reductions "
             f"competing with compute for the same cores). {p['gpus_per_node']} devices per node; step times from "
             f"{p['compute_from']}: a faster device makes the same communication relatively larger.", ""]
    lines += _fit_lines(results, checked)
    marks = projection_marks(checked)
    hidden = False
    for topo, per_strategy in p["topologies"].items():
        counts = [row["devices"] for row in next(iter(per_strategy.values()))]
        lines += [f"**{topo}**: projected efficiency", "", "| strategy | " + " | ".join(str(n) for n in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for strategy, rows in per_strategy.items():
            hidden |= any(row["exposed_s"] == 0 for row in rows)
            lines.append(f"| {strategy} | " + " | ".join(f"{marks.get(strategy, '')}{row['efficiency']:.3f}"
                                                         for row in rows) + " |")
        lines += ["", f"1-device step time needed for efficiency >= {p['target_efficiency']} (ms):", "",
                  "| strategy | " + " | ".join(str(n) for n in counts) + " |", "|---|" + "---|" * len(counts)]
        for strategy, rows in per_strategy.items():  # a model that counts too little needs too little: >=
            mark = NEEDED_MARKS.get(marks.get(strategy, ""), "")
            lines.append(f"| {strategy} | " + " | ".join(f"{mark}{row['step_needed_s'] * 1e3:.1f}" for row in rows)
                         + " |")
        lines.append("")
    legend = []
    if any(m == "≤ " for m in marks.values()):
        legend.append("≤ before an efficiency: an upper bound (the model does not fit this machine's measurement: "
                      "measured below it even with no overlap), and ≥ before its step time needed: at least that")
    if any(m == "≥ " for m in marks.values()):
        legend.append("≥ before an efficiency: pessimistic (measured above the model even with full overlap), and "
                      "≤ before its step time needed: at most that")
    if hidden:
        legend.append(f"1.000: the model hides all of that strategy's communication behind compute at overlap "
                      f"{p['overlap']}: not a finding that N devices cost nothing, only that communication "
                      "alone does not limit them")
    if legend:
        lines += ["; ".join(legend) + ".", ""]
    return lines


#: how a projected value is marked, by the fit check's verdict at the largest measured device count
MARKS = {"upper_bound": "≤ ", "lower_bound": "≥ "}
#: and the step time needed for the target: at least (>=) what a model that counts too little says
NEEDED_MARKS = {"≤ ": "≥ ", "≥ ": "≤ "}


def fit_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``measured_vs_projected`` with the fit check (projection.fit_check) and where the extra time went;
    computed here too, so a results.json written before the check has it."""
    p, fit = results.get("projection") or {}, results.get("link_fit")
    if not fit or "error" in fit:
        return []
    weak = {(r["strategy"], r["devices"]): r for r in results["runs"] if r["scaling"] == "weak" and "error" not in r}
    out = []
    for m in p.get("measured_vs_projected", []):
        run, inputs = weak.get((m["strategy"], m["devices"])), p["inputs"].get(m["strategy"])
        if not run or not inputs:
            continue
        base = weak.get((m["strategy"], 1))
        entry = {**m, **projection.fit_check(m, inputs, run, base, fit, p["overlap"])}
        entry["range"] = projection.efficiency_range(run, base)
        one = weak.get((inputs["compute_strategy"], 1))
        entry["grew_ms"] = {ph: (run["phases_s"][ph] - one["phases_s"][ph]) * 1e3 for ph in PHASES} if one else {}
        out.append(entry)
    return out


def projection_marks(checked: list[dict[str, Any]]) -> dict[str, str]:
    """Strategy -> the mark its projected efficiencies carry ("≤ ", "≥ " or none), from :func:`fit_checks`."""
    return {s: MARKS.get(c["verdict"], "") for s, c in _at_largest_count(checked).items()}


def _at_largest_count(checked: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each strategy's check at its largest measured device count (the one nearest the projection)."""
    out: dict[str, dict[str, Any]] = {}
    for c in sorted(checked, key=lambda c: c["devices"]):
        out[c["strategy"]] = c
    return out


def _fit_lines(results: dict[str, Any], checked: list[dict[str, Any]]) -> list[str]:
    p, fit = results["projection"], results.get("link_fit")
    lines = ["### Does the model fit this machine?", ""]
    if p["compute_from"] != "this run's 1-device runs":
        return lines + ["Not checked: the step times come from another run, so no measurement here has the same "
                        "compute. Read every projected value as what communication alone would cost.", ""]
    if not fit or "error" in fit:
        why = (fit or {}).get("error", "no multi-device runs")
        return lines + [f"Not checked: the link fit failed or did not run ({str(why)[:160]}). Read every projected "
                        "value as what communication alone would cost.", ""]
    lines += [f"Measured link ({fit['backend']}, {fit['devices']} processes): alpha {fit['alpha_s'] * 1e6:.1f} us, "
              f"beta {fit['beta_bytes_per_s'] / 1e9:.2f} GB/s (least squares over all-reduce of 4 KiB-16 MiB). The "
              "model with this link, beside what the same strategy measured: the step time more devices added, "
              "the most and the least the model's communication can add (overlap 0 and 1), and the efficiency.", "",
              "| strategy | devices | step grew (ms) | where (ms) | model's comm, overlap 0-1 (ms) | projected here "
              "| measured [range] | measured - projected | overlap that fits | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in checked:
        fits = "none in [0,1]" if c["implied_overlap"] is None else format(c["implied_overlap"], ".2f")
        where = ", ".join(f"{ph} {v:+.0f}" for ph, v in sorted(c["grew_ms"].items(), key=lambda kv: -abs(kv[1]))
                          if abs(v) >= 0.5) or "-"
        span = f" [{c['range'][0]:.3f}-{c['range'][1]:.3f}]" if c["range"] else ""
        gap = None if c["error"] is None else -c["error"]
        lines.append(f"| {c['strategy']} | {c['devices']} | {c['overhead_s'] * 1e3:.0f} | {where} | "
                     f"{c['exposed_full_overlap_s'] * 1e3:.0f}-{c['exposed_no_overlap_s'] * 1e3:.0f} | "
                     f"{c['projected_efficiency']:.3f} | {_f(c['measured_efficiency'], '.3f')}{span} | "
                     f"{_f(gap, '+.3f')} | {fits} | {VERDICT_WORDS[c['verdict']]} |")
    lines.append("")
    for c in checked:
        lines.append("- " + _verdict_sentence(c, p["overlap"]))
    return lines + [""]


VERDICT_WORDS = {"fits": "fits", "fits_spread": "fits (within the spread)",
                 "upper_bound": "does not fit: projection is an upper bound",
                 "lower_bound": "does not fit: projection is pessimistic", "unchecked": "not checked"}


def _verdict_sentence(c: dict[str, Any], overlap: float) -> str:
    s, n = c["strategy"], c["devices"]
    grew, lo, hi = c["overhead_s"] * 1e3, c["exposed_full_overlap_s"] * 1e3, c["exposed_no_overlap_s"] * 1e3
    if c["verdict"] == "fits":
        note = (f" (the projection assumes {overlap}: on this machine less hides behind compute, so where "
                "communication is exposed the projection is optimistic for a machine like it)"
                if c["implied_overlap"] < overlap - 0.1 else "")
        return f"**{s} at {n}: the model fits** at an overlap of {c['implied_overlap']:.2f}{note}."
    if c["verdict"] == "fits_spread":
        return (f"**{s} at {n}: the model fits within the spread** of the repeats (projected "
                f"{c['projected_efficiency']:.3f}, measured {c['range'][0]:.3f}-{c['range'][1]:.3f}).")
    if c["verdict"] == "upper_bound":
        return (f"**{s} at {n}: the model does not fit.** The step grew by {grew:.0f} ms; the communication the model "
                f"counts costs at most {hi:.0f} ms on this link even with no overlap at all. The other "
                f"{grew - hi:.0f} ms are costs the model has no term for (listed above), so no overlap reproduces the "
                f"measurement and a faster link would not remove them: {s}'s projections below are upper bounds "
                "(≤), not findings.")
    if c["verdict"] == "lower_bound":
        return (f"**{s} at {n}: the model does not fit.** The step grew by {grew:.0f} ms, less than the {lo:.0f} ms "
                "the model's communication costs even with all of it hidden that can be: the model counts more "
                f"communication than this machine paid, so {s}'s projections below are pessimistic (≥).")
    return f"**{s} at {n}: not checked** (no measured efficiency)."


def _causes(results: dict[str, Any]) -> str:
    """What more devices may cost besides the counted communication, on this kind of device."""
    if results["environment"].get("gpus"):
        return ("waiting for the slowest rank, the input pipeline, BatchNorm and loss synchronisation, "
                "host-side launch overhead, other load on the machine")
    return ("on a CPU: the collectives' reductions competing with compute for the same cores, processes sharing "
            "memory bandwidth, waiting for the slowest rank, the input pipeline, other load on the machine")


def gap_sentence(results: dict[str, Any]) -> str | None:
    """The one sentence on what the projection-versus-measurement gap means for the reader's cluster."""
    if not (results.get("projection") or {}).get("topologies"):
        return None
    checked = fit_checks(results)
    below = [c for c in checked if c["verdict"] == "upper_bound"]
    above = [c for c in checked if c["verdict"] == "lower_bound"]
    measure_there = "measure it there with `yolofuse-scale bench` before you plan on it"
    if below:
        counts = {c["devices"] for c in below}
        one = len(counts) == 1
        at = f"at {counts.pop()} devices the" if one else "the"
        gaps = ", ".join(f"{c['error']:.3f} ({c['strategy']}" + ("" if one else f" at {c['devices']}") + ")"
                         for c in below)
        return (f"{at} measured efficiency is below the projection by {gaps}: more devices cost more time here than "
                "the communication the model counts, even with none of it hidden, so something else costs time "
                f"({_causes(results)}); a faster interconnect does not remove it, so on your cluster expect at most "
                f"the projected efficiency, and {measure_there}.")
    if above:
        return ("the measured efficiency is above the projection (" + ", ".join(
            f"{-c['error']:.3f} for {c['strategy']} at {c['devices']}" for c in above) + "): the model counts more "
            "communication than this machine paid, so on your cluster the projection is on the safe side; "
            f"{measure_there}.")
    if checked:
        return ("the model reproduces this machine's multi-device measurement (" + ", ".join(
            sorted({c["strategy"] for c in checked})) + "), so on your cluster the projection's uncertainty is "
            f"its links and overlap, not missing costs: {measure_there}.")
    return ("the projection was not checked against a multi-device measurement of the same compute, so read it as "
            "what communication alone would cost on the named links: on your cluster, "
            f"{measure_there}.")


def read_first(results: dict[str, Any]) -> list[str]:
    """The report's opening section: the warnings (checks.py) and what the projection gap means."""
    warned = checks.warnings(results)
    lines = ["## Read this first", ""]
    lines += [f"- {w}" for w in warned] or [
        f"- No warnings: >= {checks.MIN_STEPS} timed steps and >= {checks.MIN_REPEATS} repeats per run, spread over "
        f"repeats <= {checks.MAX_SPREAD:.0%}, no other load above the thresholds (docs/benchmarks.md)."]
    gap = gap_sentence(results)
    if gap:
        lines += ["", f"**What the projection means for your cluster**: {gap}"]
    return lines + [""]


def _per_round(e: dict[str, Any]) -> str:
    """results.json's ``efficiency_per_round`` as "median [min-max]"."""
    return f"{e['median']:.3f} [{e['min']:.3f}-{e['max']:.3f}]"


def _per_round_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The efficiency within each round beside the ratio of medians (results.json ``efficiency_per_round``)."""
    rounds = [r for r in rows if "efficiency_per_round" in r]
    if not rounds:
        return []
    lines = ["", "Efficiency per round: the repeats ran in rounds (`--order rounds`), one repeat of every "
             "configuration per round, so within a round a run and its 1-device baseline ran minutes apart at "
             "most. On a machine whose speed drifts the median of these ratios is the steadier estimate; the "
             "efficiency column above is a ratio of medians, which can pair a fast window with a slow one.", "",
             "| strategy | devices | efficiency per round: median [min-max] | rounds | ratio of medians |",
             "|---|---|---|---|---|"]
    for r in rounds:
        e = r["efficiency_per_round"]
        lines.append(f"| {r['strategy']} | {r['devices']} | {_per_round(e)} | {e['rounds']} | "
                     f"{_f(r.get('efficiency'), '.3f')} |")
    return lines


def _target_lines(runs: list[dict[str, Any]]) -> list[str]:
    weak = {(r["strategy"], r["devices"]): r for r in runs if r["scaling"] == "weak" and "error" not in r}
    out = []
    for (s, n), r in sorted(weak.items()):
        if n < 2:
            continue
        if s == "ddp" and "efficiency" in r:
            rounds = f", per round {_per_round(r['efficiency_per_round'])}" if "efficiency_per_round" in r else ""
            out.append(f"- DDP weak-scaling efficiency at {n}: {r['efficiency']:.3f}{rounds} (target >= 0.90): "
                       f"{'met' if r['efficiency'] >= 0.9 else 'NOT met'}")
        elif "vs_ddp" in r:
            goal = 0.95 if s in ("zero1", "zero2") else 0.85
            out.append(f"- {s} at {n}: {r['vs_ddp']:.3f} x DDP (target >= {goal}): "
                       f"{'met' if r['vs_ddp'] >= goal else 'NOT met (see the breakdown table)'}")
    return out or ["- no multi-device runs"]
