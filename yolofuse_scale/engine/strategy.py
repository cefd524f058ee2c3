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
- DeepSpeed (``--deepspeed FILE``): the loop's settings win over the file. Its micro-batch,
  accumulation count, global batch and gradient clipping are written into the config from the
  loop's flags (Accelerate would fill ``gradient_clipping: auto`` with 1.0, and a hard-coded
  accumulation in the JSON would silently override ``--grad-accum``); a file that contradicts them
  with a number is refused, naming the key. The file must not declare an optimizer (the loop's
  SGD/AdamW param groups are the recipe; DeepSpeed's own optimizers compile C++ ops and change the
  math) nor a scheduler (the loop's schedule is a function of the step). Stages 1 and 2 in fp32
  are supported here; ZeRO-3, offload and mixed precision under DeepSpeed come with the
  strategies issue and are refused with that message until then.
- DDP: ``broadcast_buffers=True`` (torch's default, kept on purpose): BatchNorm running statistics
  are rank 0's at every forward, so all ranks validate and save the same model. No unused
  parameters exist in these detectors, so ``find_unused_parameters`` stays off (it costs a graph
  walk per step).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
)

from yolofuse_scale.config import OptimConfig, TrainConfig


class DistributedSetupError(RuntimeError):
    """The launch environment and the Accelerator disagree about distribution."""


def launched_world_size() -> int:
    """World size announced by the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def deepspeed_config(path: str, train: TrainConfig, optim: OptimConfig, world_size: int) -> dict:
    """Read a DeepSpeed JSON and write the loop's batch, accumulation and clipping into it."""
    try:
        with open(path) as fh:
            ds = json.load(fh)
    except FileNotFoundError:
        raise DistributedSetupError(f"--deepspeed {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DistributedSetupError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise DistributedSetupError(
                f"{path}: remove the '{key}' section: the loop's own {key} is the training recipe "
                "(DeepSpeed's would replace it and, for optimizers, JIT-compile C++ ops)"
            )
    stage = int(ds.get("zero_optimization", {}).get("stage", 0))
    if stage not in (0, 1, 2):
        raise DistributedSetupError(f"{path}: ZeRO stage {stage} is not supported yet (stages 0-2; ZeRO-3 lands "
                                    "with the strategies issue)")
    for key in ("fp16", "bf16"):
        if str(ds.get(key, {}).get("enabled", False)).lower() == "true":
            raise DistributedSetupError(f"{path}: '{key}.enabled' is not supported yet under DeepSpeed (its cast "
                                        "would put BatchNorm in half precision); use fp32 for now")
    wanted = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.batch_size * train.grad_accum * world_size,
        "gradient_clipping": float(optim.clip_grad),
    }
    flags = {"train_micro_batch_size_per_gpu": "--batch-size", "gradient_accumulation_steps": "--grad-accum",
             "train_batch_size": "--batch-size x processes x --grad-accum", "gradient_clipping": "--clip-grad"}
    for key, value in wanted.items():
        have = ds.get(key, "auto")
        if have != "auto" and float(have) != float(value):
            raise DistributedSetupError(
                f"{path}: '{key}': {have} contradicts the loop's {flags[key]} = {value}; set it to \"auto\" "
                "or remove it (the loop's flags are the single source of these values)"
            )
        ds[key] = value
    return ds


def build_accelerator(
    cfg: TrainConfig, project_dir: str | None = None, optim: OptimConfig | None = None
) -> Accelerator:
    """Create the one Accelerator of the process from the launcher's environment and ``cfg``."""
    # DeepSpeed picks its own (CPU) accelerator and Accelerate ignores DeepSpeed under cpu=True.
    cpu = not torch.cuda.is_available() and not cfg.deepspeed
    handlers: list = [DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False)]
    kwargs: dict = {}
    if launched_world_size() > 1 or cfg.deepspeed:
        # Only when launched: naming a backend makes Accelerate expect a process group even for
        # a single plain `python train.py` process (DeepSpeed always wants one).
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        handlers.append(InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=cfg.dist_timeout)))
    if cfg.deepspeed:
        ds = deepspeed_config(cfg.deepspeed, cfg, optim or OptimConfig(), launched_world_size())
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
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
