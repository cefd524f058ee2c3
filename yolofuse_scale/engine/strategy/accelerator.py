"""The one Accelerator of the process, and what the loop calls on it: build, prepare the model, unwrap, clip.

The training loop calls :func:`build_accelerator`, :func:`prepare_model`, ``accelerator.prepare`` and
:func:`unwrap`, and nothing else distributed; the strategy's own settings come from
``deepspeed.py`` and ``fsdp.py``. Decisions taken here, and why:

- CPU-only machines: Accelerate falls back to ``DistributedType.NO`` when no GPU is present unless
  ``cpu=True``, which would turn ``torchrun --nproc_per_node 2`` into two independent trainings with
  no error. We pass ``cpu=True`` whenever CUDA is absent (giving MULTI_CPU over gloo) and refuse to
  start when ``WORLD_SIZE > 1`` still ends up undistributed (``launch.check_distributed``).
- Backend and timeout: gloo on CPU, NCCL on GPU, with a collective timeout of ``--dist-timeout``
  seconds (default 300, not torch's 30 minutes), so a rank that dies or hangs ends the job promptly.
- Gradient accumulation: Accelerate's plugin with ``sync_with_dataloader=False``: our sampler already
  gives every epoch a whole number of optimizer steps, and the loop owns the dataloader (see
  ``data/sampler.py``), so the accumulation boundary never depends on where a dataloader ends.
- DDP: ``broadcast_buffers=True`` (torch's default, kept on purpose): BatchNorm running statistics
  are rank 0's at the start of every forward; that forward then moves each rank's copy with its own
  micro-batch (and the EMA follows each rank's copy), so before validation and saving the statistics,
  the model's and the EMA's, are set to rank 0's (one broadcast, ``batchnorm.py``): every rank
  evaluates the model that is written. No unused parameters exist in these detectors, so
  ``find_unused_parameters`` stays off (it costs a graph walk per step).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
    ProjectConfiguration,
)

from yolofuse_scale.config import ParallelConfig, RunConfig
from yolofuse_scale.engine.strategy import cpu_comm_op
from yolofuse_scale.engine.strategy.activation_checkpoint import apply_activation_checkpointing
from yolofuse_scale.engine.strategy.batchnorm import convert_sync_batchnorm
from yolofuse_scale.engine.strategy.deepspeed import deepspeed_config, deepspeed_file, quiet_deepspeed_notices
from yolofuse_scale.engine.strategy.fsdp import _enable_fsdp_on_cpu, fsdp_plugin, wrap_units
from yolofuse_scale.engine.strategy.launch import (
    _single_process_group_env,
    check_distributed,
    check_strategy_flags,
    init_elastic_process_group,
    launched,
    launched_world_size,
    strategy_name,
)
from yolofuse_scale.engine.strategy.memory_format import channels_last_weights
from yolofuse_scale.engine.strategy.sharded import is_dtensor
from yolofuse_scale.engine.trackers import accelerator_log_with
from yolofuse_scale.errors import DistributedSetupError


def build_accelerator(cfg: RunConfig, project_dir: str | None = None) -> Accelerator:
    """Create the one Accelerator of the process from the launcher's environment and ``cfg``."""
    check_strategy_flags(cfg.parallel)
    strategy = strategy_name(cfg.parallel)
    if strategy == "fsdp" and cfg.checkpoint.save_on_each_node:
        raise DistributedSetupError(
            "--save-on-each-node with FSDP: its sharded (DCP) checkpoints keep one metadata file, written by global "
            "rank 0, that every rank reads on resume; put --output-dir on storage all nodes share and drop the flag"
        )
    ds_file, ds_origin = deepspeed_file(cfg.parallel)
    tracking = accelerator_log_with(cfg.log.trackers, project_dir)  # a tracker not installed: refused here
    # DeepSpeed picks its own (CPU) accelerator and Accelerate ignores DeepSpeed under cpu=True.
    cpu = not torch.cuda.is_available() and not ds_file
    handlers: list = [DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False,
                                                    gradient_as_bucket_view=True)]
    kwargs: dict = {}
    if ds_file and not launched():
        _single_process_group_env()
    if launched() or ds_file:
        # Only when launched: naming a backend makes Accelerate expect a process group even for
        # a single plain `python train.py` process (DeepSpeed always wants one).
        init_elastic_process_group(cfg.parallel.dist_timeout)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        handlers.append(InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=cfg.parallel.dist_timeout)))
    mixed_precision = cfg.parallel.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    # Before DeepSpeed is imported: by a DeepSpeed run, or by Accelerate's FSDP2 prepare (its unwrap imports it)
    quiet_deepspeed_notices(cpu_only=not torch.cuda.is_available())
    if ds_file:
        if not torch.cuda.is_available():  # before DeepSpeed starts: its CPU collectives need a C++ op
            cpu_comm_op.prepare()
        ds = deepspeed_config(ds_file, replace(cfg, parallel=replace(cfg.parallel, mixed_precision=mixed_precision)),
                              launched_world_size(), origin=ds_origin)
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
        mixed_precision = "no"  # precision is the JSON's torch_autocast (see deepspeed_config)
    plugin = fsdp_plugin() if strategy == "fsdp" and launched() else None
    if plugin is not None:
        kwargs["fsdp_plugin"] = plugin
    if cfg.parallel.compile:  # Accelerate compiles after the DDP wrap (DDPOptimizer splits graphs at buckets)
        kwargs["dynamo_backend"] = "inductor"
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.train.grad_accum, sync_with_dataloader=False
        ),
        kwargs_handlers=handlers,
        log_with=tracking["log_with"],
        # save_on_each_node: Accelerate's save_state writes on each node's local main (see storage.py)
        project_config=ProjectConfiguration(project_dir=project_dir, logging_dir=tracking["logging_dir"],
                                            save_on_each_node=cfg.checkpoint.save_on_each_node),
        **kwargs,
    )
    if plugin is not None and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _enable_fsdp_on_cpu(plugin, accelerator.mixed_precision)
    if accelerator.distributed_type == DistributedType.FSDP and accelerator.mixed_precision == "bf16":
        from torch.distributed.fsdp import MixedPrecisionPolicy

        # bf16 compute, fp32 gradient reduction: Accelerate's default reduces in bf16, which rounds
        # the sum of N ranks' gradients (measurably, at N >= 8) for half the bytes.
        accelerator.state.fsdp_plugin.mixed_precision_policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    check_distributed(accelerator)
    if cfg.parallel.compile and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise DistributedSetupError("--compile is not supported under DeepSpeed (its engine owns the graph)")
    if cfg.parallel.compile and accelerator.distributed_type == DistributedType.FSDP:
        raise DistributedSetupError("--compile under FSDP2 has not been tested here; use --strategy ddp")
    return accelerator


