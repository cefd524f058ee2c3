"""Bad IR misregistration bounds (``--ir-shift``, ``--ir-scale``, ``--ir-rotate``, data/augment.py): one message
naming the flag, or the config file's line, and what the bound is; refused before anything is built.

``KINDS`` counts the kinds this file adds (a negative bound is the recipe's existing ">= 0" kind)."""

from __future__ import annotations

import pytest

from tests.bad_input_helpers import _train_config, assert_user_error


@pytest.mark.parametrize("flags, needle", [
    (["--ir-shift", "1.5"], "--ir-shift is a fraction of the image size, at most 1, got 1.5"),
    (["--ir-scale", "1"], "--ir-scale must be below 1 (IR is zoomed by 1 +/- it), got 1.0"),
    (["--ir-rotate", "270"], "--ir-rotate is degrees either way, at most 180, got 270.0"),
    (["--ir-shift", "-0.1"], "--ir-shift must be >= 0, got -0.1"),
], ids=["shift-above-1", "scale-1-or-more", "rotate-above-180", "negative"])
def test_an_out_of_range_misregistration_bound_is_one_message(flags, needle, capsys):
    assert_user_error(_train_config(*flags), needle, capsys=capsys)


def test_a_bound_from_a_config_file_names_its_line(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("version: 2\ndata:\n  imgsz: 64\n  ir_scale: 2\n")
    assert_user_error(_train_config("--config", str(cfg)),
                      f"{cfg}:4: data.ir_scale: --ir-scale must be below 1 (IR is zoomed by 1 +/- it), got 2",
                      capsys=capsys)


#: the kinds of bad input this file adds (the README's total counts them)
KINDS = ["shift-above-1", "scale-1-or-more", "rotate-above-180"]
