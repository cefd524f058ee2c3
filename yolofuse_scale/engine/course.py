"""A run's course: the settings its lr schedule, mosaic epochs, YOLO26 loss weights and data order follow,
recorded in every checkpoint, and what a resume may change of them.

A resume restores the position (step, epoch) and the state (weights, optimizer, EMA, RNG); every setting
comes from the launch's flags. Unrecorded, a resume with another ``--epochs`` re-derived the warm-up and
the decay from the new total (the lr of a finished run jumped 8x at its next step), another ``--seed``
mid-epoch trained some of the epoch's samples twice and others never, and another ``--optimizer`` died in
torch with a KeyError. Each setting now has one rule, decided before anything is loaded:

- ``--epochs`` (changed): the run is extended, or shortened, from the resume step. The lr decay continues
  from the value it has at that step to ``lrf x lr`` at the new last step (same shape and granularity), the
  warm-up keeps the length the run's first ``--epochs`` gave it (never restarted), mosaic is off in the last
  ``--close-mosaic`` epochs of the new total (so it returns for added epochs before closing again: the run
  still ends with its mosaic-free epochs, what a user extending training wants), and YOLO26's one-to-many
  loss weight continues linearly from its value in the resume epoch to its final value at the new last epoch.
  The extension (step, new total) is recorded, so the schedule stays a function of the step and the record,
  whatever launches follow. Refused: a total the run has already reached (at or past its last step), and a
  shortening that would end the run before its warm-up does (before its last epoch).
- ``--seed``, ``--shuffle``: the epoch's sample order is a permutation drawn from (seed, epoch)
  (``data/sampler.py``). Mid-epoch a change is refused: the rest of the epoch would come from another
  permutation. At an epoch boundary it is accepted and logged: every epoch still sees each sample once,
  only the draws from then on change.
- ``--close-mosaic``: accepted and logged: it decides which epochs draw mosaic from now on, and neither the
  position nor the optimizer's state depends on it.
- The rest of :data:`REFUSED` (the optimizer and the lr/momentum schedule): refused by name, with the saved
  value, why, and the way out. Each would change the run mid-way without a trace in its log (a jump of lr or
  momentum, or an optimizer state that cannot load).

Checkpoints written before the course was recorded resume as before, unchecked, with a note.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

from yolofuse_scale.config import OptimConfig, RunConfig
from yolofuse_scale.data.sampler import epoch_order
from yolofuse_scale.engine.optim import Schedule
from yolofuse_scale.errors import ConfigError

#: Settings a resume must keep, and what another value would do from the resume step on (why it is refused).
REFUSED: dict[str, str] = {
    "optimizer": "the saved optimizer state (SGD momentum or AdamW moments) cannot be loaded into another optimizer",
    "lr": "the peak lr: the lr would jump at the resume step",
    "scale_lr": "scales the peak lr: the lr would jump at the resume step",
    "nbs": "scales every step's gradient (nbs x the mean) and, with --scale-lr, the lr: the step size would jump",
    "lrf": "the end of the decay: the lr would jump onto another curve",
    "schedule": "the shape of the decay: the lr would jump onto another curve",
    "decay_every": "the granularity of the decay: the lr would jump onto another curve",
    "momentum": "set at every step after warm-up: SGD momentum / AdamW beta1 would jump",
    "weight_decay": "the saved optimizer state carries the saved weight decay: the new one would be silently ignored",
    "warmup_epochs": "the warm-up's length, fixed when the run started: it would restart, stop short or do nothing",
    "warmup_min_steps": "the warm-up's length, fixed when the run started: it would restart, stop short or do nothing",
    "warmup_momentum": "where the warm-up's momentum starts: the momentum would jump inside the warm-up",
    "warmup_bias_lr": "where the warm-up's bias lr starts: the bias lr would jump inside the warm-up",
}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def course_of(cfg: RunConfig) -> dict[str, Any]:
    """What a run records of its course (``course`` in ``train_state.json``), as this launch's flags set it;
    ``first_epochs`` and ``extensions`` are the fresh run's (a resume replaces them, see :func:`continue_course`)."""
    return {"epochs": cfg.train.epochs, "first_epochs": cfg.train.epochs, "extensions": [],
            **{k: getattr(cfg.optim, k) for k in REFUSED},
            "close_mosaic": cfg.data.recipe.close_mosaic, "seed": cfg.train.seed, "shuffle": cfg.data.shuffle}


