"""What a training run shows while it runs: per epoch a live bar on a terminal, plain lines when the output is
redirected, a summary line per epoch and one at the end; and which third-party messages it keeps out.

The one :class:`Console` belongs to the main-process log (``runlog.RunLog``); other processes get none, so call
sites never test the rank. Two modes, chosen once from whether stdout is a terminal:

- **terminal**: a tqdm bar per epoch (steps done, elapsed, ETA, the epoch's running mean losses, images/s, device
  memory) and one for validation; both vanish when done (``leave=False``) and the summary line stays. Log lines
  go through ``tqdm.write`` (``runlog``'s handler), so a line never tears a bar.
- **redirected** (a Slurm ``.out``, a pipe, a file): plain lines, never a carriage return (a bar's redraws are
  kept by a file: the validation bar's used to glue itself and the next line into one). ``--log-every N``: a line
  every N optimizer steps; 0 (default): the launch's first step, then at each quarter of an epoch and at least
  every :data:`PLAIN_MAX_GAP_S` seconds, so an epoch of 4 steps or of 40,000 gives a few lines.

Losses shown are the epoch's running means (as Ultralytics' bar shows them), over this launch's steps of the epoch:
``train_log.jsonl`` keeps each step's own. images/s is the epoch's images over its steps' time (``step_time_s``).
Memory: on CUDA the allocator's peak (``max_memory_allocated``), elsewhere the process's resident set (RSS).

Third-party noise is silenced where it starts, by message, on the logger that emits it (:func:`silence`), never by
a blanket warnings filter: see ``strategy/deepspeed.py`` (DeepSpeed's notices) and ``strategy/accelerator.py``
(why DeepSpeed is no longer imported at all outside DeepSpeed runs). Kept on purpose: DDP's "Grad strides do not
match bucket view strides", a real cost (a gradient copy each step) whose cause is fixed elsewhere.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import torch
from tqdm import tqdm

#: Redirected output with --log-every 0: at most this long between two progress lines of an epoch.
PLAIN_MAX_GAP_S = 300.0
#: The epoch bar, as Ultralytics lays it out: the numbers first (the description: epoch, running mean losses,
#: images/s, memory), then the bar, which takes what width is left, then steps, elapsed time and ETA.
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
#: Trackers' names for the validation metrics (Ultralytics' without "(B)": MLflow refuses parentheses).
METRIC_NAMES = {"precision": "metrics/precision", "recall": "metrics/recall", "mAP50": "metrics/mAP50",
                "mAP50-95": "metrics/mAP50-95"}


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stdout) is a terminal a bar can be drawn on: a tty with a width (a pseudo-terminal that
    reports 0 columns, as some container runtimes give, would get an empty bar: it gets the plain lines)."""
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):  # a closed or replaced stream, or one without a file descriptor
        return False


def iterate(iterable: Iterable, desc: str, enabled: bool) -> Iterable:
    """``iterable`` with a transient bar on a terminal (``enabled``: this process shows progress), else as is."""
    if not (enabled and is_terminal()):
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stdout)


class BarSafeHandler(logging.StreamHandler):
    """Log lines that never tear a live bar: ``tqdm.write`` clears the bars of the stream, writes, redraws."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging's own handlers do: a failed write must not stop the run
            self.handleError(record)


class _MessageFilter(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lstrip("* ")
        return not message.startswith(self.starts)


def silence(logger: str, *starts: str) -> None:
    """Drop the records of ``logger`` whose message starts with one of ``starts`` (leading ``*`` and spaces
    ignored); every other record of that logger, and every other logger, is untouched. Idempotent."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, _MessageFilter) and f.starts == starts for f in target.filters):
        target.addFilter(_MessageFilter(starts))


