"""Every distributed nuance in one place: how the Accelerator is built and what it may wrap.

The training loop calls :func:`build_accelerator`, ``accelerator.prepare`` and :func:`unwrap`, and
nothing else distributed. Which strategy runs is decided by the launcher and its config file
(``accelerate launch --config_file configs/accelerate/*.yaml``, ``torchrun``, ``--deepspeed``), never
by branches in the loop.

Decisions taken here, and why:

- CPU-only machines: Accelerate falls back to ``DistributedType.NO`` when no GPU is present unless
  ``cpu=True``, which would turn ``torchrun --nproc_per_node 2`` into two independent trainings with
  no error. We pass ``cpu=True`` whenever CUDA is absent (giving MULTI_CPU over gloo) and refuse to
  start when ``WORLD_SIZE > 1`` still ends up undistributed.
- Backend and timeout: gloo on CPU, NCCL on GPU, with a collective timeout of ``--dist-timeout``
  seconds (default 300, not torch's 30 minutes), so a rank that dies or hangs ends the job promptly.
- Gradient accumulation: Accelerate's plugin with ``sync_with_dataloader=False``: our sampler already
  gives every epoch a whole number of optimizer steps, and the loop owns the dataloader (see
  ``data/sampler.py``), so the accumulation boundary never depends on where a dataloader ends.
- DDP: ``broadcast_buffers=True`` (torch's default, kept on purpose): BatchNorm running statistics
  are rank 0's at every forward, so all ranks validate and save the same model. No unused
  parameters exist in these detectors, so ``find_unused_parameters`` stays off (it costs a graph
  walk per step).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
)

from yolofuse_scale.config import TrainConfig


class DistributedSetupError(RuntimeError):
    """The launch environment and the Accelerator disagree about distribution."""


def launched_world_size() -> int:
    """World size announced by the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_accelerator(cfg: TrainConfig, project_dir: str | None = None) -> Accelerator:
    """Create the one Accelerator of the process from the launcher's environment and ``cfg``."""
    cpu = not torch.cuda.is_available()
    handlers: list = [DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False)]
    if launched_world_size() > 1:
        # Only when launched: naming a backend makes Accelerate expect a process group even for
        # a single plain `python train.py` process.
        backend = "gloo" if cpu else "nccl"
        handlers.append(InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=cfg.dist_timeout)))
    kwargs = {}
    if cfg.deepspeed:
        raise DistributedSetupError(
            "--deepspeed is not supported yet: DeepSpeed ZeRO lands with the strategies issue. "
            "Use DDP (accelerate launch --config_file configs/accelerate/ddp.yaml, or torchrun)."
        )
    if cfg.mixed_precision is not None:
        kwargs["mixed_precision"] = cfg.mixed_precision
    accelerator = Accelerator(
        cpu=cpu,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.grad_accum, sync_with_dataloader=False
        ),
        kwargs_handlers=handlers,
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        project_dir=project_dir,
        **kwargs,
    )
    check_distributed(accelerator)
    return accelerator


def check_distributed(accelerator: Accelerator) -> None:
    """Refuse a launch whose processes would silently train independently of each other."""
    world = launched_world_size()
    if world > 1 and (accelerator.distributed_type == DistributedType.NO or accelerator.num_processes != world):
        raise DistributedSetupError(
            f"launched with WORLD_SIZE={world} but Accelerate set up {accelerator.distributed_type} with "
            f"{accelerator.num_processes} process(es): each process would train alone. Check the accelerate "
            "config (distributed_type, num_processes) and that torch.distributed is available."
        )


def unwrap(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under whatever wrapper the strategy added (DDP, compile, ...)."""
    return accelerator.unwrap_model(model)
