"""The scaling report's plots: throughput, efficiency (measured and projected), memory per rank and
the step-time breakdown, as PNGs beside ``report.md``. matplotlib is imported here only (Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolofuse_scale.bench.measure import PHASES


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """The PNGs of a sweep's weak-scaling runs, written into ``out``; their file names (none without such runs)."""
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