def memory_text(device: torch.device) -> str:
    """The device memory the bar shows: CUDA's allocator peak, elsewhere the process's resident set."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.max_memory_allocated(device) / 1e9:.2f}G"
    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak, which getrusage reports in KiB (macOS: bytes)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return f"rss {rss / 1e9:.2f}G"


def duration(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Console:
    """The main process's progress display of one training launch (see the module docstring).

    ``emit`` writes one log line (the run log's ``info``); ``terminal``: stdout is a terminal (None: ask it).
    ``every``: ``--log-every``. ``clock``: seconds, monotonic (tests pass their own).
    """

    def __init__(self, emit: Callable[[str], None], device: torch.device, every: int = 0,
                 terminal: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.emit, self.device, self.every, self.clock = emit, device, every, clock
        self.terminal = is_terminal() if terminal is None else terminal
        self.started = clock()
        self.bar: tqdm | None = None
        self.epoch: dict[str, Any] | None = None  # the epoch in progress (start_epoch .. end_epoch)
        self.epoch_times: list[float] = []  # this launch's whole epochs, wall seconds (training + validation)
        self.best: tuple[int, float] | None = None  # (epoch, fitness) of the best validation seen this launch
        self.best_fitness = -1.0

    # ----------------------------------------------------------------------------------------- epoch
    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int, images_per_step: int,
                    names: tuple[str, ...], best_fitness: float) -> None:
        """Epoch ``epoch`` (0-based) of ``epochs`` starts (or resumes after ``done`` of its ``steps``); ``names``:
        the loss items (box, cls, dfl); ``best_fitness``: best.pt's so far (-1: none)."""
        self.close()
        now = self.clock()
        self.best_fitness = max(self.best_fitness, best_fitness)
        self.epoch = {"epoch": epoch, "epochs": epochs, "steps": steps, "done": done, "first": done,
                      "names": names, "images_per_step": images_per_step, "sums": dict.fromkeys(("loss", *names), 0.0),
                      "n": 0, "step_time": 0.0, "lr": math.nan, "started": now, "last_line": now, "record": None}
        if self.terminal:
            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                            dynamic_ncols=True, file=sys.stdout, bar_format=BAR_FORMAT)

    def step(self, record: dict[str, Any]) -> None:
        """After each optimizer step, with its ``train_log.jsonl`` record."""
        e = self.epoch
        if e is None:
            return
        for key in e["sums"]:
            e["sums"][key] += record[key]
        e["n"] += 1
        e["done"] += 1
        e["step_time"] += record.get("step_time_s", 0.0)
        e["lr"], e["record"] = record["lr"], record
        if self.bar is not None:
            self.bar.set_description_str(self._numbers(), refresh=False)
            self.bar.update(1)
        elif self._line_due(record["step"]):
            e["last_line"] = self.clock()
            self.emit(self._step_line(record))

    def _line_due(self, step: int) -> bool:
        """Redirected output: whether this step prints a line (see the module docstring)."""
        e = self.epoch
        if e["n"] == 1 and e["first"] == e["done"] - 1 and not self.epoch_times:  # the launch's first step
            return True
        if self.every:
            return step % self.every == 0
        quarters = {math.ceil(e["steps"] * k / 4) for k in (1, 2, 3)} - {e["steps"]}  # its end has its summary
        return e["done"] in quarters or self.clock() - e["last_line"] >= PLAIN_MAX_GAP_S

    def means(self) -> dict[str, float]:
        e = self.epoch
        return {k: v / max(e["n"], 1) for k, v in e["sums"].items()}

    def _losses(self) -> str:
        m, names = self.means(), self.epoch["names"]
        return f"loss {m['loss']:.3f} ({' '.join(f'{k} {m[k]:.3f}' for k in names)})"

    def _images_per_s(self) -> float:
        e = self.epoch
        return e["n"] * e["images_per_step"] / e["step_time"] if e["step_time"] > 0 else 0.0

    def _numbers(self) -> str:
        """The bar's description: the epoch, its running mean losses, images/s, memory."""
        e, m = self.epoch, self.means()
        losses = " ".join(f"{k} {m[k]:.4g}" for k in ("loss", *e["names"]))
        return (f"epoch {e['epoch'] + 1}/{e['epochs']} {losses} {self._images_per_s():.1f} img/s "
                f"{memory_text(self.device)}")

    def _eta(self) -> float:
        """Seconds left in this epoch's training at this launch's pace in it."""
        e = self.epoch
        return (self.clock() - e["started"]) / max(e["n"], 1) * (e["steps"] - e["done"])

    def _step_line(self, record: dict[str, Any]) -> str:
        e = self.epoch
        mfu = f" MFU {record['mfu']:.1%}" if "mfu" in record else ""
        return (f"epoch {e['epoch'] + 1}/{e['epochs']} step {record['step']} ({e['done']}/{e['steps']}) "
                f"{self._losses()} lr {record['lr']:.2e} {self._images_per_s():.1f} img/s{mfu} "
                f"{memory_text(self.device)} ETA {duration(self._eta())}")

    def end_epoch(self, metrics: dict[str, Any] | None) -> dict[str, float]:
        """The epoch ended (trained, validated when ``metrics``, saved): its summary line; returns what the
        trackers record for it (``trackers.log_epoch``)."""
        e = self.epoch
        self.close()
        if e is None or not e["n"]:
            self.epoch = None
            return {}
        seconds = self.clock() - e["started"]
        self.epoch_times.append(seconds)
        number = e["epoch"] + 1
        values = {f"train/{k}" if k == "loss" else f"train/{k}_loss": v for k, v in self.means().items()}
        values.update({"lr": e["lr"], "train/images_per_s": self._images_per_s(), "time/epoch_s": seconds})
        best = ""
        if metrics:
            values.update({name: float(metrics[k]) for k, name in METRIC_NAMES.items()})
            # the validation's loss items, when it computed them: Ultralytics' val/box_loss, val/cls_loss, ...
            values.update({f"val/{k}": float(v) for k, v in metrics.items() if k.endswith("_loss")})
            if metrics["fitness"] > self.best_fitness:  # the trainer's rule for a new best.pt
                self.best, self.best_fitness = (number, metrics["fitness"]), metrics["fitness"]
        if self.best is not None:
            best = f"; best mAP50-95 {self.best[1]:.4f} (epoch {self.best[0]})"
        left = e["epochs"] - number
        eta = f"; ETA {duration(left * sum(self.epoch_times) / len(self.epoch_times))}" if left > 0 else ""
        self.emit(f"epoch {number}/{e['epochs']} done in {duration(seconds)} ({e['n']} steps): {self._losses()} "
                  f"lr {e['lr']:.2e} {self._images_per_s():.1f} img/s {memory_text(self.device)}{best}{eta}")
        self.epoch = None
        return values

    def done_line(self, step: int, out: Any, best_weights: bool) -> str:
        """The run's last line: where it ended, how long this launch took, the best epoch, where the files are."""
        epochs = len(self.epoch_times)
        best = ""
        if self.best is not None and best_weights:
            best = f"; best epoch {self.best[0]} (mAP50-95 {self.best[1]:.4f}): {out}/weights/best.pt"
        elif best_weights:
            best = f"; best: {out}/weights/best.pt"
        return (f"done: step {step} ({epochs} epoch{'s' if epochs != 1 else ''} in "
                f"{duration(self.clock() - self.started)}){best}; weights in {out}/weights, metrics in "
                f"{out}/metrics.json")

    def close(self) -> None:
        """Remove the live bar (an epoch cut short by --max-steps or an error leaves none behind)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
