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
  math) nor a scheduler (the loop's schedule is a function of the step). Offload configs get
  ``zero_force_ds_cpu_optimizer: false`` so the loop's torch optimizer runs on the offloaded
  partitions. Mixed precision: DeepSpeed's ``bf16.enabled`` casts the whole module, BatchNorm
  included, so ``--mixed-precision bf16`` is written as DeepSpeed's ``torch_autocast`` instead
  (fp32 parameters and BatchNorm, bf16 convolutions). fp16 under ZeRO is refused: DeepSpeed's
  autocast mode gives ZeRO no loss scaler, and its ``fp16`` mode casts BatchNorm.
- FSDP (``--strategy fsdp`` or an accelerate config with ``distributed_type: FSDP``): FSDP2
  (``fully_shard``) through Accelerate's own FSDP path, with one unit per C2f/SPPF/Detect block
  (:data:`WRAP_UNITS`) and the root; size-based wrapping is refused (it wraps bare containers).
  Under bf16 each BatchNorm is its own fp32 unit (a few extra small all-gathers per forward).
  Accelerate enables FSDP only when GPUs are present; on CPU processes :func:`_enable_fsdp_on_cpu`
  switches its state to FSDP after construction, so CPU runs (and the tests) execute exactly the
  ``prepare``/``save_state``/``load_state`` code GPU runs execute.
- Sharded state (FSDP2 DTensors, ZeRO-3 partitions): :func:`local_tensor`, :func:`full_tensor`
  and :func:`local_shard` are the only places that know how a parameter is split; the EMA, the
  portable weights and the memory accounting go through them.
- DDP: ``broadcast_buffers=True`` (torch's default, kept on purpose): BatchNorm running statistics
  are rank 0's at the start of every forward; that forward then moves each rank's copy with its own
  micro-batch (and the EMA follows each rank's copy), so before validation and saving the statistics,
  the model's and the EMA's, are set to rank 0's (one broadcast): every rank evaluates the model
  that is written. No unused
  parameters exist in these detectors, so ``find_unused_parameters`` stays off (it costs a graph
  walk per step).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import replace
from datetime import timedelta
from importlib import resources
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import (
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    DistributedType,
    FullyShardedDataParallelPlugin,
    GradientAccumulationPlugin,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    broadcast,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from yolofuse_scale.config import OptimConfig, TrainConfig
from yolofuse_scale.engine.checkpoint import ZERO_FULL_STATE
from yolofuse_scale.errors import DistributedSetupError  # noqa: F401 (defined there, raised and imported from here)

#: What the launcher declared (``accelerate launch --config_file``), read before any Accelerator of
#: this process exists: constructing one with a plugin writes these variables too.
LAUNCH_ENV = {k: os.environ.get(k, "") for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")}


def launched_world_size() -> int:
    """World size announced by the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


#: The configs shipped inside the package (``yolofuse_scale/configs/{deepspeed,accelerate}/``): found
#: the same way from a checkout and from an installed wheel. The checkout's ``ds_configs/`` and
#: ``configs/accelerate/`` are symlinks to these folders, so there is one copy of each file. A wheel
#: installs as plain files, so this Traversable is a filesystem path (``str`` of it opens).
PACKAGED_CONFIGS = resources.files("yolofuse_scale") / "configs"
#: FSDP2 units: the blocks that hold a YOLO's parameters (YOLOv8's C2f, YOLO11/26's C3k2 and C2PSA,
#: SPPF in backbone and neck, the Detect head). Every other module (stem convs, the fusion
#: concatenations) belongs to the root unit. Only the classes a model has are wrapped (wrap_units).
WRAP_UNITS = ("C2f", "C3k2", "SPPF", "C2PSA", "Detect")
#: Blocks recomputed in backward under --activation-checkpointing (backbone and neck, not the head).
CHECKPOINT_UNITS = ("C2f", "C3k2", "SPPF", "C2PSA")


def strategy_name(cfg: TrainConfig) -> str:
    """``ddp``, ``fsdp`` or ``deepspeed``: what ``--strategy``, ``--deepspeed`` or the launcher asks for."""
    if cfg.strategy.startswith("zero") or cfg.deepspeed:
        return "deepspeed"
    if cfg.strategy in ("ddp", "fsdp"):
        return cfg.strategy
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return "ddp"


def check_strategy_flags(cfg: TrainConfig, env: dict[str, str] | None = None) -> None:
    """Refuse flags that ask for another strategy than the accelerate config does.

    ``strategy_name`` lets a flag win, so ``--strategy zero2`` under an FSDP accelerate config ran
    DeepSpeed with FSDP's other settings silently unused; ``--strategy ddp`` under a ZeRO config the same.
    """
    env = LAUNCH_ENV if env is None else env
    declared = next((name for name, key in (("deepspeed", "ACCELERATE_USE_DEEPSPEED"), ("fsdp", "ACCELERATE_USE_FSDP"))
                     if env.get(key, "").lower() == "true"), None)
    if cfg.strategy.startswith("zero") or cfg.deepspeed:
        asked = "deepspeed"
    else:
        asked = cfg.strategy if cfg.strategy in ("ddp", "fsdp") else None
    if declared and asked and declared != asked:
        flag = f"--strategy {cfg.strategy}" if cfg.strategy != "auto" else f"--deepspeed {cfg.deepspeed}"
        raise DistributedSetupError(
            f"{flag} asks for {asked.upper() if asked != 'deepspeed' else 'DeepSpeed'} but the accelerate config "
            f"(accelerate launch --config_file ...) sets up {'DeepSpeed' if declared == 'deepspeed' else 'FSDP'}: "
            "drop the flag (the config decides) or launch with the matching configs/accelerate/*.yaml"
        )


def deepspeed_config(path: str, train: TrainConfig, optim: OptimConfig, world_size: int,
                     origin: str = "--deepspeed") -> dict:
    """Read a DeepSpeed JSON and write the loop's batch, accumulation, clipping and precision into it.

    ``origin`` names where the path came from (a flag, ``--strategy``, the accelerate config) for
    the message when the file is missing.
    """
    try:
        with open(path) as fh:
            ds = json.load(fh)
    except FileNotFoundError:
        raise DistributedSetupError(f"{origin} {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DistributedSetupError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise DistributedSetupError(
                f"{path}: remove the '{key}' section: the loop's own {key} is the training recipe "
                "(DeepSpeed's would replace it and, for optimizers, JIT-compile C++ ops)"
            )
    zero = ds.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    if stage not in (0, 1, 2, 3):
        raise DistributedSetupError(f"{path}: zero_optimization.stage {stage}: DeepSpeed has stages 0-3")
    for key in ("fp16", "bf16"):
        if str(ds.get(key, {}).get("enabled", False)).lower() == "true":
            raise DistributedSetupError(
                f"{path}: '{key}.enabled' casts the whole model, BatchNorm included, to half precision; remove it "
                "and pass --mixed-precision bf16 (written as DeepSpeed's torch_autocast: BatchNorm stays fp32)"
            )
    if train.mixed_precision == "bf16":
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif train.mixed_precision == "fp16" and stage > 0:
        raise DistributedSetupError(
            f"{path}: --mixed-precision fp16 under ZeRO: DeepSpeed's autocast mode has no loss scaler for ZeRO and "
            "its fp16 mode casts BatchNorm; use bf16 (or fp16 with DDP/FSDP, which scale the loss)"
        )
    if train.save_on_each_node:
        # Each node's local rank 0 writes the engine's model-states file (by default only global
        # rank 0 does, and the other nodes could not resume from their own disk); every rank writes
        # its optimizer partition either way.
        ds.setdefault("checkpoint", {})["use_node_local_storage"] = True
    if any(zero.get(k, {}).get("device", "none") != "none" for k in ("offload_optimizer", "offload_param")):
        # Let the loop's torch optimizer step the offloaded partitions (DeepSpeed otherwise demands
        # its CPUAdam, a JIT-compiled op whose update differs from torch's).
        ds.setdefault("zero_force_ds_cpu_optimizer", False)
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


def deepspeed_file(cfg: TrainConfig) -> tuple[str, str]:
    """The DeepSpeed JSON of this run and where it was named: ``--deepspeed``, ``--strategy zeroN``, or
    the accelerate config's ``deepspeed_config_file``; ``("", "")`` when the run is not DeepSpeed.

    ``accelerate launch --config_file configs/accelerate/zero2.yaml`` passes its DeepSpeed settings
    through the environment; we build the plugin from the same file ourselves, so the loop's values
    are written into it exactly as for ``--deepspeed`` (and gloo is used on CPU).
    """
    if cfg.deepspeed:
        return cfg.deepspeed, "--deepspeed"
    if cfg.strategy.startswith("zero"):
        return str(PACKAGED_CONFIGS / "deepspeed" / f"{cfg.strategy}.json"), f"--strategy {cfg.strategy}: packaged"
    if strategy_name(cfg) != "deepspeed":
        return "", ""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if not path or path == "none":
        raise DistributedSetupError(
            "the accelerate config enables DeepSpeed without a deepspeed_config_file: put the ZeRO settings in a "
            "JSON (see ds_configs/) and name it as deepspeed_config.deepspeed_config_file"
        )
    return _packaged_fallback(path), "the accelerate config's deepspeed_config_file"


def _packaged_fallback(path: str) -> str:
    """``ds_configs/<name>.json`` (what the shipped accelerate YAMLs name, relative to the working
    directory) resolves to the packaged copy when the working directory has no such file, so the
    installed YAMLs work from any directory; a file that exists, or any other path, is used as given.
    """
    relative = Path(path)
    packaged = PACKAGED_CONFIGS / "deepspeed" / relative.name
    if relative.parent == Path("ds_configs") and not relative.exists() and packaged.is_file():
        return str(packaged)
    return path


def fsdp_plugin() -> FullyShardedDataParallelPlugin:
    """FSDP2 with YOLO wrap units and sharded (DCP) checkpoints; an accelerate config's FSDP_* values win.

    ``accelerate launch`` exports the config's ``fsdp_config`` as ``FSDP_*`` variables and the plugin
    reads them; under ``torchrun --strategy fsdp`` our defaults fill in what is not set.
    """
    defaults = {
        "FSDP_VERSION": "2",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_TRANSFORMER_CLS_TO_WRAP": ",".join(WRAP_UNITS),
        "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",  # DCP: each rank writes its shard; reshards on load
        "FSDP_RESHARD_AFTER_FORWARD": "true",
        "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",  # every rank builds the same seeded model
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if os.environ["FSDP_VERSION"] != "2":
        raise DistributedSetupError("fsdp_version 1 is not supported: use fsdp_version: 2 (fully_shard)")
    if os.environ["FSDP_AUTO_WRAP_POLICY"] != "TRANSFORMER_BASED_WRAP":
        raise DistributedSetupError(
            f"fsdp_auto_wrap_policy {os.environ['FSDP_AUTO_WRAP_POLICY']}: wrap by block class instead "
            f"(TRANSFORMER_BASED_WRAP with fsdp_transformer_layer_cls_to_wrap: {','.join(WRAP_UNITS)}); a size policy "
            "wraps bare containers (nn.ModuleList), which FSDP2 cannot run"
        )
    return FullyShardedDataParallelPlugin()


def _enable_fsdp_on_cpu(plugin: FullyShardedDataParallelPlugin, mixed_precision: str) -> None:
    """The CPU path into FSDP: switch Accelerate's (shared) state from MULTI_CPU to FSDP.

    Accelerate turns FSDP on only for GPU process groups, yet FSDP2 runs on CPU tensors over gloo.
    Both state singletons hold the type (``AcceleratorState`` copies ``PartialState``'s on every
    construction), so both are set. Everything after this (``prepare``, ``save_state``,
    ``load_state``, ``get_state_dict``) is Accelerate's unmodified FSDP code.
    """
    PartialState().distributed_type = DistributedType.FSDP
    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    state.fsdp_plugin = plugin


def build_accelerator(
    cfg: TrainConfig, project_dir: str | None = None, optim: OptimConfig | None = None
) -> Accelerator:
    """Create the one Accelerator of the process from the launcher's environment and ``cfg``."""
    check_strategy_flags(cfg)
    strategy = strategy_name(cfg)
    if strategy == "fsdp" and cfg.save_on_each_node:
        raise DistributedSetupError(
            "--save-on-each-node with FSDP: its sharded (DCP) checkpoints keep one metadata file, written by global "
            "rank 0, that every rank reads on resume; put --output-dir on storage all nodes share and drop the flag"
        )
    ds_file, ds_origin = deepspeed_file(cfg)
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
        init_elastic_process_group(cfg.dist_timeout)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        handlers.append(InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=cfg.dist_timeout)))
    mixed_precision = cfg.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if ds_file:
        ds = deepspeed_config(ds_file, replace(cfg, mixed_precision=mixed_precision), optim or OptimConfig(),
                              launched_world_size(), origin=ds_origin)
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
        mixed_precision = "no"  # precision is the JSON's torch_autocast (see deepspeed_config)
    plugin = fsdp_plugin() if strategy == "fsdp" and launched() else None
    if plugin is not None:
        kwargs["fsdp_plugin"] = plugin
    if cfg.compile:  # Accelerate compiles after the DDP wrap (DDPOptimizer splits graphs at buckets)
        kwargs["dynamo_backend"] = "inductor"
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.grad_accum, sync_with_dataloader=False
        ),
        kwargs_handlers=handlers,
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        # save_on_each_node: Accelerate's save_state writes on each node's local main (see storage.py)
        project_config=ProjectConfiguration(project_dir=project_dir, save_on_each_node=cfg.save_on_each_node),
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
    if (cfg.compile or cfg.benchmark_skip_grad_sync) and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise DistributedSetupError("--compile and --benchmark-skip-grad-sync are not supported under DeepSpeed "
                                    "(its engine owns the graph and the gradient reduction)")
    if cfg.compile and accelerator.distributed_type == DistributedType.FSDP:
        raise DistributedSetupError("--compile under FSDP2 has not been tested here; use --strategy ddp")
    return accelerator


def prepare_model(accelerator: Accelerator, model: torch.nn.Module, cfg: TrainConfig, log) -> torch.nn.Module:
    """What the strategy does to the bare model before ``accelerator.prepare``.

    - ``--activation-checkpointing``: C2f/SPPF blocks recompute their forward in backward.
    - ``--sync-bn``: SyncBatchNorm where torch allows it (CUDA, several processes).
    - FSDP under bf16: each BatchNorm becomes its own FSDP unit whose parameters and math stay fp32
      and whose output is cast back to bf16 for the block around it (FSDP2 casts at unit borders;
      Accelerate's FSDP2 path does not autocast).
    """
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        plugin.transformer_cls_names_to_wrap = wrap_units(model, plugin.transformer_cls_names_to_wrap or WRAP_UNITS)
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
    return model


def wrap_units(model: torch.nn.Module, names: list[str] | tuple[str, ...]) -> list[str]:
    """The FSDP unit classes among ``names`` that ``model`` has (Accelerate refuses a listed class the
    model lacks, and one accelerate config serves every family: C2f is YOLOv8's, C3k2 YOLO11's)."""
    present = {type(m).__name__ for m in model.modules()}
    kept = [n for n in names if n in present]
    if not kept:
        raise DistributedSetupError(f"FSDP wrap units {', '.join(names)}: the model has none of these classes")
    return kept


def init_elastic_process_group(timeout_s: int) -> None:
    """Under an elastic restart, join the process group through keys unique to this attempt.

    ``torchrun --max-restarts N`` with its default static rendezvous keeps one store across restarts,
    and gloo's full-mesh connect reads each peer's address from it: a restarted rank can read the
    dead previous attempt's address, get refused, and wait out the whole timeout (seen on this
    machine, for DDP and ZeRO). Prefixing the keys with TORCHELASTIC_RESTART_COUNT makes every
    attempt meet only its own peers. Non-elastic launches (deepspeed, plain python) are untouched:
    Accelerate/DeepSpeed create the group as usual.

    The restart count is the same on every node only while the same launchers keep running. A node
    whose launcher is replaced (``--rdzv_backend c10d``, a node rejoining) starts again at 0 while
    the others count on, so there the prefix would split the job. Without the agent's shared store
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, set by scripts/slurm/train_multinode.sbatch) every
    rendezvous round gives rank 0 a fresh port where worker rank 0 hosts a new, empty store: no
    stale keys, no prefix needed, and torch's own ``env://`` set-up is used.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None or torch.distributed.is_initialized():
        return
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    timeout = timedelta(seconds=timeout_s)
    store = torch.distributed.TCPStore(host, port, world, is_master=False,
                                       timeout=timeout, multi_tenant=True)
    torch.distributed.init_process_group(
        backend="nccl" if torch.cuda.is_available() else "gloo",
        store=torch.distributed.PrefixStore(f"yolofuse_scale/attempt_{restart}", store),
        rank=rank, world_size=world, timeout=timeout,
    )


def effective_precision(accelerator: Accelerator) -> str:
    """The precision the model computes in (DeepSpeed's is its JSON's ``torch_autocast``)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        return "bf16 (torch_autocast)" if ds.get("torch_autocast", {}).get("enabled") else "no"
    return accelerator.mixed_precision


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
    if isinstance(norm, DTensor):  # FSDP2: a replicated DTensor
        norm = norm.full_tensor()
    return norm


def _single_process_group_env() -> None:
    """``python train.py --strategy zero2`` without a launcher: DeepSpeed needs a process group, so the
    process presents itself as the only rank of a launch of world size 1 (a free local port for the
    group's store), as ``torchrun --nproc_per_node 1`` would."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate, deepspeed) started this process."""
    return "LOCAL_RANK" in os.environ or launched_world_size() > 1


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
    return accelerator.unwrap_model(model, keep_torch_compile=False)


# ---------------------------------------------------------------------- ZeRO at another world size
def zero_full_state(accelerator: Accelerator, engine) -> tuple[dict[str, torch.Tensor], dict[str, float]] | None:
    """ZeRO-1/2: every parameter's fp32 master weight and optimizer state, whole. Collective.

    DeepSpeed partitions these flat, by rank, and its checkpoint reloads only at the world size that
    wrote it; its universal-checkpoint converter keeps Adam's moments but not SGD's momentum. Saving
    them per parameter (one all-reduce per parameter and state, through DeepSpeed's own
    ``safe_get_full_*`` API) lets :func:`load_zero_full_state` re-partition them for any world size.
    Costs (1 + states) x the fp32 model in the checkpoint and one gather per save.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED or engine.zero_optimization_stage() not in (1, 2):
        return None
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    _relink_optimizer_fragments(engine.optimizer)
    inner = engine.optimizer.optimizer  # the loop's torch optimizer over DeepSpeed's flat partitions
    keys = sorted({k for st in inner.state.values() for k, v in st.items() if torch.is_tensor(v) and v.dim() > 0})
    scalars = {k: float(v) for st in inner.state.values() for k, v in st.items() if torch.is_tensor(v) and v.dim() == 0}
    tensors = {}
    for name, p in engine.module.named_parameters():
        if not p.requires_grad:
            continue
        tensors[f"fp32/{name}"] = safe_get_full_fp32_param(p).cpu()
        for key in keys:
            tensors[f"{key}/{name}"] = safe_get_full_optimizer_state(p, key).cpu()
    return tensors, scalars


def _relink_optimizer_fragments(zero) -> None:
    """Point every parameter's optimizer-state fragments at the current state.

    DeepSpeed 0.19 links them once, right after the *first* parameter group's first step, when the
    other groups have no state yet (their fragments stay empty and ``safe_get_full_optimizer_state``
    raises); the loop uses three groups (weights, biases, BatchNorm), so we relink.
    """
    zero._hp_optimizer_states_linked = False
    zero._lazy_init_hp_params_optimizer_state()


def load_zero_full_state(engine, tensors: dict[str, torch.Tensor], scalars: dict[str, float]) -> None:
    """Re-partition a :func:`zero_full_state` for this world size (each rank takes its fragments)."""
    from deepspeed.utils import safe_set_full_fp32_param

    zero = engine.optimizer
    inner = zero.optimizer
    params = dict(engine.module.named_parameters())
    keys = sorted({k.split("/", 1)[0] for k in tensors} - {"fp32"})
    # Optimizer states are created lazily at the first step; build them flat, as DeepSpeed lays them
    # out (each parameter's fragment at its offset in this rank's partition), then link the fragments.
    for group, flat in zip(zero.bit16_groups, zero.single_partition_of_fp32_groups):
        state = inner.state[flat]
        for key in keys:
            buffer = torch.zeros_like(flat)
            for p in group:
                mapping = p._hp_mapping
                if mapping is None:
                    continue
                name = next(n for n, q in params.items() if q is p)
                lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                src = tensors[f"{key}/{name}"].flatten().narrow(0, lp.start, lp.numel)
                buffer.narrow(0, hp.start, hp.numel).copy_(src)
            state[key] = buffer
        for key, value in scalars.items():
            state[key] = torch.tensor(value, dtype=torch.float32)
    _relink_optimizer_fragments(zero)
    with torch.no_grad():
        for name, p in params.items():
            if f"fp32/{name}" in tensors:
                full = tensors[f"fp32/{name}"].to(p.device)
                safe_set_full_fp32_param(p, full)
                p.data.copy_(full.to(p.dtype))


# ---------------------------------------------------------------------------------- sharded tensors
def is_zero3_param(t: torch.Tensor) -> bool:
    return hasattr(t, "ds_tensor")


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter or buffer: the whole tensor unless the strategy shards it.

    FSDP2: the DTensor's local shard (dim-0 chunk). ZeRO-3: the flat partition ``ds_tensor``
    (``numel / world`` elements, the last rank's padded with zeros).
    """
    if isinstance(t, DTensor):
        return t.to_local()
    if is_zero3_param(t):
        return t.ds_tensor
    return t.data


def full_tensor(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reassemble the full tensor from every rank's ``local`` part shaped like ``like``. Collective
    when ``like`` is sharded (one all-gather); the identity otherwise."""
    if isinstance(like, DTensor):
        return DTensor.from_local(local, like.device_mesh, like.placements, shape=like.shape,
                                  stride=like.stride()).full_tensor()
    if is_zero3_param(like):
        world = torch.distributed.get_world_size()
        dev = _collective_device()
        parts = [torch.empty_like(local, device=dev) for _ in range(world)]
        torch.distributed.all_gather(parts, local.to(dev))
        return torch.cat(parts)[: like.ds_numel].view(like.ds_shape).to(local.device)
    return local


def local_shard(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``full`` as :func:`local_tensor` would return it (no communication)."""
    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None).to_local()
    if is_zero3_param(like):
        n = like.ds_tensor.numel()
        start = torch.distributed.get_rank() * n
        flat = full.flatten()[start : start + n]
        return torch.cat([flat, flat.new_zeros(n - flat.numel())]).to(like.ds_tensor.device)
    return full


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")


def full_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The full state dict of ``model`` on every rank (``tensors``: local parts to use instead of the
    model's own, e.g. the EMA's). Collective under FSDP2/ZeRO-3: one all-gather per sharded tensor."""
    out = {}
    for name, t in named_state(model):
        local = tensors[name] if tensors is not None and name in tensors else local_tensor(t)
        out[name] = full_tensor(local, t).detach().clone()
    return out


def named_state(model: torch.nn.Module):
    """(name, tensor) of every parameter and buffer, named as in ``model.state_dict()``."""
    yield from model.named_parameters()
    yield from model.named_buffers()


# ------------------------------------------------------------------------------ memory accounting
def model_state_bytes(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes this rank holds in parameters, gradients, optimizer state and the engine's flat buffers.

    Counted by unique storage (a view into a flat buffer is counted once), not RSS: activations,
    allocator caches and communication buffers are not model state. Parameters are counted first,
    so a flat buffer whose views are the parameters counts as parameters. Engine buffers are the
    tensors reachable from DeepSpeed's ZeRO optimizer (fp32 partitions, gradient partitions, buckets).
    """
    seen: set[int] = set()
    sizes = {"params": 0, "grads": 0, "optimizer": 0, "engine_buffers": 0}

    def add(t, bucket: str) -> None:
        if isinstance(t, DTensor):
            t = t.to_local()
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        if storage.nbytes() == 0 or storage.data_ptr() in seen:
            return
        seen.add(storage.data_ptr())
        sizes[bucket] += storage.nbytes()

    params = [p for _, p in model.named_parameters()]
    for p in params:
        add(local_tensor(p), "params")
    for p in params:
        if p.grad is not None:
            add(p.grad, "grads")
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper -> torch or ZeRO optimizer
    torch_opt = getattr(inner, "optimizer", inner) if not isinstance(inner, torch.optim.Optimizer) else inner
    for state in torch_opt.state.values():
        for v in state.values():
            add(v, "optimizer")
    if inner is not torch_opt:  # a DeepSpeed ZeRO optimizer: walk its attributes for flat buffers
        _walk(vars(inner), lambda t: add(t, "engine_buffers"), depth=4)
    sizes["total"] = sum(sizes.values())
    return sizes


def _walk(obj, visit, depth: int) -> None:
    if isinstance(obj, torch.Tensor):
        visit(obj)
    elif depth > 0 and isinstance(obj, dict):
        for v in obj.values():
            _walk(v, visit, depth - 1)
    elif depth > 0 and isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, visit, depth - 1)


# --------------------------------------------------------------------------------- precision probe
class PrecisionProbe:
    """Records, once, the dtypes a convolution and a BatchNorm actually compute in.

    One-shot forward hooks on the first Conv2d and the first BatchNorm: under FSDP2 they see the
    unsharded parameters in the unit's param dtype, under autocast the cast input. The first step's
    log record carries the result, so "BatchNorm stays fp32" is a logged fact per run, not a claim.
    """

    def __init__(self, model: torch.nn.Module):
        self.seen: dict[str, str] = {}
        self._handles = []
        kinds = {"conv": torch.nn.Conv2d, "batchnorm": torch.nn.modules.batchnorm._BatchNorm}
        for name, kind in kinds.items():
            module = next((m for m in model.modules() if isinstance(m, kind)), None)
            if module is not None:
                self._handles.append(module.register_forward_hook(functools.partial(self._record, name)))

    def _record(self, name: str, module: torch.nn.Module, args, output) -> None:
        self.seen.setdefault(name, f"weight {str(module.weight.dtype)[6:]}, output {str(output.dtype)[6:]}")

    def result(self) -> dict[str, str]:
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.seen


# ------------------------------------------------------------------------- activation checkpointing
def apply_activation_checkpointing(model: torch.nn.Module) -> int:
    """Recompute every C2f/SPPF block's forward during backward instead of storing its activations.

    A recomputed BatchNorm would update its running statistics a second time; during recomputation
    the block's BatchNorms get momentum 0 (and their counters are restored), so the statistics, like
    the gradients, equal those of a run without checkpointing. Returns the number of blocks wrapped.
    """
    count = 0
    for m in model.modules():
        if type(m).__name__ in CHECKPOINT_UNITS:
            bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
            m.forward = functools.partial(_checkpointed, m.forward, bns)
            count += 1
    return count


def _checkpointed(forward, bns, *args):
    if not torch.is_grad_enabled():
        return forward(*args)
    return torch.utils.checkpoint.checkpoint(
        forward, *args, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), _frozen_bn_stats(bns))
    )


