"""The Ray connection of a driver: an existing cluster, or a local one started for the run; offline either way.

- **Offline**: usage statistics are off (``RAY_USAGE_STATS_ENABLED=0``, set before Ray starts, so neither the
  driver nor a local cluster it starts tries to reach the network) and a local cluster runs without the
  dashboard (no web server, seconds less at start).
- **Which cluster**: ``--ray-address`` (``auto``, ``HOST:6379``, ``ray://HOST:10001``), else ``RAY_ADDRESS``,
  else a local cluster with this machine's CPUs (and GPUs), stopped when the command ends. A driver that is
  already connected (a notebook, a test session, a Tune trial) keeps its connection.
- **What every worker of the job inherits** (the job's runtime environment): the driver's thread settings
  (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``; unset, Ray gives each worker its CPU count) and
  ``YOLOFUSE_DEBUG``, so a Ray worker computes with the threads a torchrun rank of the same command has; and a
  setup hook that silences one message of Ray Train's placement-group cleaner, which asks the dashboard's state
  API whether the controller lives and, without a dashboard, warns every second that it cannot tell (the
  cleaner still removes a dead controller's placement group when the cluster ends).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

#: driver environment variables every Ray worker of the job gets (when set in the driver)
FORWARDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "YOLOFUSE_DEBUG", "TORCH_EXTENSIONS_DIR",
                 "TOKENIZERS_PARALLELISM", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
#: loggers quieter in Ray's worker processes: the cleaner's warning (module docstring), and Accelerate's INFO
#: lines ("Saving current state to ..."), which Ray's logging set-up shows and a torchrun rank does not
_QUIET = {"ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
          "accelerate": logging.WARNING}


def quiet_ray_logs() -> None:
    """Runs in every worker process of the job (Ray's ``worker_process_setup_hook``): see the module docstring."""
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)


def job_runtime_env() -> dict:
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return {"env_vars": env, "worker_process_setup_hook": f"{__name__}.quiet_ray_logs"}


def ray_missing_error():
    from yolofuse_scale.errors import DistributedSetupError

    return DistributedSetupError("--engine ray and `yolofuse-scale tune` need Ray Train and Ray Tune: pip install "
                                 "'yolofuse-scale[ray]' (or `make install`)")


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Connect (or start a local cluster) for the block; yields whether the cluster is local and ours."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
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
