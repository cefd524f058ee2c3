"""The scaling report people read (``report.md``): the machine and versions, weak and strong scaling
tables, where a step's time goes, the options table, the projection, any side-by-side sections,
the targets, and the definitions of every column.

Rendered from ``results.json`` alone (:func:`report`), so a sweep's report can be rendered again.
"""

from __future__ import annotations

import json
from typing import Any

from yolofuse_scale.bench.measure import PHASES


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
  switched off (`--no-sync-baseline`: `python -m yolofuse_scale.bench.no_sync`, DDP and FSDP).
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
             f"(see yolofuse_scale/bench/projection.py), {p['gpus_per_node']} devices per node. Step times from "
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
