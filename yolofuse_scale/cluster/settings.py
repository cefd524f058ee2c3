"""How a Ray launch is asked for: ``train --engine ray`` and its ``--ray-*`` flags, read without importing Ray.

These are launcher settings, like torchrun's ``--nproc_per_node``: they say where the one training loop runs,
not what it trains, so they are no part of the run's configuration (``config.yaml`` holds none of them and
``train --config`` reruns the run under any launcher). What they decide:

- ``--ray-workers N`` (a fixed world size) or ``MIN-MAX`` (an elastic range: Ray Train starts as many workers
  as the cluster has room for, at least MIN, and restarts the group at another size when nodes come and go;
  ``elastic.py`` holds the rules a world-size change must follow);
- ``--ray-cpus-per-worker`` and ``--ray-gpus-per-worker``: each worker's resources (one GPU per worker for a
  GPU run; the CPU count is also the worker's thread count);
- ``--ray-max-failures``: how many times Ray restarts a failed worker group (from the latest checkpoint);
- ``--ray-address``: an existing cluster (``auto``, ``ray://...``, ``HOST:PORT``); none: ``RAY_ADDRESS`` if
  set, else a local cluster of this machine, started for the run and stopped after it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

ENGINES = ("launcher", "ray")


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray run is: the worker range, each worker's resources, restarts, the cluster."""

    min_workers: int = 2
    max_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 3
    address: str | None = None

    @property
    def elastic(self) -> bool:
        return self.max_workers != self.min_workers

    @property
    def num_workers(self) -> int | tuple[int, int]:
        """Ray Train's ``ScalingConfig(num_workers=...)``: an int, or (min, max) for an elastic range."""
        return (self.min_workers, self.max_workers) if self.elastic else self.min_workers

    def describe(self) -> str:
        workers = f"{self.min_workers}-{self.max_workers} (elastic)" if self.elastic else str(self.min_workers)
        gpus = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return f"{workers} Ray worker(s) of {self.cpus_per_worker:g} CPU{gpus}"


def worker_range(text: str) -> tuple[int, int]:
    """``--ray-workers``: ``N`` or ``MIN-MAX`` (argparse type: a bad value is one usage error)."""
    lo, sep, hi = text.partition("-")
    try:
        low, high = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a worker count N or an elastic range MIN-MAX "
                                         "(e.g. 2 or 2-8)") from None
    if low < 1 or high < low:
        raise argparse.ArgumentTypeError(f"{text!r}: the count must be >= 1 and MIN <= MAX (e.g. 2 or 2-8)")
    return low, high


def _non_negative(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
        return value
    return parse


def add_ray_arguments(parser: argparse.ArgumentParser, engine: bool = True) -> None:
    """The ``ray`` flag group; ``engine``: with ``--engine`` (``train``; ``tune`` always runs on Ray)."""
    group = parser.add_argument_group(
        "ray", "where the loop runs: --engine ray starts Ray Train workers (docs/multinode.md, 'Ray'); launcher "
               "settings, not saved in config.yaml")
    if engine:
        group.add_argument("--engine", choices=ENGINES, default="launcher",
                           help="launcher: this process is one rank of whatever started it (python, torchrun, "
                                "accelerate, deepspeed, srun); ray: start --ray-workers Ray Train workers, each "
                                "running this same training, on a Ray cluster (default: launcher)")
    group.add_argument("--ray-workers", type=worker_range, default=None, metavar="N|MIN-MAX",
                       help="Ray Train workers (one process each, a rank of the job): N, or an elastic range MIN-MAX "
                            "(needs --global-batch-size; not ZeRO-3) (default: 2)")
    group.add_argument("--ray-cpus-per-worker", type=_non_negative(float), default=None, metavar="C",
                       help="CPUs reserved per worker, also its thread count (default: 1)")
    group.add_argument("--ray-gpus-per-worker", type=_non_negative(float), default=None, metavar="G",
                       help="GPUs per worker: 1 for a GPU run (NCCL), 0 for CPU (gloo) (default: 0)")
    group.add_argument("--ray-max-failures", type=_non_negative(int), default=None, metavar="N",
                       help="restarts of a failed worker group, each from the latest checkpoint (default: 3)")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="the Ray cluster: auto, ray://HOST:10001 or HOST:6379 (default: $RAY_ADDRESS, else a "
                            "local cluster of this machine for the run)")


def ray_settings(args: argparse.Namespace) -> RaySettings:
    """The flags' settings (defaults where a flag is absent)."""
    d = RaySettings()
    low, high = args.ray_workers or (d.min_workers, d.max_workers)
    pick = lambda v, default: default if v is None else v  # noqa: E731
    return RaySettings(low, high, pick(args.ray_cpus_per_worker, d.cpus_per_worker),
                       pick(args.ray_gpus_per_worker, d.gpus_per_worker), pick(args.ray_max_failures, d.max_failures),
                       args.ray_address)


def ray_flags_given(args: argparse.Namespace) -> list[str]:
    """The ``--ray-*`` flags given on the command line (refused without ``--engine ray``)."""
    keys = ("ray_workers", "ray_cpus_per_worker", "ray_gpus_per_worker", "ray_max_failures", "ray_address")
    return ["--" + k.replace("_", "-") for k in keys if getattr(args, k, None) is not None]
