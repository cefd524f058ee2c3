"""What a Ray launch may ask for, decided in the driver before Ray starts: every refusal names the way out.

- ``--engine ray`` starts its own workers, so it runs as one plain process, not under another launcher.
- The run folder is Ray's experiment folder on its storage (``train.py``), which every node of the cluster must
  reach: ``--save-on-each-node`` (node-local copies) is refused.
- An elastic range (``--ray-workers MIN-MAX``) restarts the run at any world size in the range, and a resume at
  another world size follows the project's rules (docs/checkpoints.md): the images per optimizer step must stay
  (``--global-batch-size G`` with G a multiple of ``--batch-size`` x every world size in the range: refused
  otherwise, naming the sizes it fails for and the smallest G that fits); DDP and FSDP2 then continue bit for
  bit, ZeRO-1/2 re-partition their whole optimizer state (equal within float rounding: said in a note), and
  ZeRO-3, whose checkpoints resume at their own world size only, is refused with a fixed ``--ray-workers N``
  or another strategy as the way out.
"""

from __future__ import annotations

import json
import math
from functools import reduce

from yolofuse_scale.cluster.settings import RaySettings
from yolofuse_scale.config import RunConfig
from yolofuse_scale.engine.strategy.launch import launched, strategy_name
from yolofuse_scale.errors import ConfigError, DistributedSetupError


def check_ray_launch(cfg: RunConfig, settings: RaySettings) -> list[str]:
    """Refuse a Ray launch that cannot work (see the module docstring); return notes for the log."""
    if launched():
        raise DistributedSetupError(
            "--engine ray starts its own Ray Train workers: run it as one plain process (yolofuse-scale train ... "
            "--engine ray), not under torchrun, accelerate launch, deepspeed or srun")
    if cfg.checkpoint.save_on_each_node:
        raise ConfigError(
            "--save-on-each-node with --engine ray: the run folder is Ray's experiment folder on its storage, which "
            "every node must reach (a shared file system); drop the flag and put --output-dir on shared storage",
            settings=("save_on_each_node",))
    return check_elastic(cfg, settings) if settings.elastic else []


def zero_stage(cfg: RunConfig) -> int | None:
    """The ZeRO stage of a DeepSpeed run (its JSON's ``zero_optimization.stage``), None for DDP and FSDP."""
    if strategy_name(cfg.parallel) != "deepspeed":
        return None
    from yolofuse_scale.engine.strategy.deepspeed import deepspeed_file

    path, _ = deepspeed_file(cfg.parallel)
    try:
        with open(path) as fh:
            return int(json.load(fh).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # the strategy module refuses the file with its own message when the run starts


def check_elastic(cfg: RunConfig, settings: RaySettings) -> list[str]:
    """An elastic worker range: the world-size-change rules (module docstring); notes for the log."""
    lo, hi = settings.min_workers, settings.max_workers
    workers = f"--ray-workers {lo}-{hi}"
    stage = zero_stage(cfg)
    if stage == 3:
        raise DistributedSetupError(
            f"{workers} is an elastic range, and ZeRO-3 checkpoints resume at the world size that wrote them only "
            f"(its partitions are per rank): give a fixed --ray-workers N, or use --strategy zero2, fsdp or ddp, "
            "which resume at any world size")
    t = cfg.train
    lcm = reduce(math.lcm, range(lo, hi + 1))
    smallest = t.batch_size * lcm
    if not t.global_batch_size:
        raise ConfigError(
            f"{workers} is an elastic range: Ray may restart the run at any world size from {lo} to {hi}, and a "
            "resumed run must keep its images per optimizer step (docs/checkpoints.md); pass --global-batch-size G, "
            f"a multiple of --batch-size {t.batch_size} x every world size in the range: G = {smallest} (or a "
            "multiple of it); --grad-accum then follows the world size", settings=("global_batch_size",))
    misfit = [w for w in range(lo, hi + 1) if t.global_batch_size % (t.batch_size * w)]
    if misfit:
        raise ConfigError(
            f"--global-batch-size {t.global_batch_size} with {workers}: not a multiple of --batch-size "
            f"{t.batch_size} x {', '.join(map(str, misfit))} worker(s), world sizes Ray may restart at; use "
            f"{smallest} (or a multiple of it), or narrow the range", settings=("global_batch_size", "batch_size"))
    if stage in (1, 2):
        return [f"{workers}: a restart at another world size re-partitions ZeRO-{stage}'s whole optimizer state; "
                "it continues the run equal to an uninterrupted one within float rounding, not bit for bit "
                "(DDP and FSDP2: bit for bit)"]
    return []
