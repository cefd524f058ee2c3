"""``yolofuse-scale convert flir|m3fd|kaist|vedai``: exact boxes on fake copies of each layout, idempotent reruns.

The broken copies each converter refuses are in tests/test_bad_input_convert.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.benchmark_fakes import (
    BBGT_I00001,
    assert_labels,
    fake_flir,
    fake_kaist,
    fake_m3fd,
    fake_vedai,
    read_labels,
    write,
)
from tests.test_convert import _snapshot
from yolofuse_scale.cli import main
from yolofuse_scale.data import kaist_gt, load_data_config, scan_split
from yolofuse_scale.data.convert import m3fd


def _convert(args: list[str], capsys) -> str:
    assert main(["convert", *args]) == 0
    return capsys.readouterr().out


def _twice(args: list[str], dst, capsys) -> str:
    """Convert, convert again: the second run must write nothing (same links, same bytes, same mtimes)."""
    out = _convert(args, capsys)
    before = _snapshot(dst)
    again = _convert(args, capsys)
    assert _snapshot(dst) == before, "a rerun writes nothing"
    assert " 0 file(s) written" in again
    return out


def test_flir_aligned_boxes_split_and_partner(tmp_path, capsys):
    want = fake_flir(tmp_path / "FLIR")
    dst = tmp_path / "out"
    out = _twice(["flir", str(tmp_path / "FLIR"), str(dst)], dst, capsys)
    assert "2 pairs (train 1, val 1), 3 boxes" in out and "FLIR-aligned: 2 listed pairs" in out
    assert_labels(read_labels(dst), want)
    cfg = load_data_config(dst / "data.yaml")
    assert cfg.names == {0: "person", 1: "car", 2: "bicycle"} and cfg.ir_channels == 1
    (s,) = scan_split(cfg, "train")
    assert s.rgb.name == s.ir.name == "FLIR_00001.jpg"
    assert np.asarray(Image.open(s.ir)).mean() > 150, "imagesIR holds the thermal file (the PreviewData one)"


def test_flir_sizes_go_through_the_loaders_reading_exif_orientation(tmp_path, capsys):
    """Every new reader sizes images with the package's header reader: a pair stored 64x80 and tagged with EXIF
    orientation 6 is displayed (and trained) as 80x64, the size its XML gives, so it converts and its box is
    normalised by the displayed size. A reader of the stored size would refuse the XML's size."""
    root = tmp_path / "FLIR"
    fake_flir(root)
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("FLIR_00001_RGB.jpg", "FLIR_00001_PreviewData.jpeg"):
        Image.new("RGB", (64, 80), (90, 90, 90)).save(root / "align" / "JPEGImages" / name, "JPEG", exif=exif)
    dst = tmp_path / "out"
    _convert(["flir", str(root), str(dst)], capsys)
    assert_labels({"train": read_labels(dst)["train"]}, {"train": fake_flir(tmp_path / "again")["train"]})


def test_m3fd_shipped_split_is_the_documented_seeded_split():
    """The list files shipped in the package are exactly seeded_split(00000..04199, seed 0, 20 % val): the split
    is a pure function of the ids, so it is the same for every user."""
    shipped = {s: (m3fd.SPLIT_DIR / f"m3fd_{s}.txt").read_text().split() for s in ("train", "val")}
    assert shipped == m3fd.seeded_split(m3fd.RELEASE_IDS)
    assert (len(shipped["train"]), len(shipped["val"])) == (3360, 840)
    assert sorted(shipped["train"] + shipped["val"]) == list(m3fd.RELEASE_IDS)
    assert m3fd.seeded_split(m3fd.RELEASE_IDS, seed=1) != shipped, "the seed decides it"


def test_m3fd_six_classes_and_the_shipped_split(tmp_path, capsys):
    want = fake_m3fd(tmp_path / "M3FD")
    dst = tmp_path / "out"
    out = _twice(["m3fd", str(tmp_path / "M3FD"), str(dst)], dst, capsys)
    assert "3 pairs (train 2, val 1), 7 boxes" in out and "3 of the release's 4200 pairs" in out
    assert_labels(read_labels(dst), want)
    cfg = load_data_config(dst / "data.yaml")
    assert list(cfg.names.values()) == ["People", "Car", "Bus", "Motorcycle", "Lamp", "Truck"]
    assert [s.rgb.name for s in scan_split(cfg, "val")] == ["00001.png"]


