"""The Ray connection of a driver: an existing cluster, or a local one started for the run; offline either way.

- **Offline**: usage statistics are off (``RAY_USAGE_STATS_ENABLED=0``, set before Ray starts, so neither the
  driver nor a local cluster it starts tries to reach the network) and a local cluster runs without the
  dashboard (no web server; ``ray[train,tune]`` does not install it: ``worker_setup.py`` covers what Ray Train
  asked it for).
- **Which cluster**: ``--ray-address`` (``auto``, ``HOST:6379``, ``ray://HOST:10001``), else ``RAY_ADDRESS``,
  else a local cluster with this machine's CPUs (and GPUs), stopped when the command ends. A driver that is
  already connected (a notebook, a test session, a Tune trial) keeps its connection.
- **What every worker of the job inherits** (the job's runtime environment): the driver's thread settings
  (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``; unset, Ray gives each worker its CPU count) and
  ``YOLOFUSE_DEBUG``, so a Ray worker computes with the threads a torchrun rank of the same command has; and
  ``worker_setup.setup_worker``, which lets Ray Train's placement-group cleaner work without a dashboard.
- **Ray Train's worker-group start timeout** is raised from 60 s to :data:`WORKER_GROUP_START_TIMEOUT_S`: Ray
  starts the group again after it and, on a loaded machine (or a node that first pulls a container), importing
  torch in every worker took longer, so the run never started.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

#: driver environment variables every Ray worker of the job gets (when set in the driver)
FORWARDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "YOLOFUSE_DEBUG", "TORCH_EXTENSIONS_DIR",
                 "TOKENIZERS_PARALLELISM", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
WORKER_GROUP_START_TIMEOUT_S = 600


def job_runtime_env() -> dict:
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return {"env_vars": env, "worker_process_setup_hook": "yolofuse_scale.cluster.worker_setup.setup_worker"}


def ray_missing_error():
    from yolofuse_scale.errors import DistributedSetupError

    return DistributedSetupError("--engine ray and `yolofuse-scale tune` need Ray Train and Ray Tune: pip install "
                                 "'yolofuse-scale[ray]' (or `make install`)")


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Connect (or start a local cluster) for the block; yields whether the cluster is local and ours."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # the driver passes it on to Ray Train's controller (module docstring)
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(WORKER_GROUP_START_TIMEOUT_S))
    try:
        import ray
    except ImportError:
        raise ray_missing_error() from None
    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"runtime_env": job_runtime_env(), "logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # A local cluster: Ray Train's metrics export (no dashboard to read them) and its preemption watcher
        # (no spot nodes here) would each cost an actor process at every start.
        os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(include_dashboard=False, **kwargs)
    try:
        yield not address
    finally:
        ray.shutdown()
