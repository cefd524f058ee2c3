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
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file

from yolofuse_scale.engine.storage import is_writer

COMPLETE_MARKER = "COMPLETE"  # written last, inside the temporary folder, before the rename
MANIFEST = "manifest.json"
STATE_FILE = "train_state.json"
EMA_FILE = "ema.safetensors"
META_FILE = "run_meta.json"
ZERO_FULL_STATE = "zero_full_state.safetensors"  # ZeRO-1/2 only: whole optimizer state, any world size
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
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
    """Write ``ckpt_root/step_<step>`` atomically. Collective: call on every rank."""
    final = ckpt_root / f"step_{step}"
    tmp = ckpt_root / f".tmp_step_{step}"
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
        if final.exists():  # re-saving the same step (e.g. epoch end == save-every point)
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last > 0:
            for old in list_checkpoints(ckpt_root)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / COMPLETE_MARKER).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, ckpt_root: Path, accelerator: Accelerator | None = None) -> Path | None:
    """``auto`` -> newest complete checkpoint (or None: a fresh start); a path -> that. Both verified.

    With ``accelerator`` (several processes), ``auto`` is agreed on: the newest step every rank sees
    complete. On shared storage they all see the same list; on node-local storage a node killed
    between its peers' rename and its own lacks the newest step, and ranks resuming from different
    steps would train apart (or hang). Collective when given: one gather of the step numbers.
    """
    if not resume:
        return None
    if resume == "auto":
        found = {int(p.name.removeprefix("step_")): p for p in list_checkpoints(ckpt_root)}
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
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
    verify_checkpoint(path)
    return path


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a portable weights file atomically (temporary file + rename)."""
    model = {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model, **meta}, tmp)
    os.replace(tmp, path)


def read_weights(path: str | Path) -> dict[str, Any]:
    """Load a portable weights file safely (no pickled code is ever executed)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated file or a full pickle from elsewhere
        raise CheckpointError(f"{path}: not a yolofuse-scale weights file ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a yolofuse-scale weights file (holds a {type(payload).__name__}, "
                              "not a dict)")
    missing = [k for k in ("model", "model_yaml", "rgb_channels", "ir_channels", "names") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: weights file lacks {', '.join(missing)}")
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
        return torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)["model"]


def _read_meta(folder: Path) -> dict[str, Any]:
    """``run_meta.json`` of a verified checkpoint, its model dictionary checked like a weights file's."""
    from yolofuse_scale.model.safe_config import check_model_dict

    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
        missing = [k for k in ("model_yaml", "rgb_channels", "ir_channels", "names") if k not in meta]
        if not isinstance(meta, dict) or not isinstance(meta["names"], dict) or missing:
            raise ValueError(f"expected a mapping with model_yaml, rgb_channels, ir_channels, names; lacks {missing}")
        meta = plain_meta(meta)
    except (UnicodeDecodeError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    check_model_dict(meta["model_yaml"], f"{path}: model_yaml")  # never copied into a weights file unchecked
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
    meta = _read_meta(folder)
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
