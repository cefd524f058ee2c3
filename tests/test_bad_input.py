"""The bad-input battery: plant one kind of bad input in a fresh copy of a small dataset, config, run
folder or weights file, and check the documented handling: one clear message naming the file, the line
(where there is one) and what is wrong, a non-zero exit without a Python traceback, and no earlier
output lost. Each area has its own section; ``KINDS`` at the end counts what the battery tries (the
README quotes it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ENV, ROOT


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def small_data_template(tmp_path_factory) -> Path:
    """A tiny synthetic dataset written once per module; tests copy it with ``fresh_data``."""
    from yolofuse_scale.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("bad_input_template"), n_train=8, n_val=4, imgsz=64,
                                   seed=0).parent


@pytest.fixture
def fresh_data(small_data_template, tmp_path) -> Path:
    """A private copy of the tiny dataset (its folder; ``/ "data.yaml"`` is the config)."""
    dst = tmp_path / "data"
    shutil.copytree(small_data_template, dst)
    return dst


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m yolofuse_scale ARGS`` (or ``python train.py ARGS`` when args[0] == "train.py")."""
    cmd = [sys.executable, *args] if args and args[0].endswith(".py") else [sys.executable, "-m", "yolofuse_scale",
                                                                            *args]
    return subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, every needle in the output; returns the output."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    return out


# ------------------------------------------------------------------------------------------ data
# (the start-up scan: images, labels, list files, data.yaml)


# ------------------------------------------------------------------------------------------ config
# (flags, YAML configs, DeepSpeed JSON, launch problems)
def assert_user_error(fn, *needles: str, capsys) -> str:
    """In-process: ``fn`` raises a user error that the entry points print as one message (exit code 1)."""
    from yolofuse_scale.errors import run_entry

    assert run_entry(fn) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    return err


def _train_config(*flags: str):
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.config import config_from_args

    return lambda: config_from_args(build_train_parser().parse_args(list(flags)))


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
], ids=["unknown-key", "unknown-section", "wrong-type-int", "wrong-type-bool", "yaml-boolean-for-text",
        "bad-choice-in-file", "bad-value-in-file", "section-not-mapping", "not-yaml", "not-a-mapping"])
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
    (["--log-every", "0"], ["--log-every must be >= 1, got 0"]),
    (["--resume", "{tmp}/runs/checkpoints/step_9"], ["--resume {tmp}/runs/checkpoints/step_9: no such checkpoint"]),
    (["--data", "{tmp}/nodata/data.yaml"], ["--data {tmp}/nodata/data.yaml: no such file"]),
    (["--model", "{tmp}/mine.yaml"], ["--model {tmp}/mine.yaml: no such model YAML file"]),
    (["--model", "yolov9n"], ["--model must be yolov8{{t,n,s,m,l,x}} or a model YAML file (.yaml), got 'yolov9n'"]),
    (["--deepspeed", "{tmp}/ds.json"], ["--deepspeed {tmp}/ds.json: no such file"]),
    (["--strategy", "zero2", "--deepspeed", "{tmp}/ds.json"], ["--deepspeed {tmp}/ds.json and --strategy zero2"]),
    (["--model", "{assets}/yolofuse_mid_schema.yaml", "--fusion", "late"],
     ["--fusion late with --model", "defines its own fusion"]),
], ids=["grad-accum-0", "negative-lr", "momentum-range", "imgsz-not-32", "log-every-0", "resume-missing",
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
    from yolofuse_scale.config import TrainConfig
    from yolofuse_scale.engine.strategy import check_strategy_flags

    fsdp = {"ACCELERATE_USE_FSDP": "true"}
    assert_user_error(lambda: check_strategy_flags(TrainConfig(strategy="zero2"), fsdp),
                      "--strategy zero2 asks for DeepSpeed but the accelerate config", "sets up FSDP", capsys=capsys)
    assert_user_error(lambda: check_strategy_flags(TrainConfig(strategy="ddp"), {"ACCELERATE_USE_DEEPSPEED": "true"}),
                      "--strategy ddp asks for DDP", "sets up DeepSpeed", capsys=capsys)
    check_strategy_flags(TrainConfig(strategy="fsdp"), fsdp)  # agreeing: fine
    check_strategy_flags(TrainConfig(), fsdp)  # auto: the launcher decides


def test_config_deepspeed_json_contradicts_the_batch_flags(tmp_path, capsys):
    from yolofuse_scale.config import OptimConfig, TrainConfig
    from yolofuse_scale.engine.strategy import deepspeed_config

    ds = tmp_path / "ds.json"
    ds.write_text('{"train_batch_size": 64, "zero_optimization": {"stage": 2}}')
    assert_user_error(lambda: deepspeed_config(str(ds), TrainConfig(batch_size=4, grad_accum=2), OptimConfig(), 2),
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



# ------------------------------------------------------------------------------------------ checkpoints
# (truncated, missing, extra, edited files; another run's lineage; another model)


# ------------------------------------------------------------------------------------------ weights
# (edited model dict, wrong tensors, not a weights file, code in a model dict)
