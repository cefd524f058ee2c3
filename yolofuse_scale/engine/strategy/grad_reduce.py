"""How DDP averages the gradients across ranks: the one place that registers DDP's communication hook.

On GPUs DDP's own all-reduce (NCCL) is used as it is. On CPU, when every rank runs on this machine, the
gradient buckets are averaged through shared memory instead of gloo (``--cpu-allreduce auto``, the default):

- **Why.** gloo moves each bucket through TCP loopback sockets: for yolov8n-mid's 17 MiB of gradients, 12.4 ms
  per step between two one-thread processes on the 2-core EPYC VM, and more inside a training step (the
  scaling benchmark measured 23 ms of exposed communication), where the kernel's socket copies and gloo's
  threads compete with the compute for the same cores. Copying the gradients into a shared segment, one
  barrier, summing the ranks' copies and one more barrier takes 4.5 ms for the same 17 MiB; the buckets of a
  step are held until its last one and reduced together, so the barriers (and the wait for the slower rank)
  come once a step. With channels-last images the step is ~30 ms shorter than NCHW's, so gloo's fixed cost was
  what held DDP's 2-process efficiency below NCHW's: 0.901 median over five runs with this path against gloo's
  0.874, side by side (``benchmarks/results/ddp_channels_last_2core_cpu``).
- **The same numbers.** Like DDP's default hook each rank divides its bucket by the world size, then the ranks'
  copies are summed in rank order into every rank's bucket: with two ranks the sum is the one gloo computes
  (x0 + x1 = x1 + x0, bit for bit: a 2-process training ends with one process's accumulation's weights,
  ``tests/test_grad_reduce.py``); with more, the order of the additions differs from gloo's ring (last-bit
  differences), identical on every rank.
- **Failures stay gloo's.** The two barriers are gloo collectives with the process group's timeout: a rank that
  dies or hangs fails its peers' step exactly as a gloo all-reduce would (kill and restart tests run on it).
- **Cost and limits.** Each rank holds one segment of ``min(gradient bytes + 64 KiB, 64 MiB)`` in ``/dev/shm``
  (gradients larger than that are reduced a segment-full at a time). The segments are reserved with
  ``posix_fallocate`` (a full ``/dev/shm``, e.g. Docker's 64 MB default, is found here, not as a SIGBUS mid-run)
  and unlinked as soon as every rank has mapped them, so a killed job leaves nothing behind. Ranks on several
  machines, a ``/dev/shm`` without room or a peer whose segment cannot be opened: gloo, and the log says why.
  ``--cpu-allreduce gloo`` asks for gloo.

The benchmark's communication meter (``engine/perf.py``: ``CommMeter``) counts either path's payload.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

SHM_DIR = Path("/dev/shm")
#: Largest segment per rank; a bigger bucket is reduced in chunks of this size.
MAX_SEGMENT_BYTES = 64 << 20


def attach_grad_reduce(model: torch.nn.Module, cpu_allreduce: str, log, meter=None) -> str | None:
    """Register DDP's gradient hook on ``model`` (a DDP wrapper; anything else: nothing) and return which path:
    ``"shm"``, ``"gloo"``, or None when DDP does not reduce (one process, FSDP2, DeepSpeed). ``meter``: count
    each bucket's payload (a ``CommMeter``). Collective: every rank calls it, with the same ``cpu_allreduce``."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and cpu_allreduce == "auto" and dist.get_world_size() > 1:  # (torchrun wraps one process in DDP too)
        reducer, why_not = ShmAllReduce.create(_grad_bytes(model), meter)
        if reducer is not None:
            model.register_comm_hook(reducer, _shm_mean_hook)
            log.info(f"DDP gradient all-reduce: shared memory ({reducer.world} ranks on this machine, a "
                     f"{reducer.segment_bytes / 2**20:.1f} MiB segment each in {SHM_DIR}; --cpu-allreduce gloo: gloo)")
            return "shm"
        log.info(f"DDP gradient all-reduce: gloo ({why_not})")
    if meter is not None:  # torch's own mean hook: its dist.all_reduce is the meter's counted function
        model.register_comm_hook(None, default_hooks.allreduce_hook)
    return "gloo" if on_cpu else "nccl"


def _grad_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _shm_mean_hook(reducer: ShmAllReduce, bucket):  # no return annotation: DDP accepts only its own spelling
    return reducer.hook(bucket)


