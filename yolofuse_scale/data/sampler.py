"""Which samples each rank sees, as a function of (seed, epoch, step) only.

Accelerate's own dataloader sharding gives rank r the global batches r, r+W, ...; the grouping of
micro-batches into optimizer steps then depends on the world size. This sampler fixes it instead:
an epoch's (seeded) permutation is cut into micro-batches of ``batch_size``; optimizer step ``s``
consumes micro-batches ``s*M .. s*M + M-1`` where ``M = world_size * grad_accum``, and rank ``r``
takes every ``world_size``-th of those. Two ranks x accumulation 1 and one rank x accumulation 2 thus
average the gradients of the very same micro-batches, which is what makes a DDP run comparable with
a single-process reference and lets a checkpoint resume at another world size.

The incomplete tail of an epoch (fewer than ``M`` micro-batches) is dropped, like ``drop_last`` at
the level of optimizer steps, so every step has the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's sample order: a permutation seeded by ``(seed, epoch)``, or ``0..n-1`` unshuffled."""
    if shuffle:
        return np.random.default_rng((seed, epoch)).permutation(num_samples)
    return np.arange(num_samples)


class MicroBatchWindows:
    """The micro-batch of the epoch's order that holds a sample, and its partner pool: where mosaic partners are
    drawn from with ``--mosaic-partners pool`` (the default) or ``micro_batch`` (``augment.SampleDraw``).

    Ultralytics draws partners from a buffer of the images a worker loaded last (cheap: they are decoded
    already; but a function of the worker's history). A DataLoader worker builds a whole micro-batch, and which
    worker builds which depends on the worker count and the world size; the micro-batch itself does not: it
    depends only on ``(seed, epoch, batch_size)``, micro-batches being cut from the same order at every world
    size. So partners drawn from a set tied to the micro-batch are decoded once by whichever worker builds it
    and then read from its buffer (``buffer.py``), and stay a function of (seed, epoch, index).

    ``micro_batch``: that set is the micro-batch alone (B distinct images per batch of B mosaics; four copies of
    one image at batch size 1). ``pool``: the micro-batch plus ``extra`` = max(B, 3) other pairs of the whole set,
    drawn by ``(seed, epoch, micro-batch)``: 2B distinct images per batch at most 2 decodes per sample, and 4
    distinct images per mosaic at any batch size.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        self.num_samples, self.batch_size, self.seed, self.shuffle = num_samples, batch_size, seed, shuffle
        self.extra = max(batch_size, 3)
        self._epoch, self._order, self._where = -1, np.arange(0), np.arange(0)
        self._pool_of: tuple[int, int] = (-1, -1)  # (epoch, micro-batch) of the pool below
        self._pool = np.arange(0)

    @property
    def pool_size(self) -> int:
        """The most pairs a pool holds: what a worker's buffer keeps at least, so each is decoded once."""
        return self.batch_size + self.extra

    def __call__(self, epoch: int, index: int) -> np.ndarray:
        """Dataset indices of the micro-batch that holds ``index`` in ``epoch``."""
        start = self._start(epoch, index)
        return self._order[start : start + self.batch_size]

    def pool(self, epoch: int, index: int) -> np.ndarray:
        """Dataset indices of the partner pool of ``index`` in ``epoch``: its micro-batch, then the extra pairs
        (fewer on a set too small for them). Drawn once per micro-batch and process (a worker asks B times)."""
        start = self._start(epoch, index)
        if self._pool_of != (epoch, start):
            batch = self._order[start : start + self.batch_size]
            take = min(self.extra, self.num_samples - len(batch))
            rng = np.random.default_rng((self.seed, epoch, start, 1))  # 1: not epoch_order's stream
            drawn = rng.choice(self.num_samples, size=min(take + len(batch), self.num_samples), replace=False)
            self._pool = np.concatenate([batch, drawn[~np.isin(drawn, batch)][:take]])
            self._pool_of = (epoch, start)
        return self._pool

    def _start(self, epoch: int, index: int) -> int:
        """Position in the epoch's order of the first sample of ``index``'s micro-batch."""
        if epoch != self._epoch:  # once per epoch per process: one permutation and its inverse
            self._order = epoch_order(self.num_samples, self.seed, epoch, self.shuffle)
            self._where = np.empty_like(self._order)
            self._where[self._order] = np.arange(self.num_samples)
            self._epoch = epoch
        return int(self._where[index] // self.batch_size * self.batch_size)


class StepShardedBatchSampler(Sampler[list[int]]):
    """Yield this rank's micro-batches (lists of dataset indices) for one epoch."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        grad_accum: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.world_size, self.rank, self.grad_accum = world_size, rank, grad_accum
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start_step = 0, 0

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches per optimizer step over all ranks."""
        return self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return (self.num_samples // self.batch_size) // self.micro_batches_per_step

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation and skip the first ``start_step`` optimizer steps (resume)."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0) * self.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.num_samples, self.seed, self.epoch, self.shuffle)
        m = self.micro_batches_per_step
        first = self.start_step * m
        for k in range(first + self.rank, self.steps_per_epoch * m, self.world_size):
            yield order[k * self.batch_size : (k + 1) * self.batch_size].tolist()


class ShardSampler(Sampler[int]):
    """Evaluation sharding: rank r takes indices r, r+W, ... (no padding, no duplicates)."""

    def __init__(self, num_samples: int, world_size: int = 1, rank: int = 0):
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
