"""Guard rails for small runs: settings that train a small set to nothing, said at the start with the fix.

Both were seen on the first try of a newcomer: the defaults on 32 pairs for 20 epochs spent 76 of their 80 steps
warming up and ended at mAP 0 every epoch; at ``--imgsz 64`` the synthetic people are ~7 px wide and the box loss
stayed 0.000 throughout. Neither is an error (a long warm-up or small boxes can be meant), so each is one
``warning:`` line, with the numbers and the flag that fixes it. ``configs/small_data.yaml`` (``--config``) holds the
demo's recipe for small sets.

- **Warm-up**: when it covers more than half of the run's scheduled steps (``Schedule.warmup_steps`` against
  ``--epochs`` x steps per epoch), the lr spends most of the run below its peak.
- **Boxes under the finest stride**: when most training boxes are narrower, at ``--imgsz``, than the model's
  smallest stride (8 px: P3, the finest map the head predicts on). Ultralytics' task-aligned assigner only picks
  anchor points (the centres of that stride's grid cells) that fall inside a box, so a box narrower than the
  stride holds often none and is never learnt from: no box loss, no recall. The size is the box's shorter side
  after the letterbox (the long image side scaled to ``--imgsz``), the median over the training boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from yolofuse_scale.engine.optim import Schedule

#: The small-set recipe the warnings point at (the demo's: one warm-up epoch, no step floor, lr 0.02).
SMALL_DATA_CONFIG = "configs/small_data.yaml"


def warmup_warning(schedule: Schedule, step: int = 0) -> str | None:
    """The warning when the warm-up takes more than half the run's steps and is not over at ``step``, else None."""
    total = schedule.total_epochs * schedule.steps_per_epoch
    warmup, cfg = schedule.warmup_steps, schedule.cfg
    if total <= 0 or warmup * 2 <= total or step >= warmup:
        return None
    one_epoch = min(schedule.steps_per_epoch, warmup)
    return (f"the warm-up takes {warmup} of the run's {total} optimizer steps ({warmup / total:.0%}: --warmup-epochs "
            f"{cfg.warmup_epochs:g} x {schedule.steps_per_epoch} steps/epoch, at least --warmup-min-steps "
            f"{cfg.warmup_min_steps}, at most --epochs - 1 epochs), so the lr is below its peak for most of the run; "
            f"lower them (--warmup-epochs 1 --warmup-min-steps 0: {one_epoch} steps) or train longer (--epochs), or "
            f"start from the small-set recipe: --config {SMALL_DATA_CONFIG}")


def box_sides(samples: Sequence, imgsz: int) -> np.ndarray:
    """The shorter side, in pixels at ``imgsz``, of every box of ``samples`` (``data.sample.Sample``: normalised
    xywh boxes and the image's (height, width)) after the letterbox that scales the long side to ``imgsz``."""
    sides = []
    for s in samples:
        if not len(s.boxes):
            continue
        h, w = s.hw if s.hw else (imgsz, imgsz)
        scale = imgsz / max(h, w)
        sides.append(np.minimum(s.boxes[:, 3] * w, s.boxes[:, 4] * h) * scale)
    return np.concatenate(sides) if sides else np.zeros(0, dtype=np.float32)


def small_box_warning(sides: np.ndarray, imgsz: int, stride: int) -> str | None:
    """The warning when most boxes (``box_sides``) are narrower than ``stride`` at ``imgsz``, else None."""
    if not len(sides):
        return None
    median = float(np.median(sides))
    if median >= stride:
        return None
    share = float(np.mean(sides < stride))
    better = int(math.ceil(imgsz * stride / max(median, 1e-3) / 32) * 32)
    return (f"{share:.0%} of the training boxes are narrower than {stride} px at --imgsz {imgsz} (median shorter "
            f"side {median:.1f} px), below the {stride}-px stride of P3, the finest level the head predicts on: the "
            f"assigner matches few of them, the box loss stays near 0 and nothing is found; raise --imgsz (--imgsz "
            f"{better} gives a median of {median * better / imgsz:.0f} px)")


def small_run_warnings(schedule: Schedule, step: int, sides: np.ndarray, imgsz: int, stride: int) -> list[str]:
    """Every guard rail's warning for this launch (see the module docstring)."""
    return [w for w in (warmup_warning(schedule, step), small_box_warning(sides, imgsz, stride)) if w]
