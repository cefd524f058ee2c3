"""Checkpoints, written, checked and resumed; the loop uses :class:`Checkpointer` (``load``, ``save``) alone.

- ``checkpointer``: the Checkpointer, load and save orchestrated: lock, claim, refusals, moves, restore, save.
- ``folder``: the step folder format: atomic save, manifest, verify, list, the resume point.
- ``ownership``: which run owns the output folder (``run.json``), ``--overwrite``, abandoned timelines.
- ``compat``: what a resume may change (model, strategy layout, position, course): every refusal.
- ``to_weights``: a checkpoint into a portable weights file, offline (``checkpoint-to-weights``).

The folder's lock is ``engine/run_lock.py``, the course ``engine/course.py``, ZeRO-1/2's whole optimizer state
``strategy/zero_state.py``; the portable weights file (``write_weights``, ``read_weights``) is
``yolofuse_scale/weights.py``, on the ground floor, so that the model package reads it without this one.
"""

from yolofuse_scale.engine.checkpoint.checkpointer import Checkpointer
from yolofuse_scale.engine.checkpoint.compat import dataset_fingerprint
from yolofuse_scale.engine.checkpoint.folder import (
    COMPLETE_MARKER,
    checkpoint_run_id,
    list_checkpoints,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from yolofuse_scale.engine.checkpoint.ownership import later_outputs
from yolofuse_scale.engine.checkpoint.to_weights import export_weights
from yolofuse_scale.errors import CheckpointError  # raised by every module here

__all__ = ["COMPLETE_MARKER", "CheckpointError", "Checkpointer", "checkpoint_run_id", "dataset_fingerprint",
           "export_weights", "later_outputs", "list_checkpoints", "resolve_resume", "save_checkpoint",
           "verify_checkpoint"]
