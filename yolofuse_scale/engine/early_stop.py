"""``--patience N``: end the run once N validated epochs have passed without a better fitness.

Ultralytics' EarlyStopping rule, restated: after each validated epoch, the epoch counts as the best when its
fitness is greater than the best so far, or when the best so far is still zero (an untrained model scores
0 for a while: those epochs do not use up the patience); the run stops after the epoch that is ``patience``
epochs after the best one. ``patience`` 0 never stops. An epoch that is not validated (``--no-val``) changes
nothing, so a run without validation never stops early.

The state is two numbers, the best fitness by this rule and its epoch, saved in every checkpoint's
``train_state.json`` (``early_stopping``), so a resumed run stops after the same epoch as an uninterrupted one;
a change of ``--patience`` on resume applies from there. The fitness is the validation's, computed from every
rank's gathered results: the same number on every rank, so all ranks stop together at any world size.
Checkpoints written before it was saved start counting at the resume (their best epoch is taken to be the last
finished one).
"""

from __future__ import annotations

from typing import Any


class EarlyStopping:
    """The best validated fitness by Ultralytics' rule and its (0-based) epoch; -1: no validated epoch yet."""

    def __init__(self) -> None:
        self.best_fitness = -1.0
        self.best_epoch = -1

    def update(self, epoch: int, fitness: float) -> None:
        """Epoch ``epoch`` was validated with ``fitness``."""
        if fitness > self.best_fitness or self.best_fitness <= 0:
            self.best_fitness, self.best_epoch = fitness, epoch

    def exhausted(self, finished_epochs: int, patience: int) -> bool:
        """Whether a run that has finished ``finished_epochs`` epochs must stop now."""
        return patience > 0 and self.best_epoch >= 0 and finished_epochs - 1 - self.best_epoch >= patience

    def to_json(self) -> dict[str, Any]:
        return {"best_fitness": self.best_fitness, "best_epoch": self.best_epoch}

    def restore(self, saved: dict[str, Any] | None, finished_epochs: int, best_fitness: float) -> None:
        """From a checkpoint's ``early_stopping`` (None: an older checkpoint, see the module docstring)."""
        if saved is None:
            self.best_fitness = best_fitness
            self.best_epoch = finished_epochs - 1 if best_fitness >= 0 else -1
            return
        self.best_fitness, self.best_epoch = float(saved["best_fitness"]), int(saved["best_epoch"])
