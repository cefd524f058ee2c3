"""The portable weights file (``weights/last.pt``, ``best.pt``, what ``checkpoint-to-weights`` writes): write, read.

One ``torch.save`` of a plain dict: ``model`` (the full fp32 state dict), ``model_yaml`` (the model dictionary),
``rgb_channels``, ``ir_channels``, ``names`` (class id -> name), ``imgsz``, and what the run adds (``step``,
``epoch``, ``metrics``, ``ema``, ``task``; an export adds ``exported_from`` and ``source``). It loads with
``torch.load(..., weights_only=True)`` (``torch_load.py``): no pickled code is ever executed.

On the ground floor (torch, ``torch_load`` and ``errors`` only), so the model package (``--pretrained``), the
inference API and the checkpoint package all read it without importing each other. What it does not check is
``model_yaml`` beyond its presence: a model dictionary is judged by the model package
(``model/safe_config/schema.check_model_dict``: allow-lists and a budget), where it is used: ``model_from_config``
checks it before building, ``--pretrained`` before comparing it with the built-in variants, a checkpoint's
``run_meta.json`` reader before copying it into a weights file. Until then nothing may copy, serialise or
walk it (a crafted one can be exponentially large to anything that does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from yolofuse_scale.errors import CheckpointError
from yolofuse_scale.torch_load import load_weights_only, refusal_reason

#: The entries every weights file holds (more may follow: step, epoch, metrics, ``task``, ...).
REQUIRED = ("model", "model_yaml", "rgb_channels", "ir_channels", "names")
#: ``task``: what the model predicts (``--task``; a file written before tasks existed holds none: detect). The
#: model's head says it too; ``inference.load_weights_model`` refuses a file whose two disagree.
TASKS = ("detect", "obb")


def plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Model metadata as JSON stores it (lists, not tuples), class ids back to int keys."""
    meta = json.loads(json.dumps(meta))
    if "names" in meta:
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
    return meta


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a portable weights file atomically (temporary file + rename)."""
    model = {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model, **meta}, tmp)
    os.replace(tmp, path)


def read_weights(path: str | Path) -> dict[str, Any]:
    """Load a portable weights file safely (no pickled code is ever executed) and check its plain entries;
    raise :class:`CheckpointError` naming the file and what is wrong. ``model_yaml`` is left to the model
    package's check (module docstring): pass it to ``model_from_config`` or ``check_model_dict`` before
    anything else touches it."""
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
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: weights file lacks {', '.join(missing)}")
    problem = weights_payload_problem(payload)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return payload


def weights_payload_problem(payload: dict[str, Any]) -> str | None:
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
    task = payload.get("task", "detect")
    if task not in TASKS:
        return f"task {task!r} must be one of {', '.join(TASKS)}"
    return None
