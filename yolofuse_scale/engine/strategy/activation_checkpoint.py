"""``--activation-checkpointing``: recompute the backbone and neck blocks in backward instead of storing
their activations, with BatchNorm statistics left exactly as a run without it would leave them.
"""

from __future__ import annotations

import contextlib
import functools

import torch

#: Blocks recomputed in backward under --activation-checkpointing (backbone and neck, not the head).
#: DEAPair (--fusion dea) stores about nine C x H x W maps per level (the concatenated pair, the joint
#: conv's, the two gated pairs) for a few percent of the model's FLOPs: cheap to recompute, so it is one too.
CHECKPOINT_UNITS = ("C2f", "C3k2", "SPPF", "C2PSA", "DEAPair")


def apply_activation_checkpointing(model: torch.nn.Module) -> int:
    """Recompute every C2f/SPPF block's forward during backward instead of storing its activations.

    A recomputed BatchNorm would update its running statistics a second time; during recomputation
    the block's BatchNorms get momentum 0 (and their counters are restored), so the statistics, like
    the gradients, equal those of a run without checkpointing. Returns the number of blocks wrapped.
    """
    count = 0
    for m in model.modules():
        if type(m).__name__ in CHECKPOINT_UNITS:
            bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
            m.forward = functools.partial(_checkpointed, m.forward, bns)
            count += 1
    return count


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
