"""The run folder an Ultralytics user knows, beside our own files: what is written there, when, and by whom.

==========================  ==========================================================================================
file                        written
==========================  ==========================================================================================
``results.csv``             one row per epoch at its end, Ultralytics' columns (:func:`results_columns`), rewritten
                            whole and renamed into place; a resume drops the rows of epochs after its resume point
                            (``RunLog.rewind``'s rule for the step log), so each epoch has exactly one row whatever
                            the launches and world sizes
``results.png``             at the end of each launch, from results.csv (``plots.results_png``)
``labels.json``, ``.jpg``   at a fresh start (and on a resume that finds them missing): the training labels' counts
                            and distributions (``plots.label_statistics``, ``plots.labels_jpg``)
``train_batch{0,1,2}.jpg``  the first three micro-batches the main process trains on (a fresh run's first three),
                            RGB | IR with the same boxes, after augmentation (``plots.batch_jpg``)
``val_per_class.txt``,      by the final validation (the run's last epoch): the per-class table ``val`` prints, and
PR/F1/P/R curves,           ``val``'s plots, under Ultralytics' names (``evaluate(plot_dir=...)``)
confusion matrices
==========================  ==========================================================================================

What a row holds. ``train/<name>_loss``: the mean over the epoch's optimizer steps of the loss items
``train_log.jsonl`` records for them (read back from that file, so a resume inside the epoch averages every step of
it exactly once). ``metrics/...(B)`` and ``val/<name>_loss``: the epoch's validation (empty when the epoch was not
validated: ``--no-val``); the validation loss is the mean over the validation images of each image's loss items
(``engine/evaluate.py``), the same at any world size. ``lr/pg0..2``: the learning rate of the epoch's last step in
Ultralytics' group order: pg0 the weights with decay, pg1 the normalisation weights, pg2 the biases (our optimizer
holds them as biases, weights, norms: ``engine/optim.py``). ``time``: seconds the run has trained up to the epoch's
end, over all its launches; each launch counts from the start of its loop (validation and saves included), and
the steps an interrupted launch did of an epoch it did not finish count with their ``step_time_s``.

``--no-plots`` leaves out the pictures (results.png, labels.jpg, the batch previews, the final curves and matrices);
the CSV, JSON and text files are always written. The process that writes the run's files (``storage.is_writer``)
gets a :class:`RunOutputs`, every other one a :class:`NullOutputs`: call sites never test the rank.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from yolofuse_scale.data.labels import axis_aligned
from yolofuse_scale.engine import plots
from yolofuse_scale.engine.evaluate import format_metrics_table
from yolofuse_scale.engine.optim import BIAS, NORM, WEIGHT
from yolofuse_scale.engine.storage import is_writer

RESULTS_CSV, RESULTS_PNG = "results.csv", "results.png"
LABELS_JPG, LABELS_JSON = "labels.jpg", "labels.json"
PREVIEW_BATCHES = 3
PREVIEWS = tuple(f"train_batch{i}.jpg" for i in range(PREVIEW_BATCHES))
VAL_TABLE = "val_per_class.txt"
#: The final validation's plots: Ultralytics' file names, as ``evaluate(plot_dir=...)`` (and ``val``) writes them.
VAL_PLOTS = ("BoxPR_curve.png", "BoxF1_curve.png", "BoxP_curve.png", "BoxR_curve.png", "confusion_matrix.png",
             "confusion_matrix_normalized.png")
#: Every file this module puts in the run folder (``--overwrite`` moves them aside with the rest of the run).
RUN_FOLDER_FILES = (RESULTS_CSV, RESULTS_PNG, LABELS_JSON, LABELS_JPG, *PREVIEWS, VAL_TABLE, *VAL_PLOTS)
#: Our param groups in Ultralytics' lr/pg0, pg1, pg2 order (its optimizer lists decayed weights, BN weights, biases).
ULTRALYTICS_GROUP_ORDER = (WEIGHT, NORM, BIAS)


def results_columns(loss_names: Sequence[str]) -> list[str]:
    """results.csv's header: Ultralytics' detection columns. ``loss_names``: the task's (box, cls, dfl; or box, cls,
    l1 for a head without distribution focal loss, as Ultralytics names them then)."""
    return ["epoch", "time", *(f"train/{n}_loss" for n in loss_names), "metrics/precision(B)", "metrics/recall(B)",
            "metrics/mAP50(B)", "metrics/mAP50-95(B)", *(f"val/{n}_loss" for n in loss_names),
            "lr/pg0", "lr/pg1", "lr/pg2"]


def read_results(path: Path) -> list[dict[str, str]]:
    """results.csv's rows as dicts of text cells (an absent file: none; a row without a whole epoch number: skipped)."""
    if not path.is_file():
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(path.read_text())):
        try:
            int(row.get("epoch") or "")
        except ValueError:
            continue
        rows.append(row)
    return rows


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _cell(value: float | None) -> str:
    """Six significant digits, as Ultralytics writes its CSV; empty: not measured this epoch."""
    return "" if value is None else f"{value:.6g}"