class Continued(NamedTuple):
    """The course a resumed run follows, what to log about it, and the total it had before (None: unchanged)."""

    course: dict[str, Any]
    notes: list[str]
    extended_from: int | None


def continue_course(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> Continued:
    """Check this launch's course (``now``, :func:`course_of`) against the checkpoint's state ``saved``; return
    the course to follow and save from now on, or raise :class:`ConfigError` (a flag the checkpoint
    contradicts) naming every refused change."""
    old = saved.get("course")
    if not isinstance(old, dict):
        return Continued(now, [f"--resume {path}: the checkpoint predates recorded schedules: --epochs, the lr "
                               "schedule and the data order follow this launch's flags, unchecked"], None)
    step, in_epoch, spe = saved["step"], saved["step_in_epoch"], saved["steps_per_epoch"]
    problems = [f"{_flag(k)}: {old[k]} when saved, {now[k]} now ({why})"
                for k, why in REFUSED.items() if k in old and old[k] != now[k]]
    notes: list[str] = []
    order = [k for k in ("seed", "shuffle") if k in old and old[k] != now[k]]
    if order and 0 < in_epoch < spe:  # (in_epoch == spe: the epoch's steps are all done, its end was not saved)
        problems.append(_mid_epoch_order(saved, old, now, order))
    elif order:
        notes.append(f"{', '.join(f'{_flag(k)} {now[k]} (saved: {old[k]})' for k in order)} from epoch "
                     f"{saved['epoch'] + 1 + (in_epoch == spe)} on: the epochs to come draw their sample order and "
                     "augmentation from it (each still sees every sample once); the epochs before drew theirs from the "
                     "saved setting")
    if "close_mosaic" in old and old["close_mosaic"] != now["close_mosaic"]:
        notes.append(f"--close-mosaic {now['close_mosaic']} (saved: {old.get('close_mosaic')}): mosaic is off in the "
                     f"last {now['close_mosaic']} of {now['epochs']} epochs from epoch {saved['epoch'] + 1} on")
    total, first = old["epochs"], old["first_epochs"]
    extensions = [list(e) for e in old["extensions"]]
    if now["epochs"] != total:
        problems += _epochs_problems(saved, old, now["epochs"])
        while extensions and extensions[-1][0] == step:  # a change at this step that trained nothing
            extensions.pop()
        extensions.append([step, now["epochs"]])
    if problems:
        raise ConfigError(
            f"--resume {path}: this launch changes what the run's course depends on (step {step}, epoch "
            f"{saved['epoch'] + 1}{f', {in_epoch} of its {spe} steps done' if in_epoch else ''}); refused before "
            "anything is loaded:\n  " + "\n  ".join(problems) + "\nResume with the saved settings (the run's "
            "config.yaml holds them: --config <run>/config.yaml), or start a new run from its weights "
            "(--pretrained <run>/weights/last.pt, another --output-dir)"
        )
    course = {**now, "first_epochs": first, "extensions": extensions}
    return Continued(course, notes, total if now["epochs"] != total else None)


def _epochs_problems(saved: dict[str, Any], old: dict[str, Any], epochs: int) -> list[str]:
    """Why ``--epochs epochs`` cannot continue the run at the saved step (empty: it can)."""
    step, spe, total = saved["step"], saved["steps_per_epoch"], old["epochs"]
    if epochs * spe <= step:
        return [f"--epochs: {total} when saved, {epochs} now: the run is already at step {step} (epoch "
                f"{saved['epoch'] + 1}); --epochs {epochs} ends at step {epochs * spe}. Pass --epochs "
                f"{step // spe + 1} or more, or take the weights as they are (weights/last.pt)"]
    warmup = Schedule(OptimConfig(warmup_epochs=old["warmup_epochs"], warmup_min_steps=old["warmup_min_steps"]),
                      spe, old["first_epochs"], 1.0).warmup_steps
    if warmup > (epochs - 1) * spe:
        return [f"--epochs: {total} when saved, {epochs} now: the run's warm-up ({warmup} steps, set by its first "
                f"--epochs {old['first_epochs']}) would not end before its new last epoch; pass --epochs "
                f"{math.ceil(warmup / spe) + 1} or more"]
    return []


def _mid_epoch_order(saved: dict[str, Any], old: dict[str, Any], now: dict[str, Any], keys: list[str]) -> str:
    """The refusal of another --seed/--shuffle inside an epoch, with how many samples it would train twice."""
    ips, n = saved["images_per_step"], saved["dataset"]["train_pairs"]
    done = saved["step_in_epoch"] * ips
    end = saved["steps_per_epoch"] * ips
    trained = set(epoch_order(n, old["seed"], saved["epoch"], old["shuffle"])[:done].tolist())
    rest = set(epoch_order(n, now["seed"], saved["epoch"], now["shuffle"])[done:end].tolist())
    changed = ", ".join(f"{_flag(k)}: {old[k]} when saved, {now[k]} now" for k in keys)
    return (f"{changed}: the run stopped inside epoch {saved['epoch'] + 1}, whose sample order is a permutation drawn "
            f"from (seed, epoch) (shuffled: {old['shuffle']}); the rest of the epoch would come from another "
            f"permutation: {len(trained & rest)} of the {done} samples it trained would be trained twice and as many "
            "others skipped. Resume with the saved value, or change it at an epoch boundary (a checkpoint at an "
            "epoch's end)")


def describe(schedule: Schedule, step: int, extended_from: int | None, close_mosaic: int | None, e2e: Any) -> str:
    """One line for the log: the lr schedule from ``step`` on, and what an extension (``extended_from``: the total
    before) does to the lr, the mosaic epochs (``close_mosaic``; None: no mosaic drawn) and a YOLO26 loss weight
    (``e2e``: the task, or None)."""
    spe, total = schedule.steps_per_epoch, schedule.total_epochs
    end = total * spe
    lrf = schedule.peak_lr * schedule.cfg.lrf
    epoch = step // spe
    if extended_from is None:
        return (f"lr schedule: warm-up {schedule.warmup_steps} steps, {schedule.cfg.schedule} decay per "
                f"{schedule.cfg.decay_every} to {lrf:.3g} (lrf x lr) at step {end}"
                + (f" (extended at step {', '.join(str(s) for s, _ in schedule.extensions)})"
                   if schedule.extensions else ""))
    nw = schedule.warmup_steps
    warm = "no warm-up" if step >= nw else f"the warm-up continues to step {nw} (its length is kept)"
    line = (f"--epochs {total} (was {extended_from}) from step {step}: the lr continues from "
            f"{schedule.lr_at(step):.3g} at step {step + 1} (as before the change) to "
            f"{lrf:.3g} (lrf x lr) at step {end}, {schedule.cfg.schedule} per {schedule.cfg.decay_every}, {warm}")
    if close_mosaic is not None:
        first_off = max(total - close_mosaic, 0)
        line += (f"; mosaic in epochs {epoch + 1}-{first_off}, off in the last {close_mosaic}" if first_off > epoch
                 else f"; mosaic off (the last {close_mosaic} epochs)") + f" (--close-mosaic {close_mosaic})"
    if e2e is not None:
        line += (f"; YOLO26 one-to-many loss weight {e2e.one_to_many_weight(epoch):.3g} in epoch {epoch + 1} to "
                 f"{e2e.one_to_many_weight(total - 1):.3g} in epoch {total}")
    return line
