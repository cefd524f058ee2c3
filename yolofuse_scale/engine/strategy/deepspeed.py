"""The DeepSpeed JSON of a run (``--deepspeed FILE``, ``--strategy zeroN``'s packaged one, or the
accelerate config's ``deepspeed_config_file``) and what the loop writes into it.

The loop's settings win over the file. Its micro-batch, accumulation count, global batch and
gradient clipping are written into the config from the loop's flags (Accelerate would fill
``gradient_clipping: auto`` with 1.0, and a hard-coded accumulation in the JSON would silently
override ``--grad-accum``); a file that contradicts them with a number is refused, naming the key.
The file must not declare an optimizer (the loop's SGD/AdamW param groups are the recipe;
DeepSpeed's own optimizers compile C++ ops and change the math) nor a scheduler (the loop's schedule
is a function of the step). Offload configs get ``zero_force_ds_cpu_optimizer: false`` so the loop's
torch optimizer runs on the offloaded partitions. Mixed precision: DeepSpeed's ``bf16.enabled``
casts the whole module, BatchNorm included, so ``--mixed-precision bf16`` is written as DeepSpeed's
``torch_autocast`` instead (fp32 parameters and BatchNorm, bf16 convolutions). fp16 under ZeRO is
refused: DeepSpeed's autocast mode gives ZeRO no loss scaler, and its ``fp16`` mode casts BatchNorm.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from importlib import resources
from pathlib import Path

from yolofuse_scale.config import ParallelConfig, RunConfig
from yolofuse_scale.engine.strategy.launch import strategy_name
from yolofuse_scale.errors import DistributedSetupError

#: The configs shipped inside the package (``yolofuse_scale/configs/{deepspeed,accelerate}/``): found
#: the same way from a checkout and from an installed wheel. The checkout's ``ds_configs/`` and
#: ``configs/accelerate/`` are symlinks to these folders, so there is one copy of each file. A wheel
#: installs as plain files, so this Traversable is a filesystem path (``str`` of it opens).
PACKAGED_CONFIGS = resources.files("yolofuse_scale") / "configs"


def deepspeed_config(path: str, cfg: RunConfig, world_size: int, origin: str = "--deepspeed") -> dict:
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
    if cfg.parallel.mixed_precision == "bf16":
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif cfg.parallel.mixed_precision == "fp16":
        # Stage 0 too: there the run used to train in fp32 without a word (nothing enables autocast).
        raise DistributedSetupError(
            f"{path}: --mixed-precision fp16 under ZeRO (stage {stage}): DeepSpeed's autocast mode has no loss scaler "
            "and its fp16 mode casts BatchNorm; use bf16 (or fp16 with DDP/FSDP, which scale the loss)"
        )
    if cfg.checkpoint.save_on_each_node:
        # Each node's local rank 0 writes the engine's model-states file (by default only global
        # rank 0 does, and the other nodes could not resume from their own disk); every rank writes
        # its optimizer partition either way.
        ds.setdefault("checkpoint", {})["use_node_local_storage"] = True
    if any(zero.get(k, {}).get("device", "none") != "none" for k in ("offload_optimizer", "offload_param")):
        # Let the loop's torch optimizer step the offloaded partitions (DeepSpeed otherwise demands
        # its CPUAdam, a JIT-compiled op whose update differs from torch's).
        ds.setdefault("zero_force_ds_cpu_optimizer", False)
    wanted = {
        "train_micro_batch_size_per_gpu": cfg.train.batch_size,
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "train_batch_size": cfg.train.batch_size * cfg.train.grad_accum * world_size,
        "gradient_clipping": float(cfg.optim.clip_grad),
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


def deepspeed_file(cfg: ParallelConfig) -> tuple[str, str]:
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


def release_shm_workspace(rank: int | None = None) -> None:
    """Unlink this rank's shared-memory segment of DeepSpeed's CPU communication op.

    The op (``deepspeed/ops/csrc/cpu/comm/shm.cpp``) maps one ~66 MB ``/dev/shm`` segment per rank,
    named ``deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``, and never unlinks
    it: each DeepSpeed run on CPU left 66 MB x ranks of RAM in tmpfs until reboot (a test suite, gigabytes).
    Called after the run's last collective (and on failure): unlinking drops the name only; a peer
    still exiting keeps its mapping. A no-op where the op did not run (GPU, other strategies).
    """
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{rank}")
    with contextlib.suppress(OSError):
        (Path("/dev/shm") / name).unlink()


def quiet_deepspeed_notices(cpu_only: bool) -> None:
    """Before DeepSpeed is imported (by a DeepSpeed run, or by Accelerate's FSDP2 ``prepare``, whose unwrap imports it
    whenever it is installed): keep out the notices that say nothing the run's own lines do not, each by its
    message on the logger that emits it (``console.silence``), nothing else of those loggers:

    - "You are using ZeRO with an untested optimizer": DeepSpeed tests only its list of Adam variants; the
      optimizer here is the loop's own torch SGD/AdamW over its three parameter groups, which ZeRO-1/2/3 train
      to DDP's result in this project's tests (tests/test_deepspeed.py, tests/test_strategies.py).
    - ``cpu_only`` (no CUDA: CPU is the only accelerator there is): DeepSpeed's "Setting accelerator to CPU. If you
      have GPU ... we were unable to detect it" (on every rank) and torch's "No CUDA runtime is found, using
      CUDA_HOME" when DeepSpeed's op builder imports ``torch.utils.cpp_extension``. With a GPU both stay: there
      they would mean something.
    - DeepSpeed's ZeRO calls torch's deprecated ``all_gather_into_tensor`` (a FutureWarning per rank): a
      dependency's deprecation, nothing to act on here; dropped by its exact message, for that category only.
    """
    from yolofuse_scale.engine.console import silence

    silence("DeepSpeed", "You are using ZeRO with an untested optimizer")
    if cpu_only:
        silence("DeepSpeed", "Setting accelerator to CPU")
        silence("torch.utils.cpp_extension", "No CUDA runtime is found")
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)
