"""What the loop measures about its own speed: phase times, bytes communicated, peak memory, MFU.

Every training run logs these per optimizer step (``train_log.jsonl``), so any real run is a data
point; ``benchmarks/scaling.py`` only launches runs and reads the logs. Definitions (the benchmark
report repeats them):

- ``time_data_s``: time the loop waited for the DataLoader (plus the host-to-device copy). With
  workers, loading overlaps compute and only the wait shows.
- ``time_forward_s`` / ``time_backward_s`` / ``time_optim_s``: forward and loss; backward, including
  the gradient communication it does not overlap (DDP buckets, FSDP reduce-scatter; under DeepSpeed
  also the engine's optimizer step, which runs inside ``backward``); clipping, the logged-loss
  all-reduce, the optimizer step (ZeRO-1/2 parameter all-gather) and the EMA. Logged when
  ``--time-phases`` is on (it synchronises the device at each boundary: exact on GPU, a few % slower;
  free on CPU, whose kernels are synchronous).
- ``comm``: with ``--measure-comm``, per collective kind the calls and payload bytes of this rank's
  step (payload: the full tensor being reduced or gathered; what a ring puts on the wire follows from
  it, see ``benchmarks/projection.py``).
"""

from __future__ import annotations

import functools
import resource
import time
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

#: Collectives counted by ``CommMeter``. Kind decides the ring cost: an all-reduce moves 2(N-1)/N of
#: its payload per rank in 2(N-1) hops, an all-gather or reduce-scatter (N-1)/N in N-1 hops.
COLLECTIVES = {
    "all_reduce": "all_reduce", "all_reduce_coalesced": "all_reduce",
    "all_gather": "all_gather", "all_gather_into_tensor": "all_gather", "_all_gather_base": "all_gather",
    "all_gather_single": "all_gather",
    "reduce_scatter": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
    "_reduce_scatter_base": "reduce_scatter", "reduce_scatter_single": "reduce_scatter",
    "broadcast": "broadcast", "reduce": "broadcast", "all_to_all_single": "all_to_all",
}

# Dense peak tensor throughput, TFLOP/s, by a substring of torch.cuda.get_device_name() (first match
# wins, so longer names first). fp32 means TF32, which PyTorch uses for convolutions by default.
# Vendor datasheets; the SXM figures for H100/H200.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "fp32": 183.0}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "fp32": 62.5}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 60.0}),
    ("V100", {"bf16": 0.0, "fp16": 125.0, "fp32": 15.7}),
)


def precision_key(precision: str) -> str:
    """The :data:`PEAK_TFLOPS` column of a precision label: ``bf16``, ``fp16`` or ``fp32``.

    Labels are Accelerate's (``no``, ``fp16``, ``bf16``) or DeepSpeed's as
    :func:`~yolofuse_scale.engine.strategy.effective_precision` gives them (``bf16 (torch_autocast)``):
    matched by prefix, so a DeepSpeed bf16 run is not divided by the fp32 peak (MFU 2x too high).
    """
    return next((k for k in ("bf16", "fp16") if precision.startswith(k)), "fp32")


def table_peak_flops(device_name: str, precision: str) -> float:
    """Peak FLOP/s of a device (by ``torch.cuda.get_device_name``) at ``precision``; 0 when not in the table."""
    key = precision_key(precision)
    for part, table in PEAK_TFLOPS:
        if part in device_name:
            return table[key] * 1e12
    return 0.0


def peak_flops(device: torch.device, precision: str, override_tflops: float = 0.0) -> float:
    """The device's peak FLOP/s for ``precision`` (see :func:`precision_key`), or 0 when unknown (no MFU logged)."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type != "cuda":
        return 0.0  # a CPU's peak depends on cores, clocks and vector units: not guessed
    return table_peak_flops(torch.cuda.get_device_name(device), precision)


def train_flops_per_image(forward_gflops: float) -> float:
    """Training FLOPs per image: forward + backward ~ 3 x forward (backward computes two products)."""
    return 3.0 * forward_gflops * 1e9


class StepTimer:
    """Splits each optimizer step's wall time into named phases (summed over its micro-batches)."""

    def __init__(self, device: torch.device, phases: bool):
        self.sync = torch.cuda.synchronize if device.type == "cuda" and phases else None
        self.phases = phases
        self.acc: dict[str, float] = defaultdict(float)
        self.last = time.perf_counter()

    def restart(self) -> None:
        """Start the clock without charging the time since the last mark to any phase (logging, saving)."""
        self.acc.clear()
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.sync is not None and phase != "data":
            self.sync()
        now = time.perf_counter()
        self.acc[phase] += now - self.last
        self.last = now

    def take(self) -> dict[str, float]:
        """This step's phase times as log fields: data always, the rest with ``--time-phases``."""
        out = {f"time_{k}_s": v for k, v in self.acc.items() if self.phases or k == "data"}
        self.acc.clear()
        return out


class CommMeter:
    """Counts the calls and payload bytes of every torch.distributed collective this process makes.

    Installed before the process group and the strategy exist (DeepSpeed binds its all-gather and
    reduce-scatter functions when its backend starts), it wraps the module-level functions that
    DeepSpeed and FSDP2 call by attribute; DDP reduces in C++, so ``attach`` gives it a comm hook
    that all-reduces through the wrapped function (the same all-reduce, made visible). Not counted:
    DDP's C++ buffer broadcast (BatchNorm statistics, kilobytes per step).
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self._originals: dict[str, Any] = {}

    def install(self) -> CommMeter:
        for name, kind in COLLECTIVES.items():
            fn = getattr(dist, name, None)
            if fn is None or name in self._originals:
                continue
            self._originals[name] = fn
            setattr(dist, name, self._wrap(fn, kind))
        return self

    def _wrap(self, fn, kind: str):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            tensors = _tensor_bytes([*args, *kwargs.values()])
            # all-reduce: its one tensor; gather/scatter: the full (largest) side; lists: their sum
            payload = max(tensors) if tensors else 0
            entry = self.counts[kind]
            entry[0] += 1
            entry[1] += payload
            return fn(*args, **kwargs)

        return counted

    def attach(self, model: torch.nn.Module) -> None:
        """Route DDP's bucket all-reduce through the counted function (what DDP's default hook does)."""
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model.register_comm_hook(None, _allreduce_mean_hook)

    def take(self) -> dict[str, list[int]]:
        """This step's ``{kind: [calls, payload bytes]}``, then zero."""
        out = {k: list(v) for k, v in self.counts.items()}
        self.counts.clear()
        return out


def _allreduce_mean_hook(state, bucket):
    buf = bucket.buffer()
    buf.div_(dist.get_world_size())
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda fut: fut.value()[0])


def _tensor_bytes(values: list) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v.numel() * v.element_size())
        elif isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            out.append(sum(t.numel() * t.element_size() for t in v))
    return out


def peak_memory(device: torch.device) -> dict[str, int]:
    """This process's peak memory: host RSS always; on CUDA also the allocator's max allocated/reserved."""
    out = {"rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux reports KiB
    if device.type == "cuda":
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return out
