"""Optimizer parameter groups and the learning-rate / momentum schedule (YOLOv8's recipe).

The schedule is a pure function of the optimizer step (and of the steps where a resume changed
``--epochs``, recorded in the checkpoint), so resuming needs only the step count and a stopped run
(``--max-steps``) continues on the same curve.
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


def lr_scale_factor(rule: str, images_per_step: int, nbs: int) -> float:
    """What ``--scale-lr`` multiplies the peak lr by, with ``f = images_per_step / nbs``: 1, f or sqrt(f)."""
    f = images_per_step / nbs
    return {"none": 1.0, "linear": f, "sqrt": math.sqrt(f)}[rule]


def effective_lr_wd(cfg: OptimConfig, images_per_step: int) -> tuple[float, float]:
    """Peak lr and weight decay after ``--scale-lr``, for SGD and AdamW alike.

    The rule: ``lr x f`` (linear) or ``lr x sqrt(f)`` (sqrt), ``f = images per step / nbs``; the weight
    decay coefficient is never scaled. Why the decay stays: both optimizers shrink a weight by
    ``lr x wd`` per step (SGD's decay is added to the gradient and multiplied by lr; torch's AdamW
    decouples it but still multiplies by lr), so scaling lr already scales the per-step decay by the
    same factor. Under ``linear`` a run with f-times larger steps takes f-times fewer of them per
    epoch, so the decay per epoch is unchanged. Scaling wd as well (the earlier rule) multiplied the
    per-step decay by f**2 instead of f: 16x too strong at 1,024 images per step against nbs 64.

    - SGD, ``linear``: Goyal et al. 2017 ("Accurate, Large Minibatch SGD"), wd fixed. It equals
      Ultralytics' SGD update at a batch of ``f x nbs`` images: its summed loss gives f x our mean
      gradient, and it scales wd by f, i.e. ``lr x (f g + f wd w) = (f lr)(g + wd w)``.
    - AdamW: Adam's update is invariant to the gradient's scale, so there is no equivalence to keep;
      ``linear`` means the same f-times larger step (per-epoch lr and decay unchanged), ``sqrt`` the
      square-root rule (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
      Algorithms"; Hoffer et al. 2017), the usual choice for Adam at large batches. Ultralytics
      itself scales only AdamW's wd (x f) and not its lr; neither rule here reproduces that.
    """
    return cfg.lr * lr_scale_factor(cfg.scale_lr, images_per_step, cfg.nbs), cfg.weight_decay


def build_optimizer(model: nn.Module, cfg: OptimConfig, images_per_step: int,
                    dtensor_params: bool = False) -> torch.optim.Optimizer:
    """SGD (nesterov) or AdamW over the three parameter groups. ``dtensor_params``: the strategy will hand
    the optimizer DTensor parameters (FSDP2: Accelerate swaps them in at ``prepare``)."""
    lr, wd = effective_lr_wd(cfg, images_per_step)
    groups = param_groups(model)
    specs = [
        {"params": groups[BIAS], "weight_decay": 0.0},
        {"params": groups[WEIGHT], "weight_decay": wd},
        {"params": groups[NORM], "weight_decay": 0.0},
    ]
    for spec in specs:
        spec["initial_lr"] = lr
    kernel = update_kernel(cfg.optimizer, dtensor_params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(specs, lr=lr, momentum=cfg.momentum, nesterov=True, **kernel)
    return torch.optim.AdamW(specs, lr=lr, betas=(cfg.momentum, 0.999), **kernel)


def update_kernel(optimizer: str, dtensor_params: bool) -> dict[str, bool]:
    """``fused=True`` (one kernel over all tensors) where torch has it for these parameters, else
    ``foreach=True``. Same update rule, same result to float rounding.

    Why: torch's default on CPU is the per-tensor loop, 4.3 ms of a ~100 ms yolov8n step on one
    thread; fused takes 1.3 ms (``benchmarks/results/step_profile_2core_cpu``; Ultralytics keeps the
    loop). FSDP2's DTensor parameters have a fused AdamW but no fused SGD, so FSDP2 + SGD takes
    ``foreach``; DeepSpeed steps our optimizer over its own flat fp32 partitions, plain tensors.
    """
    if optimizer == "sgd" and dtensor_params:
        return {"foreach": True}
    return {"fused": True}


@dataclass(frozen=True)
class Schedule:
    """Warm-up then cosine/linear decay, evaluated per optimizer step.

    Warm-up: ``max(round(warmup_epochs * steps_per_epoch), warmup_min_steps)`` steps (default 100,
    Ultralytics <= 8.3's floor),
    capped at ``epochs - 1`` epochs (8.4's cap; a 1-epoch run has none), so the last epoch always runs at
    the scheduled lr. Ultralytics 8.4 dropped the floor; we keep it, measured
    (``benchmarks/results/recipe_ablation_2core_cpu``: 256 pairs of batch 8, 32 steps an epoch, 10 epochs,
    3 seeds: +0.081 mAP50-95 on average with the floor, per seed -0.019 to +0.230, and a smaller seed
    spread): on a small set one epoch is too few steps to warm up in. Without the cap the floor swallowed
    whole short runs, the problem 8.4 fixed; with it that cannot happen. lr rises linearly from 0 (biases: from
    ``warmup_bias_lr``) and momentum from ``warmup_momentum``. The decay runs over ``epochs`` in
    fractional epochs: a deliberate difference, Ultralytics holds ``lf(epoch)`` for a whole epoch (its
    scheduler steps once an epoch). Per step is the same curve without the staircase: on average half an
    epoch's decay lower (at 100 epochs at most 0.8 % of lr0, at cosine's steepest), and it reaches ``lrf`` where
    Ultralytics stops at ``lf(epochs - 1)``; only a run of a few epochs tells them apart.
    Ultralytics also ramps its accumulation count during warm-up; we keep it fixed because
    DeepSpeed needs a constant count and because it makes the step's batch size change mid-run.
    ``--decay-every epoch`` gives Ultralytics' staircase (ablated in ``benchmarks/results/
    recipe_ablation_hsv_decay_2core_cpu``).

    Extending (or shortening) a run: ``extensions`` lists each resume that changed ``--epochs``, as
    (optimizer step it took effect at, the new total). From such a step on the decay continues from the
    value it had there to ``lrf`` at the new last step, in the same shape (cosine or linear) and at the same
    granularity (``decay_every``); the warm-up keeps the length ``epochs`` (the run's first total) gave it
    and is never restarted. So the schedule is a function of the step and the recorded extensions only, not of
    how many launches it took (``engine/course.py`` records them; docs/checkpoints.md states the rule).
    """

    cfg: OptimConfig
    steps_per_epoch: int
    epochs: int  # the run's first --epochs: the warm-up and the first decay segment are derived from it
    peak_lr: float
    extensions: tuple[tuple[int, int], ...] = ()  # (step, new total epochs), in step order

    @property
    def total_epochs(self) -> int:
        """The epochs the run now ends at: its first --epochs, or the last extension's."""
        return self.extensions[-1][1] if self.extensions else self.epochs

    @property
    def warmup_steps(self) -> int:
        if self.cfg.warmup_epochs <= 0:
            return 0
        cap = max(self.epochs - 1, 0) * self.steps_per_epoch
        return min(max(round(self.cfg.warmup_epochs * self.steps_per_epoch), self.cfg.warmup_min_steps), cap)

    def _epochs_at(self, step: int) -> float:
        """Where ``step`` is on the decay's axis, in epochs: fractional, or whole with ``--decay-every epoch``
        (Ultralytics: lf(epoch) for the whole epoch)."""
        return step // self.steps_per_epoch if self.cfg.decay_every == "epoch" else step / self.steps_per_epoch

    def _segment(self, x: float, x0: float, f0: float, end: int) -> float:
        """The decay factor at ``x`` epochs on the curve from ``f0`` at ``x0`` to ``lrf`` at ``end``. With
        (x0, f0) = (0, 1) it is YOLOv8's curve over ``end`` epochs, evaluated as it always was."""
        x = min(x, end)
        if self.cfg.schedule == "cosine":
            return ((1 - math.cos((x - x0) * math.pi / (end - x0))) / 2) * (self.cfg.lrf - f0) + f0
        return max(1 - (x - x0) / (end - x0), 0) * (f0 - self.cfg.lrf) + self.cfg.lrf

    def decay(self, step: int) -> float:
        """The lr factor (of ``peak_lr``) at optimizer step ``step``: the segment the step is in (see the class)."""
        x0, f0, end, extended = 0, 1.0, self.epochs, False
        for at, total in self.extensions:
            if step < at:
                break
            f0 = self._segment(self._epochs_at(at), x0, f0, end)
            x0, end, extended = self._epochs_at(at), total, True
        x = self._epochs_at(step)
        if extended and x == x0:  # exactly the value it continues from (linear's formula may round it by an ulp)
            return f0
        return self._segment(x, x0, f0, end)

    def lr_at(self, step: int) -> float:
        """The lr ``apply`` gives the weights (and norm) group at optimizer step ``step``."""
        target = self.peak_lr * self.decay(step)
        nw = self.warmup_steps
        return float(np.interp(step, [0, nw], [0.0, target])) if step < nw else target

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
