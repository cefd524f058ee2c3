"""benchmarks/compare_ultralytics.py and its modules (benchmarks/compare/): the 4-channel TIFF copy, timing,
the report, our CPU-time child."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import yolofuse_scale._offline  # noqa: F401  (offline Ultralytics before anything imports it)
from benchmarks import common
from benchmarks.compare.report import markdown
from benchmarks.compare.seeds import seed_markdown, seed_summary
from benchmarks.compare.tiff import write_tiff_dataset
from benchmarks.compare.timing import summarise_steps
from benchmarks.compare_ultralytics import MULTI_DEVICE_NOTE
from tests.helpers import ENV, ROOT
from yolofuse_scale.data import write_synthetic_dataset


@pytest.mark.parametrize("ir_channels", [1, 3])
def test_tiff_copy_is_the_pair_in_rgb_ir_order_with_its_labels(tmp_path, ir_channels):
    from ultralytics.data.augment import Format
    from ultralytics.utils.patches import imread

    src = write_synthetic_dataset(tmp_path / "src", n_train=3, n_val=2, imgsz=48, seed=1, ir_channels=ir_channels)
    spec = yaml.safe_load(write_tiff_dataset(src, tmp_path / "tiff").read_text())
    assert spec["channels"] == 4 and spec["nc"] == 2 and spec["names"] == {0: "person", 1: "car"}
    root = Path(spec["path"])
    for split, n in (("train", 3), ("val", 2)):
        rgbs = sorted((tmp_path / "src" / "images" / split).glob("*.png"))
        assert len(rgbs) == n and len(list((root / "images" / split).glob("*.tiff"))) == n
        for rgb_file in rgbs:
            # read as Ultralytics reads a `channels: 4` dataset
            tiff = imread(str(root / "images" / split / f"{rgb_file.stem}.tiff"), cv2.IMREAD_UNCHANGED)
            rgb = cv2.cvtColor(cv2.imread(str(rgb_file), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            ir = cv2.imread(str(tmp_path / "src" / "imagesIR" / split / rgb_file.name), cv2.IMREAD_UNCHANGED)
            ir = ir if ir.ndim == 2 else cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY)
            assert tiff.shape == (*rgb.shape[:2], 4) and tiff.dtype == np.uint8
            np.testing.assert_array_equal(tiff[..., :3], rgb)  # R, G, B: channel order and pixels
            np.testing.assert_array_equal(tiff[..., 3], ir)
            # what Ultralytics' model gets: Format reverses channels only for 3-channel images
            chw = Format()._format_img(tiff.copy()).numpy()
            np.testing.assert_array_equal(chw, np.concatenate([rgb, ir[..., None]], axis=2).transpose(2, 0, 1))
            label = tmp_path / "src" / "labels" / split / f"{rgb_file.stem}.txt"
            assert (root / "labels" / split / label.name).read_bytes() == label.read_bytes()


def test_tiff_copy_refuses_two_pairs_with_one_stem(tmp_path):
    src = write_synthetic_dataset(tmp_path / "src", n_train=2, n_val=1, imgsz=48)
    spec = yaml.safe_load(src.read_text())
    for d in ("images", "imagesIR", "labels"):  # a second train folder holding the same file names
        (tmp_path / "src" / d / "train2").mkdir()
        for f in (tmp_path / "src" / d / "train").iterdir():
            (tmp_path / "src" / d / "train2" / f.name).write_bytes(f.read_bytes())
    spec["train"] = ["images/train", "images/train2"]
    src.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="share the file stem"):
        write_tiff_dataset(src, tmp_path / "tiff")


def test_summarise_steps_leaves_out_warm_up_and_takes_the_median():
    steps = [{"images": 8, "step_time_s": t, "cpu_s": 0.1} for t in (5.0, 4.0, *[0.2] * 8, 0.5, 0.8)]
    s = summarise_steps(steps, skip=2)
    assert s["steps"] == 12 and s["steps_timed"] == 10
    assert s["images_per_s"] == pytest.approx(8 / 0.2) and s["step_time_s_median"] == pytest.approx(0.2)
    assert s["images_per_s_aggregate"] == pytest.approx(80 / 2.9)
    assert s["images_per_s_p10"] <= s["images_per_s"] <= s["images_per_s_p90"]
    assert s["slow_steps_fraction"] == pytest.approx(2 / 10)  # 0.5 and 0.8 s against a fast decile of 0.2 s
    assert s["images_per_cpu_s"] == pytest.approx(80) and "cpu_s_per_step_median" not in summarise_steps(
        [{"images": 8, "step_time_s": 0.2}], skip=0)


def test_summarise_steps_reports_the_trainers_peak_memory():
    """Memory beside speed: the peak of every step's reading (warm-up included), absent when a trainer gave none."""
    from benchmarks.compare.timing import peak_rss_mib

    steps = [{"images": 8, "step_time_s": 0.2, "max_rss_mib": m} for m in (900.0, 1200.0, 1100.0)]
    assert summarise_steps(steps, skip=2)["peak_rss_mib"] == 1200.0
    assert "peak_rss_mib" not in summarise_steps([{"images": 8, "step_time_s": 0.2}], skip=0)
    assert 10 < peak_rss_mib() < 1e6  # this process, in MiB


