"""Writing and finding checkpoints, and the portable weights files.

A checkpoint is Accelerate's ``save_state`` folder (model, optimizer, every rank's RNG states) plus
our ``TrainState`` (step, epoch, EMA, best fitness) registered with it. It is written under a
temporary name and published by one rename once every rank has finished writing, so a run killed
during a save leaves the previous checkpoint intact and ``--resume auto`` never sees half a
checkpoint. Portable weights (``weights/last.pt``, ``best.pt``) hold the full fp32 state dict, the
model config and the class names, and load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

COMPLETE_MARKER = "COMPLETE"  # written last, inside the temporary folder, before the rename
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message says what is missing."""


def save_checkpoint(accelerator: Accelerator, ckpt_root: Path, step: int, keep_last: int = 0) -> Path:
    """Write ``ckpt_root/step_<step>`` atomically. Collective: call on every rank."""
    final = ckpt_root / f"step_{step}"
    tmp = ckpt_root / f".tmp_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a save that was killed
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every rank writes its part (RNG states, shards)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / COMPLETE_MARKER).write_text(f"{step}\n")
        if final.exists():  # re-saving the same step (e.g. epoch end == save-every point)
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_last > 0:
            for old in list_checkpoints(ckpt_root)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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


def resolve_resume(resume: str, ckpt_root: Path) -> Path | None:
    """``auto`` -> newest complete checkpoint (or None: a fresh start); a path -> that, validated."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(ckpt_root)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
    if not (path / COMPLETE_MARKER).is_file():
        raise CheckpointError(
            f"--resume {resume}: incomplete checkpoint (no {COMPLETE_MARKER} marker: the save was interrupted)"
        )
    return path


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a portable weights file atomically (temporary file + rename)."""
    payload = {"model": {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu()
                         for k, v in state_dict.items()}, **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_weights(path: str | Path) -> dict[str, Any]:
    """Load a portable weights file safely (no pickled code is ever executed)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated file or a full pickle from elsewhere
        raise CheckpointError(f"{path}: not a yolofuse-scale weights file ({type(e).__name__}: {e})") from e
    missing = [k for k in ("model", "model_yaml", "rgb_channels", "ir_channels", "names") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: weights file lacks {', '.join(missing)}")
    return payload
