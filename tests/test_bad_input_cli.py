"""Bad input, Ultralytics' command line (issue 24): key=value arguments, device=, the run folder's name, Ultralytics'
model file names, the Python API. A key or flag that cannot be honoured is a usage error (one message naming it and
what is closest, exit code 2); a setting that parses but cannot be used is a user error (one ``error:`` message,
exit code 1). Nothing is silently ignored, nothing trains. All in-process, before any model or process group."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.bad_input_helpers import assert_user_error
from yolofuse_scale.errors import ConfigError


def _usage_error(capsys, *argv: str) -> str:
    """``yolofuse-scale train ARGV`` ends with one usage error (exit code 2); the message."""
    from yolofuse_scale.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    return err.rsplit("error: ", 1)[1]


@pytest.mark.parametrize("argv, needles", [
    (["cls=0.5"], ["cls=0.5: Ultralytics' cls has no setting here", "loss gains"]),
    (["rect=True"], ["rect=True: Ultralytics' rect has no setting here", "square"]),
    (["save_period=5"], ["save_period=5", "closest: --save-every-steps"]),
    (["single_cls"], ["single_cls=True: Ultralytics' single_cls has no setting here"]),
    (["epoch=3"], ["epoch=3: unknown setting (did you mean epochs=?)"]),
    (["--epoks", "3"], ["unknown flag --epoks (did you mean --epochs?)"]),
    (["--warmup", "2"], ["--warmup: ambiguous, could be --warmup-bias-lr, --warmup-epochs"]),
    (["yolov8n"], ["'yolov8n': not a setting; write key=value (Ultralytics' form, e.g. epochs=3)"]),
    (["workers="], ["workers=: workers= needs a value"]),
    (["epochs=ten"], ["epochs=ten: expected an integer"]),
    (["val=maybe"], ["val=maybe: expected True or False"]),
    (["--val=1"], ["--val=1: --val takes no value"]),
    (["epochs=3", "--epochs", "4"], ["epochs=3 and --epochs both set --epochs: give one of them"]),
    (["lr0=0.01", "lr=0.02"], ["lr0=0.01 and lr=0.02 both set --lr: give one of them"]),
    (["batch=15", "device=cpu:2"], ["batch=15 is the total over 2 processes", "does not divide by 2"]),
    (["batch=-1"], ["batch=-1: give the images per step as a positive integer", "AutoBatch"]),
    (["optimizer=auto"], ["optimizer=auto: Ultralytics' auto picks AdamW or SGD", "optimizer=SGD"]),
    (["optimizer=RMSProp"], ["optimizer=RMSProp: RMSProp is not available here; choose optimizer=SGD"]),
    (["amp=maybe"], ["amp=maybe: expected True (fp16 on GPUs), False, fp16, bf16 or fp32"]),
    (["cache=always"], ["cache=always: expected True (ram), ram, disk or False"]),
    (["device=-1"], ["device=-1: expected GPU numbers", "idle GPU) is not supported"]),
    (["device=mps"], ["device=mps: expected GPU numbers", "mps and other backends are not supported"]),
    (["device=0,0"], ["device=0,0: a GPU is listed twice"]),
], ids=["unsupported-key-loss-gain", "unsupported-key-rect", "unsupported-key-save-period", "bare-non-switch-key",
        "typo-key", "typo-flag", "ambiguous-flag-prefix", "bare-word", "key-without-value", "key-wrong-type",
        "key-not-a-boolean", "value-to-a-switch-flag", "key-and-flag-same-setting", "two-keys-same-setting",
        "batch-not-divisible-by-devices", "batch-autobatch", "optimizer-auto", "optimizer-unsupported", "amp-bad-value",
        "cache-bad-value", "device-idle-gpu-search", "device-backend", "device-listed-twice"])
def test_a_key_that_cannot_be_honoured_is_one_usage_error(capsys, argv, needles):
    err = _usage_error(capsys, *argv)
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def _train(*argv: str):
    """What ``yolofuse-scale train ARGV`` runs after parsing, up to the trainer (never reached here)."""
    from yolofuse_scale.cli import build_train_parser, parse_train_args, train

    args = parse_train_args(build_train_parser(), list(argv))
    return lambda: train(args)


def test_ultralytics_model_file_not_here_is_refused_nothing_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_user_error(_train("model=yolov8n.pt"), "--model yolov8n.pt: no such file here, and nothing is downloaded",
                      "--model yolov8n to train from scratch", capsys=capsys)


def test_a_runs_weights_file_as_model_is_refused_with_the_way_to_continue_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train" / "weights").mkdir(parents=True)
    (tmp_path / "runs" / "train" / "weights" / "best.pt").write_bytes(b"")
    (tmp_path / "runs" / "train" / "config.yaml").write_text("version: 2\n")
    assert_user_error(_train("model=runs/train/weights/best.pt"), "a weights file, not a model",
                      "--pretrained runs/train/weights/best.pt", "to continue that run: resume=True", capsys=capsys)


def test_device_under_a_launcher_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_user_error(_train("device=0,1", "--batch-size", "4"), "device=0,1 under a launcher",
                      "drop device=", capsys=capsys)


def test_a_gpu_this_machine_lacks_is_refused(monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU (the check is for one named that it lacks: device=63)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test (use_in_process sets it)
    assert_user_error(_train("device=63"), "device=63: no such CUDA device here", capsys=capsys)


def test_gpus_this_machine_lacks_are_refused_before_the_run_folder_exists(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs (the check is for GPUs it lacks)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test (the launch sets it)
    assert_user_error(_train("device=0,1", f"project={tmp_path / 'runs'}"), "device=0,1: ", "of these 2 GPU(s) are "
                      "visible (CUDA_VISIBLE_DEVICES=0,1); name GPUs this machine has", capsys=capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, needle", [
    (["name=", "project=runs"], "name=: name= needs a value"),
    (["--name", " "], "--name must name a folder"),
], ids=["empty-name-key", "blank-name"])
def test_a_run_name_that_is_no_folder_is_refused(capsys, argv, needle):
    from yolofuse_scale.cli import build_train_parser, parse_train_args
    from yolofuse_scale.config import config_from_args

    if argv[0].endswith("="):
        assert needle in _usage_error(capsys, *argv)
        return
    assert_user_error(lambda: config_from_args(parse_train_args(build_train_parser(), argv)), needle, capsys=capsys)


def test_a_project_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    from yolofuse_scale.cli import build_train_parser, parse_train_args
    from yolofuse_scale.config import config_from_args

    args = parse_train_args(build_train_parser(), [f"project={tmp_path / 'runs'}"])
    assert_user_error(lambda: config_from_args(args), f"--project {tmp_path / 'runs'}: is a file, not a folder",
                      capsys=capsys)


# ---------------------------------------------------------------------------------------------------- Python API
def test_the_python_api_raises_one_clear_error(tmp_path):
    from yolofuse_scale import FusionYOLO

    m = FusionYOLO("yolov8t")
    with pytest.raises(ConfigError, match=r"cls=0.5: Ultralytics' cls has no setting here"):
        m.train(cls=0.5)
    with pytest.raises(ConfigError, match=r"add_callback\('on_epoch_ends'\): no such event \(did you mean "
                                          r"'on_epoch_end'\?\)"):
        m.add_callback("on_epoch_ends", print)
    m.add_callback("on_fit_end", print)
    with pytest.raises(ConfigError, match=r"device=cpu:2 starts 2 worker processes, and callbacks run in this one"):
        m.train(device="cpu:2", batch=4)
    with pytest.raises(ConfigError, match=r"val: no weights yet: train first"):
        m.val(data="data.yaml")
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"FusionYOLO.val: no option confidence= \(did you mean conf\?\)"):
        FusionYOLO(weights).val(data="data.yaml", confidence=0.5)
    with pytest.raises(ConfigError, match=r"holds a finished run's weights: to train from them"):
        FusionYOLO(weights).train(epochs=1)


def test_parser_errors_in_the_api_raise_not_exit():
    from yolofuse_scale.api import RaisingParser

    parser = RaisingParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(ConfigError, match="invalid int value"):
        parser.parse_args(["--n", "ten"])
    assert isinstance(parser, argparse.ArgumentParser) and Path(__file__).is_file()
