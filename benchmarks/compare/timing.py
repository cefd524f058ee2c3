"""Timing a step the same way in both trainers: the summary of per-step records, Ultralytics' callbacks
(:class:`StepTimer`) and our loop's CPU-time callback (:class:`CpuClock`)."""

from __future__ import annotations

import statistics
import time
from typing import Any


def summarise_steps(steps: list[dict[str, float]], skip: int) -> dict[str, Any]:
    """Train-phase throughput from per-step records ``{"images", "step_time_s"}`` (first ``skip`` left out)."""
    timed = steps[skip:] if len(steps) > skip else steps[-1:]
    if not timed:
        return {"steps": 0, "steps_timed": 0}
    times = [s["step_time_s"] for s in timed]
    rates = sorted(s["images"] / s["step_time_s"] for s in timed)
    pct = statistics.quantiles(rates, n=10, method="inclusive") if len(rates) > 1 else [rates[0]] * 9
    fast = min(pct[-1], rates[-1])  # the fast decile's rate: what the step costs when nothing else runs
    out = {"steps": len(steps), "steps_timed": len(timed), "skip_steps": skip,
           "images_per_s": statistics.median(rates), "images_per_s_p10": pct[0], "images_per_s_p90": pct[-1],
           "images_per_s_aggregate": sum(s["images"] for s in timed) / sum(times),
           "step_time_s_median": statistics.median(times),
           # steps 25 % slower than the fast decile: on a shared machine, mostly other tenants' load
           "slow_steps_fraction": sum(s["images"] / s["step_time_s"] < fast / 1.25 for s in timed) / len(timed)}
    if all("compute_s" in s for s in timed):
        out["compute_s_median"] = statistics.median(s["compute_s"] for s in timed)
    if steps and all("max_rss_mib" in s for s in steps):  # the trainer process's peak resident memory
        out["peak_rss_mib"] = max(s["max_rss_mib"] for s in steps)
    if all("cpu_s" in s for s in timed):  # process CPU time: what other tenants' load does not inflate
        cpu = statistics.median(s["cpu_s"] for s in timed)
        out["cpu_s_per_step_median"] = cpu
        out["images_per_cpu_s"] = statistics.median(s["images"] for s in timed) / cpu
    return out


class StepTimer:
    """Ultralytics callbacks that time each training batch the way our loop times a step."""

    def __init__(self, threads: int) -> None:
        self.want_threads = threads
        self.steps: list[dict[str, float]] = []
        self.epoch_metrics: dict[int, dict[str, float]] = {}
        self.params = 0
        self.threads = 0
        self._prev = self._start = self._prev_cpu = 0.0
        self._images = 0

    def attach(self, trainer) -> None:
        trainer.add_callback("on_train_start", self.on_train_start)
        trainer.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        trainer.add_callback("on_train_batch_start", self.on_train_batch_start)
        trainer.add_callback("on_train_batch_end", self.on_train_batch_end)
        trainer.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    def on_train_start(self, trainer) -> None:

        self.params = sum(p.numel() for p in trainer.model.parameters())
        preprocess = trainer.preprocess_batch

        def counted(batch):  # the callbacks never see the batch: count its images here (last batch may be short)
            self._images = int(batch["img"].shape[0])
            return preprocess(batch)

        trainer.preprocess_batch = counted

    def on_train_epoch_start(self, trainer) -> None:
        import torch

        # Ultralytics' select_device sets torch.set_num_threads(min(8, cpus - 1)) for a CPU device whatever
        # OMP_NUM_THREADS says (utils/torch_utils.py:363-364 in 8.4.190): 1 thread on a 2-core box.
        torch.set_num_threads(self.want_threads)
        self.threads = torch.get_num_threads()
        self._prev = time.perf_counter()  # as ours: the first step of an epoch includes starting the iterator
        self._prev_cpu = time.process_time()

    def on_train_batch_start(self, trainer) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer) -> None:
        import torch

        if torch.cuda.is_available() and trainer.device.type == "cuda":
            torch.cuda.synchronize()  # ours ends a step on its one host read of the step's values: same boundary
        now, cpu = time.perf_counter(), time.process_time()
        self.steps.append({"epoch": int(trainer.epoch), "images": self._images, "step_time_s": now - self._prev,
                           "compute_s": now - self._start, "cpu_s": cpu - self._prev_cpu,
                           "max_rss_mib": peak_rss_mib()})
        self._prev, self._prev_cpu = now, cpu

    def on_fit_epoch_end(self, trainer) -> None:
        # also called by final_eval (best.pt) with epoch + 1: kept apart from the last epoch's numbers
        self.epoch_metrics[int(trainer.epoch)] = {k: float(v) for k, v in (trainer.metrics or {}).items()
                                                  if isinstance(v, (int, float))}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (with ``workers`` 0, the loader's decoded images included)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class CpuClock:
    """A trainer callback: each step's process CPU time as ``cpu_s`` in its train_log.jsonl record, and the
    process's peak resident memory so far as ``max_rss_mib``.

    The clock is read where the loop's own step clock starts (entering an epoch) and where it logs a
    step, so ``cpu_s`` covers what ``step_time_s`` covers.
    """

    def __init__(self) -> None:
        self.mark = time.process_time()

    def on_epoch_start(self, epoch: int) -> None:
        self.mark = time.process_time()

    def on_step_end(self, record: dict[str, Any]) -> None:
        now = time.process_time()
        record["cpu_s"], self.mark = now - self.mark, now
        record["max_rss_mib"] = peak_rss_mib()
