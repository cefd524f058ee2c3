"""What a step reads of the device on the host, once: its losses, gradient norm and non-finite flag
(``step_values``, after the step's one all-reduce), and the flag itself computed on the device (``non_finite``)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the step, the rank(s) and the batch files."""


def non_finite(objective: torch.Tensor, grad_norm: torch.Tensor | float, check_norm: bool) -> torch.Tensor:
    """1.0 if the step's backprop objective (or, with ``check_norm``, its gradient norm) is NaN/inf, else 0.0.

    Computed on the device (no ``bool()`` of a tensor): the flag travels in the step's all-reduce and
    reaches the host with the losses, in :func:`step_values`'s one copy.
    """
    bad = ~torch.isfinite(objective)
    if check_norm and isinstance(grad_norm, torch.Tensor):
        bad = bad | ~torch.isfinite(grad_norm.detach())
    elif check_norm and not math.isfinite(grad_norm):  # DeepSpeed may report the norm as a Python float
        bad = torch.ones_like(bad)
    return bad.float()


class StepValues(NamedTuple):
    """What a step logs of its losses and gradient, on the host; ``non_finite``: some rank's flag was set."""

    losses: dict[str, float]
    grad_norm: float
    non_finite: bool


def step_values(reduced: torch.Tensor, grad_norm: torch.Tensor | float, accum: int,
                names: tuple[str, ...]) -> StepValues:
    """The step's logged losses, its gradient norm and the non-finite flag, in one device->host copy.

    ``reduced``: the all-reduced sums (loss items, backprop objective, flag). ``names`` (box/cls/dfl, or
    box/cls/l1 for a reg_max 1 head) are Ultralytics' loss items (gain-weighted, per batch, as its
    progress bar and results.csv show them), averaged over the step's micro-batches and ranks; ``loss``
    is their sum, the number to compare with Ultralytics. ``loss_backprop`` is what was backpropagated:
    ``nbs`` x the per-batch loss (see ``engine/task.py``), i.e. ``nbs x loss`` up to rounding. Sums and
    quotients are taken on the device in the sums' dtype, then widened to float64 (exact), so the
    logged numbers are the ones a ``float()`` of each would give.
    """
    items = reduced[: len(names)] / accum
    parts = [items.sum().reshape(1), items, reduced[-2:]]
    norm_here = isinstance(grad_norm, torch.Tensor) and grad_norm.device == reduced.device
    if norm_here:
        parts.append(grad_norm.detach().reshape(1))
    # host sync: the step's one device->host copy, before the optimizer step (a non-finite step must not
    # update); it waits for the step's queued forward, backward and all-reduce, which the step needs anyway.
    values = torch.cat([p.double() for p in parts]).tolist()
    n = len(names)
    loss, named, backprop, flag = values[0], values[1: n + 1], values[n + 1], values[n + 2]
    norm = values[n + 3] if norm_here else float(grad_norm)  # a Python float or a host tensor: no device sync
    return StepValues({"loss": loss, **dict(zip(names, named)), "loss_backprop": backprop}, norm, flag > 0)
