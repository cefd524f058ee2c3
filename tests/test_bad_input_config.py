"""Bad configuration: ``--config`` files of the sectioned layout (``version: 2``) and of the old one (one ``train``
section): one ``error: FILE:LINE: KEY: ...`` message for every kind of check (choices, ranges, types, cross-field,
a named file), the key named as the file writes it. In process: the checks run before anything is built. After
them, the battery's first configuration kinds: flags, YAML configs, DeepSpeed JSON, launch problems, a YAML tag
that would run code (refused by safe loading), the data.yaml line of a YAML error.

A check says which settings it refuses (``ConfigError.settings``); the line is the file's line of the first
of them that the file set and no flag replaced (before, it was found by reading the flag out of the message,
so a cross-field check or a missing file named no line). ``KINDS`` counts the kinds those line tests added.
"""

from __future__ import annotations

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _train_config, assert_clean_error, assert_user_error, run_cli
from tests.helpers import ROOT

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures


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


#: the kinds of bad input the line tests above add (the README's total counts them); the other cases are kinds the
#: battery had (choices, ranges, types, cross-field checks) in the sectioned layout and in the old one
KINDS = ["cross-field-file-and-flag", "missing-file-from-file", "unknown-version", "misplaced-key-v2", "set-twice",
         "benchmark-switch-true"]


# ------------------------------------------------------------------ the battery's first configuration kinds
@pytest.mark.parametrize("text, needles", [
    ("data:\n  imgsz: 64\n  mosiac: 0.5\n", [":3: unknown setting data.mosiac (did you mean 'mosaic'?)"]),
    ("dataa:\n  imgsz: 64\n", [":1: unknown section 'dataa' (did you mean 'data'?)"]),
    ("train:\n  epochs: 3\n  batch_size: big\n", [":3: train.batch_size must be an integer, got 'big'"]),
    ("optim:\n  ema: 2\n", [":2: optim.ema must be true or false, got 2"]),
    ("train:\n  mixed_precision: no\n", [":2: train.mixed_precision must be text, got False", "quote the value"]),
    ("train:\n  strategy: zero9\n", [":2: train.strategy: --strategy must be one of"]),
    ("data:\n  imgsz: 100\n", [":2: data.imgsz: --imgsz must be a positive multiple of 32, got 100"]),
    ("data: [1, 2]\n", [":1: section 'data' must be a mapping"]),
    ("data:\n  imgsz: 64\n   workers: 2\n", [":3: not a valid config YAML"]),
    ("- data\n- model\n", ["expected a mapping of sections"]),
    ("data:\n  imgsz: 64\n  mosaic_partners: buffer\n",
     [":3: data.mosaic_partners: --mosaic-partners must be pool, dataset or micro_batch, got 'buffer'"]),
], ids=["unknown-key", "unknown-section", "wrong-type-int", "wrong-type-bool", "yaml-boolean-for-text",
        "bad-choice-in-file", "bad-value-in-file", "section-not-mapping", "not-yaml", "not-a-mapping",
        "bad-recipe-choice-in-file"])
