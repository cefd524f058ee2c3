"""``yolofuse-scale checkpoint-to-weights``: a saved checkpoint into a portable weights file, offline.

Named for the command (``export.py`` at the package root is the ONNX export). No Accelerate, no process
group: whatever strategy wrote the checkpoint, its weights are read from the files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from yolofuse_scale.engine.checkpoint.folder import load_train_state, read_run_meta, verify_checkpoint
from yolofuse_scale.errors import CheckpointError
from yolofuse_scale.torch_load import load_weights_only
from yolofuse_scale.weights import write_weights


def _load_dcp_model(dcp_dir: Path) -> dict[str, torch.Tensor]:
    """Merge FSDP2's sharded (DCP) model files into one full state dict, offline (no process group)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(dcp_dir, Path(tmp) / "full.pt")
        return load_weights_only(Path(tmp) / "full.pt")["model"]


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
