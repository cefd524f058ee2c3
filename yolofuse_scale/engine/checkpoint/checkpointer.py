"""The Checkpointer: one run's checkpoints in its output folder; which run owns it, where it resumes from
(found once, checked, loaded once), and every save. The loop builds one and calls ``load`` and ``save``.

The folder belongs to one run (lineage), named by ``run.json``. A fresh run into a folder that holds
another run's checkpoints or log is refused (they would prune each other's checkpoints and share one log)
unless ``--overwrite``, which moves that run's outputs into ``replaced/<id>-<time>/``; ``--resume auto``
continues the folder's own run; ``--resume PATH`` continues PATH's run, into a folder that is empty or
already that run's, and abandons this run's later checkpoints (moved into ``replaced/``). Pruning and
``--resume auto`` see only this run's checkpoints. All of this happens under the folder's lock
(``engine/run_lock.py``), held until :meth:`Checkpointer.release`: a second training started into the
folder meanwhile is refused before it reads anything.

Two steps, so that a refused start leaves the folder as it was (byte for byte; only ``run.lock`` comes and
goes): the constructor reads (the lock, the resume point, who owns the folder: ``ownership.decide``) and
refuses a start that would mix two runs; :meth:`Checkpointer.load`, once the data and the model exist,
makes every resume refusal (``compat.check_resume``) and only then moves anything and writes ``run.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from yolofuse_scale.engine import run_lock
from yolofuse_scale.engine.checkpoint import ownership
from yolofuse_scale.engine.checkpoint.compat import check_resume
from yolofuse_scale.engine.checkpoint.folder import (
    load_train_state,
    load_zero_full_state,
    resolve_resume,
    save_checkpoint,
    step_of,
)
from yolofuse_scale.engine.storage import is_writer
from yolofuse_scale.engine.strategy import zero_state
from yolofuse_scale.errors import CheckpointError


class Checkpointer:
    """One run's checkpoints in its output folder (module docstring). Built before anything is written
    there; collective (every rank builds one and calls ``load`` and ``save``)."""

    def __init__(self, accelerator: Accelerator, out: Path, train: Any):
        self.acc, self.out, self.root = accelerator, out, out / "checkpoints"
        self.keep_last = train.keep_last
        self.lock: run_lock.RunLock | None = None
        self.notes = self._lock_folder()  # before anything reads the folder: a second start is refused here
        try:
            self.claim = self._claim_folder(train)
        except BaseException:
            self.release()
            raise
        self.model: torch.nn.Module | None = None  # the prepared model, given to load (save gathers from it)
        self.position: dict[str, Any] = {}
        self.run_meta: dict[str, Any] = {}
        self.folder_notes: list[str] = []  # what load moved aside in the folder (to log)
        self.resume_notes: list[str] = []  # what the resume accepted of this launch's course (engine/course.py)
        self.extended_from: int | None = None  # the total --epochs before this resume changed it

    def _lock_folder(self) -> list[str]:
        """The writer takes ``run.lock`` (every node's writer its own copy's, with node-local storage); one
        gather (collective) gives every rank all answers, so a refusal ends every rank with the same message."""
        refusal = note = None
        if is_writer(self.acc):
            try:
                self.lock = run_lock.acquire(self.out)
                note = self.lock.note
            except run_lock.RunInUseError as e:
                refusal = str(e)
            except OSError as e:  # a read-only or full folder: refused on every rank alike, not a hang
                refusal = f"--output-dir {self.out}: cannot write its lock file {self.out / run_lock.LOCK_FILE} ({e})"
        answers = gather_object([(refusal, note)]) if self.acc.num_processes > 1 else [(refusal, note)]
        refusals = [r for r, _ in answers if r]
        if refusals:
            self.release()
            raise run_lock.RunInUseError(refusals[0])
        return [n for _, n in answers if n]

    def release(self) -> None:
        """Give back the folder's lock (this process's, if it holds it): the run has ended, or failed."""
        if self.lock is not None:
            self.lock.release()

    def _claim_folder(self, train: Any) -> ownership.Claim:
        """Find the resume point and decide what this start does to the folder; read only (collective)."""
        accelerator, out = self.acc, self.out
        folder_id = ownership.folder_run_id(out)
        self.resume_from = resolve_resume(train.resume, self.root, accelerator, folder_id)
        # The main process decides and every rank follows: ranks that look at a folder while rank 0
        # moves it would disagree (and some would resume while others start fresh).
        decision = [ownership.decide(out, train, self.resume_from, folder_id) if accelerator.is_main_process
                    else None]
        if accelerator.num_processes > 1:
            decision = broadcast_object_list(decision)
        self.run_id, moved_to, error = decision[0]
        if error:
            raise CheckpointError(error)
        start, later = ownership.abandoned_checkpoints(self.root, self.resume_from, train.resume, self.run_id)
        dest = out / "replaced" / f"abandoned-after-step_{start}-{time.strftime('%Y%m%d-%H%M%S')}"  # later weights too
        return ownership.Claim(self.run_id, Path(moved_to) if moved_to else None, later, dest)

    def _take_folder(self) -> None:
        """Do what the claim decided, once every refusal is made: the moves into ``replaced/`` and ``run.json``
        (the writer), with what moved in :attr:`folder_notes`. Collective: one barrier (two when checkpoints move)."""
        claim = self.claim
        self.acc.wait_for_everyone()  # every rank has read the folder before it changes
        if claim.move_run_to is not None:
            self.folder_notes.append(f"--overwrite: moved the previous run's outputs to {claim.move_run_to}")
        if claim.later:
            self.folder_notes.append(
                f"--resume {self.resume_from}: moved this run's later checkpoints (step "
                f"{', '.join(str(step_of(p)) for p in claim.later)}) to {claim.abandoned_to}: resuming from an "
                "earlier step abandons them, and --resume auto or pruning would take them for this run's")
        if is_writer(self.acc):
            self.folder_notes += ownership.take(self.out, claim, self.resume_from)
        if claim.later:
            self.acc.wait_for_everyone()  # nobody lists the checkpoints while they move

    def load(self, model: torch.nn.Module, position: dict[str, Any], run_meta: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
        """Restore model, optimizer and RNG from the resume point; return our saved state and EMA (None:
        a fresh start). ``model`` is the prepared model (saves gather from it); ``position`` and ``run_meta``
        describe this run and are saved with every checkpoint. Refused before anything is loaded, and before
        anything in the folder moves (``compat.py``): another model, a layout this strategy cannot load, a
        position that means other samples here, or a course the checkpoint contradicts."""
        self.model, self.position, self.run_meta = model, position, run_meta
        path = self.resume_from
        repartition = False
        if path is not None:
            saved, ema = load_train_state(path)
            # the course (lr schedule, mosaic epochs, data order): continued, extended, or refused; saved from now on
            repartition, (position["course"], self.resume_notes, self.extended_from) = check_resume(
                self.acc, path, saved, position, run_meta)
        self._take_folder()  # only now: a refused start has moved and written nothing
        if path is None:
            return None
        if repartition:  # ZeRO-1/2 at another world size
            self.acc.load_state(str(path), load_module_only=True)  # module and RNG; the rest:
            zero_state.load_zero_full_state(model, *load_zero_full_state(path))
        else:
            self.acc.load_state(str(path))
        # Accelerate restores its micro-step counter, which decides where accumulation syncs. We
        # resume at an optimizer-step boundary, possibly with another accumulation count (another
        # world size under --global-batch-size), so the count restarts at a boundary.
        self.acc.step = 0
        return saved, ema

    def save(self, step: int, state: dict[str, Any], ema: dict[str, torch.Tensor] | None) -> Path:
        """Write ``checkpoints/step_<step>`` with this run's id and position, and whatever the strategy needs to
        resume it (collective: every rank calls it; only the writer writes our files)."""
        # ZeRO-1/2: the whole optimizer state, gathered per parameter (one all-reduce per parameter and state),
        # so that the checkpoint resumes at another world size; None under every other strategy (zero_state.py)
        zero = zero_state.zero_full_state(self.acc, self.model)
        state = {**state, "run_id": self.run_id, **self.position}
        return save_checkpoint(self.acc, self.root, step, state, self.run_meta, ema, keep_last=self.keep_last,
                               zero_full_state=zero)