def prepare_model(accelerator: Accelerator, model: torch.nn.Module, cfg: ParallelConfig, log) -> torch.nn.Module:
    """What the strategy does to the bare model before ``accelerator.prepare``.

    - FSDP: the units are the blocks the model declares (``model/units.py``), or those of an accelerate
      config's ``fsdp_transformer_layer_cls_to_wrap`` the model has.
    - ``--activation-checkpointing``: the blocks the model declares recompute their forward in backward.
    - ``--sync-bn``: SyncBatchNorm where torch allows it (CUDA, several processes).
    - FSDP under bf16: each BatchNorm becomes its own FSDP unit whose parameters and math stay fp32
      and whose output is cast back to bf16 for the block around it (FSDP2 casts at unit borders;
      Accelerate's FSDP2 path does not autocast).
    - ``--channels-last`` (one process, DDP): convolution weights channels-last, the layout their gradients
      arrive in, so DDP's bucket views match them (``memory_format.py``).
    """
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        plugin.transformer_cls_names_to_wrap = wrap_units(model, plugin.transformer_cls_names_to_wrap)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.sync_bn:
        model = convert_sync_batchnorm(model, accelerator.device.type == "cpu", log)
    if accelerator.distributed_type == DistributedType.FSDP and accelerator.mixed_precision != "no":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # fp32 parameters and math inside the unit, bf16 out again for the next bf16 convolution
        # (FSDP2 does not autocast: each unit casts its inputs to its own param dtype).
        fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32,
                                    output_dtype=accelerator.state.fsdp_plugin.mixed_precision_policy.param_dtype)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                fully_shard(m, mp_policy=fp32, reshard_after_forward=False)
    channels_last_weights(accelerator, model, cfg)
    return model


def unwrap(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under whatever wrapper the strategy added (DDP, compile, ...).

    Only a DeepSpeed run asks Accelerate: its ``unwrap_model`` imports ``deepspeed`` to test for a
    DeepSpeedEngine whenever the package is installed, which under DDP, FSDP2 or one process cost ~7 s of start-up on
    CPU and printed DeepSpeed's "Setting accelerator to CPU" into a run that never uses it. The others' wrappers are
    peeled here: torch.compile's ``_orig_mod`` (Accelerate compiles after the DDP wrap), then DDP's ``module``;
    FSDP2 shards the model in place (no wrapper).
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.unwrap_model(model, keep_torch_compile=False)
    model = getattr(model, "_orig_mod", model)
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    return model


def clip_grad_norm(accelerator: Accelerator, model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradients at ``max_norm`` (0: no clipping) and return their global norm, unscaled.

    Under fp16 the gradients hold loss-scale x gradient until the grad scaler unscales them:
    Accelerate's clipping unscales first; without clipping we unscale here too (the scaler's step
    then does not unscale again), so ``grad_norm`` is the true gradient's norm either way, not
    65,536 x it. Under DeepSpeed the engine clipped inside backward and this only reports the norm.
    """
    if max_norm > 0:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
    else:
        accelerator.unscale_gradients()  # a no-op unless fp16 with a grad scaler
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if is_dtensor(norm):  # FSDP2: a replicated DTensor
        norm = norm.full_tensor()
    return norm
