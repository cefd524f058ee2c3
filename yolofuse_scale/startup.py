"""Start-up without the cyclic garbage collector walking what the imports make: :func:`collector_paused`.

Before its first step a training process imports PyTorch, torch._dynamo (any optimizer's constructor and the
meta-device size check import it), Accelerate and Ultralytics, and builds the model: ~350,000 objects the collector
tracks (after the imports alone, here), living as long as the process. While they are made, CPython's collector
runs a young collection every 700 allocations and a full one each time the heap has grown by a quarter, walking
objects that can never be garbage. Where a command imports and builds, the collector is paused: ``cli.py``
(parsing the flags, which imports PyTorch; ``train``'s imports of the trainer), the trainer's model build (model,
optimizer, strategy; not the data scan or ``--cache``, which loop over the user's files), the weights loader of
``val``, ``predict`` and ``export-onnx`` (``inference.load_weights_model``), a Ray Train worker's imports
(``cluster/worker.py``) and a Tune trial actor's (``cluster/tune.py``). A Ray or Tune driver has none of its own:
PyTorch is imported by then (the flags), and Ray's own imports gained nothing measurable (0.14 s of 1.1 s). At
the end of each window ``gc.freeze()`` moves what exists into the permanent generation, so the loop's collections
skip it too.

Measured on a 2-core Intel Xeon VM (means of alternating runs, same losses and metrics): a 3-step training process
5.57 s of CPU before, 3.99 s after; a 2-epoch 2-rank run 21.5 s and 18.4 s; ``val`` 5.4 s and 4.6 s. Every rank
of every job pays start-up, and the test suite starts over 400 such processes (its worker-seconds fell by ~25%).

What it costs: cyclic garbage made inside a window, or left uncollected when it began, is frozen with the rest and
never freed (reference counting still frees everything else). After the imports that is ~9,400 objects (what a
``gc.collect()`` there frees, for 0.38 s); a rank's resident memory was 10-16 MB higher (0.91 GB against
0.89-0.90 GB). Collecting before freezing would spend most of the time saved.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block, then freeze what it made and resume. Nested, or with the
    collector already off (the caller's choice), it changes nothing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
