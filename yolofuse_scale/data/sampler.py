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
    """The micro-batch of the epoch's order that holds a sample: where mosaic partners are drawn from
    with ``--mosaic-partners micro_batch`` (the default draws from the whole dataset).

    Ultralytics draws partners from a buffer of the images a worker loaded last (cheap: they are
    decoded already; but a function of the worker's history). Drawing them from the sample's own
    micro-batch keeps the cheapness (a DataLoader worker builds a whole micro-batch, so with a small
    per-worker cache each pair is decoded about once, not four times) and depends only on
    ``(seed, epoch, batch_size)``: micro-batches are cut from the same order at every world size.
    The price is diversity: a batch of B mosaics shows only B distinct images (Ultralytics' ~4B), and
    at batch size 1 a mosaic is four copies of one image.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        self.num_samples, self.batch_size, self.seed, self.shuffle = num_samples, batch_size, seed, shuffle
        self._epoch, self._order, self._where = -1, np.arange(0), np.arange(0)

    def __call__(self, epoch: int, index: int) -> np.ndarray:
        """Dataset indices of the micro-batch that holds ``index`` in ``epoch``."""
        if epoch != self._epoch:  # once per epoch per process: one permutation and its inverse
            self._order = epoch_order(self.num_samples, self.seed, epoch, self.shuffle)
            self._where = np.empty_like(self._order)
            self._where[self._order] = np.arange(self.num_samples)
            self._epoch = epoch
        start = self._where[index] // self.batch_size * self.batch_size
        return self._order[start : start + self.batch_size]


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
