"""The experiment trackers of ``--log-with``: whether they are installed, where each writes, what each records.

They are Accelerate's tracker classes (``Accelerator(log_with=...)``, ``accelerator.log``): they run on the
job's main process only, and all three write inside the run folder, never to the network:

=============  ==============================================  =================================================
tracker        where (in ``--output-dir``)                      read it with
=============  ==============================================  =================================================
tensorboard    ``tensorboard/yolofuse-scale/`` (event files;   ``tensorboard --logdir <out>/tensorboard``
               the config in a timestamped subfolder)
mlflow         ``mlruns/``: a local file store (``file:`` URI), ``mlflow ui --backend-store-uri file:<out>/mlruns``
               experiment ``yolofuse-scale``, run named by the
               run id (run.json); a resume continues that run
wandb          ``wandb/offline-run-*/``: always offline         ``wandb sync <out>/wandb/offline-run-*``
               (``WANDB_MODE=offline``, no login, no network),
               run id and name = the run id
=============  ==============================================  =================================================

What each records: per epoch, with the epoch's number (1, 2, ...) as the tracker's step, the epoch's mean
training losses (``train/loss``, ``train/box_loss``, ``train/cls_loss``, ``train/dfl_loss``), ``lr`` (its last
step's), ``train/images_per_s``, ``time/epoch_s`` and, when the epoch was validated, ``metrics/precision``,
``metrics/recall``, ``metrics/mAP50``, ``metrics/mAP50-95`` (results.csv's names without its ``(B)``, which
MLflow refuses in a metric name) and ``val/box_loss``, ``val/cls_loss``, ``val/dfl_loss``. Once per launch, the
resolved configuration as ``section.key`` parameters. At the end, every image the run folder holds (results.png,
the final validation's curves and matrices, labels.jpg, the batch previews): images in TensorBoard and W&B,
artifacts under ``plots/`` in MLflow, with ``config.yaml`` (MLflow: an artifact, TensorBoard: a text). Per-step
numbers stay in ``train_log.jsonl``: trackers get epochs, the axis an Ultralytics user reads (W&B needs one
increasing step axis, so not both).

MLflow's file store is in maintenance mode (MLflow 3.18, the version tested here, refuses it unless
``MLFLOW_ALLOW_FILE_STORE`` is set); its alternative, a SQLite store, needs SQLAlchemy, which ``mlflow-skinny`` (the
``trackers`` extra) does not install. So the run sets that variable for its own process: one folder of plain
files, as TensorBoard's.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from yolofuse_scale.errors import ConfigError

#: The tracker's name in ``--log-with`` -> the modules whose presence makes it usable (any one of them).
MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}
#: W&B project, MLflow experiment, TensorBoard's subfolder.
PROJECT = "yolofuse-scale"
#: Each tracker's folder in the run folder.
FOLDERS = {"tensorboard": "tensorboard", "mlflow": "mlruns", "wandb": "wandb"}
INSTALL = "pip install 'yolofuse-scale[trackers]'"
#: Run-folder entries whose images are no plots: data, checkpoints, weights, trackers, caches, earlier runs.
NOT_PLOTS = {"synthetic", "replaced", "checkpoints", "weights", "scan_cache", "pair_cache", *FOLDERS.values()}
MAX_IMAGES = 32


def check_installed(names: tuple[str, ...] | list[str]) -> None:
    """Refuse trackers whose package is missing, naming it and the extra that installs it.

    ``find_spec`` only (no import: MLflow takes ~5 s to import, W&B ~3 s, and every rank checks the flags).
    Called with the flags (``config/flags.py``) and again where the Accelerator is built, so a ``Trainer``
    built in Python is refused the same way: before any data is read, not with Accelerate's warning and a run
    that tracks nothing.
    """
    missing = [n for n in names if not any(_findable(m) for m in MODULES[n])]
    if missing:
        flag = ",".join(names)
        what = " and ".join(missing)
        raise ConfigError(f"--log-with {flag}: {what} {'is' if len(missing) == 1 else 'are'} not installed "
                          f"({INSTALL} installs TensorBoard, MLflow and W&B; or drop {what} from --log-with)",
                          settings=("log_with",))


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken package (its parent fails to import), or a module without spec
        return False


def accelerator_log_with(names: tuple[str, ...], project_dir: str | None) -> dict[str, Any]:
    """``Accelerator`` arguments for ``names``: ``log_with`` and TensorBoard's ``logging_dir`` (the run folder's
    ``tensorboard/``; Accelerate adds the project name under it)."""
    check_installed(names)
    if not names:
        return {"log_with": None, "logging_dir": None}
    return {"log_with": list(names),
            "logging_dir": str(Path(project_dir) / FOLDERS["tensorboard"]) if project_dir else None}


def mlflow_uri(out: Path) -> str:
    return (Path(out).resolve() / FOLDERS["mlflow"]).as_uri()


def start(accelerator, out: Path, run_id: str | None, config: dict[str, Any]) -> list[str]:
    """Start the trackers of ``accelerator`` and store the configuration: on the job's main process only (the
    others never start them, so ``accelerator.trackers`` stays empty there and ``log_files`` does nothing).

    Returns the lines to log: where each writes and how to read it.
    """
    names = [str(t) for t in accelerator.log_with]
    out = Path(out)
    kwargs: dict[str, dict[str, Any]] = {}
    lines = []
    if "wandb" in names:
        os.environ["WANDB_MODE"] = "offline"  # also for W&B's own service process
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner and end-of-run table: the lines below say where
        import wandb

        # console="off": W&B would otherwise wrap sys.stdout to copy it into the run (the log is in the folder)
        kwargs["wandb"] = {"dir": str(out), "mode": "offline", "id": run_id, "name": run_id, "resume": "allow",
                           "settings": wandb.Settings(console="off", silent=True)}
        lines.append(f"tracking: W&B offline run in {out / FOLDERS['wandb']} (wandb sync "
                     f"{out / FOLDERS['wandb']}/offline-run-*)")
    if "mlflow" in names:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # see the module docstring
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri(out))
        kwargs["mlflow"] = {"run_name": run_id, "run_id": _mlflow_run(run_id)}
        lines.append(f"tracking: MLflow file store {out / FOLDERS['mlflow']} (mlflow ui --backend-store-uri "
                     f"{mlflow_uri(out)})")
    if "tensorboard" in names:
        lines.append(f"tracking: TensorBoard in {out / FOLDERS['tensorboard']} (tensorboard --logdir "
                     f"{out / FOLDERS['tensorboard']})")
    accelerator.init_trackers(PROJECT, config=None, init_kwargs=kwargs)
    flat = {k: v for k, v in _flatten(config).items() if isinstance(v, (int, float, str, bool))}
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow":
            _store_mlflow_params(tracker, flat)
        else:
            tracker.store_init_configuration(flat)
    return lines


def _mlflow_run(run_id: str | None) -> str | None:
    """The MLflow run of this run id in the store (a resume continues it), or None: a new one."""
    if run_id is None:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(PROJECT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_id}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def _store_mlflow_params(tracker, flat: dict[str, Any]) -> None:
    """The configuration as MLflow parameters; on a resumed MLflow run only those it lacks. MLflow refuses to
    change a logged parameter, and a resume changes some (``resume``, an extended ``epochs``): the resumed
    launch's whole configuration reaches the run as its ``config.yaml`` artifact at the end."""
    import mlflow

    logged = mlflow.get_run(tracker.active_run.info.run_id).data.params
    new = {k: v for k, v in flat.items() if k not in logged}
    if new:
        tracker.store_init_configuration(new)