def _run(ips: float, map50: float) -> dict:
    return {"status": "ok", "images_per_s": ips, "images_per_s_p10": ips * 0.9, "images_per_s_p90": ips * 1.1,
            "images_per_s_aggregate": ips, "step_time_s_median": 8 / ips, "slow_steps_fraction": 0.1,
            "images_per_cpu_s": ips * 1.2,
            "mAP50": map50, "mAP50-95": map50 / 2, "params": 3011382, "wall_s": 100.0, "version": "8.4.190",
            "loadavg_1min_before": 0.5, "loadavg_1min_after": 1.25}


RESULT = {
    "schema": "compare_ultralytics/1",
    "settings": {"model": "yolov8n", "imgsz": 128, "batch": 8, "epochs": 3, "workers": 0, "threads": 1, "lr": 0.01,
                 "warmup_epochs": 1.0, "close_mosaic": 1, "seed": 0, "data": "synthetic set"},
    "machine": {"label": "test box", "processor": "x86_64", "cpu_count": 2, "torch": "2.x", "ultralytics": "8.4.190"},
    "ours": _run(25.0, 0.512),
    "ultralytics": _run(20.0, 0.498),
    "ratio_images_per_s": 1.25,
    "ratio_images_per_s_p90": 1.25,
    "ratio_images_per_cpu_s": 1.25,
    "params_equal": True,
    "yolofuse": {"status": "not run", "reason": "not run: no --yolofuse checkout given"},
    "multi_device": {"ultralytics": "cannot run on CPU", "note": MULTI_DEVICE_NOTE},
    "notes": ["threads fixed at 1"],
}


def test_seed_summary_pairs_each_seed_and_reports_mean_spread_and_range():
    runs = []
    for seed, (ours, theirs) in enumerate([(0.60, 0.70), (0.80, 0.70), (0.70, 0.70)]):
        r = copy.deepcopy(RESULT)
        r["settings"]["seed"] = seed
        r["ours"]["mAP50-95"], r["ultralytics"]["mAP50-95"] = ours, theirs
        runs.append(r)
    failed = copy.deepcopy(RESULT)
    failed["settings"]["seed"] = 3
    failed["ultralytics"] = {"status": "failed", "error": "boom"}
    summary = seed_summary(runs + [failed])
    assert summary["seeds"] == [0, 1, 2] and summary["failed_seeds"] == [3]
    m = summary["metrics"]["mAP50-95"]
    assert m["ours"]["values"] == [0.60, 0.80, 0.70] and m["ultralytics"]["values"] == [0.70] * 3
    assert m["ours"]["mean"] == pytest.approx(0.70) and m["ours"]["sd"] == pytest.approx(0.1)  # n - 1
    assert m["ultralytics"]["sd"] == pytest.approx(0.0)
    diff = m["paired_difference"]
    assert diff["mean"] == pytest.approx(0.0)
    assert diff["min"] == pytest.approx(-0.1) and diff["max"] == pytest.approx(0.1)
    md = seed_markdown(summary, runs[0]["settings"])
    assert "seeds 0, 1, 2" in md and "| mAP50-95 | 0.700 ± 0.100 (0.600...0.800) | 0.700 ± 0.000" in md
    assert "Left out (a trainer failed): seeds 3." in md
    one = seed_summary(runs[:1])["metrics"]["mAP50-95"]["ours"]
    assert one["sd"] is None and "0.600 (0.600...0.600)" in seed_markdown(seed_summary(runs[:1]), runs[0]["settings"])


