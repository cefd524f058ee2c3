"""Bad input of thermal data as it comes: ``ir_mapping``, ``ir_homography``, ``layout`` (DEYOLO's ``train2``), pairs
files (CSV, JSON), ``pairs_dirs``, ``yolofuse-scale register``'s point pairs, and a weights file's IR mapping against
data.yaml's. Same contract as tests/test_bad_input.py: one message naming the file (and line), a non-zero exit, no
traceback, nothing lost. ``KINDS`` counts what this file plants.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _data_error, assert_clean_error, assert_user_error, run_cli

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures


def _yaml(d: Path, *extra: str, train: str = "images/train", val: str = "images/val") -> Path:
    """The template's data.yaml (5 lines) plus ``extra`` lines from line 6 on."""
    y = d / "data.yaml"
    y.write_text(f"path: .\ntrain: {train}\nval: {val}\nnames: [person, car]\nir_channels: 1\n"
                 + "".join(line + "\n" for line in extra))
    return y


def _csv(d: Path, *rows: str, header: str = "rgb,ir") -> Path:
    """``train.csv`` (a pairs file) with ``rows`` after ``header``; data.yaml's train split points at it."""
    (d / "train.csv").write_text(header + "\n" + "".join(r + "\n" for r in rows))
    _yaml(d, train="train.csv")
    return d / "train.csv"


def _pair(i: int) -> str:
    return f"images/train/train_{i:05d}.png,imagesIR/train/train_{i:05d}.png"


# ------------------------------------------------------------------------------------------ data.yaml keys
YAML_KINDS = {  # kind: (extra data.yaml line (line 6), what the message says)
    "ir_mapping: unknown mode": ("ir_mapping: log", "'ir_mapping' must be one of minmax | shift8 | {range: [lo, hi]}"),
    "ir_mapping: range lo >= hi": ("ir_mapping: {range: [60, -10]}",
                                   "'ir_mapping' range must be [lo, hi], two numbers with lo < hi, got [60, -10]"),
    "ir_mapping: degrees with raw_per_degree <= 0": ("ir_mapping: {range: [-10, 60], raw_per_degree: 0}",
                                                    "raw_per_degree must be a positive number"),
    "ir_mapping: percentile outside 0..100": ("ir_mapping: {percentile: [5, 120]}",
                                              "percentile must be [p_lo, p_hi] with 0 <= p_lo < p_hi <= 100"),
    "ir_mapping: unknown key": ("ir_mapping: {range: [0, 1], gamma: 2}", "'ir_mapping': unknown key(s) gamma"),
    "ir_homography: not 3x3": ("ir_homography: [[1, 0], [0, 1]]", "'ir_homography' must be a 3x3 matrix"),
    "ir_homography: singular": ("ir_homography: [[1, 0, 0], [2, 0, 0], [0, 0, 1]]",
                                "'ir_homography' is singular (determinant 0)"),
    "layout: unknown": ("layout: yolov5", "'layout' must be one of yolofuse, yolov11-rgbt, deyolo, got 'yolov5'"),
    "pairs_dirs: not a folder": ("pairs_dirs: {ir: thermal}", "'pairs_dirs' ir: "),
}


@pytest.mark.parametrize("kind", list(YAML_KINDS))
def test_bad_thermal_keys_of_data_yaml_are_named_with_their_line(fresh_data, kind):
    line, needle = YAML_KINDS[kind]
    y = _yaml(fresh_data, line)
    err = _data_error(fresh_data)
    assert err.startswith(f"{y}:6: ") and needle in err, err


def test_layout_deyolo_without_train2_is_refused(fresh_data):
    y = _yaml(fresh_data, "layout: deyolo")
    assert _data_error(fresh_data) == f"{y}: layout deyolo pairs 'train' (RGB) with 'train2' (IR), and 'train2' is " \
                                      "missing"


# ------------------------------------------------------------------------------------------ the scan
def test_a_homography_that_misses_the_rgb_frame_is_named_per_pair(fresh_data):
    _yaml(fresh_data, "ir_homography: [[1, 0, 500], [0, 1, 0], [0, 0, 1]]")
    err = _data_error(fresh_data)
    assert "12 problem(s)" in err and "ir_homography puts the 80x64 IR frame at (499.5, -0.5) (579.5, -0.5)" in err
    assert "outside the 80x64 RGB frame (is it inverted, RGB -> IR? it maps IR pixels to RGB pixels)" in err


