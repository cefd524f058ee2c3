"""What the launcher asked for, read from its environment, and the launch checks that follow from it.

``torchrun``, ``accelerate launch`` and ``deepspeed`` announce a run through environment variables
(``WORLD_SIZE``, ``LOCAL_RANK``, ``ACCELERATE_USE_*``). This module reads them and picks the strategy
(a flag wins, but a flag that contradicts the accelerate config is refused, naming both), refuses a
launch whose processes would silently train independently of each other (``WORLD_SIZE > 1`` that
Accelerate left undistributed), and sets up the process group where the default would fail or hang:
under an elastic restart (keys unique to the attempt) and for DeepSpeed without a launcher (a world
of one).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from yolofuse_scale.errors import DistributedSetupError

if TYPE_CHECKING:  # annotations only: the config package imports this module (devices.py)
    from yolofuse_scale.config import ParallelConfig

#: What the launcher declared (``accelerate launch --config_file``), read before any Accelerator of
#: this process exists: constructing one with a plugin writes these variables too.
LAUNCH_ENV = {k: os.environ.get(k, "") for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")}


def launched_world_size() -> int:
    """World size announced by the launcher's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate, deepspeed) started this process."""
    return "LOCAL_RANK" in os.environ or launched_world_size() > 1


def strategy_name(cfg: ParallelConfig) -> str:
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


def check_strategy_flags(cfg: ParallelConfig, env: dict[str, str] | None = None) -> None:
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


def check_distributed(accelerator: Accelerator) -> None:
    """Refuse a launch whose processes would silently train independently of each other."""
    world = launched_world_size()
    if world > 1 and (accelerator.distributed_type == DistributedType.NO or accelerator.num_processes != world):
        raise DistributedSetupError(
            f"launched with WORLD_SIZE={world} but Accelerate set up {accelerator.distributed_type} with "
            f"{accelerator.num_processes} process(es): each process would train alone. Check the accelerate "
            "config (distributed_type, num_processes) and that torch.distributed is available."
        )


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
