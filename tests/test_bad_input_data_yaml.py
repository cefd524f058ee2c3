"""Bad input around data.yaml and ``val``: the classes of the data against the weights', ``nc`` against
``names``, split entries a command does not read, and list files naming one image twice under two
spellings. Same contract as tests/test_bad_input_data.py: one message naming the file (and line), a non-zero
exit, no traceback; what is accepted runs and says so in one warning line. ``KINDS`` counts what this
file plants.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import TINY_TRAIN, _data_error, _scan_data, assert_user_error, run_cli

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures

NAMES = {0: "person", 1: "car"}  # the template's classes (ir_channels: 1)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights file of an untrained yolov8t for the template's classes: what a training writes, without
    the training (the class checks read its names; one val run scores it)."""
    from yolofuse_scale.model import build_model
    from yolofuse_scale.weights import plain_meta, write_weights

    model = build_model("yolov8t", "mid", nc=2, ir_channels=1, names=NAMES)
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    write_weights(path, model.state_dict(), plain_meta({"model_yaml": model.yaml, "rgb_channels": 3,
                                                        "ir_channels": 1, "names": NAMES, "imgsz": 64}))
    return path


def _write_yaml(d: Path, *lines: str) -> Path:
    (d / "data.yaml").write_text("".join(line + "\n" for line in lines))
    return d / "data.yaml"


def _val(weights: Path, data_yaml: Path, out: Path, *extra: str) -> list[str]:
    return ["val", "--weights", str(weights), "--data", str(data_yaml), "--imgsz", "64", "--batch-size", "4",
            "--workers", "0", "--no-plots", "--out", str(out), *extra]


