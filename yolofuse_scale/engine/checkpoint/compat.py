"""What a resume may change: every refusal of a checkpoint that would not continue this run, in one place.

:func:`check_resume` runs them in order, before anything is loaded and before anything in the run folder
moves (the Checkpointer calls it first in ``load``):

1. the same model (``--model``/``--fusion``/``--scale``, channels, classes, ``--task``: ``run_meta.json``);
2. a layout this strategy can load, and for ZeRO-1/2 at another world size the state to re-partition
   (``strategy/resume.py``);
3. the same position: a step counts optimizer steps of a fixed number of images of a fixed training set;
4. the course: the lr schedule, mosaic epochs and data order the run follows (``engine/course.py``:
   continued, extended, or refused).

Each refusal names the checkpoint, what differs (saved vs now) and the way out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from yolofuse_scale.engine.checkpoint.folder import read_run_meta
from yolofuse_scale.engine.course import Continued, continue_course
from yolofuse_scale.engine.strategy.resume import check_resumable
from yolofuse_scale.errors import CheckpointError


def check_resume(accelerator: Accelerator, path: Path, saved: dict[str, Any], position: dict[str, Any],
                 run_meta: dict[str, Any]) -> tuple[bool, Continued]:
    """Refuse a resume from ``path`` (its ``train_state.json``: ``saved``) that would not continue this run
    (``position`` and ``run_meta`` describe it); return (whether ZeRO state is re-partitioned, the course)."""
    check_same_model(path, read_run_meta(path), run_meta, saved.get("model"), position.get("model"))
    repartition = check_resumable(accelerator, saved, path)  # ZeRO-1/2 at another world size: True
    check_same_position(path, saved, position)
    return repartition, continue_course(path, saved, position["course"])


def dataset_fingerprint(pairs: list[tuple[Path, Path]], root: Path) -> dict[str, Any]:
    """The training set as the loop position counts it: its size and a hash of its sorted (RGB, IR)
    paths relative to the dataset root (so a moved dataset keeps its fingerprint). ~10 ms for LLVIP."""
    rel = sorted(f"{os.path.relpath(rgb, root)}\t{os.path.relpath(ir, root)}" for rgb, ir in pairs)
    return {"train_pairs": len(rel), "paths_sha256": hashlib.sha256("\n".join(rel).encode()).hexdigest()[:16]}


def check_same_model(path: Path, saved: dict[str, Any], meta: dict[str, Any], saved_name: str | None,
                     name: str | None) -> None:
    """Refuse a checkpoint of another architecture (--model/--fusion/--scale, channels, classes) or of another task
    (--task: detect and obb heads, losses and targets differ; a checkpoint written before tasks existed is detect)."""
    saved_task, task = saved.get("task", "detect"), meta.get("task", "detect")
    if saved_task != task:
        raise CheckpointError(
            f"--resume {path}: the checkpoint was trained for --task {saved_task}, this run trains --task {task} "
            f"(another head, loss and kind of box). Resume with --task {saved_task} (and its dataset), or start a "
            "fresh run (without --resume); to start a new task from these weights, pass its weights/last.pt to "
            "--pretrained")
    keys = ("model_yaml", "rgb_channels", "ir_channels")
    if all(saved.get(k) == meta.get(k) for k in keys):
        return
    differs = [k for k in keys if saved.get(k) != meta.get(k)]
    old = saved_name or "another architecture"
    new = name if name and name != saved_name else "a different architecture"
    if saved.get("model_yaml", {}).get("nc") != meta.get("model_yaml", {}).get("nc"):
        new += f" ({meta['model_yaml'].get('nc')} classes; the checkpoint's has {saved['model_yaml'].get('nc')})"
    raise CheckpointError(
        f"--resume {path}: the checkpoint holds {old}, this run builds {new} ({', '.join(differs)} differ). Resume "
        "with the checkpoint's --model/--fusion/--scale and dataset, or start a fresh run (without --resume)"
    )


def _batch_text(d: dict[str, Any]) -> str:
    return (f"{d['images_per_step']} (batch {d['batch_size']} x {d['world_size']} process(es) x accumulation "
            f"{d['grad_accum']})")


def check_same_position(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume whose saved position would mean other samples here.

    The step count, the position inside the epoch (steps x images per step samples skipped) and the
    LR schedule (steps per epoch) all count optimizer steps of a fixed number of images of a fixed
    training set: with another images-per-step the resumed run would skip or repeat samples and its
    learning rate would jump. Checkpoints written before these fields existed are not checked."""
    problems, ways = [], []
    ips, old_ips = now["images_per_step"], saved.get("images_per_step")
    if old_ips is not None and old_ips != ips:
        problems.append(f"images per optimizer step: {_batch_text(saved)} when saved, {_batch_text(now)} now")
        per_pass = now["batch_size"] * now["world_size"]
        ways.append(f"pass --global-batch-size {old_ips} (or --grad-accum {old_ips // per_pass}) to keep {old_ips} "
                    f"images per step at {now['world_size']} process(es)" if old_ips % per_pass == 0 else
                    f"choose --batch-size and --grad-accum so that batch x {now['world_size']} process(es) x "
                    f"accumulation = {old_ips}")
    old_ds, ds = saved.get("dataset"), now["dataset"]
    if old_ds is not None and old_ds != ds:
        problems.append(f"training set: {old_ds['train_pairs']} pairs (fingerprint {old_ds['paths_sha256']}) when "
                        f"saved, {ds['train_pairs']} pairs (fingerprint {ds['paths_sha256']}) now")
        ways.append("resume with the training set (data.yaml, --on-bad-sample) the run started with")
    if problems:
        raise CheckpointError(
            f"--resume {path}: the run's position (step {saved['step']}, epoch {saved['epoch'] + 1}) counts steps "
            "of another batch of data; resuming would skip or repeat samples and jump the learning rate:\n  "
            + "\n  ".join(problems) + "\nEither " + "; ".join(ways)
            + "; or start a fresh run (without --resume: a new --output-dir, or --overwrite)"
        )