def test_a_homography_through_infinity_is_named(fresh_data):
    _yaml(fresh_data, "ir_homography: [[1, 0, 0], [0, 1, 0], [-0.05, 0, 1]]")
    err = _data_error(fresh_data)
    assert f"{fresh_data / 'images/train/train_00000.png'}: ir_homography maps part of the 80x64 IR frame through " \
           "infinity" in err


def test_deyolo_splits_of_different_counts_are_refused(fresh_data):
    d = fresh_data
    shutil.move(d / "imagesIR/train", d / "images/ir_train")
    (d / "images/ir_train/train_00005.png").unlink()
    y = _yaml(d, "train2: images/ir_train", "val2: imagesIR/val")
    assert _data_error(d) == (f"{y}: split 'train': 'train' lists 8 RGB image(s) and 'train2' 7 IR image(s); DEYOLO's "
                              "layout pairs them by position in sorted order, so the counts must match (the first "
                              f"without a partner: {d / 'images/train/train_00007.png'})")


def test_percentile_mapping_on_8bit_ir_is_refused(fresh_data):
    y = _yaml(fresh_data, "ir_mapping: {percentile: [1, 99]}")
    assert _data_error(fresh_data) == (
        f"{y}: ir_mapping percentile [1, 99] of the training set's IR: the training split has no IR frame deeper than "
        "8 bits (8-bit IR is used as it is); remove ir_mapping, or point 'train' at the radiometric frames")


# ------------------------------------------------------------------------------------------ pairs files
PAIRS_KINDS = {  # kind: plant(d) -> the message's needles
    "pairs CSV: wrong field count": lambda d: (_csv(d, _pair(0), _pair(1) + ",x"),
                                               ["train.csv:3: expected 2 fields (rgb,ir), found 3", "1 problem(s)"]),
    "pairs CSV: one column, no header": lambda d: (
        (d / "train.csv").write_text("images/train/train_00000.png\n"), _yaml(d, train="train.csv"),
        [f"{d / 'train.csv'}:1: expected 2 or 3 fields (rgb,ir[,label]), found 1"]),
    "pairs CSV: missing IR file": lambda d: (_csv(d, _pair(0), "images/train/train_00001.png,imagesIR/train/gone.png"),
                                             [f"train.csv:3: IR image {d / 'imagesIR/train/gone.png'} does not exist"]),
    "pairs CSV: missing RGB file": lambda d: (_csv(d, "images/train/gone.png,imagesIR/train/train_00001.png"),
                                              [f"train.csv:2: image {d / 'images/train/gone.png'} does not exist"]),
    "pairs CSV: named label missing": lambda d: (
        _csv(d, _pair(0) + ",labels/train/nope.txt", header="rgb,ir,label"),
        [f"train.csv:2: label file {d / 'labels/train/nope.txt'} does not exist (an image without objects needs an "
         "empty .txt)"]),
    "pairs CSV: IR paired twice": lambda d: (
        _csv(d, _pair(0), "images/train/train_00001.png,imagesIR/train/train_00000.png"),
        [f"train.csv:3: IR file {d / 'imagesIR/train/train_00000.png'} is paired twice (also at {d / 'train.csv'}:2)"]),
    "pairs JSON: not JSON": lambda d: ((d / "train.json").write_text('{"a.png": '), _yaml(d, train="train.json"),
                                       [f"{d / 'train.json'}: not valid JSON"]),
    "pairs JSON: object value not a path": lambda d: (
        (d / "train.json").write_text(json.dumps({"images/train/train_00000.png": 3}, indent=1)),
        _yaml(d, train="train.json"), [f"{d / 'train.json'}:2: 'images/train/train_00000.png' must map to an IR path"]),
    "pairs JSON: list item without ir": lambda d: (
        (d / "train.json").write_text(json.dumps([{"rgb": "images/train/train_00000.png",
                                                   "ir": "imagesIR/train/train_00000.png"}, {"rgb": "x.png"}])),
        _yaml(d, train="train.json"), [f"{d / 'train.json'}: item 2: expected {{\"rgb\": PATH, \"ir\": PATH"]),
    "pairs file: no pairs": lambda d: (_csv(d), [f"{d / 'train.csv'}: the pairs file lists no pairs"]),
}


