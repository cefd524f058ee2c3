"""Side by side with the alternative users have today: Ultralytics' own trainer (and YOLOFuse's) next to ours.

    python -m benchmarks.compare_ultralytics --out runs/compare --threads 1 2     # the committed run
    python -m benchmarks.compare_ultralytics --out DIR --data data.yaml --model yolov8s --imgsz 640 --epochs 10
    python -m benchmarks.compare_ultralytics --out DIR --yolofuse ~/src/YOLOFuse    # + YOLOFuse's own trainer

**Ultralytics.** Data-level fusion (RGB and IR stacked as input channels into one YOLOv8) is the one fusion
Ultralytics can train itself: in 8.4 a data YAML may say ``channels: 4`` and its loader then reads
every image with ``cv2.IMREAD_UNCHANGED`` (``ultralytics/data/base.py``), which for a ``.tiff`` keeps every
band (``ultralytics/utils/patches.py: imread``). The paired dataset is converted once into such TIFFs
(:func:`write_tiff_dataset`: R, G, B, IR; Ultralytics swaps channels only for 3-channel images, so its
model sees the same channel order as ours). Our ``--fusion data`` model and Ultralytics'
``yolov8?.yaml`` built with ``ch=4`` have the same layers and parameter count (checked per run).

Both trainers run in fresh processes, one after the other, with the same data, image size, batch,
epochs, workers, seed, thread count and recipe: SGD, lr, momentum, weight decay, warm-up, linear
decay, EMA, gradient clipping at 10, the YOLOv8 augmentation with Ultralytics' defaults and the same
``close_mosaic``, validation after every epoch. ``nbs`` is set to the batch in both, so every batch is
one optimizer step (and one EMA update) in both; at Ultralytics' default ``nbs`` 64 it would accumulate
64 / batch batches per step, a different update rule and fewer optimizer/EMA steps per image.

**Timing.** A step is timed from the end of the previous step to the end of this one, so it contains
the data loading, forward, loss, backward, clipping, optimizer and EMA, and nothing of validation or
checkpointing: ours from ``train_log.jsonl`` (``step_time_s``), Ultralytics' with its own callbacks
(``on_train_epoch_start`` and ``on_train_batch_end``; ``on_train_batch_start`` to ``..._end`` is kept
too, as compute without the loader). The first ``skip_steps`` steps (allocator and cache warm-up) are
left out; images/s is the batch over the median step time, with the 10th..90th percentile spread.
Each step's process CPU time is taken over the same boundaries (ours: train.py run through
``--ours-child``, whose trainer callback :class:`CpuClock` adds ``cpu_s`` to each log record): on a
machine shared with other jobs, wall time measures the neighbours too, CPU time at one thread hardly.

**Accuracy.** mAP50 and mAP50-95 of each run's EMA weights after the last epoch, on the same val set,
each with its own validator (conf 0.001, NMS IoU 0.7, max 300 detections in both): ours from
``metrics.json``, Ultralytics' from its ``results.csv`` row of the last epoch (not its ``best.pt``).

**YOLOFuse** (``yolofuse=PATH``, a local checkout of WangQvQ/YOLOFuse, a fork of Ultralytics 8.3.74):
its own trainer (``YOLO(yaml).train(..., ch=6)``, as its ``train_dual.py``) on its
``ultralytics/cfg/models/fuse/Mid-level-Feature-Fusion.yaml``, with the checkout's ``ultralytics``
package first on ``sys.path``, beside ours on the same YAML (``--model PATH/...yaml``), IR as 3 channels
as YOLOFuse reads it (a fork whose cfg has no ``ch`` gets ``channels: 6`` in the data YAML instead).
Untested against a real checkout (none here): run only through a stand-in, stock Ultralytics under
that path, which fails at the first forward as expected (it cannot read pairs). Without a checkout the
result says "not run".

**More than one device.** Ultralytics trains one process on CPU: ``engine/trainer.py`` sets
``world_size = 0`` for a CPU device (lines 186-190 in 8.4.190) and its DDP set-up binds every rank to a
``cuda`` (or npu/xpu) device (``_setup_ddp``, line 284). The result states this instead of leaving the
multi-device cell blank; YOLOFuse inherits the same trainer.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

SCHEMA = "compare_ultralytics/1"
ULTRALYTICS_SCALES = ("n", "s", "m", "l", "x")  # the rows of Ultralytics' yolov8.yaml (ours adds a tiny "t")
YOLOFUSE_MID_YAML = "ultralytics/cfg/models/fuse/Mid-level-Feature-Fusion.yaml"
MULTI_DEVICE_NOTE = (
    "Ultralytics cannot train on more than one device on CPU: its trainer sets world_size = 0 for a CPU "
    "device (ultralytics/engine/trainer.py:186-190, 8.4.190) and its DDP set-up binds each rank to a CUDA "
    "(or NPU/XPU) device (_setup_ddp, trainer.py:284); YOLOFuse inherits that trainer. Multi-device "
    "columns have no Ultralytics or YOLOFuse entry on CPU for that reason."
)
SPEED_TARGET = 1.1  # ours / Ultralytics, images per CPU-second, same model doing the same work (issue 15)
YOLOFUSE_NOT_GIVEN = "not run: no --yolofuse checkout given"
MAP_KEYS = {"mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)", "precision": "metrics/precision(B)",
            "recall": "metrics/recall(B)"}


# ------------------------------------------------------------------------------------------------ data
def write_tiff_dataset(data_yaml: str | Path, out: str | Path) -> Path:
    """Convert a paired dataset (our/YOLOFuse layout) into 4-channel TIFFs Ultralytics trains on.

    Writes ``out/images/{train,val}/<stem>.tiff`` holding R, G, B, IR (IR as one grayscale channel,
    decoded exactly as our loader decodes it for ``ir_channels: 1``), ``out/labels/{train,val}/<stem>.txt``
    (the pair's label file, copied byte for byte; none for a pair without one, as in the source) and
    ``out/data.yaml`` with ``channels: 4``. Returns the path of that YAML.

    The array is written with ``cv2.imwrite``, which stores a 4-channel array as BGRA -> RGBA on disk and
    hands back the same array order on ``IMREAD_UNCHANGED``, the flag Ultralytics reads multi-channel
    images with; its ``Format`` reverses channels only for 3-channel images, so its model gets R, G, B, IR.
    """
    import cv2
    import numpy as np
    import yaml

    from yolofuse_scale.data import load_data_config, scan_split
    from yolofuse_scale.data.decode import read_image

    cfg = load_data_config(data_yaml)
    out = Path(out)
    for split in ("train", "val"):
        images, labels = out / "images" / split, out / "labels" / split
        for d in (images, labels):
            if d.exists():
                shutil.rmtree(d)  # a rerun on another source must not keep stale files
            d.mkdir(parents=True)
        seen: dict[str, Path] = {}
        for s in scan_split(cfg, split):
            stem = s.rgb.stem
            if stem in seen:  # one flat folder per split: two sources with one stem would overwrite
                raise ValueError(f"{s.rgb} and {seen[stem]} share the file stem {stem!r}; rename one")
            seen[stem] = s.rgb
            rgb, ir = read_image(s.rgb, 3), read_image(s.ir, 1)
            if ir.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"{s.rgb}: RGB {rgb.shape[:2]} and IR {ir.shape[:2]} differ in size")
            if not cv2.imwrite(str(images / f"{stem}.tiff"), np.concatenate([rgb, ir], axis=2)):
                raise OSError(f"cannot write {images / f'{stem}.tiff'}")
            if s.label is not None and s.label.is_file():
                shutil.copyfile(s.label, labels / f"{stem}.txt")
    spec = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "nc": cfg.nc,
            "names": dict(cfg.names), "channels": 4}
    path = out / "data.yaml"
    path.write_text("# 4-channel (R, G, B, IR) TIFF copy for Ultralytics' own trainer\n"
                    + yaml.safe_dump(spec, sort_keys=False))
    return path


def _paired_yaml(data_yaml: Path, out: Path, ir_channels: int) -> Path:
    """A copy of the paired data.yaml with absolute paths and the IR channel count the comparison needs."""
    import yaml

    from yolofuse_scale.data import load_data_config

    cfg = load_data_config(data_yaml)
    spec = {"path": str(cfg.root), "train": [str(p) for p in cfg.train], "val": [str(p) for p in cfg.val],
            "names": dict(cfg.names), "ir_dir": cfg.ir_dir, "ir_channels": ir_channels}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


# ---------------------------------------------------------------------------------------------- timing
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


def _numpy2_shim() -> None:
    """YOLOFuse's fork (Ultralytics 8.3.74) integrates AP with ``np.trapz``, removed in NumPy 2.0 (its
    first validation dies with AttributeError). Its successor ``np.trapezoid`` computes the same
    trapezoidal sum. Set in this child process only: the checkout is not modified and nothing else
    sees the alias."""
    import numpy as np

    if not hasattr(np, "trapz") and hasattr(np, "trapezoid"):
        np.trapz = np.trapezoid


def _child(spec_path: str) -> int:
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


def _ours_child(argv: list[str]) -> int:
    """``train.py ARGV`` with :class:`CpuClock` registered on the loop (``Trainer(cfg, callbacks=...)``)."""
    from yolofuse_scale.cli import build_train_parser, run_train

    return run_train(build_train_parser().parse_args(argv), callbacks=[CpuClock()])


# ------------------------------------------------------------------------------------------------- runs
def _run(cmd: list[str], env: dict[str, str], folder: Path, key: Any) -> tuple[int, str, dict[str, Any]]:
    """Run ``cmd`` (output in ``folder/train.log``) unless ``folder/done.json`` holds a finished run of ``key``.

    A finished run is reused, so an interrupted comparison or one re-rendered with other statistics does
    not train again; the wall time and load averages are the ones measured when it ran.
    """
    done = folder / "done.json"
    if done.is_file():
        prior = json.loads(done.read_text())
        if prior.get("key") == key:
            return 0, "", prior["run"]
    load = os.getloadavg()[0]
    proc = common.run_command(cmd, env, log=folder / "train.log")
    run = {"wall_s": round(proc.wall_s, 1), "loadavg_1min_before": load, "loadavg_1min_after": os.getloadavg()[0]}
    if proc.ok:
        done.write_text(json.dumps({"key": key, "run": run}))
    return proc.returncode, proc.output[-2500:], run


def _env(threads: int, device: str = "cpu") -> dict[str, str]:
    # --device cpu on a GPU machine: neither trainer may see the GPU (ours would take it by default)
    return common.train_env(threads, OPENCV_LOG_LEVEL="ERROR", **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu"
                                                                   else {}))


def _recipe_args(s: dict[str, Any]) -> dict[str, Any]:
    """The recipe both trainers get, in Ultralytics' names (Ultralytics' defaults except where stated)."""
    return {"epochs": s["epochs"], "imgsz": s["imgsz"], "batch": s["batch"], "workers": s["workers"],
            "optimizer": "SGD", "lr0": s["lr"], "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005,
            "warmup_epochs": s["warmup_epochs"], "warmup_momentum": 0.8, "warmup_bias_lr": 0.1,
            "nbs": s["batch"], "close_mosaic": s["close_mosaic"], "seed": s["seed"],
            **({"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0} if s.get("no_hsv") else {})}


def _their_cache(s: dict[str, Any]) -> str | bool:
    """Ultralytics' ``cache`` for ours' ``--cache``: decoded images in RAM (per process) or on disk (.npy)."""
    return {"none": False, "ram": "ram", "disk": "disk"}[s.get("cache", "none")]


def _ours_args(s: dict[str, Any]) -> list[str]:
    r = _recipe_args(s)
    return ["--imgsz", str(r["imgsz"]), "--batch-size", str(r["batch"]), "--epochs", str(r["epochs"]),
            "--workers", str(r["workers"]), "--optimizer", "sgd", "--lr", str(r["lr0"]), "--lrf", str(r["lrf"]),
            "--momentum", str(r["momentum"]), "--weight-decay", str(r["weight_decay"]),
            "--warmup-epochs", str(r["warmup_epochs"]), "--warmup-momentum", str(r["warmup_momentum"]),
            "--warmup-bias-lr", str(r["warmup_bias_lr"]), "--schedule", "linear", "--clip-grad", "10",
            "--nbs", str(r["nbs"]), "--close-mosaic", str(r["close_mosaic"]), "--seed", str(r["seed"]),
            "--val", "--keep-last", "1", "--log-every", "1000",
            *(["--cache", s["cache"]] if s.get("cache", "none") != "none" else []),
            *(["--hsv-h", "0", "--hsv-s", "0", "--hsv-v", "0"] if s.get("no_hsv") else [])]


def run_ours(data_yaml: Path, model_args: list[str], s: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Our train.py in a fresh process; throughput from train_log.jsonl, accuracy from metrics.json.

    It runs as ``-m benchmarks.compare_ultralytics --ours-child ARGS``: train.py's own parser and loop,
    with a CPU-time field added to each log record (:func:`_ours_child`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    train_args = ["--data", str(data_yaml), *model_args, *_ours_args(s), "--output-dir", str(folder / "run")]
    cmd = [sys.executable, "-m", "benchmarks.compare_ultralytics", "--ours-child", *train_args]
    done = folder / "done.json"
    if done.is_file() and not (folder / "run" / "metrics.json").is_file():
        done.unlink()
    rc, tail, run = _run(cmd, _env(s["threads"], s.get("device", "cpu")), folder, [cmd[1:], s["threads"]])
    rec: dict[str, Any] = {"command": "train.py " + " ".join(train_args), **run}
    if rc != 0:
        return {**rec, "status": "failed", "error": tail}
    steps = [{"images": r["images_per_s"] * r["step_time_s"], "step_time_s": r["step_time_s"],
              **{k: r[k] for k in ("cpu_s", "max_rss_mib") if k in r}} for r in common.read_log(folder / "run")
             if "step_time_s" in r]
    summary = common.read_metrics(folder / "run")
    m = summary.get("metrics") or {}
    return {**rec, "status": "ok", **summarise_steps(steps, s["skip_steps"]),
            **{k: m.get(k) for k in MAP_KEYS}, "params": summary["params"], "threads": s["threads"],
            "run_dir": str(folder / "run")}


def run_alternative(kind: str, spec_args: dict[str, Any], s: dict[str, Any], folder: Path,
                    checkout: Path | None = None, model_yaml: Path | None = None) -> dict[str, Any]:
    """Ultralytics' (``kind="ultralytics"``) or YOLOFuse's trainer in a fresh process, timed by callbacks."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"kind": kind, "threads": s["threads"], "train_args": spec_args, "result": str(folder / "child.json"),
            "checkout": str(checkout) if checkout else None, "model_yaml": str(model_yaml) if model_yaml else None}
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    cmd = [sys.executable, "-m", "benchmarks.compare_ultralytics", "--child", str(folder / "spec.json")]
    if not (folder / "child.json").is_file():
        (folder / "done.json").unlink(missing_ok=True)
    rc, tail, run = _run(cmd, _env(s["threads"], s.get("device", "cpu")), folder, spec)
    rec: dict[str, Any] = {**run, "train_args": spec_args}
    if rc != 0:
        return {**rec, "status": "failed", "error": tail}
    child = json.loads((folder / "child.json").read_text())
    last = child["results_csv_last"] or child["epoch_metrics"]
    return {**rec, "status": "ok", **summarise_steps(child["steps"], s["skip_steps"]),
            **{k: last.get(v) for k, v in MAP_KEYS.items()},
            "best_pt": {k: child["best_pt_metrics"].get(v) for k, v in MAP_KEYS.items()},
            "params": child["params"], "threads": child["threads"], "version": child["version"],
            "package": child["package"], "workers_used": 0, "run_dir": child["save_dir"]}


