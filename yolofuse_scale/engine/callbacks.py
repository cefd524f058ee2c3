"""The loop's callback events (``Callback``): what a benchmark, the Python API (``api.py``) or the Ray engine
(``cluster/report.py``) hooks into, documented in docs/training.md ("Callbacks")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yolofuse_scale.engine.state import TrainState
    from yolofuse_scale.engine.trainer import Trainer


class Callback:
    """Hooks the loop calls on every rank, in this order; subclass and override the ones you need (the rest do
    nothing), or pass any object with some of these methods. docs/training.md ("Callbacks") lists them.

    ``on_train_start(trainer)``: once per launch, after the resume (if any) is loaded, before the first step;
    ``trainer.state`` holds the position (step, epoch), ``trainer.cfg`` the settings, ``trainer.out`` the folder.
    ``on_epoch_start(epoch)``: entering the epoch's loop, just before its step clock starts (0-based epoch).
    ``on_step_end(record)``: after each optimizer step (and EMA update), before ``record`` is written to
    train_log.jsonl (by the main process): keys a callback adds are logged with the step. Neither hook
    runs inside a step's ``step_time_s``. benchmarks/compare_ultralytics.py reads the CPU clock in both.
    ``on_epoch_end(epoch, metrics)``: after the epoch's validation and checkpoint (0-based epoch); ``metrics``:
    that epoch's validation (mAP50, mAP50-95, precision, recall, fitness, per_class, ...), ``{}`` when the epoch
    was not validated (--no-val). Not called for an epoch that --max-steps cuts short.
    ``on_fit_end(metrics)``: once per launch, after metrics.json is written: the last validation's metrics (those
    of metrics.json), however the run ended (its epochs, --max-steps, --patience).
    ``on_checkpoint(path, state, metrics)``: after each checkpoint is complete on every rank (epoch ends,
    ``--save-every-steps``, a ``--max-steps`` stop): ``path`` its ``checkpoints/step_<n>`` folder, ``state`` the
    loop position (``step``, ``epoch``: epochs done, ``step_in_epoch``: 0 at an epoch end), ``metrics`` the
    validation of these very weights, its losses included (``box_loss``, ...; ``{}`` when this step was not
    validated). The Ray engine reports each
    checkpoint to Ray Train from here (``cluster/report.py``); a callback may leave this hook out.
    """

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step_end(self, record: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, metrics: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, path: Path, state: TrainState, metrics: dict[str, Any]) -> None:
        pass
