"""What runs in the comparison's fresh processes (``-m benchmarks.compare_ultralytics --child SPEC`` and
``--ours-child ARGS``): Ultralytics' or YOLOFuse's trainer timed by callbacks, and our train command
with a CPU-time field in each log record."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from benchmarks.compare.timing import CpuClock, StepTimer


def _numpy2_shim() -> None:
    """YOLOFuse's fork (Ultralytics 8.3.74) integrates AP with ``np.trapz``, removed in NumPy 2.0 (its
    first validation dies with AttributeError). Its successor ``np.trapezoid`` computes the same
    trapezoidal sum. Set in this child process only: the checkout is not modified and nothing else
    sees the alias."""
    import numpy as np

    if not hasattr(np, "trapz") and hasattr(np, "trapezoid"):
        np.trapz = np.trapezoid


def alternative_child(spec_path: str) -> int:
    """Run Ultralytics' (or YOLOFuse's) trainer as ``spec_path`` says; write steps and metrics as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("checkout"):  # YOLOFuse: its fork of ultralytics, not the installed one
        sys.path.insert(0, spec["checkout"])
        _numpy2_shim()
    import torch

    import yolofuse_scale._offline as offline  # offline env before ultralytics is imported

    torch.set_num_threads(spec["threads"])
    import ultralytics
    import ultralytics.data.utils  # noqa: F401  (bound by name below: check_det_dataset downloads fonts)

    offline.forbid_font_downloads()
    if spec.get("checkout") and not Path(ultralytics.__file__).resolve().is_relative_to(Path(spec["checkout"])):
        raise RuntimeError(f"{spec['checkout']}: its ultralytics package was not imported ({ultralytics.__file__})")
    timer = StepTimer(spec["threads"])  # sets the thread count again once the trainer has picked its device
    t0 = time.perf_counter()
    if spec["kind"] == "ultralytics":
        from ultralytics.models.yolo.detect import DetectionTrainer

        # The trainer itself, as YOLO(...).train() uses it: it builds the model from the YAML with
        # ch = data["channels"] (YOLO("x.yaml") would first build a 3-channel model and keep its yaml).
        trainer = DetectionTrainer(overrides=spec["train_args"])
        timer.attach(trainer)
        trainer.train()
        save_dir = Path(trainer.save_dir)
    else:  # YOLOFuse's documented entry: YOLO(yaml).train(data=..., ch=6, ...)
        from ultralytics import YOLO
        from ultralytics.cfg import DEFAULT_CFG_DICT

        args = dict(spec["train_args"])
        if "ch" not in DEFAULT_CFG_DICT:  # a fork that takes the channel count from the data YAML instead
            args.pop("ch", None)
        model = YOLO(spec["model_yaml"])
        for event in ("on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
                      "on_fit_epoch_end"):
            model.add_callback(event, getattr(timer, event))
        model.train(**args)
        save_dir = Path(model.trainer.save_dir)
    wall = time.perf_counter() - t0
    last_row: dict[str, float] = {}
    csv_path = save_dir / "results.csv"
    if csv_path.is_file():
        with open(csv_path) as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            last_row = {k.strip(): float(v) for k, v in rows[-1].items() if v not in (None, "")}
    last_epoch = spec["train_args"]["epochs"] - 1
    record = {"steps": timer.steps, "params": timer.params, "threads": timer.threads, "wall_s": wall,
              "version": ultralytics.__version__, "package": str(Path(ultralytics.__file__).parent),
              "results_csv_last": last_row, "epoch_metrics": timer.epoch_metrics.get(last_epoch, {}),
              "best_pt_metrics": timer.epoch_metrics.get(last_epoch + 1, {}), "save_dir": str(save_dir)}
    Path(spec["result"]).write_text(json.dumps(record, indent=1))
    return 0


def ours_child(argv: list[str]) -> int:
    """``train.py ARGV`` with :class:`CpuClock` registered on the loop (``Trainer(cfg, callbacks=...)``)."""
    from yolofuse_scale.cli import build_train_parser, run_train

    return run_train(build_train_parser().parse_args(argv), callbacks=[CpuClock()])
