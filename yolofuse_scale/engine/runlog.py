"""Main-process logging: one logger, one JSONL writer, one console, the trackers; other ranks get do-nothing versions.

Call sites never test the rank: they call ``log.info`` / ``log.step`` on every rank, and only the
writer's object (``storage.is_writer``: the job's main process, or each node's under
``--save-on-each-node``) writes anything. The console (``console.py``: the bar or the plain progress lines,
the epoch and final summaries) is the writer's; trackers (``trackers.py``) stay one per job, on the global main
process only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from yolofuse_scale.engine import trackers
from yolofuse_scale.engine.console import BarSafeHandler, Console
from yolofuse_scale.engine.storage import is_writer

_FMT = "%(asctime)s %(message)s"


class RunLog:
    """Console lines, ``train_log.jsonl`` (one object per optimizer step) and Accelerate trackers."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, tracker_config: dict[str, Any] | None = None,
                 run_id: str | None = None, log_every: int = 0):
        self.accelerator = accelerator
        self.out = output_dir
        self.logger = logging.getLogger("yolofuse_scale")
        if not self.logger.handlers:
            handler = BarSafeHandler(sys.stdout)  # a line never tears the live bar (console.py)
            handler.setFormatter(logging.Formatter(_FMT, "%H:%M:%S"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.console = Console(self.info, accelerator.device, every=log_every)
        self.path = output_dir / "train_log.jsonl"
        # The file and the trackers (which write into the folder too) start in rewind(), which the loop calls once
        # the Checkpointer has taken the folder: a start refused before that leaves the folder as it was, and
        # --overwrite has moved the previous run's log away by then.
        self._fh = None
        # the job's main process only: another writer (each node's under --save-on-each-node) tracks nothing
        self.trackers = bool(accelerator.log_with) and accelerator.is_main_process
        self._tracker_config: dict[str, Any] | None = tracker_config or {}  # None once the trackers are started
        self.run_id = run_id
        self._validation: dict[str, Any] | None = None  # the epoch's validation, for its summary and trackers

    def info(self, msg: str) -> None:
        self.logger.info(msg)

    def rewind(self, step: int) -> None:
        """Keep one record per step for steps 1..``step`` (the last one written for each): the run
        continues from ``step`` (a resume, or 0: a fresh start of the folder's run) and logs the later
        steps again. Rewritten into a temporary file and renamed; untouched when nothing changes. Then
        the file is open for :meth:`step` (created if absent), and the trackers are started."""
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        kept: dict[int, str] = {}
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:  # the line a kill cut short
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept[record["step"]] = line
        if list(kept.values()) != lines:
            self._close_file()
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept[s] + "\n" for s in sorted(kept)))
            os.replace(tmp, self.path)
        if self._fh is None:
            self._fh = open(self.path, "a", buffering=1)  # line-buffered: a killed run keeps every line
        if self.trackers and self._tracker_config is not None:
            for line in trackers.start(self.accelerator, self.out, self.run_id, self._tracker_config):
                self.info(line)
            self._tracker_config = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int, images_per_step: int,
                    names: tuple[str, ...], best_fitness: float) -> None:
        """An epoch's progress display starts (``console.Console.start_epoch``)."""
        self._validation = None
        self.console.start_epoch(epoch, epochs, steps, done, images_per_step, names, best_fitness)

    def step(self, record: dict[str, Any]) -> None:
        """The step's record into train_log.jsonl, its progress onto the console."""
        self._fh.write(json.dumps(record) + "\n")
        self.console.step(record)

    def metrics(self, values: dict[str, Any], step: int) -> None:
        """The epoch's validation (its metrics and ``<name>_loss`` values), summarised and tracked at its end."""
        self._validation = values

    def end_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` (1-based) is trained, validated (if :meth:`metrics` came) and saved: its summary line,
        and its values to the trackers."""
        trackers.log_epoch(self.accelerator, self.console.end_epoch(self._validation), epoch)
        self._validation = None

    def done(self, step: int) -> None:
        """The run's last line: time, best epoch, where the weights and metrics are."""
        self.info(self.console.done_line(step, self.out, (self.out / "weights" / "best.pt").exists()))

    def interrupt(self) -> None:
        """An error or Ctrl-C ends the run: the live bar goes, so the error's line starts on a line of its own."""
        self.console.close()

    def close(self) -> None:
        """The console's bar gone, the run folder's images and config to the trackers, the JSONL file closed;
        trackers finish in ``accelerator.end_training()`` (the trainer's last call)."""
        self.console.close()
        if self.trackers and self._tracker_config is None:  # started
            trackers.log_files(self.accelerator, self.out)
        self._close_file()

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NullLog:
    """What every process that writes nothing gets."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator

    def info(self, msg: str) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def start_epoch(self, *args: Any) -> None:
        pass

    def step(self, record: dict[str, Any]) -> None:
        pass

    def metrics(self, values: dict[str, Any], step: int) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        pass

    def done(self, step: int) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_log(accelerator: Accelerator, output_dir: Path, config: dict[str, Any] | None = None,
             run_id: str | None = None, log_every: int = 0) -> RunLog | NullLog:
    if is_writer(accelerator):
        return RunLog(accelerator, output_dir, config, run_id, log_every)
    return NullLog(accelerator)