def test_kaist_video_sets_rule_flat_improved_set_and_side_file(tmp_path, capsys):
    src = tmp_path / "KAIST"
    want = fake_kaist(src)
    dst = tmp_path / "out"
    out = _twice(["kaist", str(src), str(dst), "--test-ann", str(src / "improved")], dst, capsys)
    assert "KAIST train: 2 frames, train-all-02" in out and "KAIST test: 1 frames, annotated in" in out
    assert_labels(read_labels(dst), want)
    cfg = load_data_config(dst / "data.yaml", splits=("val",))
    assert cfg.names == {0: "person"} and cfg.val == cfg.extra_splits["test"] == [dst / "images" / "test"]
    assert cfg.missrate == dst / "kaist_annotations.json"
    side = kaist_gt.load(cfg.missrate)
    assert sorted(side) == ["set00_V000_I00001", "set00_V000_I00003", "set06_V001_I00019"]
    assert side["set00_V000_I00001"].size == (160, 128)
    rows = [o.row() for o in side["set00_V000_I00001"].objects]
    # every object of the bbGt file, as written: label, x, y, w, h, occlusion, ignore flag
    assert rows == [[ln.split()[0], *map(int, ln.split()[1:5]), int(ln.split()[5]), int(ln.split()[10])]
                    for ln in BBGT_I00001.splitlines()[1:]]
    assert [o.row() for o in side["set06_V001_I00019"].objects] == [["person", 20, 10, 40, 100, 1, 0],
                                                                     ["people", 100, 10, 50, 60, 0, 0]]
    assert side["set00_V000_I00003"].objects == ()


def test_kaist_image_set_lists_choose_the_frames(tmp_path, capsys):
    """--train-list / --test-list (KAIST's imageSets files) override the rule: an even frame can be listed."""
    src = tmp_path / "KAIST"
    fake_kaist(src)
    write(src / "imageSets" / "train.txt", "set00/V000/I00002\nset00_V000_I00001\n")
    write(src / "imageSets" / "test.txt", "set06/V001/I00020\n")
    dst = tmp_path / "out"
    _convert(["kaist", str(src), str(dst), "--train-list", str(src / "imageSets" / "train.txt"),
              "--test-list", str(src / "imageSets" / "test.txt")], capsys)
    assert {s: sorted(v) for s, v in read_labels(dst).items()} == {
        "train": ["set00_V000_I00001", "set00_V000_I00002"], "test": ["set06_V001_I00020"]}


def test_vedai_fold_boxes_axis_aligned(tmp_path, capsys):
    want = fake_vedai(tmp_path / "VEDAI")
    dst = tmp_path / "out"
    out = _twice(["vedai", str(tmp_path / "VEDAI"), str(dst), "--fold", "1"], dst, capsys)
    assert "2 pairs (train 1, val 1), 3 boxes" in out and "oriented boxes written axis-aligned" in out
    assert_labels(read_labels(dst), want)
    cfg = load_data_config(dst / "data.yaml")
    assert list(cfg.names.values()) == ["car", "pickup", "camping", "truck", "other", "tractor", "boat", "van"]
    (s,) = scan_split(cfg, "train")
    assert s.rgb.name == s.ir.name == "00000001.png" and s.ir.samefile(tmp_path / "VEDAI" / "Vehicules512" /
                                                                        "00000001_ir.png")


def test_converted_kaist_feeds_the_miss_rate(tmp_path, capsys):
    """The side file a conversion writes is what the metric reads: perfect detections of the test split's
    pedestrian give miss rate 0 (MR-2 = the 1e-10 floor); none give 1."""
    from yolofuse_scale.engine.missrate import MissRate

    src = tmp_path / "KAIST"
    fake_kaist(src)  # its test frame: one partly occluded person 100 px tall well inside the bounds, one people box
    dst = tmp_path / "out"
    _convert(["kaist", str(src), str(dst), "--test-ann", str(src / "improved")], capsys)
    mr = MissRate.from_file(dst / "kaist_annotations.json")
    hit = mr([("set06_V001_I00019", np.array([[20, 10, 60, 110, 0.9]]))])
    assert hit["pedestrians"] == 1 and hit["ignore_regions"] == 1 and hit["MR-2"] == pytest.approx(1e-10)
    miss = mr([("set06_V001_I00019", np.zeros((0, 5)))])
    assert miss["MR-2"] == 1.0
    assert json.loads((dst / "kaist_annotations.json").read_text())["format"] == kaist_gt.FORMAT
