"""The loop's position and EMA (``TrainState``): what every checkpoint saves of the loop, as JSON plus the EMA's
tensors (nothing pickled), and what a resume restores."""

from __future__ import annotations

from typing import Any

import torch

from yolofuse_scale.engine import checkpoint as ckpt
from yolofuse_scale.engine.early_stop import EarlyStopping
from yolofuse_scale.engine.ema import ShardedEMA
from yolofuse_scale.weights import plain_meta


class TrainState:
    """Loop position and EMA, saved in every checkpoint as JSON + safetensors (nothing pickled)."""

    def __init__(self, ema: ShardedEMA | None):
        self.step = 0  # optimizer steps done
        self.epoch = 0  # current epoch
        self.step_in_epoch = 0  # optimizer steps done inside the current epoch
        self.best_fitness = -1.0
        self.early_stopping = EarlyStopping()  # --patience's count (engine/early_stop.py)
        self.metrics: dict[str, Any] = {}  # the last validation's, for metrics.json after a resume
        self.ema = ema
        self.world_size, self.distributed_type = 1, "NO"  # of the run that writes the checkpoint

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "best_fitness": self.best_fitness, "ema_updates": self.ema.updates if self.ema else None,
                "world_size": self.world_size, "distributed_type": self.distributed_type,
                "metrics": plain_meta(self.metrics), "early_stopping": self.early_stopping.to_json()}

    def restore(self, d: dict[str, Any], ema: dict[str, torch.Tensor] | None, model: torch.nn.Module) -> None:
        self.step, self.epoch, self.step_in_epoch = d["step"], d["epoch"], d["step_in_epoch"]
        self.best_fitness = d["best_fitness"]
        self.early_stopping.restore(d.get("early_stopping"), self.epoch, self.best_fitness)
        self.metrics = d.get("metrics", {})
        if self.ema is not None:
            if ema is None:
                raise ckpt.CheckpointError("the checkpoint has no EMA weights but this run keeps an EMA (--ema)")
            self.ema.load_full(ema, model, d["ema_updates"])
