"""Which checkpoints a run can resume, decided before anything is loaded.

A checkpoint resumes only under a strategy that writes the same layout (full state, FSDP's DCP
shards, DeepSpeed's), and a DeepSpeed one at another world size only when it carries the ZeRO-1/2
full state to re-partition (``zero_state.py``); anything else is refused with the way out, rather
than failing deep inside ``load_state``.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import DistributedType

from yolofuse_scale.engine.strategy.zero_state import ZERO_FULL_STATE
from yolofuse_scale.errors import DistributedSetupError


def _checkpoint_family(distributed_type: str) -> str:
    """How a strategy lays out its checkpoint: full state (single process, DDP), FSDP (DCP shards), DeepSpeed."""
    return {"FSDP": "FSDP (sharded DCP files)", "DEEPSPEED": "DeepSpeed"}.get(distributed_type, "full-state (DDP)")


def check_resumable(accelerator: Accelerator, saved: dict, path) -> bool:
    """Refuse, before loading anything, a resume the strategy cannot do; True: re-partition ZeRO.

    DDP and single-process checkpoints hold the full optimizer state and resume at any world size;
    FSDP2's DCP shards reshard to any world size. DeepSpeed ZeRO partitions the optimizer state by
    rank and refuses another world size deep inside ``load_checkpoint``: ZeRO-1/2 checkpoints carry
    :data:`ZERO_FULL_STATE` for that case (True is returned); others are refused up front, with the
    way out. A checkpoint resumes only under a strategy that writes the same layout.
    """
    saved_family = _checkpoint_family(saved.get("distributed_type", "NO"))
    family = _checkpoint_family(accelerator.distributed_type.value)
    if saved_family != family:
        raise DistributedSetupError(
            f"{path}: a {saved_family} checkpoint cannot be resumed by a {family} run; resume with the strategy that "
            "wrote it (FSDP at world size 1: torchrun --nproc_per_node 1 ... --strategy fsdp), or start from "
            "`yolofuse-scale export-weights` (weights only)"
        )
    world = saved.get("world_size", accelerator.num_processes)
    if accelerator.distributed_type != DistributedType.DEEPSPEED or world == accelerator.num_processes:
        return False
    if not (Path(path) / ZERO_FULL_STATE).is_file():
        raise DistributedSetupError(
            f"{path}: written by {world} DeepSpeed rank(s), resumed with {accelerator.num_processes}: ZeRO's "
            f"optimizer state is partitioned per rank, and this checkpoint has no {ZERO_FULL_STATE} to re-partition "
            f"(ZeRO-3 does not write one). Resume with {world} processes, or start from `yolofuse-scale "
            "export-weights` (weights only)."
        )
    return True
