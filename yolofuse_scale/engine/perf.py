"""What the loop measures about itself: phase times, bytes communicated, memory, MFU, compute dtypes.

Every training run logs these per optimizer step (``train_log.jsonl``), so any real run is a data
point; the scaling benchmark (``bench/``) only launches runs and reads the logs. The loop holds one
:class:`StepMeter`, which takes every measurement below and hands back the step's record. Definitions
(the benchmark report repeats them):

- ``images_per_s`` / ``step_time_s``: the step's wall time, from its clock start (after the previous
  step's logging and saving) to the end of its EMA update, and the images/step over it.
- ``mfu`` (when the device's peak is known): training FLOPs per image x images/s per device / peak.

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
  it, see ``bench/projection.py``).
- ``model_state_bytes`` (first step): per rank, the bytes held in parameters, gradients, optimizer
  state and DeepSpeed's flat buffers (:func:`model_state_bytes`; ``benchmarks/memory.py`` tabulates it).
- ``compute_dtypes`` (first step): the dtypes a convolution and a BatchNorm actually computed in
  (:class:`PrecisionProbe`), so "BatchNorm stays fp32" is a logged fact per run.
"""

from __future__ import annotations

import functools
import resource
import time
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object

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
    :func:`effective_precision` gives them (``bf16 (torch_autocast)``):
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
            self.sync()  # host sync: --time-phases only, on CUDA; waits for the phase's kernels (a few % slower)
        now = time.perf_counter()
        self.acc[phase] += now - self.last
        self.last = now

    def take(self) -> dict[str, float]:
        """This step's phase times as log fields: data always, the rest with ``--time-phases``."""
        out = {f"time_{k}_s": v for k, v in self.acc.items() if self.phases or k == "data"}
        self.acc.clear()
        return out


class StepMeter:
    """Everything the loop measures about its optimizer steps; :meth:`record` hands back a step's log record.

    Per step the loop calls :meth:`start` when the step's clock starts, :meth:`mark` at each phase
    boundary (``data``, ``forward``, ``backward``, ``optim``), and :meth:`record` once the step is done;
    :meth:`capture_state` once, on a fresh run's first step while its gradients exist. Nothing here
    synchronises the device except ``mark`` under ``--time-phases`` on CUDA (by design) and
    ``capture_state`` (one gather, once per run).

    Args:
        images_per_step: images per optimizer step over all ranks (``images_per_s`` = this / step time).
        world_size: processes; MFU is per device, so it divides by them.
        flops_per_image: training FLOPs per image (:func:`train_flops_per_image`).
        peak_flops: the device's peak FLOP/s (:func:`peak_flops`; 0: unknown, no ``mfu`` logged).
        mfu_precision: which column of :data:`PEAK_TFLOPS` ``peak_flops`` came from (first step's record).
        comm: the run's :class:`CommMeter` (``--measure-comm``) or None.
        probe: the :class:`PrecisionProbe` whose dtypes the first step's record carries.
        scaled_optimizer: under fp16's grad scaler, the optimizer whose ``step_was_skipped`` is logged.
    """

    def __init__(self, device: torch.device, *, phases: bool, images_per_step: int, world_size: int,
                 flops_per_image: float, peak_flops: float, mfu_precision: str, comm: CommMeter | None,
                 probe: PrecisionProbe, scaled_optimizer=None):
        self.timer = StepTimer(device, phases)
        self.images_per_step, self.world_size = images_per_step, world_size
        self.flops_per_image, self.peak_flops, self.mfu_precision = flops_per_image, peak_flops, mfu_precision
        self.comm, self.probe, self.scaled_optimizer = comm, probe, scaled_optimizer
        self.state_bytes: list[dict[str, int]] | None = None  # per rank, from capture_state
        self.t0 = self.timer.last

    def start(self) -> None:
        """Start a step's clock: the time since the last step (its logging, saving) belongs to no step."""
        if self.comm is not None:
            self.comm.take()
        self.timer.restart()
        self.t0 = self.timer.last  # one clock for the step and its phases: the phases never sum past the step

    def mark(self, phase: str) -> None:
        """Charge the time since the last mark to ``phase`` (summed over the step's micro-batches)."""
        self.timer.mark(phase)

    def capture_state(self, model: torch.nn.Module, optimizer) -> None:
        """What each rank holds (:func:`model_state_bytes`), while gradients exist. Collective: one gather."""
        self.state_bytes = gather_object([model_state_bytes(model, optimizer)])  # host sync: pickled gather, once

    def record(self, step: int, epoch: int, losses: dict[str, float], lr: float, grad_norm: float) -> dict[str, Any]:
        """The step's ``train_log.jsonl`` record; ``losses`` and ``grad_norm`` are host numbers (no sync here)."""
        dt = time.perf_counter() - self.t0
        rec = {"step": step, "epoch": epoch, **losses, "lr": lr, "grad_norm": grad_norm,
               "images_per_s": self.images_per_step / dt, "step_time_s": dt, **self.timer.take()}
        if self.peak_flops:  # per device: this rank's share of the step's images
            rec["mfu"] = self.flops_per_image * rec["images_per_s"] / self.world_size / self.peak_flops
        if self.comm is not None:
            rec["comm"] = self.comm.take()
        if self.scaled_optimizer is not None:
            rec["step_skipped"] = bool(self.scaled_optimizer.step_was_skipped)  # a host flag (set in its step)
        if step == 1:
            rec["model_state_bytes"] = self.state_bytes
            rec["compute_dtypes"] = self.probe.result()
            rec["mfu_precision"] = self.mfu_precision  # which peak MFU divides by
        return rec