def _ratio(ours: dict, other: dict, key: str = "images_per_s") -> float | None:
    if ours.get("status") == "ok" and other.get("status") == "ok" and other.get(key):
        return ours[key] / other[key]
    return None


def _yolofuse(checkout: Path, data_yaml: Path, s: dict[str, Any], work: Path) -> dict[str, Any]:
    """YOLOFuse's trainer on its Mid-level-Feature-Fusion.yaml beside ours on the same YAML."""
    import yaml

    checkout = checkout.resolve()
    found = [checkout / YOLOFUSE_MID_YAML] if (checkout / YOLOFUSE_MID_YAML).is_file() else sorted(
        checkout.glob("ultralytics/cfg/**/Mid-level-Feature-Fusion.yaml"))
    if not (checkout / "ultralytics" / "__init__.py").is_file() or not found:
        return {"status": "not run", "reason": f"not run: {checkout} has no ultralytics/ package with "
                f"{YOLOFUSE_MID_YAML} (is it a YOLOFuse checkout?)"}
    mid = found[0]
    scales = list((yaml.safe_load(mid.read_text()) or {}).get("scales") or {})
    scale = s["model"][-1] if s["model"][-1] in scales else (scales[0] if scales else "")
    # Ultralytics takes a YAML's scale from its file name ("yolov8n..."), else the first row of `scales`
    # with a warning: a copy named for the scale makes YOLOFuse build the same row ours gets with --scale.
    named = work / f"yolov8{scale}-Mid-level-Feature-Fusion.yaml" if scale else work / mid.name
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mid, named)
    from yolofuse_scale.data import load_data_config

    cfg = load_data_config(data_yaml)
    notes = []
    if "images" in str(cfg.root):  # YOLOFuse pairs by str.replace("images", "imagesIR") on the whole path
        notes.append(f"the dataset path {cfg.root} contains 'images': YOLOFuse's str.replace pairing may "
                     "rewrite it (its IR paths would not exist)")
    yf_data = work / "yolofuse_data.yaml"
    # `channels` for forks that read it from the data YAML; those that take `ch=6` (its train_dual.py) ignore it
    yf_data.write_text(yaml.safe_dump({"path": str(cfg.root), "train": [str(p) for p in cfg.train],
                                       "val": [str(p) for p in cfg.val], "nc": cfg.nc, "names": dict(cfg.names),
                                       "channels": 6}, sort_keys=False))
    args = {**_recipe_args(s), "data": str(yf_data), "ch": 6, "device": "cpu", "pretrained": False, "amp": False,
            "plots": False, "val": True, "cache": _their_cache(s), "project": str(work / "yolofuse"), "name": "train",
            "exist_ok": True, "verbose": False}
    theirs = run_alternative("yolofuse", args, s, work / "yolofuse", checkout=checkout, model_yaml=named)
    ours_data = _paired_yaml(data_yaml, work / "ours_data_ir3.yaml", ir_channels=3)  # YOLOFuse reads IR as 3 ch
    model_args = ["--model", str(mid), *(["--scale", scale] if scale else [])]
    ours = run_ours(ours_data, model_args, s, work / "ours_mid_yaml")
    return {"status": "ok" if theirs["status"] == ours["status"] == "ok" else "failed", "yaml": str(mid),
            "scale": scale, "yolofuse": theirs, "ours": ours, "ratio_images_per_s": _ratio(ours, theirs),
            "ratio_images_per_s_p90": _ratio(ours, theirs, "images_per_s_p90"),
            "ratio_images_per_cpu_s": _ratio(ours, theirs, "images_per_cpu_s"),
            "params_equal": theirs.get("params") == ours.get("params") if theirs.get("params") else None,
            "notes": notes}


