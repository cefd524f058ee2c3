"""``train --engine ray``: one run of the loop on Ray Train workers (``TorchTrainer``), from this driver process.

**The run folder is Ray's experiment folder.** ``--output-dir`` is split into Ray's ``storage_path`` (its parent)
and the run's ``name`` (its last part), so Ray Train's own record of the run (``checkpoint_manager_snapshot.json``
and a storage marker, beside ``run.json``) and our checkpoints share one folder, and each checkpoint is reported
to Ray where it lies (``report.py``: no copy). The folder must be on storage every worker node reaches: a local
path for a one-machine cluster, a shared file system (NFS, Lustre, EFS, Filestore) for several machines
(docs/multinode.md, "Ray").

**Restarts.** ``--ray-max-failures N``: Ray Train restarts a failed worker group (a killed worker, a lost node) up
to N times; each restart resumes the folder's run from its newest checkpoint (``worker.py``), exactly as an
uninterrupted run would have continued. Running the same command again after the job ended (or died) does the
same from Ray's latest checkpoint. An elastic ``--ray-workers MIN-MAX`` may restart at another world size, under
the rules of ``rules.py``.

**Paths.** Ray Train workers run in a working directory of Ray's, so every path of the config (``--data``, a
model YAML, ``--pretrained``, ``--deepspeed``, ``--output-dir``, ``--resume``) is made absolute here, as the
driver sees it; on a multi-machine cluster they must name shared storage too.

Bad input a worker finds (data, a refused resume) ends the run with the worker's one message (no retry); Ray's
failures that outlast ``--ray-max-failures`` end it with Ray's error.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from yolofuse_scale.cluster.rules import check_ray_launch
from yolofuse_scale.cluster.session import ray_missing_error, ray_session
from yolofuse_scale.cluster.settings import RaySettings
from yolofuse_scale.config import RunConfig
from yolofuse_scale.config.sections import is_model_file
from yolofuse_scale.errors import ConfigError, UserError

#: Ray Train's record of a run, in its experiment folder (written by Ray; read back when the run restarts)
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


class RayRunError(UserError, RuntimeError):
    """A Ray worker refused the run (bad data, a refused resume, ...): its message, printed once by the driver."""


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every file and folder path absolute (the workers' working directory is Ray's)."""
    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve()) if path else path

    model = cfg.model.model
    return replace(
        cfg,
        data=replace(cfg.data, data=absolute(cfg.data.data)),
        model=replace(cfg.model, model=absolute(model) if is_model_file(model) else model,
                      pretrained=absolute(cfg.model.pretrained)),
        parallel=replace(cfg.parallel, deepspeed=absolute(cfg.parallel.deepspeed)),
        checkpoint=replace(cfg.checkpoint, output_dir=absolute(cfg.checkpoint.output_dir),
                           resume=cfg.checkpoint.resume if cfg.checkpoint.resume in ("", "auto")
                           else absolute(cfg.checkpoint.resume)))


def check_overwrite(cfg: RunConfig) -> None:
    """``--overwrite`` into a folder Ray Train would resume: refused (Ray restores its record of the run there)."""
    out = Path(cfg.checkpoint.output_dir)
    if cfg.checkpoint.overwrite and (out / RAY_SNAPSHOT).is_file():
        raise ConfigError(
            f"--overwrite with --engine ray: {out} holds a Ray Train run ({out / RAY_SNAPSHOT}), which Ray resumes "
            "from its latest checkpoint whatever the flags say; write to a new --output-dir, or remove that folder "
            "first", settings=("overwrite",))


def torch_trainer(cfg: RunConfig, settings: RaySettings, train_loop_config: dict[str, Any],
                  callbacks: Sequence = ()):
    """The ``TorchTrainer`` of one run: workers, resources, process group, storage, restarts."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from yolofuse_scale.cluster.worker import train_worker

    out = Path(cfg.checkpoint.output_dir)
    resources = {"CPU": settings.cpus_per_worker}
    if settings.gpus_per_worker:
        resources["GPU"] = settings.gpus_per_worker
    return TorchTrainer(
        train_worker,
        train_loop_config=train_loop_config,
        # Ray creates the process group (gloo on CPU, NCCL with GPUs) with the run's collective timeout;
        # Accelerate then joins it (engine/strategy/accelerator.py).
        torch_config=TorchConfig(timeout_s=cfg.parallel.dist_timeout),
        scaling_config=ray.train.ScalingConfig(num_workers=settings.num_workers,
                                               use_gpu=settings.gpus_per_worker > 0,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=out.name, storage_path=str(out.parent), callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            # our --keep-last prunes the checkpoints; Ray keeps its record of every one it was told of
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None)),
    )


def prepare(cfg: RunConfig, settings: RaySettings) -> tuple[RunConfig, list[str]]:
    """The refusals a driver makes before Ray starts, and the config the workers get (absolute paths; without
    ``--output-dir`` the run folder chosen here, once, as ``--project``/``--name`` say: engine/run_dir.py)."""
    from yolofuse_scale.engine.run_dir import resolve_output_dir

    notes = check_ray_launch(cfg, settings)
    if not cfg.checkpoint.output_dir:
        out, why = resolve_output_dir(cfg.checkpoint)
        cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, output_dir=str(out)))
        notes.append(why)
    cfg = absolute_paths(cfg)
    check_overwrite(cfg)
    return cfg, notes


def run_on_ray(cfg: RunConfig, settings: RaySettings, callbacks: Sequence = ()) -> tuple[dict[str, Any], Path]:
    """Train ``cfg`` on Ray Train workers (module docstring); the final metrics (as ``Trainer.fit`` returns them) and
    the run folder.

    ``callbacks``: Trainer callbacks, pickled to every worker (each rank calls its own copy)."""
    cfg, notes = prepare(cfg, settings)
    try:
        import ray.train  # noqa: F401
    except ImportError:
        raise ray_missing_error() from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    config = {"run": cfg.to_dict(), "launch_id": uuid.uuid4().hex, "callbacks": list(callbacks)}
    started = time.monotonic()
    with ray_session(settings.address):
        print(f"{settings.describe()} on Ray, run folder {cfg.checkpoint.output_dir} (Ray storage "
              f"{Path(cfg.checkpoint.output_dir).parent}, run {Path(cfg.checkpoint.output_dir).name})", flush=True)
        result = torch_trainer(cfg, settings, config).fit()
    outcome = result.return_value or {}
    if "error" in outcome:
        raise RayRunError(outcome["error"])
    print(f"Ray run finished in {time.monotonic() - started:.1f} s: {cfg.checkpoint.output_dir}", flush=True)
    return outcome.get("metrics", {}), Path(cfg.checkpoint.output_dir)