def log_epoch(accelerator, values: dict[str, float], epoch: int) -> None:
    """One epoch's values (``console.Console.end_epoch``) at step ``epoch`` (1-based)."""
    if accelerator.trackers and values:
        accelerator.log(values, step=epoch)


def run_images(out: Path) -> list[Path]:
    """The images (PNG/JPEG) in the run folder and its plot subfolders, sorted, at most :data:`MAX_IMAGES`."""
    out = Path(out)
    found = [p for p in out.iterdir() if p.is_file() and _is_image(p)] if out.is_dir() else []
    for folder in sorted(out.iterdir()) if out.is_dir() else []:
        if folder.is_dir() and folder.name not in NOT_PLOTS and not folder.name.startswith("."):
            found += [p for p in folder.iterdir() if p.is_file() and _is_image(p)]
    return sorted(found)[:MAX_IMAGES]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in (".png", ".jpg", ".jpeg")


def log_files(accelerator, out: Path) -> None:
    """At the end of training: the run folder's images and config.yaml, to every tracker (main process)."""
    if not accelerator.trackers:
        return
    out = Path(out)
    images, config = run_images(out), out / "config.yaml"
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            import cv2

            for path in images:
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is not None:
                    tracker.writer.add_image(f"plots/{_tag(out, path)}", bgr[:, :, ::-1].copy(), dataformats="HWC")
            if config.is_file():
                tracker.writer.add_text("config.yaml", "```\n" + config.read_text() + "\n```")
            tracker.writer.flush()
        elif tracker.name == "mlflow":
            import mlflow

            for path in images:
                mlflow.log_artifact(str(path), artifact_path="plots")
            if config.is_file():
                mlflow.log_artifact(str(config))
        elif tracker.name == "wandb":
            import wandb

            if images:  # (the configuration is the run's W&B config already: its files/config.yaml)
                tracker.run.log({f"plots/{_tag(out, p)}": wandb.Image(str(p)) for p in images})


def _tag(out: Path, path: Path) -> str:
    return path.relative_to(out).with_suffix("").as_posix()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat
