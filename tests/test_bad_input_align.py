"""Bad ``FlowAlign`` rows (the ``-align`` variants' alignment, model/align.py) in a model YAML or a weights file's
model dictionary: one message naming the file, the layer and FlowAlign's arguments, refused by the model-dict check
(model/safe_config/schema.py) before anything is built. Some used to build: a hidden width of 0 silently meant the
default, a reach of 0 divided by zero in every forward (NaN offsets), a reach of 1,000 cells was no bound.

``KINDS`` counts the kinds this file adds: a hidden width or a reach that used to build; a fractional hidden width,
a word or a 4th argument were refused before too (Ultralytics' "cannot build this model" message), now by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.bad_input_helpers import assert_user_error

USAGE = ("FlowAlign's arguments are [width, hidden width (1 to 4096, or null: width / 4), reach (cells, above 0 "
         "and at most 64)]")


def _align_yaml(path, extra: list) -> str:
    """``mid-align`` at scale t as a model YAML whose FlowAlign rows carry ``extra`` after their width."""
    from yolofuse_scale.model.detector import load_model_dict

    d = load_model_dict("yolov8t", "mid-align", 2)
    for row in d["backbone"] + d["head"]:
        if row[2] == "FlowAlign":
            row[3] = [row[3][0], *extra]
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("extra, needle", [
    ([0], "FlowAlign hidden width 0: "),
    ([2.5], "FlowAlign hidden width 2.5: "),
    ([None, 0], "FlowAlign reach 0: "),
    ([None, -1.0], "FlowAlign reach -1.0: "),
    ([16, 1000], "FlowAlign reach 1000: "),
    ([16, "nearest"], "FlowAlign reach 'nearest': "),
    ([16, 2.0, 5], "FlowAlign [256, 16, 2.0, 5]: "),
], ids=["hidden-0", "hidden-fraction", "reach-0", "reach-negative", "reach-past-64", "reach-word", "four-arguments"])
def test_a_bad_flow_align_row_is_one_message(tmp_path, capsys, extra, needle):
    from yolofuse_scale.model import build_model

    path = _align_yaml(tmp_path / "m.yaml", extra)
    assert_user_error(lambda: build_model(path, nc=2, ir_channels=1), f"{path}: backbone[", needle, USAGE,
                      capsys=capsys)


def test_a_weights_file_with_a_zero_reach_is_one_message(tmp_path, capsys):
    """The same check on the dictionary a weights file carries (what val/predict/export rebuild from)."""
    from yolofuse_scale.model.detector import model_from_config

    d = yaml.safe_load(Path(_align_yaml(tmp_path / "m.yaml", [None, 0.0])).read_text())
    assert_user_error(lambda: model_from_config(d, 3, 1, "best.pt: model_yaml"), "best.pt: model_yaml: backbone[",
                      "FlowAlign reach 0.0: ", capsys=capsys)


#: the kinds of bad input this file adds (the README's total counts them)
KINDS = ["flow-align-hidden-width-0", "flow-align-reach"]
