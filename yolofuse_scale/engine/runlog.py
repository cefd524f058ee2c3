"""Main-process logging: one logger, one JSONL writer, one tracker; other ranks get do-nothing versions.

Call sites never test the rank: they call ``log.info`` / ``log.step`` on every rank, and only the
writer's object (``storage.is_writer``: the job's main process, or each node's under
``--save-on-each-node``) writes anything. Trackers stay one per job: Accelerate runs them on the
global main process only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from yolofuse_scale.engine.storage import is_writer

_FMT = "%(asctime)s %(message)s"


class RunLog:
    """Console lines, ``train_log.jsonl`` (one object per optimizer step) and Accelerate trackers."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, tracker_config: dict[str, Any] | None = None):
        self.accelerator = accelerator
        self.logger = logging.getLogger("yolofuse_scale")
        if not self.logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter(_FMT, "%H:%M:%S"))
            self.logger.addHandler(handler)
            self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.path = output_dir / "train_log.jsonl"
        # The file and the trackers (which write into the folder too) start in rewind(), which the loop calls once
        # the Checkpointer has taken the folder: a start refused before that leaves the folder as it was, and
        # --overwrite has moved the previous run's log away by then.
        self._fh = None
        self.trackers = bool(accelerator.log_with)
        self._tracker_config: dict[str, Any] | None = tracker_config or {}  # None once the trackers are started

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
            self.close()
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept[s] + "\n" for s in sorted(kept)))
            os.replace(tmp, self.path)
        if self._fh is None:
            self._fh = open(self.path, "a", buffering=1)  # line-buffered: a killed run keeps every line
        if self.trackers and self._tracker_config is not None:
            flat = {k: v for k, v in _flatten(self._tracker_config).items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers("yolofuse_scale", config=flat)
            self._tracker_config = None

    def step(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        if self.trackers:
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.trackers:
            self.accelerator.log({f"val/{k}": v for k, v in values.items() if isinstance(v, float)}, step=step)

    def close(self) -> None:
        """Close the JSONL file; trackers finish in ``accelerator.end_training()`` (the trainer's last call)."""
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

    def step(self, record: dict[str, Any]) -> None:
        pass

    def metrics(self, values: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_log(accelerator: Accelerator, output_dir: Path, config: dict[str, Any] | None = None) -> RunLog | NullLog:
    if is_writer(accelerator):
        return RunLog(accelerator, output_dir, config)
    return NullLog(accelerator)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