def test_markdown_states_ratio_accuracy_multi_device_and_yolofuse():
    md = markdown(RESULT)
    assert ("**Ratio ours / Ultralytics** (median train-phase images/s): **1.25x**; images per CPU-second: "
            "**1.250x**, target >= 1.1x: **met** (fast-decile rates: 1.25x)") in md
    below = copy.deepcopy(RESULT)
    below["ratio_images_per_cpu_s"] = 1.0996  # the target is on CPU-seconds, whatever the wall-time ratio
    assert "images per CPU-second: **1.100x**, target >= 1.1x: **not met**" in markdown(below)
    assert "mAP50 ours 0.512 vs Ultralytics 0.498 (+0.014)" in md
    assert "cannot train on more than one device on CPU" in md and "trainer.py:186-190" in md
    assert "not run: no --yolofuse checkout given" in md
    assert "| 25.0 (22.5...27.5) | 0.320 | 25.0 | 30.0 | 10 % | 0.512 | 0.256 | 3,011,382 | 100 | 0.5, 1.2 |" in md
    assert "test box" in md and "1 thread(s)" in md and "- threads fixed at 1" in md

    slow = copy.deepcopy(RESULT)
    slow["ratio_images_per_s"] = 0.9
    slow["ultralytics"] = {"status": "failed", "error": "Traceback ...\nRuntimeError: boom"}
    slow["ratio_images_per_s"] = slow["ratio_images_per_s_p90"] = slow["ratio_images_per_cpu_s"] = None
    md = markdown(slow)
    assert "failed: RuntimeError: boom" in md and "not available" in md and "**met**" not in md

    ran = copy.deepcopy(RESULT)
    ran["yolofuse"] = {"status": "ok", "yaml": "/x/Mid-level-Feature-Fusion.yaml", "scale": "n",
                       "ours": _run(12.0, 0.6), "yolofuse": _run(10.0, 0.6), "ratio_images_per_s": 1.2, "notes": []}
    md = markdown(ran)
    assert "not run" not in md and "**Ratio ours / YOLOFuse** (median train-phase images/s): **1.20x**" in md


def test_cited_ultralytics_lines_still_say_what_the_note_claims():
    """The multi-device note cites trainer.py line numbers of the installed Ultralytics: fail if they moved."""
    import ultralytics

    lines = (Path(ultralytics.__file__).parent / "engine" / "trainer.py").read_text().splitlines()
    assert ultralytics.__version__ in MULTI_DEVICE_NOTE
    assert any("world_size = 0" in ln for ln in lines[185:190])
    assert "workers = 0" in lines[178]  # the note on workers cites 178-179
    assert 'else "cuda"' in lines[283] and "_setup_ddp" in "\n".join(lines[275:283])


@pytest.mark.slow
def test_ours_child_logs_each_steps_cpu_time_over_the_loops_step_boundaries(tmp_path):
    """``--ours-child`` times CPU through the trainer's callbacks: ``cpu_s`` in every record, counted from
    the epoch's start (not from process start: imports and model building would land in the first step)
    and from the previous step's end, as ``step_time_s`` is."""
    data = write_synthetic_dataset(tmp_path / "data", n_train=8, n_val=2, imgsz=64, seed=0)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "benchmarks.compare_ultralytics", "--ours-child", "--data", str(data), "--model",
           "yolov8t", "--fusion", "data", "--imgsz", "64", "--batch-size", "4", "--epochs", "2", "--workers", "0",
           "--no-augment", "--no-val", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = common.read_log(out)
    assert [r["epoch"] for r in log] == [0, 0, 1, 1]
    for r in log:  # one thread, no loader workers: CPU time cannot exceed the wall time by much
        assert 0 < r["cpu_s"] <= 1.2 * r["step_time_s"] + 0.1, r
