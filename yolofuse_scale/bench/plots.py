"""The scaling report's plots: throughput, efficiency (measured and projected), memory per rank and
the step-time breakdown, as PNGs beside ``report.md``. matplotlib is imported here only (Agg backend).

Made to be read at a glance: the device axis is a log2 axis marked only at the device counts that
have a point (:func:`device_ticks`: 1, 2, 4, 8, never 1.2); a projection is dashed with open markers,
drawn above the measured lines, side by side where strategies coincide (often all at 1.0), and its
values are written in the plot, with "<=" where the model does not fit this machine (report.py);
peak memory and model state have a panel each, on a scale where every bar shows
(:func:`value_scale`), each bar labelled with its value.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from yolofuse_scale.bench.measure import PHASES
from yolofuse_scale.bench.report import fit_checks, fmt_bytes, projection_marks

#: one open marker shape per strategy for the projection (coinciding lines stay tellable apart)
PROJECTION_MARKERS = ("s", "D", "^", "v", "P", "X", "h")
#: a panel whose largest bar is more than this many times its smallest gets a log scale
LOG_RATIO = 20.0


def device_ticks(*groups: Iterable[int]) -> list[int]:
    """The device counts an axis is marked at: each count that has a point, once, ascending."""
    return sorted({int(n) for group in groups for n in group})


def value_scale(values: Iterable[float]) -> str:
    """"linear", or "log" where the smallest positive bar would be a sliver beside the largest."""
    positive = [v for v in values if v and v > 0]
    if len(positive) < 2:
        return "linear"
    return "log" if max(positive) / min(positive) > LOG_RATIO else "linear"


def _device_axis(ax, ticks: list[int]) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(ticks[0] / 1.35, ticks[-1] * 1.35)


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """The report's figures by file name (none without successful weak-scaling runs)."""
    import matplotlib

    matplotlib.use("Agg")
    weak = [r for r in results["runs"] if r["scaling"] == "weak" and "error" not in r]
    if not weak:
        return {}
    figs = {"throughput.png": _throughput(weak)}
    if any("efficiency" in r for r in weak):  # none when every 1-device baseline failed: nothing to divide by
        figs["efficiency.png"] = _efficiency(results, weak)
    return {**figs, "memory.png": _memory(weak), "breakdown.png": _breakdown(weak)}


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """The PNGs of a sweep's weak-scaling runs, written into ``out``; their file names."""
    import matplotlib.pyplot as plt

    figs = figures(results)  # every figure first: a results.json that cannot be drawn writes nothing
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    return list(figs)


def _colors(strategies: list[str]) -> dict[str, str]:
    return {s: f"C{i % 10}" for i, s in enumerate(strategies)}