@contextlib.contextmanager
def _frozen_bn_stats(bns):
    saved = [(b.momentum, b.num_batches_tracked.clone() if b.num_batches_tracked is not None else None) for b in bns]
    for b in bns:
        b.momentum = 0.0
    try:
        yield
    finally:
        for b, (momentum, count) in zip(bns, saved):
            b.momentum = momentum
            if count is not None:
                b.num_batches_tracked.copy_(count)


def needs_buffer_sync(accelerator: Accelerator) -> bool:
    """Whether BatchNorm running statistics can differ between ranks under this strategy.

    DDP broadcasts rank 0's buffers at every forward, so its ranks agree. FSDP2 and DeepSpeed never
    sync buffers: each rank's running statistics follow its own micro-batches.
    """
    ddp = (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
    return accelerator.num_processes > 1 and accelerator.distributed_type not in ddp


def sync_batchnorm_buffers(accelerator: Accelerator, *modules: torch.nn.Module) -> None:
    """Make BatchNorm running mean/var equal on every rank, in place (see :func:`average_running_stats`).
    Collective: call on every rank.

    Run before validation and before saving so every rank evaluates, and every file holds, the same
    model.
    """
    average_running_stats(accelerator, [
        buf
        for module in modules
        for m in module.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
        for buf in (m.running_mean, m.running_var)
    ])


def average_running_stats(accelerator: Accelerator, stats: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over ranks where the strategy lets them differ. Collective.

    One collective of everything flattened together (a few hundred KB for yolov8n). Under DDP the
    statistics are set to rank 0's instead (one broadcast): DDP broadcasts them at every forward, but
    each rank's last forward (and so its EMA) moved its own copy since, and rank 0's are the ones
    written; a rank validating with its own would report the metrics of a model nobody saved
    (measured: mAP50-95 0.7164 logged, 0.7145 for the saved weights). Under FSDP2/DeepSpeed the
    mean is the same on every rank (one all-reduce, then the same division everywhere).
    """
    rank0s = not needs_buffer_sync(accelerator)
    if not stats or accelerator.num_processes == 1:
        return
    flat = torch.cat([b.detach().float().flatten() for b in stats]).to(accelerator.device)
    flat = broadcast(flat, from_process=0) if rank0s else accelerator.reduce(flat, reduction="mean")
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
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    layers = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    log.info(f"--sync-bn: {layers} BatchNorm layers are SyncBatchNorm (each all-reduces its batch statistics in "
             "every training forward: one small collective per layer)")
    return model


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
