"""Several seeds of one comparison: each trainer's mean, spread and range, and the paired difference."""

from __future__ import annotations

from typing import Any

SEED_METRICS = ("mAP50-95", "mAP50", "images_per_cpu_s")


def spread(xs: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (n - 1) and range of ``xs``; the deviation is None for one value."""
    n = len(xs)
    mean = sum(xs) / n if n else None
    sd = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5 if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "min": min(xs) if xs else None, "max": max(xs) if xs else None}


def seed_summary(runs: list[dict[str, Any]], other: str = "ultralytics") -> dict[str, Any]:
    """Across seeds (one ``compare_ultralytics.compare`` result each, same settings otherwise): per metric,
    each trainer's values seed by seed with mean / sd / range, and the paired difference ours - ``other`` per seed
    (both trainers ran on the same pairs with the same seed, so the pairing removes the data's share
    of the spread). A seed where either trainer failed is left out of the pairs and named."""
    ok = [r for r in runs if r["ours"].get("status") == "ok" and r[other].get("status") == "ok"]
    out: dict[str, Any] = {"seeds": [r["settings"]["seed"] for r in ok],
                           "failed_seeds": [r["settings"]["seed"] for r in runs if r not in ok], "metrics": {}}
    for k in SEED_METRICS:
        ours = [r["ours"][k] for r in ok if r["ours"].get(k) is not None and r[other].get(k) is not None]
        theirs = [r[other][k] for r in ok if r["ours"].get(k) is not None and r[other].get(k) is not None]
        out["metrics"][k] = {"ours": {"values": ours, **spread(ours)}, other: {"values": theirs, **spread(theirs)},
                             "paired_difference": spread([a - b for a, b in zip(ours, theirs)])}
    return out


def seed_markdown(summary: dict[str, Any], settings: dict[str, Any], other: str = "Ultralytics") -> str:
    """The multi-seed table: per metric, mean +- sd (range) of each trainer and the paired difference."""
    def cell(d: dict[str, Any]) -> str:
        if d["mean"] is None:
            return "–"
        sd = f" ± {d['sd']:.3f}" if d["sd"] is not None else ""
        return f"{d['mean']:.3f}{sd} ({d['min']:.3f}...{d['max']:.3f})"

    key = other.lower()
    lines = [f"### {settings['model']} at {settings['imgsz']} px, {settings['epochs']} epochs, batch "
             f"{settings['batch']}: seeds {', '.join(map(str, summary['seeds']))}", "",
             f"| metric | ours: mean ± sd (range) | {other}: mean ± sd (range) | ours − {other}, paired: "
             "mean ± sd (range) |", "|---|---|---|---|"]
    for k, m in summary["metrics"].items():
        lines.append(f"| {k} | {cell(m['ours'])} | {cell(m[key])} | {cell(m['paired_difference'])} |")
    if summary["failed_seeds"]:
        lines.append(f"\nLeft out (a trainer failed): seeds {', '.join(map(str, summary['failed_seeds']))}.")
    return "\n".join(lines) + "\n"
