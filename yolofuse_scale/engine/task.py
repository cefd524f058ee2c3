"""The task interface between the loop and the detector: ``step(model, batch) -> loss, items``.

The loop never knows which fusion it trains; it hands a batch here and backpropagates what comes
back. This is also the one place that defines what a step's gradient means.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.utils.loss import v8DetectionLoss

LOSS_NAMES = ("box", "cls", "dfl")


class DetectionTask:
    """YOLOv8 detection with Ultralytics' loss and its default gains (box 7.5, cls 0.5, dfl 1.5).

    Gradient semantics: ``v8DetectionLoss`` returns the per-batch loss times the batch size (a sum
    over images, as YOLO's hyper-parameters assume). We backpropagate ``nbs`` x the per-batch loss;
    Accelerate then divides by the accumulation count and DDP/DeepSpeed average over ranks, so a
    step's gradient is ``nbs`` x the mean micro-batch gradient: Ultralytics' own update when a step
    holds ``nbs`` images, and independent of world size x accumulation otherwise.

    Args:
        model: the *unwrapped* detector (the loss reads its Detect head and hyper-parameters).
        nbs: nominal batch size.
    """

    def __init__(self, model: nn.Module, nbs: int = 64):
        self.criterion = v8DetectionLoss(model)
        self.nbs = nbs

    @staticmethod
    def images(batch: dict) -> torch.Tensor:
        """uint8 stacked RGB+IR -> float in [0, 1] (on the batch's device: no host round trip)."""
        return batch["img"].float().div_(255.0)

    def step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``batch`` through the (possibly wrapped) ``model``; return (loss to backprop, loss items).

        ``items`` are the detached per-batch box/cls/dfl losses (not multiplied by anything).
        """
        # The loss sums over thousands of anchors: always in fp32. Autocast (DDP, DeepSpeed) hands back
        # fp32 already; FSDP2's bf16 policy returns the head's bf16 outputs (cls loss off by ~5x).
        preds = _to_fp32(model(self.images(batch)))
        loss, items = self.criterion(preds, batch)
        bs = batch["img"].shape[0]
        detached = torch.stack([items[k] for k in items]) if isinstance(items, dict) else items.detach()
        return loss.sum() * (self.nbs / bs), detached


def _to_fp32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _to_fp32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_fp32(v) for v in x)
    return x