def test_config_file(text, needles, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    assert_user_error(_train_config("--config", str(cfg)), str(cfg), *needles, capsys=capsys)


def test_config_file_flag_wins_over_its_bad_value(tmp_path):
    """A flag replaces the file's value before the checks, so a file corrected on the command line runs."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  imgsz: 100\noptim:\n  lr: 1e-3\n")
    run = _train_config("--config", str(cfg), "--imgsz", "64")()
    assert run.data.imgsz == 64 and run.optim.lr == 0.001  # PyYAML reads 1e-3 as text; accepted as the flag is


@pytest.mark.parametrize("flags, needles", [
    (["--grad-accum", "0"], ["--grad-accum must be >= 1, got 0"]),
    (["--lr", "-0.01"], ["--lr must be > 0, got -0.01"]),
    (["--momentum", "1.5"], ["--momentum must be in [0, 1), got 1.5"]),
    (["--imgsz", "100"], ["--imgsz must be a positive multiple of 32, got 100"]),
    (["--log-every", "-1"], ["--log-every must be >= 0, got -1"]),
    (["--resume", "{tmp}/runs/checkpoints/step_9"], ["--resume {tmp}/runs/checkpoints/step_9: no such checkpoint"]),
    (["--data", "{tmp}/nodata/data.yaml"], ["--data {tmp}/nodata/data.yaml: no such file"]),
    (["--model", "{tmp}/mine.yaml"], ["--model {tmp}/mine.yaml: no such model YAML file"]),
    (["--model", "yolov9n"], ["--model must be {{yolov8,yolo11,yolo26}}{{t,n,s,m,l,x}}[-obb] (e.g. yolo11n, "
                              "yolo11n-obb) or a model YAML file (.yaml), got 'yolov9n'"]),
    (["--deepspeed", "{tmp}/ds.json"], ["--deepspeed {tmp}/ds.json: no such file"]),
    (["--strategy", "zero2", "--deepspeed", "{tmp}/ds.json"], ["--deepspeed {tmp}/ds.json and --strategy zero2"]),
    (["--model", "{assets}/yolofuse_mid_schema.yaml", "--fusion", "late"],
     ["--fusion late with --model", "defines its own fusion"]),
], ids=["grad-accum-0", "negative-lr", "momentum-range", "imgsz-not-32", "log-every-negative", "resume-missing",
        "data-missing", "model-yaml-missing", "unknown-model", "deepspeed-json-missing", "deepspeed-and-strategy",
        "fusion-with-model-yaml"])
def test_config_flags(flags, needles, tmp_path, capsys):
    fill = {"tmp": tmp_path, "assets": ROOT / "tests" / "assets"}
    flags = [f.format(**fill) for f in flags]
    assert_user_error(_train_config(*flags), *(n.format(**fill) for n in needles), capsys=capsys)


def test_config_model_yaml_without_fusion_is_accepted():
    run = _train_config("--model", str(ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml"))()
    assert run.model.model.endswith("yolofuse_mid_schema.yaml")


def test_config_strategy_contradicts_the_accelerate_config(capsys):
    from yolofuse_scale.config import ParallelConfig
    from yolofuse_scale.engine.strategy.launch import check_strategy_flags

    fsdp = {"ACCELERATE_USE_FSDP": "true"}
    assert_user_error(lambda: check_strategy_flags(ParallelConfig(strategy="zero2"), fsdp),
                      "--strategy zero2 asks for DeepSpeed but the accelerate config", "sets up FSDP", capsys=capsys)
    deepspeed = {"ACCELERATE_USE_DEEPSPEED": "true"}
    assert_user_error(lambda: check_strategy_flags(ParallelConfig(strategy="ddp"), deepspeed),
                      "--strategy ddp asks for DDP", "sets up DeepSpeed", capsys=capsys)
    check_strategy_flags(ParallelConfig(strategy="fsdp"), fsdp)  # agreeing: fine
    check_strategy_flags(ParallelConfig(), fsdp)  # auto: the launcher decides


def test_config_deepspeed_json_contradicts_the_batch_flags(tmp_path, capsys):
    from yolofuse_scale.config import RunConfig, TrainConfig
    from yolofuse_scale.engine.strategy.deepspeed import deepspeed_config

    ds = tmp_path / "ds.json"
    ds.write_text('{"train_batch_size": 64, "zero_optimization": {"stage": 2}}')
    assert_user_error(lambda: deepspeed_config(str(ds), RunConfig(train=TrainConfig(batch_size=4, grad_accum=2)), 2),
                      f"{ds}: 'train_batch_size': 64 contradicts the loop's --batch-size x processes x "
                      "--grad-accum = 16",
                      capsys=capsys)


def test_config_data_yaml_not_yaml_names_the_line(fresh_data, capsys):
    from yolofuse_scale.data import load_data_config

    data_yaml = fresh_data / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images/train\nval: [images/val\nnames: {0: person}\n")
    assert_user_error(lambda: load_data_config(data_yaml), str(data_yaml), "not valid YAML", "line 4", capsys=capsys)


@pytest.mark.parametrize("where", ["config", "data.yaml"])
def test_config_python_tag_is_refused_by_safe_loading(where, fresh_data, tmp_path):
    """``!!python/object/apply`` would run a command under an unsafe loader: refused, and nothing ran."""
    ran = tmp_path / "ran"
    tag = f"!!python/object/apply:os.system ['touch {ran}']"
    if where == "config":
        target = tmp_path / "run.yaml"
        target.write_text(f"data:\n  imgsz: 64\ntrain:\n  seed: {tag}\n")
        args = ["train.py", "--config", str(target), "--output-dir", str(tmp_path / "run")]
        needles = [f"{target}:4: not a valid config YAML", "could not determine a constructor"]
    else:
        target = fresh_data / "data.yaml"
        target.write_text(target.read_text() + f"extra: {tag}\n")
        args = ["train.py", "--data", str(target), "--model", "yolov8t", "--imgsz", "64", "--epochs", "1",
                "--output-dir", str(tmp_path / "run")]
        needles = [str(target), "not valid YAML", "could not determine a constructor"]
    assert_clean_error(run_cli(*args), *needles)
    assert not ran.exists()


def test_config_deepspeed_json_not_json_through_train_py(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text('{\n  "zero_optimization": {"stage": 2},\n  "train_batch_size": auto\n}\n')
    out = assert_clean_error(run_cli("train.py", "--deepspeed", str(ds), "--output-dir", str(tmp_path / "run")),
                             f"error: {ds}:3: not valid JSON")
    assert out.count("not valid JSON") == 1


def test_config_usage_errors_are_argparse_clean():
    out = assert_clean_error(run_cli("train.py", "--strategy", "zero9"), "--strategy: invalid choice: 'zero9'")
    assert out.count("invalid choice") == 1


@pytest.mark.slow
def test_config_batch_larger_than_the_training_set_is_one_message(fresh_data, tmp_path):
    """8 training pairs cannot fill a 16-image step: named before the first step, no traceback."""
    out = assert_clean_error(run_cli("train.py", "--data", str(fresh_data / "data.yaml"), "--model", "yolov8t",
                                     "--imgsz", "64", "--batch-size", "16", "--workers", "0", "--output-dir",
                                     str(tmp_path / "run")),
                             "8 training pairs cannot fill one optimizer step of 16 images")
    assert out.count("cannot fill") == 1
