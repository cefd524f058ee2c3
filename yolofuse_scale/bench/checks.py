"""What makes a sweep's numbers noise: too few timed steps, too few repeats, a wide spread over repeats,
a loaded machine. :func:`warnings` gives the lines ``report.md`` starts with and the sweep prints.

The thresholds, and why:

- :data:`MIN_STEPS` timed steps per run (after ``--warmup``): a run's number is the median step time.
  From 9 steps on, a distribution-free 95% confidence interval of a median (order statistics 2 and
  n-1) exists that leaves out the single slowest and fastest step; below that the interval reaches
  them, so one stray step (a garbage collection, a straggler rank, a page fault storm) sets the bound.
  10 rounds it up; the default ``--steps`` is 20.
- :data:`MIN_REPEATS` repeats per configuration: with 1 there is no spread at all, with 2 the median is
  the mean of two and cannot leave out a stray run; 3 is the fewest where it can.
- :data:`MAX_SPREAD`: a configuration whose images/s vary by more than 5% of their median over repeats
  (max - min) cannot tell efficiencies apart that differ by less, and the report is read for
  differences of 0.02-0.10.
- a loaded machine: :mod:`yolofuse_scale.bench.load` (other processes' CPU use, CPU steal).
"""

from __future__ import annotations

from typing import Any

from yolofuse_scale.bench import load

MIN_STEPS = 10
MIN_REPEATS = 3
MAX_SPREAD = 0.05

MEASURED = ("weak", "strong", "option", "no_sync")


def warnings(results: dict[str, Any]) -> list[str]:
    """Markdown bullets (without the ``-``), most important first; empty when the sweep is clean."""
    cfg = results["config"]
    runs = [r for r in results["runs"] if r.get("scaling") in MEASURED]
    ok = [rep for r in runs for rep in r.get("repeats", []) if "error" not in rep]
    out = []
    timed = min((rep.get("steps_timed", cfg["steps"]) for rep in ok), default=cfg["steps"])
    if timed < MIN_STEPS:
        out.append(f"**Too few timed steps**: {timed} per run after {cfg['warmup']} warm-up step(s) (fewer than "
                   f"{MIN_STEPS}): a run's median step time then rests on one or two steps, and one stray step "
                   f"moves it. Use `--steps {max(MIN_STEPS, 20)}` or more.")
    repeats = min((len([rep for rep in r.get("repeats", []) if "error" not in rep]) for r in runs if "error" not in r),
                  default=cfg["repeats"])
    if repeats < MIN_REPEATS:
        what = "there is no spread to judge by" if repeats <= 1 else "the median of two cannot leave out a stray run"
        out.append(f"**Too few repeats**: {repeats} per configuration (fewer than {MIN_REPEATS}): {what}, so a "
                   f"difference between two rows may be chance. Use `--repeats {MIN_REPEATS}` or more.")
    wide = []
    for r in runs:
        ips = r.get("images_per_s")
        if "error" not in r and isinstance(ips, dict) and ips.get("median"):
            spread = (ips["max"] - ips["min"]) / ips["median"]
            if spread > MAX_SPREAD:
                wide.append(f"{r['label']} ({spread:.0%})")
    if wide:
        out.append(f"**Wide spread over repeats** (max - min above {MAX_SPREAD:.0%} of the median): "
                   f"{', '.join(wide)}: differences smaller than that spread are noise.")
    out += load.warnings(results.get("load"), runs)
    return out