@pytest.mark.parametrize("kind", list(PAIRS_KINDS))
def test_bad_pairs_files_are_named_by_line(fresh_data, kind):
    *_, needles = PAIRS_KINDS[kind](fresh_data)
    err = _data_error(fresh_data)
    for needle in needles:
        assert needle in err, err


# ------------------------------------------------------------------------------------------ register
REGISTER_KINDS = {  # kind: (CSV text, what the message says; {f}: the file)
    "register: fewer than 4 pairs": ("x_rgb,y_rgb,x_ir,y_ir\n1,2,3,4\n5,6,7,8\n9,9,1,1\n",
                                     "{f}: 3 point pair(s); a homography needs at least 4"),
    "register: header without the columns": ("x,y,u,v\n1,2,3,4\n", "{f}:1: the first line must name the columns "
                                             "x_rgb,y_rgb,x_ir,y_ir (missing x_rgb, y_rgb, x_ir, y_ir)"),
    "register: non-numeric coordinate": ("x_rgb,y_rgb,x_ir,y_ir\n1,2,3,4\n5,six,7,8\n",
                                         "{f}:3: non-numeric coordinate in '5,six,7,8'"),
    "register: collinear points": ("x_rgb,y_rgb,x_ir,y_ir\n0,0,0,0\n10,10,5,5\n20,20,10,10\n30,30,15,15\n40,40,20,20\n",
                                   "{f}: the point pairs determine no homography"),
}


@pytest.mark.parametrize("kind", list(REGISTER_KINDS))
def test_register_refuses_bad_point_pairs_in_one_message(tmp_path, kind, capsys):
    from yolofuse_scale.cli import main

    text, needle = REGISTER_KINDS[kind]
    f = tmp_path / "points.csv"
    f.write_text(text)
    assert_user_error(lambda: main(["register", str(f), "--out", str(tmp_path / "h.yaml")]),
                      needle.format(f=f), capsys=capsys)
    assert not (tmp_path / "h.yaml").exists()


def test_register_bad_input_through_the_command_line_has_no_traceback(tmp_path):
    f = tmp_path / "points.csv"
    f.write_text("x_rgb,y_rgb,x_ir,y_ir\n1,2,3\n")
    assert_clean_error(run_cli("register", str(f)), f"error: {f}:2: expected 4 fields, found 3")


# ------------------------------------------------------------------------------------------ weights vs data.yaml
def test_val_refuses_a_data_yaml_stating_another_mapping_than_the_weights(fresh_data, capsys):
    from yolofuse_scale.data import load_data_config
    from yolofuse_scale.data.scan import trained_mapping

    y = _yaml(fresh_data, "ir_mapping: {range: [7000, 9000]}")
    cfg = load_data_config(y)
    assert_user_error(lambda: trained_mapping(cfg, None, "w.pt"),
                      f"{y}: ir_mapping is range raw [7000, 9000] but w.pt was trained with minmax (per frame; the "
                      "default); evaluate with the mapping it was trained with", capsys=capsys)
    rec = {"mode": "percentile", "lo": 1.0, "hi": 2.0, "percentiles": [1, 99], "stated": "percentile [1, 99]"}
    assert_user_error(lambda: trained_mapping(cfg, rec, "w.pt"), "but w.pt was trained with percentile [1, 99] -> "
                      "raw 1..2", capsys=capsys)
    assert_user_error(lambda: trained_mapping(cfg, {"mode": "range", "lo": 3}, "w.pt"),
                      "w.pt: its ir_mapping record is not one this version reads", capsys=capsys)


#: What this file plants, one name per kind (the README quotes the count of the whole battery).
KINDS = [
    *YAML_KINDS,
    "layout deyolo without train2",
    "ir_homography: the IR frame outside the RGB frame",
    "ir_homography: the IR frame through infinity",
    "deyolo: train and train2 of different counts",
    "ir_mapping percentile on 8-bit IR",
    *PAIRS_KINDS,
    *REGISTER_KINDS,
    "register: a row with too few fields (command line)",
    "val: data.yaml states another ir_mapping than the weights",
    "val: weights with an ir_mapping record of another kind",
]
