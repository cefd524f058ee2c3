"""What each Ray Train worker runs: the one ``Trainer`` of the project, unchanged, as one rank of the job.

Ray Train has set up the process group (gloo on CPU, NCCL on GPU) and the launcher's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) before this runs, so the strategy module sees a
launched run exactly as under torchrun and Accelerate joins the existing group (``engine/strategy/``).

**Where the run resumes.** A first start does what the flags say (``--resume``, ``--overwrite``, a fresh run).
Every restart resumes the folder's own run with ``--resume auto``: a restart is known by Ray's latest
checkpoint (Ray Train's own record of the run, kept in the run folder: a worker group restarted after a
failure, or the same command run again) or by this launch's claim of the folder (a group that failed before
its first checkpoint; ``report.py``). ``auto`` takes the folder's newest complete checkpoint, which is Ray's
latest or one published after it that Ray had not yet recorded when the group died; either continues the run
exactly, and ``config.yaml`` keeps ``auto``, not a path that belongs to one attempt.

**Bad input in a worker** (bad data, a refused resume: the project's :class:`~yolofuse_scale.errors.UserError`)
ends the run, not the attempt: retrying it would fail the same way, so the worker returns its message and the
driver prints it once (``train.py``). A rank whose collective broke because a peer refused returns quietly
(the peer has said why); any other exception is a failure Ray restarts the group for.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

_ERROR_KEY = "yolofuse_scale/ray_user_error"


def _store():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - no store: the message is returned by this rank alone
        return None


def _peer_error(timeout_s: float = 5.0) -> str | None:
    """The message a peer stored when its user error broke this rank's collective (None: no peer refused)."""
    store = _store()
    if store is None:
        return None
    try:
        store.wait([_ERROR_KEY], timedelta(seconds=timeout_s))
        return store.get(_ERROR_KEY).decode()
    except Exception:  # noqa: BLE001 - timed out or the store is gone: not a peer's refusal
        return None


def resume_setting(user_resume: str, launch_id: str) -> tuple[str, str | None]:
    """(the ``--resume`` this attempt uses, a note to log): see the module docstring."""
    import ray.train

    from yolofuse_scale.cluster.report import launch_claimed

    latest = ray.train.get_checkpoint()
    if latest is not None:
        return "auto", f"Ray Train restarted the run (its latest checkpoint: {latest.path}): --resume auto"
    if launch_claimed(launch_id):
        return "auto", "Ray Train restarted the worker group before its first checkpoint: --resume auto"
    return user_resume, None


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker function: build the run's config, choose where it resumes, train; the result."""
    from yolofuse_scale.startup import collector_paused

    with collector_paused():  # these import PyTorch, Accelerate, Ultralytics (startup.py; the model build too)
        from yolofuse_scale.cluster.report import RayReporter
        from yolofuse_scale.config import RunConfig
        from yolofuse_scale.engine.strategy.deepspeed import release_shm_workspace
        from yolofuse_scale.engine.trainer import Trainer
        from yolofuse_scale.errors import UserError
        from yolofuse_scale.weights import plain_meta

    cfg = RunConfig.from_dict(config["run"])
    try:
        cfg.checkpoint.resume, note = resume_setting(cfg.checkpoint.resume, config["launch_id"])
        if cfg.checkpoint.resume == "auto":
            cfg.checkpoint.overwrite = False  # only a first start moves another run's outputs aside
        reporter = RayReporter(config["launch_id"], validated_only=config.get("validated_only", False))
        trainer = Trainer(cfg, [reporter, *config.get("callbacks", ())])
        if note:
            trainer.log.info(note)
        metrics = trainer.fit()
    except UserError as e:
        message = str(e)
        store = _store()
        if store is not None:  # the first to refuse tells its peers why their collectives broke
            try:
                store.compare_set(_ERROR_KEY, "", message)
            except Exception:  # noqa: BLE001 - the store is gone: this rank's own message still returns
                pass
        return {"error": message}
    except Exception:
        peer = _peer_error() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
        if peer is None:
            raise  # a failure: Ray restarts the worker group (FailureConfig)
        return {"error": peer}
    finally:
        release_shm_workspace()
    return {"metrics": plain_meta(metrics), "output_dir": str(trainer.out)}
