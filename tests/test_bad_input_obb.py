"""Bad input around oriented boxes and per-modality labels: OBB label rows (field count, corners outside the image,
no area, corners out of order), a label file of the other task, data.yaml's ``task``, ``labels_ir``,
``label_policy`` and ``label_union_iou``, a misnamed IR label folder, a run's task against the dataset's. Same
contract as tests/test_bad_input_data.py: one message naming the file and line, a non-zero exit, no traceback; what is
accepted is scanned and said. ``KINDS`` counts what this file plants.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _data_error, _scan_data, assert_user_error

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures (detect)

GOOD = "0 0.2 0.2 0.4 0.2 0.4 0.3 0.2 0.3"  # a valid oriented box (an axis-aligned rectangle, corners clockwise)


@pytest.fixture(scope="module")
def obb_template(tmp_path_factory) -> Path:
    """A tiny aerial set (task: obb, labels/ and labelsIR/), written once; tests copy it with ``obb_data``."""
    from yolofuse_scale.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("obb_template"), n_train=4, n_val=2, imgsz=64, seed=0,
                                   scene="aerial").parent


@pytest.fixture
def obb_data(obb_template, tmp_path) -> Path:
    dst = tmp_path / "obb"
    shutil.copytree(obb_template, dst)
    return dst


def _label(d: Path, folder: str = "labels", i: int = 1) -> Path:
    return d / folder / "train" / f"train_{i:05d}.txt"


def _plant_rows(d: Path, *rows: str, folder: str = "labels") -> Path:
    f = _label(d, folder)
    f.write_text("".join(f"{r}\n" for r in rows))
    return f


def _policy(d: Path, policy: str) -> None:
    """Make the copy's data.yaml use ``policy`` (the template's says none: ``ir``)."""
    y = d / "data.yaml"
    y.write_text(y.read_text() + f"label_policy: {policy}\n")


# ------------------------------------------------------------------------------------------ label rows
OBB_ROWS = {  # kind: (rows planted in labels/train_00001.txt, the line named, what the message says)
    "obb row: 7 fields": ([GOOD, "1 0.1 0.1 0.2 0.1 0.2 0.2"], 2,
                          "expected 9 fields 'cls x1 y1 x2 y2 x3 y3 x4 y4', found 7"),
    "obb row: corner outside the image": ([GOOD, "2 0.5 0.5 0.7 0.5 0.7 1.03 0.5 0.6"], 2,
                                          "corner 3 (0.7, 1.03) is outside the image by more than 1% of its side"),
    "obb row: no area (collinear corners)": (["3 0.1 0.1 0.2 0.2 0.3 0.3 0.4 0.4", GOOD], 1,
                                             "corners 0.1 0.1 0.2 0.2 0.3 0.3 0.4 0.4 enclose no area (repeated or "
                                             "collinear corners)"),
    "obb row: corners out of order (bow tie)": ([GOOD, "0 0.5 0.5 0.7 0.6 0.7 0.5 0.5 0.6"], 2,
                                                "corners 0.5 0.5 0.7 0.6 0.7 0.5 0.5 0.6 are not in order around the "
                                                "box (its outline crosses itself)"),
    "obb row: class id out of range": (["5 0.2 0.2 0.4 0.2 0.4 0.3 0.2 0.3"], 1,
                                       "class id 5 is not an integer in 0..4"),
}


@pytest.mark.parametrize("kind", list(OBB_ROWS))
def test_bad_oriented_box_rows_are_named_with_file_and_line(obb_data, kind):
    rows, line, what = OBB_ROWS[kind]
    # the policy decides nothing about validity: policy rgb reads labels/, and labelsIR/ is read all the same
    f = _plant_rows(obb_data, *rows)
    msg = _data_error(obb_data)
    assert f"{f}:{line}: {what}" in msg and "1 problem(s)" in msg, msg


def test_a_bad_row_in_the_ir_labels_is_named_under_every_policy(obb_data):
    f = _plant_rows(obb_data, GOOD, "0 0.5 0.5 0.7 0.6 0.7 0.5 0.5 0.6", folder="labelsIR")
    for policy in ("rgb", "ir", "union"):
        _policy(obb_data, policy)
        msg = _data_error(obb_data)
        assert f"{f}:2: corners 0.5 0.5 0.7 0.6 0.7 0.5 0.5 0.6 are not in order" in msg, (policy, msg)


def test_an_axis_aligned_file_in_an_oriented_box_dataset_is_one_problem(obb_data):
    """A whole file of 5-field rows (a detect label file copied in): one message naming its first row."""
    f = _plant_rows(obb_data, "0 0.5 0.5 0.2 0.1", "1 0.3 0.3 0.1 0.1", "2 0.7 0.7 0.1 0.2")
    msg = _data_error(obb_data)
    assert f"{f}:1: 5 fields 'cls xc yc w h', an axis-aligned box (and 2 more row(s) of this file), in an " \
           "oriented-box dataset (data.yaml 'task: obb')" in msg, msg
    assert "1 problem(s)" in msg


def test_an_oriented_box_file_in_an_axis_aligned_dataset_says_task_obb(fresh_data):
    f = fresh_data / "labels" / "train" / "train_00002.txt"
    f.write_text(f"{GOOD}\n")
    msg = _data_error(fresh_data)
    assert f"{f}:1: 9 fields 'cls x1 y1 x2 y2 x3 y3 x4 y4', an oriented box, in an axis-aligned dataset: if the " \
           "labels are oriented boxes, say 'task: obb' in data.yaml" in msg, msg


def test_corners_just_outside_the_image_are_accepted(obb_data):
    """Within 1% of the side (Ultralytics' tolerance): an annotator's box that touches the border."""
    _plant_rows(obb_data, "0 -0.005 0.2 0.2 0.2 0.2 0.3 -0.005 0.3", "1 0.8 0.9 1.008 0.9 1.008 1.004 0.8 1.004")
    result = _scan_data(obb_data)
    assert result.error is None, result.error
    train = result.take(log=lambda _m: None)["train"]
    assert len(train) == 4


# ------------------------------------------------------------------------------------------ data.yaml
def _yaml_error(d: Path, extra: str) -> str:
    from yolofuse_scale.data import DataError, load_data_config

    y = d / "data.yaml"
    y.write_text(y.read_text() + extra)
    with pytest.raises(DataError) as e:
        load_data_config(y)
    return str(e.value)


YAML = {  # kind: (the key planted, the message)
    "data.yaml task unknown": ("task: rotated\n", "'task' must be one of detect, obb"),
    "data.yaml labels_ir a path": ("labels_ir: ../labelsIR\n", "'labels_ir' names the folder of the IR images' labels"),
    "data.yaml labels_ir the RGB labels": ("labels_ir: labels\n", "'labels_ir' is 'labels', which is already the RGB "
                                           "labels' folder name"),
    "data.yaml label_policy unknown": ("label_policy: both\n", "'label_policy' must be one of rgb, ir, union for every"
                                       " split, or a mapping such as {train: union, val: ir}"),
    "data.yaml label_policy unknown split": ("label_policy: {train: ir, eval: rgb}\n", "'label_policy' must be"),
    "data.yaml label_union_iou out of range": ("label_union_iou: 1.5\n",
                                               "'label_union_iou' must be a number in (0, 1]"),
}


@pytest.mark.parametrize("kind", list(YAML))
def test_bad_per_modality_keys_are_named_with_their_line(obb_data, kind):
    extra, what = YAML[kind]
    y = obb_data / "data.yaml"
    key = extra.split(":")[0]
    text = y.read_text()
    if key in ("labels_ir", "task"):  # replace the template's own key, so the line named is the planted one
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{key}:")) + "\n"
        y.write_text(text)
    msg = _yaml_error(obb_data, extra)
    line = len(y.read_text().splitlines())  # the planted key is the last line
    assert msg.startswith(f"{y}:{line}: ") and what in msg, msg


def test_an_ir_policy_without_ir_labels_is_refused(fresh_data):
    msg = _yaml_error(fresh_data, "label_policy: {train: union}\n")
    assert "'label_policy' {'train': 'union'} needs the IR images' own labels: name their folder with 'labels_ir'" \
        in msg, msg


def test_a_misnamed_ir_label_folder_is_refused(obb_data):
    (obb_data / "labelsIR").rename(obb_data / "labels_ir")
    msg = _data_error(obb_data)
    assert f"split 'train': 'labels_ir: labelsIR' but none of its 4 pairs has an IR label file (e.g. " \
           f"{obb_data / 'labelsIR' / 'train' / 'train_00000.txt'}" in msg and "Is the folder misnamed?" in msg, msg


def test_pairs_without_an_ir_label_file_are_accepted_and_counted(obb_data):
    _label(obb_data, "labelsIR", 2).unlink()
    result = _scan_data(obb_data)
    assert result.error is None, result.error
    assert "labels train: label_policy ir: trains on the IR labels (labelsIR/)" in result.report()
    assert "; 1 pair(s) without an IR label file (no IR boxes)" in result.report()


# ------------------------------------------------------------------------------------------ the run's task
def test_a_run_task_other_than_the_datasets_is_refused(obb_data, fresh_data, capsys):
    from yolofuse_scale.data import load_data_config
    from yolofuse_scale.data.config import check_task

    obb, detect = load_data_config(obb_data / "data.yaml"), load_data_config(fresh_data / "data.yaml")
    line = next(n for n, ln in enumerate((obb_data / "data.yaml").read_text().splitlines(), 1)
                if ln.startswith("task:"))
    assert_user_error(lambda: check_task(obb, "detect") and 0, f"{obb.yaml_path}:{line}: --task detect but the "
                      "dataset says 'task: obb'", "train with --task obb", capsys=capsys)
    assert_user_error(lambda: check_task(detect, "obb") and 0, f"{detect.yaml_path}: --task obb but the dataset has "
                      "no 'task:' key (so its labels are 'detect' rows)", capsys=capsys)
    assert check_task(obb, None) == check_task(obb, "obb") == "obb" and check_task(detect, None) == "detect"


def test_bad_oriented_box_labels_are_one_clean_message_through_the_entry_point(obb_data, capsys):
    """What train.py and val print (errors.run_entry: one line, exit 1): the scan's whole message, nothing else."""
    from yolofuse_scale.data import load_data_config, scan_split

    f = _plant_rows(obb_data, GOOD, "0 0.5 0.5 0.7 0.6 0.7 0.5 0.5 0.6")
    assert_user_error(lambda: scan_split(load_data_config(obb_data / "data.yaml"), "train") and 0,
                      f"{f}:2: corners 0.5 0.5 0.7 0.6 0.7 0.5 0.5 0.6 are not in order", capsys=capsys)


#: What this file plants, one name per kind (the README quotes the count of the whole battery).
KINDS = [
    *OBB_ROWS,
    "bad row in an IR label file (labelsIR)",
    "axis-aligned label file in an oriented-box dataset",
    "oriented-box label file in an axis-aligned dataset",
    "corners within 1% outside the image (accepted)",
    *YAML,
    "label_policy ir/union without labels_ir",
    "labels_ir folder misnamed (no IR label file)",
    "pairs without an IR label file (accepted, counted)",
    "run --task other than the dataset's task",
]
