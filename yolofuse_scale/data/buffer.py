"""The pairs a process decoded last, kept decoded: a bounded buffer per DataLoader worker (CPU loader, training).

A mosaic reads four pairs; without ``--cache`` each read is a decode (two images, ~8 ms at 640 px). Ultralytics
keeps the last min(n, 8 x batch, 1000) images a worker loaded and draws partners from them, which makes the
partners a function of the worker's history. Here the partners are drawn first, from (seed, epoch, index)
alone (``augment.SampleDraw``), and the buffer only answers "is this pair decoded already?": a hit hands back
the very array a decode would give (read-only: a transform writing into it would fail loudly, not change a
later sample; the photometric transforms copy it, ``augment._writable``), so the pixels, and with them exact
resume at any worker count and world size, do not depend on what the buffer held.

Hits: the default partner pool (``sampler.MicroBatchWindows.pool``) keeps a micro-batch's reads inside 2 x
batch-size pairs, which the buffer always holds (``min_items``), so each is decoded once per micro-batch: at
most 2 decodes per sample instead of 4. Beyond that, the buffer keeps pairs up to ``BUFFER_BYTES`` per process
(least recently used first out): a training set that fits (e.g. 800 pairs of 160x128 RGB+IR, 65 MB) is decoded
once per worker and then read from memory, as Ultralytics' buffer holds a set of up to 8 x batch images.

Memory: up to ``max(BUFFER_BYTES, pool x pair size)`` per process that decodes (each DataLoader worker, or the
main process with ``--workers 0``): 256 MiB holds ~200 pairs of 640x512 RGB + 1-channel IR (1.3 MB each), ~130
with 3-channel IR; the pool of batch 16 at 640 px is 32 pairs (42 MB). With ``--cache`` the buffer is not used
(the cache is mapped, shared and already decoded).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

#: Bytes of decoded pairs a process keeps beyond its partner pool (see the module docstring).
BUFFER_BYTES = 256 * 2**20

Decoded = tuple[np.ndarray, tuple[int, int]]


class DecodedPairBuffer:
    """Decoded pairs by dataset index, least recently used first out once over ``budget`` bytes, keeping at least
    the ``min_items`` most recent. ``hits`` and ``misses`` count this process's reads."""

    def __init__(self, budget: int = BUFFER_BYTES, min_items: int = 0):
        self.budget, self.min_items = budget, min_items
        self._items: OrderedDict[int, Decoded] = OrderedDict()
        self.nbytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict:
        """A worker starts empty: what the main process decoded stays there (and is not pickled to spawned ones)."""
        return {**self.__dict__, "_items": OrderedDict(), "nbytes": 0, "hits": 0, "misses": 0}

    def get(self, index: int, decode: Callable[[int], Decoded]) -> Decoded:
        """Pair ``index`` as ``decode(index)`` gives it: from the buffer if it holds it, else decoded and kept."""
        hit = self._items.get(index)
        if hit is not None:
            self._items.move_to_end(index)
            self.hits += 1
            return hit
        pair, ori = decode(index)
        self.misses += 1
        pair.flags.writeable = False
        self._items[index] = (pair, ori)
        self.nbytes += pair.nbytes
        while len(self._items) > self.min_items and self.nbytes > self.budget:
            _, (old, _) = self._items.popitem(last=False)
            self.nbytes -= old.nbytes
        return pair, ori