# ---------------------------------------------------------------------------------------------- compare
def machine(label: str | None = None, env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's machine line, from the environment record ``env`` (:func:`benchmarks.common.environment`)."""
    import cv2
    import torch

    env = env or common.environment()
    return {"label": label or f"{env['cpu_cores']}-core CPU", "cpu_count": env["cpu_cores"],
            "affinity": env["cpu_affinity"], "processor": platform.processor() or platform.machine(),
            "platform": env["platform"], "python": env["python"], "torch": env["versions"]["torch"],
            "ultralytics": env["versions"]["ultralytics"], "opencv": cv2.__version__,
            "cuda_available": torch.cuda.is_available()}


def compare(
    out_dir: str | Path,
    *,
    model: str = "yolov8n",
    imgsz: int = 128,
    batch: int = 8,
    epochs: int = 3,
    workers: int = 0,
    threads: int = 1,
    data: str | Path | None = None,
    yolofuse: str | Path | None = None,
    train_pairs: int = 800,
    val_pairs: int = 64,
    lr: float = 0.08,
    warmup_epochs: float = 1.0,
    close_mosaic: int = 1,
    seed: int = 0,
    skip_steps: int = 5,
    label: str | None = None,
    scene: str = "easy",
    cache: str = "none",
    no_hsv: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train our data-level fusion model and Ultralytics' own trainer on the same data and budget; compare.

    ``lr`` 0.08 with ``nbs`` = ``batch`` = 8 is the step our defaults take (lr 0.01 on 64/8 x the batch's
    loss at nbs 64); Ultralytics' default lr 0.01 at nbs 64 would give each image 1/8 of that weight.
    ``data``: a paired data.yaml (default: a synthetic set of ``train_pairs`` / ``val_pairs`` written under
    ``out_dir``). ``yolofuse``: a YOLOFuse checkout to also compare on its Mid-level-Feature-Fusion.yaml.
    Runs, logs and the converted TIFF set go under ``out_dir/work``. Returns a JSON-serialisable dict:

    - ``schema``: ``"compare_ultralytics/1"``; ``settings``: every knob above; ``machine``: CPU, versions;
      ``environment``: the record every benchmark writes (:func:`benchmarks.common.environment`);
    - ``ours`` / ``ultralytics``: ``status`` (``ok`` | ``failed`` + ``error``), ``images_per_s`` (median
      over timed steps), ``images_per_s_p10`` / ``_p90``, ``images_per_s_aggregate`` (images / seconds),
      ``step_time_s_median``, ``steps``, ``steps_timed``, ``mAP50``, ``mAP50-95``, ``precision``, ``recall``,
      ``params``, ``threads``, ``wall_s`` (whole process, validation and start-up included),
      ``slow_steps_fraction`` (steps 25 % slower than the fast decile), ``loadavg_1min_before`` / ``_after``,
      ``cpu_s_per_step_median`` and ``images_per_cpu_s`` (process CPU time over the same step boundaries);
      ``peak_rss_mib`` (the training process's peak resident memory: with workers 0, the loader's too);
    - ``ratio_images_per_s``: ours / Ultralytics of the medians (None if either failed);
      ``ratio_images_per_s_p90``: of the fast-decile rates, which other tenants' load on a shared machine
      disturbs least; ``ratio_images_per_cpu_s``: of images per CPU-second, which it hardly disturbs at
      one thread (at more threads, spinning OpenMP threads count too); ``params_equal``;
    - ``yolofuse``: ``{"status": "not run", "reason": ...}`` or ``{"status", "yolofuse", "ours",
      "ratio_images_per_s", "params_equal", "yaml", "scale", "notes"}``;
    - ``multi_device``: why Ultralytics has no multi-device entry on CPU; ``notes``: list of strings.
    """
    scale = model.removeprefix("yolov8")
    if not model.startswith("yolov8") or scale not in ULTRALYTICS_SCALES:
        raise ValueError(f"model must be yolov8{{{','.join(ULTRALYTICS_SCALES)}}} (a scale Ultralytics ships), "
                         f"got {model!r}")
    out = Path(out_dir).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    s = {"model": model, "fusion": "data", "imgsz": imgsz, "batch": batch, "epochs": epochs, "workers": workers,
         "threads": threads, "lr": lr, "warmup_epochs": warmup_epochs, "close_mosaic": close_mosaic, "seed": seed,
         "skip_steps": skip_steps, "nbs": batch, "schedule": "linear", "optimizer": "SGD",
         "scene": scene if data is None else None, "cache": cache, "no_hsv": no_hsv, "device": device}
    if data is None:
        from yolofuse_scale.data import write_synthetic_dataset

        data_yaml = write_synthetic_dataset(work / "data", train_pairs, val_pairs, imgsz, seed=0, scene=scene)
        s["data"] = (f"synthetic set (yolofuse-scale synth --scene {scene}), {train_pairs} train / {val_pairs} val "
                     f"pairs, {imgsz}x{int(round(imgsz * 1.25 / 2) * 2)} px, 1-channel IR, seed 0")
    else:
        data_yaml = Path(data).resolve()
        s["data"] = str(data_yaml)
    t0 = time.monotonic()
    tiff_yaml = write_tiff_dataset(data_yaml, work / "tiff4")
    ours_yaml = _paired_yaml(data_yaml, work / "ours_data.yaml", ir_channels=1)  # 3 + 1 = the TIFF's 4 channels
    s["conversion_s"] = round(time.monotonic() - t0, 1)

    ul_args = {**_recipe_args(s), "model": f"{model}.yaml", "data": str(tiff_yaml),
               "device": "cpu" if device == "cpu" else "0",
               "pretrained": False, "amp": False, "plots": False, "val": True, "cache": _their_cache(s),
               "project": str(work / "ultralytics"), "name": "train", "exist_ok": True, "verbose": False}
    ultra = run_alternative("ultralytics", ul_args, s, work / "ultralytics")
    ours = run_ours(ours_yaml, ["--model", model, "--fusion", "data"], s, work / "ours_data")
    notes = [
        "Step = data loading + forward + loss + backward + clip + optimizer + EMA (validation and checkpoints "
        f"excluded); first {skip_steps} steps left out; images/s = batch / median step time.",
        f"Threads: OMP_NUM_THREADS=MKL_NUM_THREADS={threads} for both processes; Ultralytics' select_device "
        f"overrides it with torch.set_num_threads(min(8, cpus - 1)) (utils/torch_utils.py:363-364), so its "
        f"child sets {threads} again at every epoch start and records what torch reports (ultralytics.threads). "
        "Both import Ultralytics, which sets cv2.setNumThreads(0).",
        f"nbs = batch = {batch} in both, so every batch is one optimizer step and one EMA update in both "
        "(Ultralytics' default nbs 64 would accumulate 64/batch batches per step).",
        "Differences that remain: Ultralytics applies the LR decay per epoch, ours per step (same linear "
        "curve); " + ("HSV off in both (--no-hsv); " if no_hsv else "Ultralytics' RandomHSV skips 4-channel "
                      "images, ours applies HSV to the RGB channels (more work for ours); ")
        + "Ultralytics validates with rectangular batches, ours letterboxes to a square; ours warms up for at "
        "least 100 steps (--warmup-min-steps, Ultralytics <= 8.3's floor; within epochs - 1 epochs), "
        "Ultralytics 8.4 for warmup_epochs epochs only; "
        + (f"decoded-image cache '{cache}' in both." if cache != "none" else
           "no cache: both keep decoded images per process: Ultralytics the last min(n, 8 x batch, 1000) "
           "images, its mosaic partners drawn from them; ours up to 256 MiB of decoded pairs (data/buffer.py), "
           "partners drawn by the seeded RNG from the sample's micro-batch and as many other pairs "
           "(--mosaic-partners pool: at most 2 decodes per sample, none once the set fits the buffer)."),
        (f"On {device}: both load with {workers} DataLoader workers; fp32 in both (Ultralytics amp=False)."
         if device != "cpu" else "Ultralytics forces workers=0 on CPU (engine/trainer.py:178-179): "
         + ("both load in the main process (workers=0)." if workers == 0
           else f"ours used {workers} DataLoader workers, Ultralytics 0 whatever was asked.")),
        "mAP: EMA weights after the last epoch, same val pairs, conf 0.001 / IoU 0.7 in both (Ultralytics: its "
        "results.csv row of the last epoch; its best.pt re-validation is kept under ultralytics.best_pt).",
    ]
    params_equal = ultra.get("params") == ours.get("params") if ultra.get("params") else None
    if params_equal is not None and ours.get("params"):
        notes.append(f"Parameters: ours {ours.get('params'):,} vs Ultralytics {ultra.get('params'):,} "
                     f"({'equal: same architecture' if params_equal else 'DIFFERENT'}).")
    env = common.environment(threads=threads, machine_label=label or "")
    result = {
        "schema": SCHEMA,
        "settings": s,
        "machine": machine(label, env),
        "environment": env,
        "ours": ours,
        "ultralytics": ultra,
        "ratio_images_per_s": _ratio(ours, ultra),
        "ratio_images_per_s_p90": _ratio(ours, ultra, "images_per_s_p90"),
        "ratio_images_per_cpu_s": _ratio(ours, ultra, "images_per_cpu_s"),
        "params_equal": params_equal,
        "yolofuse": ({"status": "not run", "reason": YOLOFUSE_NOT_GIVEN} if yolofuse is None
                     else _yolofuse(Path(yolofuse), data_yaml, s, work / "yolofuse_compare")),
        "multi_device": {"ultralytics": "cannot run on CPU", "note": MULTI_DEVICE_NOTE},
        "notes": notes,
    }
    return result


# --------------------------------------------------------------------------------------------- markdown
def _f(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _row(name: str, r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        err = (r.get("error") or r.get("reason") or "").strip().splitlines()[-1:] or [""]
        return f"| {name} | {r.get('status', 'failed')}: {err[0][:150]} |" + " |" * 10
    return (f"| {name} | {_f(r['images_per_s'], '.1f')} ({_f(r['images_per_s_p10'], '.1f')}..."
            f"{_f(r['images_per_s_p90'], '.1f')}) | {_f(r['step_time_s_median'], '.3f')} | "
            f"{_f(r['images_per_s_aggregate'], '.1f')} | {_f(r.get('images_per_cpu_s'), '.1f')} | "
            f"{_f(100 * r['slow_steps_fraction'], '.0f')} % | "
            f"{_f(r.get('mAP50'))} | {_f(r.get('mAP50-95'))} | "
            f"{r.get('params', 0):,} | {_f(r.get('wall_s'), '.0f')} | {_f(r.get('loadavg_1min_before'), '.1f')}, "
            f"{_f(r.get('loadavg_1min_after'), '.1f')} |")


def _ratio_line(what: str, r: dict[str, Any], target: float) -> str:
    """The speed verdict: ``target`` applies to images per CPU-second (the measure other tenants of a
    shared machine hardly disturb at one thread); the wall-time ratios are printed beside it."""
    ratio, cpu = r.get("ratio_images_per_s"), r.get("ratio_images_per_cpu_s")
    if ratio is None:
        return f"**Ratio ours / {what}** (train-phase images/s): not available (a run failed, see the table)."
    line = f"**Ratio ours / {what}** (median train-phase images/s): **{ratio:.2f}x**"
    if cpu is not None:
        line += (f"; images per CPU-second: **{cpu:.3f}x**, target >= {target:.1f}x: "
                 f"**{'met' if cpu >= target else 'not met'}**")
    if r.get("ratio_images_per_s_p90") is not None:
        line += f" (fast-decile rates: {r['ratio_images_per_s_p90']:.2f}x)"
    return line + "."


def markdown(result: dict[str, Any]) -> str:
    """Render a report section (tables + notes) from a :func:`compare` result."""
    s, m = result["settings"], result["machine"]
    head = ("| trainer | images/s median (p10...p90) | step s (median) | images/s aggregate | images/CPU-s "
            "| slow steps | mAP50 | mAP50-95 | params | process wall s | load before, after |\n" + "|---" * 11 + "|")
    lines = [
        f"### Ours vs Ultralytics' own trainer: {s['model']} data-level fusion (RGB+IR as 4 input channels)",
        "",
        f"{m['label']} ({m['processor']}, {m['cpu_count']} CPUs), {s['threads']} thread(s) per process; "
        f"{s['data']}; {s['imgsz']} px, batch {s['batch']}, {s['epochs']} epochs, workers {s['workers']}, "
        f"SGD lr {s['lr']}, warm-up {s['warmup_epochs']} epoch(s), close_mosaic {s['close_mosaic']}, seed {s['seed']}; "
        f"torch {m['torch']}, Ultralytics {m['ultralytics']}.",
        "",
        head,
        _row(f"ours (`train.py --fusion data --model {s['model']}`)", result["ours"]),
        _row(f"Ultralytics {result['ultralytics'].get('version', '')} `DetectionTrainer` ({s['model']}.yaml, "
             "4-ch TIFF)", result["ultralytics"]),
        "",
        _ratio_line("Ultralytics", result, SPEED_TARGET),
    ]
    o, u = result["ours"], result["ultralytics"]
    if o.get("mAP50") is not None and u.get("mAP50") is not None:
        lines.append(f"**Accuracy at equal budget**: mAP50 ours {o['mAP50']:.3f} vs Ultralytics {u['mAP50']:.3f} "
                     f"({o['mAP50'] - u['mAP50']:+.3f}); mAP50-95 {o['mAP50-95']:.3f} vs {u['mAP50-95']:.3f} "
                     f"({o['mAP50-95'] - u['mAP50-95']:+.3f}).")
    if o.get("peak_rss_mib") is not None and u.get("peak_rss_mib") is not None:
        lines.append(f"**Peak resident memory** of the training process (with workers 0 it is the loader too, "
                     f"decoded images kept included): ours {o['peak_rss_mib']:.0f} MiB, Ultralytics "
                     f"{u['peak_rss_mib']:.0f} MiB.")
    lines += ["", f"**More than one device**: {result['multi_device']['note']}", ""]
    yf = result["yolofuse"]
    if yf.get("status") == "not run":
        lines.append(f"**YOLOFuse (Mid-level-Feature-Fusion.yaml)**: {yf['reason']}.")
    else:
        lines += [f"**YOLOFuse (`{Path(yf.get('yaml', '')).name}`, scale {yf.get('scale') or 'first'})**:", "",
                  head, _row("ours (`train.py --model <that yaml>`)", yf.get("ours", {})),
                  _row(f"YOLOFuse trainer (ultralytics fork {yf.get('yolofuse', {}).get('version', '')})",
                       yf.get("yolofuse", {})), "",
                  _ratio_line("YOLOFuse", yf, SPEED_TARGET)]
        lines += [f"- {n}" for n in yf.get("notes", [])]
    lines += ["", "Notes:"] + [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ seeds
SEED_METRICS = ("mAP50-95", "mAP50", "images_per_cpu_s")


def _spread(xs: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (n - 1) and range of ``xs``; the deviation is None for one value."""
    n = len(xs)
    mean = sum(xs) / n if n else None
    sd = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5 if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "min": min(xs) if xs else None, "max": max(xs) if xs else None}


def seed_summary(runs: list[dict[str, Any]], other: str = "ultralytics") -> dict[str, Any]:
    """Across seeds (one :func:`compare` result each, same settings otherwise): per metric, each trainer's
    values seed by seed with mean / sd / range, and the paired difference ours - ``other`` per seed
    (both trainers ran on the same pairs with the same seed, so the pairing removes the data's share
    of the spread). A seed where either trainer failed is left out of the pairs and named."""
    ok = [r for r in runs if r["ours"].get("status") == "ok" and r[other].get("status") == "ok"]
    out: dict[str, Any] = {"seeds": [r["settings"]["seed"] for r in ok],
                           "failed_seeds": [r["settings"]["seed"] for r in runs if r not in ok], "metrics": {}}
    for k in SEED_METRICS:
        ours = [r["ours"][k] for r in ok if r["ours"].get(k) is not None and r[other].get(k) is not None]
        theirs = [r[other][k] for r in ok if r["ours"].get(k) is not None and r[other].get(k) is not None]
        out["metrics"][k] = {"ours": {"values": ours, **_spread(ours)}, other: {"values": theirs, **_spread(theirs)},
                             "paired_difference": _spread([a - b for a, b in zip(ours, theirs)])}
    return out


def seed_markdown(summary: dict[str, Any], settings: dict[str, Any], other: str = "Ultralytics") -> str:
    """The multi-seed table: per metric, mean +- sd (range) of each trainer and the paired difference."""
    def cell(d: dict[str, Any]) -> str:
        if d["mean"] is None:
            return "–"
        sd = f" ± {d['sd']:.3f}" if d["sd"] is not None else ""
        return f"{d['mean']:.3f}{sd} ({d['min']:.3f}...{d['max']:.3f})"

    key = other.lower()
    lines = [f"### {settings['model']} at {settings['imgsz']} px, {settings['epochs']} epochs, batch "
             f"{settings['batch']}: seeds {', '.join(map(str, summary['seeds']))}", "",
             f"| metric | ours: mean ± sd (range) | {other}: mean ± sd (range) | ours − {other}, paired: "
             "mean ± sd (range) |", "|---|---|---|---|"]
    for k, m in summary["metrics"].items():
        lines.append(f"| {k} | {cell(m['ours'])} | {cell(m[key])} | {cell(m['paired_difference'])} |")
    if summary["failed_seeds"]:
        lines.append(f"\nLeft out (a trainer failed): seeds {', '.join(map(str, summary['failed_seeds']))}.")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Writes OUT/results.json and OUT/report.md; runs under OUT/threads_N/work "
                                "(a finished run there is reused when the same comparison is run again).")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one trainer run in a fresh process
    p.add_argument("--out", help="folder for results.json, report.md and work/")
    p.add_argument("--data", default=None, help="paired data.yaml (default: a synthetic set)")
    p.add_argument("--yolofuse", default=None, help="a local YOLOFuse checkout: also compare its own trainer")
    p.add_argument("--model", default="yolov8n", help="yolov8n|s|m|l|x (default: yolov8n)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="one comparison per thread count")
    p.add_argument("--train-pairs", type=int, default=800, help="synthetic train pairs (default: 800)")
    p.add_argument("--val-pairs", type=int, default=64, help="synthetic val pairs (default: 64)")
    p.add_argument("--cache", choices=["none", "ram", "disk"], default="none",
                   help="decoded-image cache of both trainers (ours --cache, Ultralytics' cache=): with 'ram' neither "
                   "decodes an image twice, so their speeds compare the same work (default: none)")
    p.add_argument("--no-hsv", action="store_true",
                   help="HSV augmentation off in both (Ultralytics skips it on a 4-channel image anyway; ours "
                   "applies it to the RGB channels): the like-for-like speed setting")
    p.add_argument("--scene", choices=["easy", "hard"], default="easy",
                   help="synthetic set's generator setting (yolofuse-scale synth --scene; default: easy)")
    p.add_argument("--lr", type=float, default=0.08,
                   help="peak lr of both (default: 0.08: at nbs = batch 8 the same step as our default lr 0.01 at "
                   "nbs 64, which backpropagates 64/8 x the batch's loss)")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--close-mosaic", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="training seeds (same data for all): one comparison each, then mean, spread and the "
                   "paired difference per seed (default: 0)")
    p.add_argument("--skip-steps", type=int, default=5, help="first steps left out of the timing (default: 5)")
    p.add_argument("--label", default=None, help="machine label written with the numbers")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where both train: cpu (the GPU hidden from both), or cuda (the first GPU; fp32 in both, "
                   "Ultralytics' amp off, ours --mixed-precision no)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ours-child"]:  # internal: our train.py with CPU time per step, in a fresh process
        return _ours_child(argv[1:])
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child)
    if not args.out:
        p.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, summaries, report = [], [], []
    for n in args.threads:
        per_seed = []
        for seed in args.seeds:  # one seed: the folder layout of before (threads_N)
            where = out / f"threads_{n}" / (f"seed_{seed}" if len(args.seeds) > 1 else "")
            r = compare(where, model=args.model, imgsz=args.imgsz,
                        batch=args.batch, epochs=args.epochs, workers=args.workers, threads=n, data=args.data,
                        yolofuse=args.yolofuse, train_pairs=args.train_pairs, val_pairs=args.val_pairs, lr=args.lr,
                        warmup_epochs=args.warmup_epochs, close_mosaic=args.close_mosaic, seed=seed,
                        skip_steps=args.skip_steps, label=args.label, scene=args.scene, cache=args.cache,
                        no_hsv=args.no_hsv, device=args.device)
            per_seed.append(r)
            report.append(markdown(r))
            print(report[-1], flush=True)
        results += per_seed
        if len(args.seeds) > 1:
            summary = {"threads": n, **seed_summary(per_seed)}
            summaries.append(summary)
            report.insert(len(report) - len(per_seed), seed_markdown(summary, per_seed[0]["settings"]))
            print(report[len(report) - len(per_seed) - 1], flush=True)
    # one compare() dict per (thread count, seed); with several seeds, their summary per thread count
    (out / "results.json").write_text(json.dumps({"runs": results, "seed_summaries": summaries}, indent=1))
    (out / "report.md").write_text("\n".join(report))
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
