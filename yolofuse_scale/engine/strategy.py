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


def deepspeed_file(cfg: TrainConfig) -> str:
    """The DeepSpeed JSON of this run: ``--deepspeed``, else the one an accelerate config names.

    ``accelerate launch --config_file configs/accelerate/zero2.yaml`` passes its DeepSpeed settings
    through the environment; we build the plugin from the same file ourselves, so the loop's values
    are written into it exactly as for ``--deepspeed`` (and gloo is used on CPU).
    """
    if cfg.deepspeed:
        return cfg.deepspeed
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return ""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if not path or path == "none":
        raise DistributedSetupError(
            "the accelerate config enables DeepSpeed without a deepspeed_config_file: put the ZeRO settings in a "
            "JSON (see ds_configs/) and name it as deepspeed_config.deepspeed_config_file"
        )
    return path


def build_accelerator(
    cfg: TrainConfig, project_dir: str | None = None, optim: OptimConfig | None = None
) -> Accelerator:
    """Create the one Accelerator of the process from the launcher's environment and ``cfg``."""
    ds_file = deepspeed_file(cfg)
    # DeepSpeed picks its own (CPU) accelerator and Accelerate ignores DeepSpeed under cpu=True.
    cpu = not torch.cuda.is_available() and not ds_file
    handlers: list = [DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False)]
    kwargs: dict = {}
    if launched_world_size() > 1 or ds_file:
        # Only when launched: naming a backend makes Accelerate expect a process group even for
        # a single plain `python train.py` process (DeepSpeed always wants one).
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        handlers.append(InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=cfg.dist_timeout)))
    if ds_file:
        ds = deepspeed_config(ds_file, cfg, optim or OptimConfig(), launched_world_size())
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


def needs_buffer_sync(accelerator: Accelerator) -> bool:
    """Whether BatchNorm running statistics can differ between ranks under this strategy.

    DDP broadcasts rank 0's buffers at every forward, so its ranks agree. DeepSpeed never syncs
    buffers: each rank's running statistics follow its own micro-batches.
    """
    ddp = (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
    return accelerator.num_processes > 1 and accelerator.distributed_type not in ddp


def sync_batchnorm_buffers(accelerator: Accelerator, *modules: torch.nn.Module) -> None:
    """Average BatchNorm running mean/var over ranks, in place. Collective: call on every rank.

    Run before validation and before saving so every rank evaluates, and every file holds, the same
    model. One all-reduce of all statistics flattened together (a few hundred KB for yolov8n).
    """
    if not needs_buffer_sync(accelerator):
        return
    stats = [
        buf
        for module in modules
        for m in module.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
        for buf in (m.running_mean, m.running_var)
    ]
    if not stats:
        return
    flat = torch.cat([b.detach().float().flatten() for b in stats]).to(accelerator.device)
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for b in stats:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b).to(b.dtype))
        offset += n


def convert_sync_batchnorm(model: torch.nn.Module, accelerator_cpu: bool, log) -> torch.nn.Module:
    """``--sync-bn``: BatchNorm -> SyncBatchNorm before ``prepare``, where torch allows it (CUDA only)."""
    if accelerator_cpu or not torch.cuda.is_available():
        log.info("--sync-bn ignored: torch's SyncBatchNorm runs on CUDA tensors only; on CPU each rank "
                 "normalises with its own micro-batch statistics (running statistics are averaged before "
                 "validation and saving)")
        return model
    if launched_world_size() == 1:
        log.info("--sync-bn ignored: a single process has nothing to synchronise with")
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def check_resumable(accelerator: Accelerator, saved: dict, path) -> None:
    """Refuse, before loading anything, a resume the strategy cannot do.

    DDP and single-process checkpoints hold the full optimizer state and resume at any world size.
    DeepSpeed ZeRO partitions the optimizer state by rank and refuses another world size deep inside
    ``load_checkpoint``; we say so up front, with the way out.
    """
    world = saved.get("world_size", accelerator.num_processes)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and world != accelerator.num_processes:
        raise DistributedSetupError(
            f"{path}: written by {world} DeepSpeed rank(s), resumed with {accelerator.num_processes}: ZeRO's "
            f"optimizer state is partitioned per rank and cannot be re-partitioned yet. Resume with {world} "
            "processes, or start from `yolofuse-scale export-weights` (weights only)."
        )
    if saved.get("distributed_type") == "DEEPSPEED" and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise DistributedSetupError(f"{path}: a DeepSpeed checkpoint; resume it with the same --deepspeed config")