class CommMeter:
    """Counts the calls and payload bytes of every torch.distributed collective this process makes.

    Installed before the process group and the strategy exist (DeepSpeed binds its all-gather and
    reduce-scatter functions when its backend starts), it wraps the module-level functions that
    DeepSpeed and FSDP2 call by attribute; DDP reduces in C++, so its communication hook
    (``strategy/grad_reduce.py``) counts each bucket itself (the same all-reduce, made visible). Not counted:
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
            self.count(kind, max(tensors) if tensors else 0)
            return fn(*args, **kwargs)

        return counted

    def count(self, kind: str, payload: int) -> None:
        """One collective of ``kind`` moving ``payload`` bytes (DDP's hooks call it: strategy/grad_reduce.py)."""
        entry = self.counts[kind]
        entry[0] += 1
        entry[1] += payload

    def take(self) -> dict[str, list[int]]:
        """This step's ``{kind: [calls, payload bytes]}``, then zero."""
        out = {k: list(v) for k, v in self.counts.items()}
        self.counts.clear()
        return out


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


# ------------------------------------------------------------------------------ memory accounting
def model_state_bytes(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes this rank holds in parameters, gradients, optimizer state and the engine's flat buffers.

    Counted by unique storage (a view into a flat buffer is counted once), not RSS: activations,
    allocator caches and communication buffers are not model state. Parameters are counted first,
    so a flat buffer whose views are the parameters counts as parameters. Engine buffers are the
    tensors reachable from DeepSpeed's ZeRO optimizer (fp32 partitions, gradient partitions, buckets).
    """
    # Imported here: the strategy package re-exports this module's names (an import cycle at the top).
    from yolofuse_scale.engine.strategy.sharded import is_dtensor, local_tensor

    seen: set[int] = set()
    sizes = {"params": 0, "grads": 0, "optimizer": 0, "engine_buffers": 0}

    def add(t, bucket: str) -> None:
        if is_dtensor(t):
            t = t.to_local()
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        if storage.nbytes() == 0 or storage.data_ptr() in seen:
            return
        seen.add(storage.data_ptr())
        sizes[bucket] += storage.nbytes()

    params = [p for _, p in model.named_parameters()]
    for p in params:
        add(local_tensor(p), "params")
    for p in params:
        if p.grad is not None:
            add(p.grad, "grads")
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper -> torch or ZeRO optimizer
    torch_opt = getattr(inner, "optimizer", inner) if not isinstance(inner, torch.optim.Optimizer) else inner
    for state in torch_opt.state.values():
        for v in state.values():
            add(v, "optimizer")
    if inner is not torch_opt:  # a DeepSpeed ZeRO optimizer: walk its attributes for flat buffers
        _walk(vars(inner), lambda t: add(t, "engine_buffers"), depth=4)
    sizes["total"] = sum(sizes.values())
    return sizes


def _walk(obj, visit, depth: int) -> None:
    if isinstance(obj, torch.Tensor):
        visit(obj)
    elif depth > 0 and isinstance(obj, dict):
        for v in obj.values():
            _walk(v, visit, depth - 1)
    elif depth > 0 and isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, visit, depth - 1)


# --------------------------------------------------------------------------------- precision
def effective_precision(accelerator: Accelerator) -> str:
    """The precision the model computes in (DeepSpeed's is its JSON's ``torch_autocast``)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        return "bf16 (torch_autocast)" if ds.get("torch_autocast", {}).get("enabled") else "no"
    return accelerator.mixed_precision


class PrecisionProbe:
    """Records, once, the dtypes a convolution and a BatchNorm actually compute in.

    One-shot forward hooks on the first Conv2d and the first BatchNorm: under FSDP2 they see the
    unsharded parameters in the unit's param dtype, under autocast the cast input. The first step's
    log record carries the result, so "BatchNorm stays fp32" is a logged fact per run, not a claim.
    """

    def __init__(self, model: torch.nn.Module):
        self.seen: dict[str, str] = {}
        self._handles = []
        kinds = {"conv": torch.nn.Conv2d, "batchnorm": torch.nn.modules.batchnorm._BatchNorm}
        for name, kind in kinds.items():
            module = next((m for m in model.modules() if isinstance(m, kind)), None)
            if module is not None:
                self._handles.append(module.register_forward_hook(functools.partial(self._record, name)))

    def _record(self, name: str, module: torch.nn.Module, args, output) -> None:
        self.seen.setdefault(name, f"weight {str(module.weight.dtype)[6:]}, output {str(output.dtype)[6:]}")

    def result(self) -> dict[str, str]:
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.seen