class RunOutputs:
    """The writer's run-folder files (see the module docstring). The trainer calls, in this order: :meth:`start` once
    the resume point is known, :meth:`preview` while :attr:`wants_batches`, :meth:`validated` after each validation,
    :meth:`epoch_end` at each epoch's end before its checkpoint, :meth:`finish` at the end of the launch."""

    def __init__(self, out: Path, log: Any, loss_names: Sequence[str], names: dict[int, str], plots_on: bool):
        """``log``: the run's :class:`~yolofuse_scale.engine.runlog.RunLog` (its ``path`` is train_log.jsonl, its
        ``info`` the console)."""
        self.out, self.log, self.loss_names, self.names, self.plots = out, log, tuple(loss_names), dict(names), plots_on
        self.columns = results_columns(self.loss_names)
        self.rows: list[dict[str, str]] = []
        #: True while the next micro-batch should become a batch preview (the trainer tests it per micro-batch).
        self.wants_batches = False
        self._previews = 0
        self._validation: tuple[dict[str, Any], dict[str, float]] | None = None
        self._time_base, self._t0, self._log_offset = 0.0, time.perf_counter(), 0

    # ------------------------------------------------------------------------------------------- start
    def start(self, epoch: int, step: int, samples: Sequence[Any]) -> None:
        """This launch begins at optimizer ``step``, inside (or at the start of) 0-based ``epoch``; ``samples``: the
        training set (``data.sample.Sample``: its ``boxes``). Call after train_log.jsonl was rewound to ``step``."""
        self._t0 = time.perf_counter()
        fresh = step == 0
        self._rewind_results(epoch)
        partial_seconds, self._log_offset = self._scan_log(epoch)
        last = self.rows[-1]["time"] if self.rows else ""
        self._time_base = (float(last) if last else 0.0) + partial_seconds
        if fresh or not (self.out / LABELS_JSON).is_file():
            boxes = [axis_aligned(s.boxes) for s in samples]  # oriented boxes: the box enclosing each
            stats = plots.label_statistics(boxes, self.names)
            _write_atomically(self.out / LABELS_JSON, (json.dumps(stats, indent=1) + "\n").encode())
            if self.plots:
                _write_atomically(self.out / LABELS_JPG, plots.labels_jpg(boxes, self.names))
        elif self.plots and not (self.out / LABELS_JPG).is_file():
            _write_atomically(self.out / LABELS_JPG, plots.labels_jpg([axis_aligned(s.boxes) for s in samples],
                                                                      self.names))
        self.wants_batches = self.plots and (fresh or not all((self.out / p).is_file() for p in PREVIEWS))

    def _rewind_results(self, epoch: int) -> None:
        """Keep one row (the last written) for each of epochs 1..``epoch`` (1-based: the epochs finished before the
        resume point); the run goes on from there and writes the later ones again. Untouched when nothing changes."""
        path = self.out / RESULTS_CSV
        found = read_results(path)
        kept: dict[int, dict[str, str]] = {}
        for row in found:
            if 1 <= int(row["epoch"]) <= epoch:
                kept[int(row["epoch"])] = row
        self.rows = [kept[e] for e in sorted(kept)]
        header = path.read_text().partition("\n")[0].split(",") if path.is_file() else self.columns
        if self.rows != found or header != self.columns:
            self._write_results()

    def _scan_log(self, epoch: int) -> tuple[float, int]:
        """(seconds the logged steps of ``epoch`` took: earlier launches' part of it, the byte offset in
        train_log.jsonl of its first record). One pass over the log, once per launch."""
        path = Path(self.log.path)
        seconds, offset, position = 0.0, None, 0
        if not path.is_file():
            return seconds, position
        with open(path, "rb") as fh:
            for line in fh:
                record = _record(line)
                if record is not None and record.get("epoch") == epoch:
                    offset = position if offset is None else offset
                    seconds += float(record.get("step_time_s", 0.0))
                position += len(line)
        return seconds, position if offset is None else offset

    # ------------------------------------------------------------------------------------------- steps
    def preview(self, batch: dict[str, Any]) -> None:
        """Write ``batch`` (as the model reads it: after the loader's ``to_device``) as the next train_batch<i>.jpg.

        Costs the micro-batch one device -> host copy of its first 16 samples (a host sync, ~0.8 MB at 640 px) and
        a JPEG (~30 ms at 16 x 640 px), inside its data time; three micro-batches of the run, then never again."""
        n = plots.PREVIEW_SAMPLES
        # host sync: the copy waits for the batch (under --loader device, its decode and augmentation)
        img = batch["img"][:n].cpu().numpy()
        idx = batch["batch_idx"].cpu().numpy()
        boxes = batch["bboxes"].cpu().numpy()  # (n, 4) xywh, or (n, 5) with the angle: oriented boxes
        targets = np.concatenate([batch["cls"].cpu().numpy().reshape(-1, 1), boxes.reshape(-1, boxes.shape[-1])],
                                 axis=1)
        keep = idx < n
        picture = plots.batch_jpg(img, idx[keep], targets[keep], self.names)
        _write_atomically(self.out / PREVIEWS[self._previews], picture)
        self._previews += 1
        self.wants_batches = self._previews < PREVIEW_BATCHES

    # -------------------------------------------------------------------------------------- validation
    def plot_dir(self, final: bool) -> Path | None:
        """Where ``evaluate`` writes its curves and confusion matrices: the run folder for the final validation."""
        return self.out if final and self.plots else None

    def validated(self, metrics: dict[str, Any], losses: dict[str, float], final: bool) -> None:
        """The epoch's validation (for its row); the final one's per-class table to the console and the run folder."""
        self._validation = (metrics, losses)
        if final:
            table = format_metrics_table(metrics)
            self.log.info("final validation (EMA weights of weights/last.pt):\n" + table)
            _write_atomically(self.out / VAL_TABLE, (table + "\n").encode())

    # ------------------------------------------------------------------------------------------- epoch
    def epoch_end(self, epoch: int, group_lrs: Sequence[float]) -> None:
        """Write 0-based ``epoch``'s row (its validation, if any, came through :meth:`validated`). ``group_lrs``: the
        optimizer's param-group lrs now, after the epoch's last step (biases, weights, norms: ``optim.BIAS``...)."""
        row: dict[str, float | None] = {"time": self._time_base + time.perf_counter() - self._t0}
        means = self._epoch_losses(epoch)
        row.update({f"train/{n}_loss": means.get(n) for n in self.loss_names})
        metrics, losses = self._validation or ({}, {})
        for key, name in (("precision", "precision(B)"), ("recall", "recall(B)"), ("mAP50", "mAP50(B)"),
                          ("mAP50-95", "mAP50-95(B)")):
            row[f"metrics/{name}"] = metrics.get(key)
        row.update({f"val/{n}_loss": losses.get(f"{n}_loss") for n in self.loss_names})
        row.update({f"lr/pg{i}": group_lrs[g] for i, g in enumerate(ULTRALYTICS_GROUP_ORDER)})
        self._validation = None
        self.rows = [r for r in self.rows if int(r["epoch"]) != epoch + 1]
        self.rows.append({"epoch": str(epoch + 1), **{k: _cell(v) for k, v in row.items()}})
        self._write_results()

    def _epoch_losses(self, epoch: int) -> dict[str, float]:
        """The mean of each loss item over ``epoch``'s records in train_log.jsonl (read from where the epoch starts:
        the log is read once per launch in whole, then each epoch's part once)."""
        sums = dict.fromkeys(self.loss_names, 0.0)
        count = 0
        with open(self.log.path, "rb") as fh:
            fh.seek(self._log_offset)
            data = fh.read()
        self._log_offset += len(data)
        for line in data.splitlines():
            record = _record(line)
            if record is None or record.get("epoch") != epoch:
                continue
            count += 1
            for n in self.loss_names:
                sums[n] += float(record[n])
        return {n: s / count for n, s in sums.items()} if count else {}

    def _write_results(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, restval="", extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        _write_atomically(self.out / RESULTS_CSV, buf.getvalue().encode())

    # ------------------------------------------------------------------------------------------- end
    def finish(self) -> None:
        """results.png from every row (one figure; nothing without a row or with --no-plots)."""
        if self.plots and self.rows:
            _write_atomically(self.out / RESULTS_PNG, plots.results_png(self.rows, self.loss_names))


class NullOutputs:
    """What every process that writes nothing gets."""

    wants_batches = False

    def start(self, epoch: int, step: int, samples: Sequence[Any]) -> None:
        pass

    def preview(self, batch: dict[str, Any]) -> None:
        pass

    def plot_dir(self, final: bool) -> Path | None:
        return None

    def validated(self, metrics: dict[str, Any], losses: dict[str, float], final: bool) -> None:
        pass

    def epoch_end(self, epoch: int, group_lrs: Sequence[float]) -> None:
        pass

    def finish(self) -> None:
        pass


def make_outputs(accelerator: Accelerator, out: Path, log: Any, loss_names: Sequence[str], names: dict[int, str],
                 plots_on: bool = True) -> RunOutputs | NullOutputs:
    """The writer's :class:`RunOutputs` (``storage.is_writer``: the rule of every training file), else a do-nothing."""
    return RunOutputs(out, log, loss_names, names, plots_on) if is_writer(accelerator) else NullOutputs()


def _record(line: bytes) -> dict[str, Any] | None:
    """One train_log.jsonl line as a dict (None: a line a kill cut short, or not a record)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None