def _throughput(weak: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r["strategy"] for r in weak))
    colors = _colors(strategies)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in strategies:
        rows = sorted((r for r in weak if r["strategy"] == s), key=lambda r: r["devices"])
        ns, med = [r["devices"] for r in rows], [r["images_per_s"]["median"] for r in rows]
        err = [[m - r["images_per_s"]["min"] for m, r in zip(med, rows)],
               [r["images_per_s"]["max"] - m for m, r in zip(med, rows)]]
        ax.errorbar(ns, med, yerr=err, fmt="o-", color=colors[s], capsize=3, label=s)
        base = next((r for r in rows if r["devices"] == 1), None)
        if base and s == "ddp" and len(ns) > 1:
            ax.plot(ns, [n * base["images_per_s"]["median"] for n in ns], "k--", lw=1, label="ideal (DDP at 1 x N)")
    _device_axis(ax, device_ticks(r["devices"] for r in weak))
    ax.set(xlabel="devices", ylabel="images/s (train phase)", ylim=(0, None),
           title="Weak-scaling throughput (bars: min-max over repeats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _efficiency(results: dict[str, Any], weak: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    proj = results.get("projection") or {}
    topo = results["config"]["topologies"].split(",")[0]
    projected = (proj.get("topologies") or {}).get(topo, {})
    strategies = list(dict.fromkeys([*(r["strategy"] for r in weak), *projected]))
    colors = _colors(strategies)
    marks = projection_marks(fit_checks(results))  # "≤ ": the model does not fit (report.py)
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    ax.axhline(1.0, color="0.6", lw=0.8, zorder=1)
    measured_counts: list[int] = []
    lows = [1.0]
    for s in strategies:
        rows = sorted((r for r in weak if r["strategy"] == s and "efficiency" in r), key=lambda r: r["devices"])
        if rows:
            ns, eff = [r["devices"] for r in rows], [r["efficiency"] for r in rows]
            measured_counts += ns
            lows += eff
            ax.plot(ns, eff, "o-", color=colors[s], lw=2, ms=6, zorder=3, label=f"{s} measured")
    summary = []
    for k, (s, rows) in enumerate(projected.items()):
        # side by side in x (a tenth of an octave apart) where strategies project the same values
        shift = 2 ** ((k - (len(projected) - 1) / 2) * 0.1)
        ns, eff = [r["devices"] for r in rows], [r["efficiency"] for r in rows]
        lows += eff
        bound = {"≤ ": " (upper bound)", "≥ ": " (pessimistic)"}.get(marks.get(s, ""), "")
        ax.plot([n * shift for n in ns], eff, "--", color=colors[s], lw=1.4, marker=PROJECTION_MARKERS[k % 7],
                ms=7, mfc="white", mew=1.6, zorder=4, label=f"{s} projected{bound}")
        summary.append(f"  {s}: {_ascii(marks.get(s, ''))}{eff[-1]:.3f}")
    ticks = device_ticks(measured_counts, (r["devices"] for rows in projected.values() for r in rows))
    _device_axis(ax, ticks)
    bottom = max(0.0, min(lows) - 0.08)
    ax.set(xlabel="devices", ylabel="efficiency (images/s at N / N x at 1)", ylim=(bottom, 1.04),
           title=f"Weak-scaling efficiency: measured, and projected on {topo}" if projected
           else "Weak-scaling efficiency")
    ax.grid(alpha=0.3)
    # legend and values beside the axes, where no point can hide behind them
    fig.subplots_adjust(left=0.085, right=0.72, bottom=0.12, top=0.92)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    if projected:
        n_last = max(r["devices"] for rows in projected.values() for r in rows)
        notes = [f"projected at {n_last} devices", f"(overlap {proj['overlap']}):", *summary]
        if "≤ " in marks.values():
            notes += ["<=: an upper bound: the model", "does not fit this machine's", "measurement (report.md)"]
        if any(r["exposed_s"] == 0 for rows in projected.values() for r in rows):
            notes += ["1.000: all modelled communication", "hidden, not 'N devices are free'"]
        ax.text(1.02, 0.0, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="bottom", ha="left",
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
    return fig


def _ascii(mark: str) -> str:
    return {"≤ ": "<=", "≥ ": ">="}.get(mark, "")


def _labels(weak: list[dict[str, Any]]) -> list[str]:
    return [f"{r['strategy']}\nN={r['devices']}" for r in weak]


def _memory(weak: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    cuda = any("cuda_max_allocated_bytes" in r["peak_memory_max"] for r in weak)
    peak = [r["peak_memory_max"].get("cuda_max_allocated_bytes" if cuda else "rss_bytes", 0) for r in weak]
    state = [r["model_state_bytes_max"] or 0 for r in weak]
    panels = [(peak, "C0", "peak CUDA memory allocated (largest rank)" if cuda else
               "peak process RSS (largest rank; includes Python and libraries)"),
              (state, "C1", "model state (largest rank): parameters + gradients + optimizer state")]
    xs = list(range(len(weak)))
    fig, axes = plt.subplots(2, 1, figsize=(max(6.4, len(weak) * 0.85), 6.2), sharex=True)
    for ax, (values, color, title) in zip(axes, panels):
        mib = [v / 2**20 for v in values]
        scale = value_scale(mib)
        bars = ax.bar(xs, mib, 0.6, color=color)
        ax.bar_label(bars, [fmt_bytes(v) if v else "-" for v in values], fontsize=7, padding=2)
        if scale == "log":
            positive = [v for v in mib if v > 0]
            ax.set_yscale("log")
            ax.set_ylim(min(positive) / 3, max(positive) * 4)
        else:
            ax.set_ylim(0, max(mib + [1e-9]) * 1.2)
        ax.set(ylabel="MiB" + (" (log)" if scale == "log" else ""), title=title)
        ax.title.set_fontsize(9)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(xs, _labels(weak), fontsize=7)
    fig.suptitle("Memory per rank", fontsize=11)
    fig.tight_layout()
    return fig


def _breakdown(weak: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    xs = list(range(len(weak)))
    fig, ax = plt.subplots(figsize=(max(6.4, len(weak) * 0.85), 4.2))
    bottom = [0.0] * len(weak)
    for p in PHASES:
        vals = [r["phases_s"][p] * 1e3 for r in weak]
        ax.bar(xs, vals, 0.6, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for x, r in zip(xs, weak):
        ax.annotate(f"{r['step_s'] * 1e3:.0f}", (x, bottom[x]), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(xs, _labels(weak), fontsize=7)
    ax.set_ylim(0, max(bottom) * 1.12)
    ax.set(ylabel="ms per step (median)", title="Step time breakdown (weak scaling; number: step time)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
