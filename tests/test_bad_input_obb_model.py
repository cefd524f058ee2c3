"""Bad input of the oriented-box task, the model side (issue 26; the data side's: tests/test_bad_input_obb.py): a
model name and --task that disagree, a model YAML whose head is another task's, a weights file whose task entry is
unknown or contradicts its head, a resume into another task, and `val` of a model on a dataset of the other task.

In-process through ``errors.run_entry`` (the one ``error:`` line the entry points print, exit code 1). Six kinds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.bad_input_helpers import _train_config, assert_user_error, small_data_template  # noqa: F401 (fixture)
from tests.helpers import ROOT
from yolofuse_scale.model import build_model
from yolofuse_scale.weights import write_weights


def _weights(path: Path, name: str = "yolov8t-obb", **meta) -> Path:
    model = build_model(name, "mid", nc=2, ir_channels=1)
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3, "ir_channels": 1,
                                             "names": {0: "person", 1: "car"}, "imgsz": 64,
                                             "task": model.task, **meta})
    return path


def test_a_model_name_and_task_that_disagree(capsys):
    assert_user_error(_train_config("--model", "yolo11n-obb", "--task", "detect"),
                      "--task detect with --model yolo11n-obb, an OBB model: drop --task, or use --model yolo11n",
                      capsys=capsys)


def test_a_model_yaml_whose_head_is_another_tasks(capsys):
    path = ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml"
    assert_user_error(lambda: build_model(str(path), nc=2, ir_channels=1, scale="t", task="obb"),
                      f"{path}: its last layer is Detect, a head for --task detect, but this run trains --task obb",
                      "pass --task detect, or end the YAML in a head of --task obb (OBB or OBB26)", capsys=capsys)


@pytest.mark.parametrize(("task", "needle"), [
    ("segment", "task 'segment' must be one of detect, obb"),
    ("detect", "says task 'detect', but its model_yaml's last layer is OBB, the head of a --task obb model"),
])
def test_a_weights_file_whose_task_is_unknown_or_not_its_heads(tmp_path, capsys, task, needle):
    from yolofuse_scale.inference import load_weights_model

    path = _weights(tmp_path / "w.pt", task=task)
    assert_user_error(lambda: load_weights_model(path), f"{path}: {needle}", capsys=capsys)


def test_a_resume_into_another_task(tmp_path, capsys):
    """The model check of a resume (before anything is loaded or moved) refuses a checkpoint of the other task,
    saying how to start the new task from its weights."""
    from yolofuse_scale.engine.checkpoint.compat import check_same_model

    saved = {"model_yaml": {"nc": 2}, "rgb_channels": 3, "ir_channels": 1, "task": "obb"}
    assert_user_error(lambda: check_same_model(tmp_path, saved, {**saved, "task": "detect"}, "x", "x"),
                      f"--resume {tmp_path}: the checkpoint was trained for --task obb, this run trains --task detect",
                      "pass its weights/last.pt to --pretrained", capsys=capsys)
    # a checkpoint written before tasks existed is a detection one
    old = {k: v for k, v in saved.items() if k != "task"}
    assert_user_error(lambda: check_same_model(tmp_path, old, saved, "x", "x"),
                      "the checkpoint was trained for --task detect, this run trains --task obb", capsys=capsys)


def test_val_of_an_obb_model_on_a_detection_dataset(small_data_template, tmp_path, capsys):  # noqa: F811
    from yolofuse_scale.cli import main

    weights = _weights(tmp_path / "obb.pt")
    data = small_data_template / "data.yaml"
    out = tmp_path / "val"
    assert_user_error(lambda: main(["val", "--weights", str(weights), "--data", str(data), "--workers", "0",
                                    "--out", str(out)]),
                      f"{data}: its labels are 'detect' boxes (data.yaml 'task:', detect when absent) but {weights} "
                      "predicts --task obb boxes", capsys=capsys)
    assert not out.exists()  # refused before anything was written
    assert torch.load(weights, weights_only=True)["task"] == "obb"
