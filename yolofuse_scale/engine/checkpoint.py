"""Writing, verifying and finding checkpoints, and the portable weights files.

A checkpoint folder ``checkpoints/step_<n>/`` holds:

- Accelerate's ``save_state`` output: model, optimizer, every rank's RNG states (DeepSpeed: its own
  engine files). These are *pickled* by Accelerate/DeepSpeed and unpickled with
  ``weights_only=False`` on resume: trusted local state, guarded by the manifest below;
- ``train_state.json``: our loop position (step, epoch, step in epoch, best fitness, EMA updates);
- ``ema.safetensors``: the EMA weights, whole (no pickle);
- ``zero_full_state.safetensors`` (ZeRO-1/2): fp32 weights and optimizer states per parameter, so
  the checkpoint can resume at another world size;
- ``run_meta.json``: model config, channels, class names, image size: enough to rebuild the model;
- ``manifest.json``: SHA-256 and size of every other file, checked before any resume;
- ``COMPLETE``: written last.

``train_state.json`` also records the run id (one per lineage: a fresh run draws one, resumes keep it)
and what the loop position means: images per optimizer step and the training set's fingerprint.
A resume that would change either is refused by name (see :class:`Checkpointer`), and so is a fresh
run into a folder that holds another run (``run.json`` names the folder's run id).

It is written under a temporary name and published by one rename once every rank has finished
writing, so a run killed during a save leaves the previous checkpoint intact and ``--resume auto``
never sees half a checkpoint. Our files are written by ``storage.is_writer``: once per job, or once
per node with node-local storage (``--save-on-each-node``), where every node publishes its own copy
and ``--resume auto`` takes the newest step complete on every node. Hashing reads the folder once
(about a second per GB).
Portable weights (``weights/last.pt``, ``best.pt``) hold the full fp32 state dict, the model config
and the class names, and load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors.torch import load_file, save_file

from yolofuse_scale.engine import run_lock
from yolofuse_scale.engine.course import continue_course
from yolofuse_scale.engine.outputs import RUN_FOLDER_FILES
from yolofuse_scale.engine.storage import is_writer
from yolofuse_scale.engine.strategy import resume, zero_state
from yolofuse_scale.engine.strategy.zero_state import ZERO_FULL_STATE
from yolofuse_scale.errors import UserError
from yolofuse_scale.torch_load import load_weights_only, refusal_reason

COMPLETE_MARKER = "COMPLETE"  # written last, inside the temporary folder, before the rename
MANIFEST = "manifest.json"
STATE_FILE = "train_state.json"
EMA_FILE = "ema.safetensors"
META_FILE = "run_meta.json"
RUN_FILE = "run.json"  # in the output folder: the id of the run (lineage) that owns it
LOG_FILE = "train_log.jsonl"
#: What a run writes into its folder, moved aside together by --overwrite (caches and data stay).
RUN_OUTPUTS = (RUN_FILE, "config.yaml", LOG_FILE, "metrics.json", "checkpoints", "weights", *RUN_FOLDER_FILES)
_STEP_DIR = re.compile(r"^step_(\d+)$")
_OLD_DIR = re.compile(r"^\.old_step_(\d+)$")  # a re-saved step's previous copy, until the new one is in place


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message says what is missing or wrong."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, COMPLETE_MARKER))
    entries = {str(p.relative_to(folder)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1, sort_keys=True))


def plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Model metadata as JSON stores it (lists, not tuples), class ids back to int keys."""
    meta = json.loads(json.dumps(meta))
    if "names" in meta:
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
    return meta


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest's entries, each a relative path inside ``folder`` with its size and SHA-256."""
    try:
        entries = json.loads((folder / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / MANIFEST}: unreadable ({e})") from None
    ok = isinstance(entries, dict) and all(
        isinstance(want, dict) and isinstance(want.get("sha256"), str) and isinstance(want.get("bytes"), int)
        and not Path(rel).is_absolute() and ".." not in Path(rel).parts for rel, want in entries.items())
    if not ok:
        raise CheckpointError(f"{folder / MANIFEST}: not a checkpoint manifest (relative path -> sha256, bytes)")
    return entries


def verify_checkpoint(folder: Path) -> None:
    """Raise :class:`CheckpointError` naming every file that is missing, differs from the manifest, or is not in it.

    Files the manifest does not list are refused, not ignored: Accelerate, DeepSpeed and torch's DCP
    find some of their files by name patterns (DeepSpeed's ``*_model_states.pt`` glob; several of them
    unpickle with ``weights_only=False`` or plain ``pickle``), so an unlisted file could be read unchecked.
    The manifest detects corruption, truncation and stray files; it is no defence against someone who
    can write the folder (they can rewrite the manifest too).
    """
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    if not (folder / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{folder}: incomplete checkpoint (no {COMPLETE_MARKER}: the save was interrupted)")
    if not (folder / MANIFEST).is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST}; cannot check its files")
    entries = _read_manifest(folder)
    problems = []
    for rel, want in entries.items():
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != want["bytes"]:
            problems.append(f"{rel}: {p.stat().st_size} bytes, the manifest says {want['bytes']} (truncated or "
                            "modified)")
        elif _sha256(p) != want["sha256"]:
            problems.append(f"{rel}: contents differ from the manifest (corrupt or modified)")
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_dir() and rel not in entries and rel not in (MANIFEST, COMPLETE_MARKER):
            problems.append(f"{rel}: not in the manifest (not written by this checkpoint's save; remove it)")
    for required in (STATE_FILE, META_FILE):
        if required not in entries:
            problems.append(f"{required}: not in the checkpoint")
    if problems:
        raise CheckpointError(f"{folder}: refusing to use this checkpoint:\n  " + "\n  ".join(problems))


def save_checkpoint(
    accelerator: Accelerator,
    ckpt_root: Path,
    step: int,
    state: dict[str, Any],
    meta: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    keep_last: int = 0,
    zero_full_state: tuple[dict[str, torch.Tensor], dict[str, float]] | None = None,
) -> Path:
    """Write ``ckpt_root/step_<step>`` atomically. Collective: call on every rank.

    ``keep_last`` prunes only checkpoints of this run (``state["run_id"]``; ones without an id
    predate run ids and count as this folder's own)."""
    final = ckpt_root / f"step_{step}"
    tmp = ckpt_root / f".tmp_step_{step}"
    old = ckpt_root / f".old_step_{step}"
    writer = is_writer(accelerator)
    if writer:
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a save that was killed
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every rank writes its part (RNG states, shards)
    accelerator.wait_for_everyone()
    if writer:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if ema is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, str(tmp / EMA_FILE))
        if zero_full_state is not None:
            tensors, scalars = zero_full_state
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / ZERO_FULL_STATE),
                      metadata={k: repr(v) for k, v in scalars.items()})
        _write_manifest(tmp)
        (tmp / COMPLETE_MARKER).write_text(f"{step}\n")
        _publish(tmp, final, old)
        if keep_last > 0:
            for stale in list_checkpoints(ckpt_root, run_id=state.get("run_id"))[:-keep_last]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _publish(tmp: Path, final: Path, old: Path) -> None:
    """Rename ``tmp`` to ``final``. Re-saving a step (an epoch end that is also a --save-every-steps
    point) moves the previous copy to ``old`` first and deletes it only once the new one is in place:
    a kill between the two renames leaves ``old``, which :func:`list_checkpoints` still offers."""
    if final.exists():
        if old.exists():  # an earlier swap finished its renames but not the clean-up: final is good
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_train_state(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Our own state of a verified checkpoint: the loop position (JSON) and the EMA (safetensors)."""
    state = json.loads((folder / STATE_FILE).read_text())
    ema = load_file(str(folder / EMA_FILE)) if (folder / EMA_FILE).is_file() else None
    return state, ema


def load_zero_full_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The whole ZeRO-1/2 optimizer state saved beside DeepSpeed's partitions (for a world-size change)."""
    from safetensors import safe_open

    path = folder / ZERO_FULL_STATE
    with safe_open(str(path), framework="pt") as fh:
        scalars = {k: float(v) for k, v in (fh.metadata() or {}).items()}
    return load_file(str(path)), scalars


def checkpoint_run_id(folder: Path) -> str | None:
    """The run id a checkpoint was written by (None: unreadable, or written before run ids existed)."""
    try:
        return json.loads((folder / STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def list_checkpoints(ckpt_root: Path, run_id: str | None = None) -> list[Path]:
    """Complete checkpoints, oldest first; with ``run_id``, only that run's (and id-less, older ones).

    A step whose re-save was killed between its two renames exists only as ``.old_step_<n>``: listed
    in its place, so neither ``--resume auto`` nor pruning loses it."""
    if not ckpt_root.is_dir():
        return []
    found: dict[int, Path] = {}
    for p in sorted(ckpt_root.iterdir(), key=lambda p: not p.name.startswith("step_")):  # step_<n> wins
        m = _STEP_DIR.match(p.name) or _OLD_DIR.match(p.name)
        if m and (p / COMPLETE_MARKER).is_file():
            found.setdefault(int(m.group(1)), p)
    if run_id is not None:
        found = {n: p for n, p in found.items() if checkpoint_run_id(p) in (run_id, None)}
    return [found[n] for n in sorted(found)]


def _step_of(folder: Path) -> int:
    return int((_STEP_DIR.match(folder.name) or _OLD_DIR.match(folder.name)).group(1))


def folder_run_id(out: Path) -> str | None:
    """The run id owning ``out``: its ``run.json``, else its newest checkpoint's (None: none known)."""
    try:
        return json.loads((out / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = list_checkpoints(out / "checkpoints")
    return checkpoint_run_id(found[-1]) if found else None


def _not_a_checkpoint(resume: str, path: Path) -> CheckpointError:
    """--resume PATH names no checkpoint folder: say what it is and, where possible, what was meant."""
    inside = list_checkpoints(path / "checkpoints") or list_checkpoints(path) if path.is_dir() else []
    hint = (f"; it holds checkpoints: pass the newest, --resume {inside[-1]}, or --resume auto with --output-dir "
            f"{path if (path / 'checkpoints').is_dir() else path.parent}" if inside else
            "; pass a checkpoints/step_<n> folder written by training, or --resume auto")
    what = "no such checkpoint folder" if not path.exists() else (
        "a file, not a checkpoint folder" if not path.is_dir() else "a folder but not a checkpoint")
    return CheckpointError(f"--resume {resume}: {what}{hint}")


def resolve_resume(resume: str, ckpt_root: Path, accelerator: Accelerator | None = None,
                   run_id: str | None = None) -> Path | None:
    """``auto`` -> newest complete checkpoint (or None: a fresh start); a path -> that. Both verified.

    With ``accelerator`` (several processes), ``auto`` is agreed on: the newest step every rank sees
    complete. On shared storage they all see the same list; on node-local storage a node killed
    between its peers' rename and its own lacks the newest step, and ranks resuming from different
    steps would train apart (or hang). Collective when given: one gather of the step numbers.
    ``auto`` considers only the checkpoints of ``run_id`` (the folder's run), never another run's.
    """
    if not resume:
        return None
    if resume == "auto":
        found = {_step_of(p): p for p in list_checkpoints(ckpt_root, run_id)}
        if accelerator is not None and accelerator.num_processes > 1:
            seen = gather_object([sorted(found)])  # one list per rank, the same on every rank
            common = set.intersection(*map(set, seen))
            if not common and any(seen):  # every rank raises: silently restarting would overwrite progress
                raise CheckpointError(
                    f"--resume auto: the ranks share no complete checkpoint (steps per rank: {seen}); with "
                    f"--save-on-each-node copy one into every node's {ckpt_root}, or resume from a path"
                )
            found = {step: p for step, p in found.items() if step in common}
        if not found:
            return None
        path = found[max(found)]
    else:
        path = Path(resume)
        if not (path / COMPLETE_MARKER).is_file() and not (path / STATE_FILE).is_file():
            raise _not_a_checkpoint(resume, path)
    verify_checkpoint(path)
    return path


def dataset_fingerprint(pairs: list[tuple[Path, Path]], root: Path) -> dict[str, Any]:
    """The training set as the loop position counts it: its size and a hash of its sorted (RGB, IR)
    paths relative to the dataset root (so a moved dataset keeps its fingerprint). ~10 ms for LLVIP."""
    rel = sorted(f"{os.path.relpath(rgb, root)}\t{os.path.relpath(ir, root)}" for rgb, ir in pairs)
    return {"train_pairs": len(rel), "paths_sha256": hashlib.sha256("\n".join(rel).encode()).hexdigest()[:16]}


class Checkpointer:
    """One run's checkpoints in its output folder: which run owns the folder, where it resumes from
    (found once, loaded once), and every save. Built before anything is written there. Collective.

    The folder belongs to one run (lineage), named by ``run.json``. A fresh run into a folder that
    holds another run's checkpoints or log is refused (they would prune each other's checkpoints and
    share one log) unless ``--overwrite``, which moves that run's outputs into ``replaced/<id>-<time>/``;
    ``--resume auto`` continues the folder's own run; ``--resume PATH`` continues PATH's run, into a
    folder that is empty or already that run's. Pruning and ``--resume auto`` see only this run's
    checkpoints. All of this happens under the folder's lock (``run_lock``), held until :meth:`release`:
    a second training started into the folder meanwhile is refused before it reads anything.
    """

    def __init__(self, accelerator: Accelerator, out: Path, train: Any):
        self.acc, self.out, self.root = accelerator, out, out / "checkpoints"
        self.keep_last = train.keep_last
        self.lock: run_lock.RunLock | None = None
        self.notes = self._lock_folder()  # before anything reads the folder: a second start is refused here
        try:
            self._claim_folder(train)
        except BaseException:
            self.release()
            raise

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

    def _claim_folder(self, train: Any) -> None:
        accelerator, out = self.acc, self.out
        folder_id = folder_run_id(out)
        self.resume_from = resolve_resume(train.resume, self.root, accelerator, folder_id)
        # The main process decides and every rank follows: ranks that look at a folder while rank 0
        # moves it would disagree (and some would resume while others start fresh).
        decision = [_claim(out, train, self.resume_from, folder_id) if accelerator.is_main_process else None]
        if accelerator.num_processes > 1:
            decision = broadcast_object_list(decision)
        self.run_id, moved_to, error = decision[0]
        if error:
            raise CheckpointError(error)
        accelerator.wait_for_everyone()  # every rank has read the folder before it changes
        if moved_to:
            self.notes.append(f"--overwrite: moved the previous run's outputs to {moved_to}")
        start, later = self._abandoned(train.resume)
        dest = out / "replaced" / f"abandoned-after-step_{start}-{time.strftime('%Y%m%d-%H%M%S')}"  # later weights too
        if later:
            self.notes.append(f"--resume {self.resume_from}: moved this run's later checkpoints (step "
                              f"{', '.join(str(_step_of(p)) for p in later)}) to {dest}: resuming from an earlier "
                              "step abandons them, and --resume auto or pruning would take them for this run's")
        if is_writer(accelerator):
            if moved_to:
                _move_aside(out, Path(moved_to))
            if later:
                dest.mkdir(parents=True, exist_ok=True)
                for p in later:
                    os.replace(p, dest / p.name)
            self.notes += _set_aside_later_outputs(out, self.resume_from, dest)
            out.mkdir(parents=True, exist_ok=True)
            (out / RUN_FILE).write_text(json.dumps({"run_id": self.run_id}) + "\n")
        if later:
            accelerator.wait_for_everyone()  # nobody lists the checkpoints while they move
        self.position: dict[str, Any] = {}
        self.run_meta: dict[str, Any] = {}
        self.resume_notes: list[str] = []  # what the resume accepted of this launch's course (engine/course.py)
        self.extended_from: int | None = None  # the total --epochs before this resume changed it

    def _abandoned(self, resume: str) -> tuple[int, list[Path]]:
        """(the step a resume restarts from, this run's checkpoints here at later steps): the timeline that
        ``--resume PATH`` abandons. The same on every rank (the run id is the main process's)."""
        if self.resume_from is None:
            return 0, []
        start = int(json.loads((self.resume_from / STATE_FILE).read_text())["step"])
        if resume == "auto" or self.run_id is None:  # auto: the newest; later weights may still move (below)
            return start, []
        return start, [p for p in list_checkpoints(self.root, self.run_id)
                       if _step_of(p) > start and checkpoint_run_id(p) == self.run_id]

    def load(self, model: torch.nn.Module, position: dict[str, Any], run_meta: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
        """Restore model, optimizer and RNG from the resume point; return our saved state and EMA (None:
        a fresh start). ``position`` and ``run_meta`` describe this run; they are saved with every
        checkpoint. Refused before anything is loaded: another model, a layout this strategy cannot
        load, or a position that means other samples here (another images-per-step or training set)."""
        self.position, self.run_meta = position, run_meta
        path = self.resume_from
        if path is None:
            return None
        saved, ema = load_train_state(path)
        check_same_model(path, read_run_meta(path), run_meta, saved.get("model"), position.get("model"))
        repartition = resume.check_resumable(self.acc, saved, path)  # ZeRO-1/2 at another world size
        check_same_position(path, saved, position)
        # the course (lr schedule, mosaic epochs, data order): continued, extended, or refused; saved from now on
        position["course"], self.resume_notes, self.extended_from = continue_course(path, saved, position["course"])
        if repartition:
            self.acc.load_state(str(path), load_module_only=True)  # module and RNG; the rest:
            zero_state.load_zero_full_state(model, *load_zero_full_state(path))
        else:
            self.acc.load_state(str(path))
        # Accelerate restores its micro-step counter, which decides where accumulation syncs. We
        # resume at an optimizer-step boundary, possibly with another accumulation count (another
        # world size under --global-batch-size), so the count restarts at a boundary.
        self.acc.step = 0
        return saved, ema

    def save(self, step: int, state: dict[str, Any], ema: dict[str, torch.Tensor] | None,
             zero_full_state: tuple[dict[str, torch.Tensor], dict[str, float]] | None) -> Path:
        """Write ``checkpoints/step_<step>`` with this run's id and position (collective)."""
        state = {**state, "run_id": self.run_id, **self.position}
        return save_checkpoint(self.acc, self.root, step, state, self.run_meta, ema, keep_last=self.keep_last,
                               zero_full_state=zero_full_state)


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


def _describe_run(out: Path) -> str | None:
    """What of a run ``out`` holds that a new run would mix with (None: nothing)."""
    parts = []
    steps = [_step_of(p) for p in list_checkpoints(out / "checkpoints")]
    if steps:
        parts.append(f"checkpoints at step {', '.join(map(str, steps))}")
    log = out / LOG_FILE
    records = sum(1 for line in log.open() if line.strip()) if log.is_file() else 0
    if records:
        parts.append(f"{LOG_FILE} with {records} step record(s)")
    return f"run {folder_run_id(out) or '(no id)'}: " + "; ".join(parts) if parts else None


def _claim(out: Path, train: Any, resume_from: Path | None, folder_id: str | None
           ) -> tuple[str | None, str | None, str | None]:
    """(run id, folder to move the previous run's outputs to, or refusal): see :class:`Checkpointer`."""
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


def _move_aside(out: Path, dest: Path) -> None:
    """--overwrite: the previous run's outputs into ``dest`` (renames; nothing deleted)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:
        if (out / name).exists():
            os.replace(out / name, dest / name)


def check_same_model(path: Path, saved: dict[str, Any], meta: dict[str, Any], saved_name: str | None,
                     name: str | None) -> None:
    """Refuse a checkpoint of another architecture (--model/--fusion/--scale, channels, classes)."""
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


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a portable weights file atomically (temporary file + rename)."""
    model = {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model, **meta}, tmp)
    os.replace(tmp, path)


def read_weights(path: str | Path) -> dict[str, Any]:
    """Load a portable weights file safely (no pickled code is ever executed); its ``model_yaml`` is checked
    (``model.safe_config``: allow-lists and a budget) before anything copies or serialises it."""
    from yolofuse_scale.model.safe_config import check_model_dict

    try:
        payload = load_weights_only(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated file or a full pickle from elsewhere; torch's advice left out
        raise CheckpointError(f"{path}: not a yolofuse-scale weights file ({type(e).__name__}: "
                              f"{refusal_reason(e)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a yolofuse-scale weights file (holds a {type(payload).__name__}, "
                              "not a dict)")
    missing = [k for k in ("model", "model_yaml", "rgb_channels", "ir_channels", "names") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: weights file lacks {', '.join(missing)}")
    check_model_dict(payload["model_yaml"], f"{path}: model_yaml")
    problem = _weights_payload_problem(payload)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return payload


def _weights_payload_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with the plain entries of a weights file (None: nothing). ``model_yaml`` is checked
    where the model is built (``model.safe_config``), the tensors' shapes when they are loaded into it."""
    model = payload["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        return "'model' is not a state dict (names -> tensors)"
    if payload["rgb_channels"] != 3 or isinstance(payload["rgb_channels"], bool):
        return f"rgb_channels {payload['rgb_channels']!r} must be 3"
    if payload["ir_channels"] not in (1, 3) or isinstance(payload["ir_channels"], bool):
        return f"ir_channels {payload['ir_channels']!r} must be 1 or 3"
    names = payload["names"]
    if not isinstance(names, dict) or not all(isinstance(k, int) and isinstance(v, str) for k, v in names.items()):
        return "'names' is not a mapping of class id -> name"
    imgsz = payload.get("imgsz", 640)
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz <= 0:
        return f"imgsz {imgsz!r} must be a positive integer"
    return None


def _load_dcp_model(dcp_dir: Path) -> dict[str, torch.Tensor]:
    """Merge FSDP2's sharded (DCP) model files into one full state dict, offline (no process group)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(dcp_dir, Path(tmp) / "full.pt")
        return load_weights_only(Path(tmp) / "full.pt")["model"]


def read_run_meta(folder: Path) -> dict[str, Any]:
    """``run_meta.json`` of a verified checkpoint, its model dictionary checked like a weights file's (allow-lists
    and budget, before :func:`plain_meta` serialises it: a deep or huge one is refused, not expanded)."""
    from yolofuse_scale.model.safe_config import check_model_dict

    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
        missing = [k for k in ("model_yaml", "rgb_channels", "ir_channels", "names") if k not in meta]
        if not isinstance(meta, dict) or not isinstance(meta["names"], dict) or missing:
            raise ValueError(f"expected a mapping with model_yaml, rgb_channels, ir_channels, names; lacks {missing}")
    except RecursionError:
        raise CheckpointError(f"{path}: unreadable (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    check_model_dict(meta["model_yaml"], f"{path}: model_yaml")  # never copied into a weights file unchecked
    try:
        meta = plain_meta(meta)
    except (ValueError, TypeError, RecursionError) as e:  # its other entries: names, metrics, ...
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    problem = _weights_payload_problem({"model": {}, **meta})
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return meta


def export_weights(folder: str | Path, out: str | Path) -> Path:
    """Consolidate a saved checkpoint into a portable weights file, offline (no process group).

    Uses the EMA weights when the run kept them (what validation and ``weights/`` use; saved whole,
    whatever the strategy), else the model: Accelerate's ``model.safetensors`` (single process,
    DDP), FSDP2's DCP shards merged, or DeepSpeed's fp32 master partitions merged (any ZeRO stage).
    """
    folder = Path(folder)
    verify_checkpoint(folder)
    meta = read_run_meta(folder)
    _, ema = load_train_state(folder)
    if ema is not None:
        state_dict, source = ema, "EMA"
    elif (folder / "model.safetensors").is_file():
        state_dict, source = load_file(str(folder / "model.safetensors")), "model"
    elif (folder / "pytorch_model_fsdp_0").is_dir():
        state_dict, source = _load_dcp_model(folder / "pytorch_model_fsdp_0"), "FSDP shards"
    elif (folder / "pytorch_model").is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # DeepSpeed's fp32 master partitions (not its 16-bit gather), merged for any ZeRO stage.
        # DeepSpeed pickles its engine state: trusted local state whose manifest was just checked.
        state_dict = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag="pytorch_model")
        source = "DeepSpeed fp32 master weights"
    else:
        raise CheckpointError(f"{folder}: no EMA, model.safetensors, FSDP shards or DeepSpeed states to export")
    out = Path(out)
    write_weights(out, state_dict, {**meta, "exported_from": str(folder), "source": source})
    return out
