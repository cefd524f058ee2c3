"""``--activation-checkpointing``: recompute the backbone and neck blocks in backward instead of storing
their activations, with BatchNorm statistics left exactly as a run without it would leave them. Which blocks
is the model's to say (``model/units.py``).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from yolofuse_scale.model.units import recompute_units


def apply_activation_checkpointing(model: torch.nn.Module) -> int:
    """Recompute the forward of every block the model declares a recompute unit during backward instead of
    storing its activations.

    A recomputed BatchNorm would update its running statistics a second time; during recomputation
    the block's BatchNorms get momentum 0 (and their counters are restored), so the statistics, like
    the gradients, equal those of a run without checkpointing. Returns the number of blocks wrapped.
    """
    units = recompute_units(model)
    for m in units:
        bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
        m.forward = functools.partial(_checkpointed, m.forward, bns)
    return len(units)


def _checkpointed(forward, bns, *args):
    if not torch.is_grad_enabled():
        return forward(*args)
    return torch.utils.checkpoint.checkpoint(
        forward, *args, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), _frozen_bn_stats(bns))
    )


@contextlib.contextmanager
def _frozen_bn_stats(bns):
    saved = [(b.momentum, b.num_batches_tracked.clone() if b.num_batches_tracked is not None else None) for b in bns]
    for b in bns:
        b.momentum = 0.0
    try:
        yield
    finally:
        for b, (momentum, count) in zip(bns, saved):
            b.momentum = momentum
            if count is not None:
                b.num_batches_tracked.copy_(count)