def _one_error_line(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


# ------------------------------------------------------------------------------------------ registration
@pytest.mark.parametrize("value", ["rough", "yes", "0.01"])
def test_registration_is_aligned_or_loose_named_with_its_line(fresh_data, value, capsys):
    from yolofuse_scale.data import load_data_config

    y = _write_yaml(fresh_data, "train: images/train", "val: images/val", "ir_channels: 1", "names: [person, car]",
                    f"registration: {value}")
    shown = {"yes": "True", "0.01": "0.01"}.get(value, repr(value))
    assert_user_error(lambda: load_data_config(y) and 0, f"{y}:5: 'registration' must be aligned (IR registered to "
                      f"RGB pixel for pixel) or loose (off by pixels or percent from pair to pair), got {shown}",
                      capsys=capsys)


# ------------------------------------------------------------------------------------------ nc
@pytest.mark.parametrize("nc", ["3", "1", "two", "true"])
def test_nc_disagreeing_with_names_is_refused_with_its_line(fresh_data, nc, capsys):
    from yolofuse_scale.data import load_data_config

    y = _write_yaml(fresh_data, "train: images/train", "val: images/val", "ir_channels: 1", f"nc: {nc}",
                    "names: [person, car]")
    value = {"two": "'two'", "true": "True"}.get(nc, nc)
    assert_user_error(lambda: load_data_config(y) and 0, f"{y}:4: 'nc' is {value} but 'names' lists 2 class(es) "
                      "(person, car)", "remove 'nc'", capsys=capsys)
    _write_yaml(fresh_data, "train: images/train", "val: images/val", "nc: 2", "names: [person, car]")
    assert load_data_config(y).nc == 2  # agreeing: accepted


# ------------------------------------------------------------------------------------------ val: classes
def test_val_refuses_data_with_another_class_count_than_the_weights(fresh_data, tiny_weights, tmp_path, capsys):
    """3 names in data.yaml, 2 in the weights: before, val scored a class "2" and averaged over 3."""
    from yolofuse_scale.cli import main

    y = _write_yaml(fresh_data, "train: images/train", "val: images/val", "ir_channels: 1",
                    "names: [person, car, bicycle]")
    assert main(_val(tiny_weights, y, tmp_path / "val")) == 1
    err = capsys.readouterr().err
    _one_error_line(err)
    assert f"error: {y} names 3 class(es) (person, car, bicycle) but {tiny_weights} was trained on 2 (person, car)" \
        in err
    assert not (tmp_path / "val").exists()


def test_val_refuses_data_with_other_ir_channels_in_one_error_line(fresh_data, tiny_weights, tmp_path, capsys):
    """Before: a SystemExit without the "error: " prefix every other message has."""
    from yolofuse_scale.cli import main

    y = _write_yaml(fresh_data, "train: images/train", "val: images/val", "ir_channels: 3", "names: [person, car]")
    assert main(_val(tiny_weights, y, tmp_path / "val")) == 1
    err = capsys.readouterr().err
    _one_error_line(err)
    assert f"error: {y}: ir_channels=3 but {tiny_weights} was trained with 1" in err


def test_val_nms_free_on_a_model_without_a_one_to_one_head_is_one_error(fresh_data, tiny_weights, tmp_path, capsys):
    """Before: a ValueError with its traceback (val ran use_one_to_one_head outside its error handling)."""
    from yolofuse_scale.cli import main

    assert main(_val(tiny_weights, fresh_data / "data.yaml", tmp_path / "val", "--nms-free")) == 1
    err = capsys.readouterr().err
    _one_error_line(err)
    assert f"error: --nms-free: {tiny_weights}: NMS-free prediction needs an end-to-end head" in err


def test_val_goes_on_with_one_warning_per_renamed_class_and_unused_missing_split(fresh_data, tiny_weights,
                                                                                tmp_path, capsys):
    """Same class count, other names: scored (by id) with a warning that lists the differing ids. The
    train and test entries are missing (an evaluation-only copy): val reads val only, so they are warnings;
    ``--split test`` then reads test and is refused by name."""
    from yolofuse_scale.cli import main

    y = _write_yaml(fresh_data, "train: images/gone", "val: images/val", "test: images/test", "ir_channels: 1",
                    "names: [pedestrian, car]")
    assert main(_val(tiny_weights, y, tmp_path / "val")) == 0
    captured = capsys.readouterr()
    warnings = [ln for ln in captured.err.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 3, captured.err
    assert f"warning: {y}: class names differ from {tiny_weights}'s (same count, 2) for id(s) 0: 'pedestrian' " \
           "here, 'person' in the weights; scored by id, reported under the weights' names" in warnings
    assert warnings[0].startswith(f"warning: {y}: 'test' entry 'images/test' -> ") and "not used here" in warnings[0]
    assert warnings[1].startswith(f"warning: {y}: 'train' entry 'images/gone' -> ")
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert metrics["images"] == 4 and sorted(metrics["per_class"]) == ["car", "person"]  # the weights' names

    assert main(_val(tiny_weights, y, tmp_path / "test", "--split", "test")) == 1
    err = capsys.readouterr().err
    _one_error_line(err)
    assert f"error: {y}: 'test' entry 'images/test' -> {fresh_data / 'images' / 'test'} does not exist" in err


# ------------------------------------------------------------------------------------------ unused splits
def test_a_missing_test_entry_is_a_warning_for_what_does_not_read_it(fresh_data):
    from yolofuse_scale.data import DataError, load_data_config

    y = _write_yaml(fresh_data, "train: images/train", "val: images/val", "test: images/test", "names: [a, b]")
    spec = load_data_config(y)  # what training reads: train and val
    assert len(spec.warnings) == 1 and "'test' entry 'images/test'" in spec.warnings[0]
    assert "this command reads train, val" in spec.warnings[0]
    with pytest.raises(DataError, match=f"{y}: 'test' entry 'images/test' -> .* does not exist$"):
        load_data_config(y, splits=("test",))
    with pytest.raises(DataError, match=f"{y}: no split 'tset' \\(has train, val, test\\)"):
        load_data_config(y, splits=("tset",))


@pytest.mark.slow
def test_training_runs_with_a_missing_test_entry_and_logs_it(fresh_data, tmp_path):
    """Before: load_data_config refused the missing test folder, so train.py stopped though it never reads it."""
    y = _write_yaml(fresh_data, "train: images/train", "val: images/val", "test: images/test", "ir_channels: 1",
                    "names: [person, car]")
    out = tmp_path / "run"
    proc = run_cli("train.py", "--data", str(y), *TINY_TRAIN, "--output-dir", str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert f"warning: {y}: 'test' entry 'images/test' -> {fresh_data / 'images' / 'test'} does not exist " \
           "(not used here: this command reads train, val)" in text
    assert (out / "weights" / "last.pt").is_file()


# ------------------------------------------------------------------------------------------ list files
def _val_list(d: Path, *lines: str) -> Path:
    (d / "val.txt").write_text("".join(line + "\n" for line in lines))
    _write_yaml(d, "train: images/train", "val: val.txt", "names: [person, car]", "ir_channels: 1")
    return d / "val.txt"


def test_list_file_naming_one_image_through_dotdot_is_listed_twice(fresh_data):
    """``images/../images/val/x.png`` is ``images/val/x.png``: before, it escaped the check and was scored twice."""
    lst = _val_list(fresh_data, "images/val/val_00000.png", "images/val/val_00001.png",
                    "images/../images/val//./val_00000.png")
    msg = _data_error(fresh_data)
    assert f"{lst}:3: {fresh_data / 'images/val/val_00000.png'} is listed twice (also at {lst}:1)" in msg, msg
    assert "1 problem(s)" in msg


def test_list_file_naming_one_image_through_a_symlinked_folder_is_listed_twice(fresh_data):
    """Two spellings of one folder (a link to it) are one folder, as a folder listing enters each real folder once."""
    for folder in ("images", "imagesIR", "labels"):
        (fresh_data / folder / "cam").symlink_to(fresh_data / folder / "val", target_is_directory=True)
    lst = _val_list(fresh_data, "images/val/val_00002.png", "images/val/val_00003.png", "images/cam/val_00002.png")
    msg = _data_error(fresh_data)
    assert f"{lst}:3: {fresh_data / 'images/cam/val_00002.png'} is listed twice (also at {lst}:1 as " \
           f"{fresh_data / 'images/val/val_00002.png'})" in msg, msg


def test_list_file_spellings_that_are_distinct_images_are_accepted(fresh_data):
    """A symlinked FILE is its own entry (as in a folder listing); ``sub/..`` is resolved before pairing, so the
    partner is found where imagesIR has no ``sub`` folder (before: "RGB image without IR partner")."""
    (fresh_data / "images" / "val" / "sub").mkdir()
    for folder, ext in (("images", "png"), ("imagesIR", "png"), ("labels", "txt")):
        os.symlink(f"val_00000.{ext}", fresh_data / folder / "val" / f"copy.{ext}")
    _val_list(fresh_data, "images/val/val_00000.png", "images/val/copy.png", "images/val/sub/../val_00001.png")
    result = _scan_data(fresh_data)
    assert result.error is None, result.error
    val = result.take(log=lambda _m: None)["val"]
    assert [s.rgb.name for s in val] == ["copy.png", "val_00000.png", "val_00001.png"]
    assert val[2].rgb == fresh_data / "images/val/val_00001.png"
    assert val[2].ir == fresh_data / "imagesIR/val/val_00001.png"


#: What this file plants, one name per kind (the README quotes the count of the whole battery).
KINDS = [
    "data.yaml registration other than aligned or loose",
    "data.yaml nc disagreeing with names",
    "val: data with another class count than the weights",
    "val: data with another ir_channels than the weights",
    "val --nms-free on a model without a one-to-one head",
    "val: same class count, other names (accepted, warned)",
    "data.yaml entry missing for a split the command does not read (accepted, warned)",
    "val --split test with a missing test entry",
    "list file: one image through '..'",
    "list file: one image through a symlinked folder",
    "list file: symlinked file and 'sub/..' spellings of distinct images (accepted)",
]
