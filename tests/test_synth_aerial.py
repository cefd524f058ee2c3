"""``synth --scene aerial``: the DroneVehicle-like scene writes what its docstring says: oriented boxes of five
classes, an RGB and an IR label set that differ as the images do (vehicles only IR sees at night, parked ones only RGB
sees by day), the same bytes for a seed, and a data.yaml the scan reads as ``task: obb`` with IR labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolofuse_scale.cli import main
from yolofuse_scale.data import load_data_config, scan_dataset, write_synthetic_dataset
from yolofuse_scale.data.synth.aerial import NAMES, obb_lines, render_aerial
from yolofuse_scale.data.synth.common import pair_rng

H, W = 96, 120


def _frames(n: int = 48):
    return [render_aerial(pair_rng(5, "train", i), H, W) for i in range(n)]


def _inside(corners: np.ndarray, shrink: float = 0.6) -> np.ndarray:
    """A mask of the box's inner part (scaled about its centre: no anti-aliased edge, no lights at the ends)."""
    c = corners.mean(0)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.round((corners - c) * shrink + c).astype(np.int32)], 1)
    return mask.astype(bool)


def test_vehicles_and_what_each_image_shows():
    frames = _frames()
    vehicles = [(v, meta, rgb, ir) for rgb, ir, vs, meta in frames for v in vs]
    assert {v["cls"] for v, *_ in vehicles} == set(NAMES)  # five kinds
    angles = {round(np.degrees(np.arctan2(*(v["corners"][1] - v["corners"][0])[::-1])) % 180) for v, *_ in vehicles}
    assert len(angles) > 20  # rotated, not axis-aligned
    night_only_ir = [x for x in vehicles if x[1]["night"] and x[0]["ir"] and not x[0]["rgb"]]
    day_only_rgb = [x for x in vehicles if not x[1]["night"] and x[0]["rgb"] and not x[0]["ir"]]
    assert night_only_ir and day_only_rgb
    assert all(v["ir"] for v, meta, *_ in vehicles if meta["night"])  # at night IR sees every vehicle
    assert all(v["rgb"] == (v["lights"] or not meta["night"]) for v, meta, *_ in vehicles)
    checked = 0
    for v, _meta, rgb, ir in night_only_ir:  # warm in IR; in RGB the ground's own shade, under the night's noise
        inner, ring = _inside(v["corners"]), _inside(v["corners"], 1.6) & ~_inside(v["corners"], 1.1)
        if inner.sum() < 10 or ring.sum() < 10:
            continue
        assert ir[inner].mean() - ir[ring].mean() > 15
        assert abs(rgb[inner].mean() - v["ground_rgb"].mean()) < 8  # noise (sigma 12) over >= 30 values: < 2.2
        checked += 1
    assert checked >= 3
    for _rgb, _ir, vs, _meta in frames:  # each image's labels: its own vehicles, at least half inside the frame
        for key, shown in (("rgb_box", "rgb"), ("ir_box", "ir")):
            lines = obb_lines(vs, key, W, H)
            assert len(lines) <= sum(v[shown] for v in vs)
            assert all(len(ln.split()) == 9 for ln in lines)


def test_the_written_set_loads_with_both_label_sets_and_is_deterministic(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=4, scene="aerial")
    b = write_synthetic_dataset(tmp_path / "b", n_train=6, n_val=2, imgsz=64, seed=4, scene="aerial", workers=2)
    spec = yaml.safe_load(a.read_text())
    assert spec["task"] == "obb" and spec["labels_ir"] == "labelsIR" and spec["synth"] == {"scene": "aerial", "seed": 4}
    assert "label_policy" not in spec and spec["names"] == NAMES

    def digest(root: Path, pattern: str) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob(pattern)):
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
        return h.hexdigest()

    assert digest(a.parent, "*.txt") == digest(b.parent, "*.txt")  # labels: the seeded draws, any worker count
    for folder in ("images", "imagesIR", "labels", "labelsIR"):
        assert len(list((a.parent / folder / "train").iterdir())) == 6
    cfg = load_data_config(a)
    result = scan_dataset(cfg, ("train", "val"))
    assert result.error is None, result.error
    train = result.take(log=lambda _m: None)["train"]
    assert all(s.boxes.shape[1] == 9 and s.label_ir is not None for s in train)
    assert train[0].hw == (64, 80)  # 1.25x as wide, as DroneVehicle's 640 x 512


def test_synth_command_writes_the_aerial_scene(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--train", "2", "--val", "1", "--imgsz", "64",
                 "--scene", "aerial"]) == 0
    assert "aerial" in capsys.readouterr().out
    assert load_data_config(tmp_path / "s" / "data.yaml").task == "obb"