def _host_key() -> str:
    """This machine: its hostname and boot id (two containers may share a hostname, not a boot and a /dev/shm)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _all_ok(ok: bool) -> bool:
    flag = torch.tensor([int(ok)], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


class ShmAllReduce:
    """DDP communication hook: average a gradient bucket through every rank's shared-memory segment."""

    def __init__(self, segments: list[torch.Tensor], rank: int, meter=None):
        self.segments, self.rank, self.world, self.meter = segments, rank, len(segments), meter
        self.pending: list[tuple[torch.Tensor, torch.futures.Future]] = []  # this step's buckets so far
        self.segment_bytes = segments[rank].numel()

    @classmethod
    def create(cls, grad_bytes: int, meter=None) -> tuple[ShmAllReduce | None, str]:
        """Map one segment per rank, or say why not (then nothing is left in /dev/shm). Collective."""
        world, rank = dist.get_world_size(), dist.get_rank()
        hosts = [None] * world
        dist.all_gather_object(hosts, _host_key())
        if len(set(hosts)) > 1:
            return None, f"ranks on {len(set(hosts))} machines"
        size = max(1, min(grad_bytes + (64 << 10), MAX_SEGMENT_BYTES))  # + room to align each bucket's start
        name = [f"yolofuse-allreduce-{uuid.uuid4().hex[:12]}"]
        dist.broadcast_object_list(name, src=0)
        path = lambda r: SHM_DIR / f"{name[0]}-{r}"  # noqa: E731
        why = ""
        try:
            fd = os.open(path(rank), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)  # reserves the pages: a full tmpfs says ENOSPC here
            finally:
                os.close(fd)
        except OSError as e:
            why = (f"{SHM_DIR} has no room for {size / 2**20:.1f} MiB per rank" if e.errno == errno.ENOSPC
                   else f"{path(rank)}: {e.strerror}")
        segments: list[torch.Tensor] = []
        if _all_ok(not why):
            try:
                segments = [torch.from_file(str(path(r)), shared=True, size=size, dtype=torch.uint8)
                            for r in range(world)]
            except (OSError, RuntimeError) as e:
                why = f"a peer's segment in {SHM_DIR} cannot be mapped ({e})"
        else:
            why = why or f"another rank could not reserve its segment in {SHM_DIR}"
        ok = _all_ok(not why)  # every rank has mapped every segment (or one failed): the names can go
        path(rank).unlink(missing_ok=True)
        if not ok:
            return None, why or "another rank could not map the segments"
        return cls(segments, rank, meter), ""

    def hook(self, bucket) -> torch.futures.Future:
        """One bucket: reduced with the step's other buckets when the last one arrives (DDP waits
        for every bucket's future only after the backward): one pair of barriers a step, not one a bucket, so
        the wait for the slower rank is paid once. Nothing overlaps the backward either way: the copies and
        sums are this thread's work."""
        buf = bucket.buffer()  # divided by the world size on its way into the segment (``reduce``)
        fut: torch.futures.Future = torch.futures.Future()
        self.pending.append((buf, fut))
        if self.meter is not None:
            self.meter.count("all_reduce", buf.numel() * buf.element_size())
        if bucket.is_last():
            pending, self.pending = self.pending, []
            self.reduce([b for b, _ in pending])
            for b, f in pending:
                f.set_result(b)
        return fut

    def reduce(self, buffers: list[torch.Tensor]) -> None:
        """Replace ``buffers`` by the mean of every rank's, a segment-full at a time: each rank writes its part
        divided by the world size into its segment (as DDP's default hook, divided before the sum; one pass where
        a division in place and a copy would be two), then sums the segments in rank order into the part."""
        for group in self._segment_fulls(buffers):
            for part, at in group:
                torch.div(part, self.world, out=self.segments[self.rank][at:at + part.nbytes].view(part.dtype))
            dist.barrier()  # every rank's parts are in its segment
            for part, at in group:
                slots = [s[at:at + part.nbytes].view(part.dtype) for s in self.segments]
                torch.add(slots[0], slots[1], out=part)
                for other in slots[2:]:
                    part.add_(other)
            dist.barrier()  # every rank has read the segments: they may be written again

    def _segment_fulls(self, buffers: list[torch.Tensor]) -> list[list[tuple[torch.Tensor, int]]]:
        """``buffers`` cut into parts and packed into groups that each fit a segment: (part, byte offset)."""
        groups: list[list[tuple[torch.Tensor, int]]] = [[]]
        at = 0
        for buf in buffers:
            flat = buf.view(-1)
            start = 0
            while start < flat.numel():
                at = -(-at // 64) * 64  # aligned for the vector loads of the copy and the sum
                room = (self.segment_bytes - at) // flat.element_size()
                if room <= 0:
                    groups.append([])
                    at = 0
                    continue
                part = flat[start:start + room]
                groups[-1].append((part, at))
                at += part.nbytes
                start += part.numel()
        return [g for g in groups if g]
