"""Which run owns an output folder, and what a start moves aside: another run's outputs, an abandoned timeline.

A folder belongs to one run (lineage), named by ``run.json`` (and recorded in each of its checkpoints): a
fresh run draws an id, a resume keeps it. Deciding is split from doing, so that nothing in the folder moves
before every refusal has been made (``compat.py``'s come once the data and the model exist):

- :func:`decide` (main process, before anything changes): the run id, the folder to move a previous run's
  outputs to (``--overwrite``), or the refusal of a start that would mix two runs;
- :func:`abandoned_checkpoints`: this run's checkpoints after the step a ``--resume PATH`` restarts from;
- :func:`take` (the writer, once the resume is accepted): the moves into ``replaced/`` and ``run.json``.

What moves is never deleted: a previous run's outputs go to ``replaced/<id>-<time>/``, an abandoned
timeline's checkpoints, weights and ``metrics.json`` to ``replaced/abandoned-after-step_<n>-<time>/``.
The folder's lock (``engine/run_lock.py``) is held meanwhile, by the Checkpointer.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import torch

from yolofuse_scale.engine.checkpoint.folder import STATE_FILE, checkpoint_run_id, list_checkpoints, saved_step, step_of
from yolofuse_scale.engine.outputs import RUN_FOLDER_FILES
from yolofuse_scale.engine.trackers import FOLDERS as TRACKER_FOLDERS

RUN_FILE = "run.json"  # in the output folder: the id of the run (lineage) that owns it
LOG_FILE = "train_log.jsonl"
#: What a run writes into its folder, moved aside together by --overwrite (caches and data stay); the trackers'
#: folders too, or a new run's curves would be drawn over the old run's.
RUN_OUTPUTS = (RUN_FILE, "config.yaml", LOG_FILE, "metrics.json", "checkpoints", "weights", *RUN_FOLDER_FILES,
               *TRACKER_FOLDERS.values())


class Claim(NamedTuple):
    """What a start does to its folder once accepted (the same on every rank; :func:`take` does it)."""

    run_id: str
    move_run_to: Path | None  # --overwrite: the previous run's outputs go there
    later: list[Path]  # this run's checkpoints after the resume point: the abandoned timeline's
    abandoned_to: Path  # where they go, with the weights and metrics.json that timeline wrote


def folder_run_id(out: Path) -> str | None:
    """The run id owning ``out``: its ``run.json``, else its newest checkpoint's (None: none known)."""
    try:
        return json.loads((out / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = list_checkpoints(out / "checkpoints")
    return checkpoint_run_id(found[-1]) if found else None


def _describe_run(out: Path) -> str | None:
    """What of a run ``out`` holds that a new run would mix with (None: nothing)."""
    parts = []
    steps = [step_of(p) for p in list_checkpoints(out / "checkpoints")]
    if steps:
        parts.append(f"checkpoints at step {', '.join(map(str, steps))}")
    log = out / LOG_FILE
    records = sum(1 for line in log.open() if line.strip()) if log.is_file() else 0
    if records:
        parts.append(f"{LOG_FILE} with {records} step record(s)")
    return f"run {folder_run_id(out) or '(no id)'}: " + "; ".join(parts) if parts else None


def decide(out: Path, train: Any, resume_from: Path | None, folder_id: str | None
           ) -> tuple[str | None, str | None, str | None]:
    """(run id, folder to move the previous run's outputs to, or refusal): see the Checkpointer. Reads only."""
    fresh_id = uuid.uuid4().hex[:12]
    if train.resume == "auto":  # the folder's own run, or a fresh start of it (nothing saved yet)
        return (checkpoint_run_id(resume_from) if resume_from else None) or folder_id or fresh_id, None, None
    held = _describe_run(out)
    if resume_from is not None:
        ckpt_id = checkpoint_run_id(resume_from)
        inside = resume_from.resolve().parent == (out / "checkpoints").resolve()
        if held is None or inside or (ckpt_id is not None and ckpt_id == folder_id):
            return ckpt_id or folder_id or fresh_id, None, None
        clash = f"resuming {resume_from} (run {ckpt_id or '(no id)'}) into it would mix two runs"
        run_id = ckpt_id or fresh_id
    else:
        if held is None:
            return fresh_id, None, None
        clash = "a fresh run would mix its checkpoints (pruned by step number) and its train_log.jsonl with that run's"
        run_id = fresh_id
    if train.overwrite:
        return run_id, str(out / "replaced" / f"{folder_id or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"), None
    return None, None, (
        f"--output-dir {out} holds another run ({held}); {clash}. Continue that run with --resume auto, write to a "
        f"new --output-dir, or pass --overwrite to move its outputs into {out / 'replaced'}/ first"
    )


def abandoned_checkpoints(ckpt_root: Path, resume_from: Path | None, resume: str, run_id: str | None
                          ) -> tuple[int, list[Path]]:
    """(the step a resume restarts from, this run's checkpoints here at later steps): the timeline that
    ``--resume PATH`` abandons. The same on every rank (the run id is the main process's)."""
    if resume_from is None:
        return 0, []
    start = saved_step(resume_from)
    if resume == "auto" or run_id is None:  # auto: the newest; later weights may still move (take)
        return start, []
    return start, [p for p in list_checkpoints(ckpt_root, run_id)
                   if step_of(p) > start and checkpoint_run_id(p) == run_id]


def take(out: Path, claim: Claim, resume_from: Path | None) -> list[str]:
    """Do what ``claim`` says (the writer only, once the start is accepted); return the notes to log."""
    notes = []
    if claim.move_run_to is not None:
        _move_aside(out, claim.move_run_to)
    if claim.later:
        claim.abandoned_to.mkdir(parents=True, exist_ok=True)
        for p in claim.later:
            os.replace(p, claim.abandoned_to / p.name)
    notes += _set_aside_later_outputs(out, resume_from, claim.abandoned_to)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps({"run_id": claim.run_id}) + "\n")
    return notes


def _move_aside(out: Path, dest: Path) -> None:
    """--overwrite: the previous run's outputs into ``dest`` (renames; nothing deleted)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:
        if (out / name).exists():
            os.replace(out / name, dest / name)


# ------------------------------------------------------------------------------------------ later weights
def _weights_step_and_fitness(path: Path) -> tuple[int, float | None] | None:
    """(step, validated fitness or None) a weights file of this run records; None: absent, unreadable or written
    before weights recorded their step (left where it is). Memory-mapped: the tensors are not read."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        fitness = (payload.get("metrics") or {}).get("fitness")
        return int(payload["step"]), (float(fitness) if fitness is not None else None)
    except Exception:  # noqa: BLE001 - absent, truncated, foreign: not ours to judge here
        return None


def later_outputs(out: Path, step: int, best_fitness: float) -> list[tuple[Path, str]]:
    """The files of ``out``'s weights/ and its metrics.json that a resume at ``step`` (whose checkpoint records
    ``best_fitness``, < 0: none yet) must move aside, each with what it is.

    The rule (docs/checkpoints.md): the weights belong to the timeline being continued. ``last.pt`` and
    ``best.pt`` written by a step after ``step`` belong to the one abandoned. ``best.pt`` must moreover be the
    file the checkpoint's ``best_fitness`` describes: a best.pt of an earlier step with another fitness was
    written by another timeline (one abandoned before), so it moves too. ``metrics.json`` moves when it
    describes a later step or names a weights file that moved. What is left is consistent: the trainer then
    resets a ``best_fitness`` whose best.pt is gone (``Trainer._keep_best_consistent``), so metrics.json never
    names another timeline's file, nor a best.pt beside a null best_fitness."""
    moved = []
    for name in ("last.pt", "best.pt"):
        found = _weights_step_and_fitness(out / "weights" / name)
        if found is None:
            continue
        at, fitness = found
        if at > step:
            moved.append((out / "weights" / name, f"weights/{name} (step {at})"))
        elif name == "best.pt" and fitness != (best_fitness if best_fitness >= 0 else None):
            moved.append((out / "weights" / name, f"weights/best.pt (step {at}, fitness {fitness}: not the best "
                          f"{best_fitness if best_fitness >= 0 else 'none'} this checkpoint records)"))
    try:
        metrics_step = json.loads((out / "metrics.json").read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        metrics_step = None
    if metrics_step is not None and (moved or int(metrics_step) > step):
        moved.append((out / "metrics.json", f"metrics.json (step {metrics_step})"))
    return moved


def _set_aside_later_outputs(out: Path, resume_from: Path | None, dest: Path) -> list[str]:
    """Move :func:`later_outputs` of a resume into ``dest`` (same relative paths); the notes to log (writer only)."""
    if resume_from is None:
        return []
    saved = json.loads((resume_from / STATE_FILE).read_text())
    step = int(saved["step"])
    moved = later_outputs(out, step, float(saved.get("best_fitness", -1.0)))
    for path, _ in moved:
        target = dest / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    return [f"--resume {resume_from}: moved {', '.join(what for _, what in moved)} to {dest}: written after step "
            f"{step} by a timeline this resume abandons"] if moved else []
