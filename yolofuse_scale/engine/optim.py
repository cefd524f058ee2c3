"""Optimizer parameter groups and the learning-rate / momentum schedule (YOLOv8's recipe).

The schedule is a pure function of the optimizer step, so resuming needs only the step count and a
stopped run (``--max-steps``) continues on the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from yolofuse_scale.config import OptimConfig

#: Param-group order. Biases first, because their warm-up starts from ``warmup_bias_lr``, not 0.
BIAS, WEIGHT, NORM = 0, 1, 2


def param_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Split parameters into [biases, decayed weights, normalisation weights] (no decay on 0 and 2)."""
    groups: list[list[nn.Parameter]] = [[], [], []]
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                groups[BIAS].append(p)
            elif isinstance(module, norm_types):
                groups[NORM].append(p)
            else:
                groups[WEIGHT].append(p)
    return groups


def effective_lr_wd(cfg: OptimConfig, images_per_step: int) -> tuple[float, float]:
    """Peak lr and weight decay after ``--scale-lr`` (see OptimConfig for the semantics)."""
    factor = images_per_step / cfg.nbs if cfg.scale_lr == "linear" else 1.0
    return cfg.lr * factor, cfg.weight_decay * factor


def build_optimizer(model: nn.Module, cfg: OptimConfig, images_per_step: int) -> torch.optim.Optimizer:
    """SGD (nesterov) or AdamW over the three parameter groups."""
    lr, wd = effective_lr_wd(cfg, images_per_step)
    groups = param_groups(model)
    specs = [
        {"params": groups[BIAS], "weight_decay": 0.0},
        {"params": groups[WEIGHT], "weight_decay": wd},
        {"params": groups[NORM], "weight_decay": 0.0},
    ]
    for spec in specs:
        spec["initial_lr"] = lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(specs, lr=lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(specs, lr=lr, betas=(cfg.momentum, 0.999))


@dataclass(frozen=True)
class Schedule:
    """Warm-up then cosine/linear decay, evaluated per optimizer step.

    Warm-up (Ultralytics' rule): ``max(warmup_epochs * steps_per_epoch, 100)`` steps when
    ``warmup_epochs > 0``; lr rises linearly from 0 (biases: from ``warmup_bias_lr``) and momentum
    from ``warmup_momentum``. The decay runs over ``epochs`` in fractional epochs.
    Ultralytics also ramps its accumulation count during warm-up; we keep it fixed because
    DeepSpeed needs a constant count and because it makes the step's batch size change mid-run.
    """

    cfg: OptimConfig
    steps_per_epoch: int
    epochs: int
    peak_lr: float

    @property
    def warmup_steps(self) -> int:
        if self.cfg.warmup_epochs <= 0:
            return 0
        return max(round(self.cfg.warmup_epochs * self.steps_per_epoch), 100)

    def decay(self, step: int) -> float:
        x = min(step / self.steps_per_epoch, self.epochs)
        if self.cfg.schedule == "cosine":
            return ((1 - math.cos(x * math.pi / self.epochs)) / 2) * (self.cfg.lrf - 1) + 1
        return max(1 - x / self.epochs, 0) * (1.0 - self.cfg.lrf) + self.cfg.lrf

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr (and momentum during warm-up) for optimizer step ``step``; return the lr."""
        target = self.peak_lr * self.decay(step)
        nw = self.warmup_steps
        for j, group in enumerate(optimizer.param_groups):
            if step < nw:
                start = self.cfg.warmup_bias_lr if j == BIAS else 0.0
                group["lr"] = float(np.interp(step, [0, nw], [start, target]))
                mom = float(np.interp(step, [0, nw], [self.cfg.warmup_momentum, self.cfg.momentum]))
                if "momentum" in group:
                    group["momentum"] = mom
                elif "betas" in group:
                    group["betas"] = (mom, group["betas"][1])
            else:
                group["lr"] = target
                if "momentum" in group:
                    group["momentum"] = self.cfg.momentum
                elif "betas" in group:
                    group["betas"] = (self.cfg.momentum, group["betas"][1])
        return optimizer.param_groups[WEIGHT]["lr"]
