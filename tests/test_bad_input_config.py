"""Bad ``--config`` files of the sectioned layout (``version: 2``) and of the old one (one ``train`` section):
one ``error: FILE:LINE: KEY: ...`` message for every kind of check (choices, ranges, types, cross-field, a named
file), the key named as the file writes it. In process: the checks run before anything is built.

A check says which settings it refuses (``ConfigError.settings``); the line is the file's line of the first
of them that the file set and no flag replaced (before, it was found by reading the flag out of the message,
so a cross-field check or a missing file named no line). ``KINDS`` counts the kinds this file adds.
"""

from __future__ import annotations

import pytest

from tests.test_bad_input import _train_config, assert_user_error


@pytest.mark.parametrize("text, flags, needles", [
    ("version: 2\nparallel:\n  strategy: zero9\n", [], [":3: parallel.strategy: --strategy must be one of"]),
    ("version: 2\ncheckpoint:\n  keep_last: -1\n", [], [":3: checkpoint.keep_last: --keep-last must be >= 0, got -1"]),
    ("version: 2\nlog:\n  log_every: often\n", [], [":3: log.log_every must be an integer, got 'often'"]),
    ("version: 2\nparallel:\n  compile: true\n  strategy: fsdp\n", [],
     [":3: parallel.compile: --compile is supported with --strategy ddp (or one process), not fsdp"]),
    ("version: 2\nmodel:\n  model: yolov8t\nparallel:\n  strategy: zero2\n", ["--compile"],
     [":5: parallel.strategy: --compile is supported with --strategy ddp (or one process), not zero2"]),
    ("train:\n  epochs: 2\n  overwrite: true\n  resume: auto\n", [],
     [":3: train.overwrite: --overwrite starts a new run in --output-dir and --resume auto continues"]),
    ("data:\n  imgsz: 64\n  data: {tmp}/nowhere/data.yaml\n", [],
     [":3: data.data: --data {tmp}/nowhere/data.yaml: no such file"]),
    ("train:\n  keep_last: many\n", [], [":2: train.keep_last must be an integer, got 'many'"]),
    ("version: 3\ndata:\n  imgsz: 64\n", [], [":1: version 3: this yolofuse-scale reads config versions 1 and 2"]),
    ("version: 2\ntrain:\n  epochs: 2\n  keep_last: 2\n", [],
     [":4: unknown setting train.keep_last (it belongs in the checkpoint section)"]),
    ("train:\n  keep_last: 2\ncheckpoint:\n  keep_last: 3\n", [],
     [":4: checkpoint.keep_last sets checkpoint.keep_last again", ":2: train.keep_last set it already"]),
    ("train:\n  epochs: 2\n  benchmark_skip_grad_sync: true\n", [],
     [":3: train.benchmark_skip_grad_sync: True is not a setting any more", "remove the line"]),
], ids=["choice-v2", "range-v2", "type-v2", "cross-field-in-file", "cross-field-file-and-flag",
        "cross-field-v1", "missing-file-from-file", "type-v1-moved-key", "unknown-version", "misplaced-key-v2",
        "set-twice", "benchmark-switch-true"])
def test_config_file_names_the_line_of_the_refused_setting(text, flags, needles, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text.format(tmp=tmp_path))
    needles = [(str(cfg) if n.startswith(":") else "") + n.format(tmp=tmp_path) for n in needles]
    assert_user_error(_train_config("--config", str(cfg), *flags), *needles, capsys=capsys)


def test_a_flag_that_replaces_the_refused_value_takes_the_blame(tmp_path, capsys):
    """The file's value is not the one refused: the message is the flag's, with no file line."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("version: 2\ncheckpoint:\n  keep_last: 2\n")
    err = assert_user_error(_train_config("--config", str(cfg), "--keep-last", "-2"),
                            "--keep-last must be >= 0, got -2", capsys=capsys)
    assert str(cfg) not in err


#: the kinds of bad input this file adds (the README's total counts them); the other cases are kinds the
#: battery had (choices, ranges, types, cross-field checks) in the sectioned layout and in the old one
KINDS = ["cross-field-file-and-flag", "missing-file-from-file", "unknown-version", "misplaced-key-v2", "set-twice",
         "benchmark-switch-true"]
