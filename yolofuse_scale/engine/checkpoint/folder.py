"""The step folder ``checkpoints/step_<n>/``: written atomically, checked against its manifest, found again.

A step folder holds:

- Accelerate's ``save_state`` output: model, optimizer, every rank's RNG states (DeepSpeed: its own
  engine files). These are *pickled* by Accelerate/DeepSpeed and unpickled with
  ``weights_only=False`` on resume: trusted local state, guarded by the manifest below;
- ``train_state.json``: our loop position (step, epoch, step in epoch, best fitness, EMA updates), the
  run id (``ownership.py``) and what the position means (``compat.py``: images per step, the training
  set's fingerprint, the model, the course);
- ``ema.safetensors``: the EMA weights, whole (no pickle);
- ``zero_full_state.safetensors`` (ZeRO-1/2): fp32 weights and optimizer states per parameter, so
  the checkpoint can resume at another world size (``strategy/zero_state.py``);
- ``run_meta.json``: model config, channels, class names, image size: enough to rebuild the model;
- ``manifest.json``: SHA-256 and size of every other file, checked before any resume;
- ``COMPLETE``: written last.

It is written under a temporary name and published by one rename once every rank has finished
writing, so a run killed during a save leaves the previous checkpoint intact and ``--resume auto``
never sees half a checkpoint. Our files are written by ``storage.is_writer``: once per job, or once
per node with node-local storage (``--save-on-each-node``), where every node publishes its own copy
and ``--resume auto`` takes the newest step complete on every node. Hashing reads the folder once
(about a second per GB).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file

from yolofuse_scale.engine.storage import is_writer
from yolofuse_scale.engine.strategy.zero_state import ZERO_FULL_STATE
from yolofuse_scale.errors import CheckpointError
from yolofuse_scale.weights import plain_meta, weights_payload_problem

COMPLETE_MARKER = "COMPLETE"  # written last, inside the temporary folder, before the rename
MANIFEST = "manifest.json"
STATE_FILE = "train_state.json"
EMA_FILE = "ema.safetensors"
META_FILE = "run_meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_OLD_DIR = re.compile(r"^\.old_step_(\d+)$")  # a re-saved step's previous copy, until the new one is in place


# ------------------------------------------------------------------------------------------ the manifest
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


# ------------------------------------------------------------------------------------------ writing
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


# ------------------------------------------------------------------------------------------ reading
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


def read_run_meta(folder: Path) -> dict[str, Any]:
    """``run_meta.json`` of a verified checkpoint, its model dictionary checked like a weights file's (allow-lists
    and budget, before :func:`plain_meta` serialises it: a deep or huge one is refused, not expanded)."""
    from yolofuse_scale.model.safe_config.schema import check_model_dict

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
    problem = weights_payload_problem({"model": {}, **meta})
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return meta


def checkpoint_run_id(folder: Path) -> str | None:
    """The run id a checkpoint was written by (None: unreadable, or written before run ids existed)."""
    try:
        return json.loads((folder / STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def saved_step(folder: Path) -> int:
    """The step a checkpoint's ``train_state.json`` records (the resume point's)."""
    return int(json.loads((folder / STATE_FILE).read_text())["step"])


# ------------------------------------------------------------------------------------------ finding
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


def step_of(folder: Path) -> int:
    """The step of a checkpoint folder, from its name (``step_<n>`` or ``.old_step_<n>``)."""
    return int((_STEP_DIR.match(folder.name) or _OLD_DIR.match(folder.name)).group(1))


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
        found = {step_of(p): p for p in list_checkpoints(ckpt_root, run_id)}
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
