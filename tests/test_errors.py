"""The error path: a user error ends every entry point with one message and a non-zero exit, without a
traceback, once per job under torchrun, and promptly; YOLOFUSE_DEBUG=1 shows the traceback; a bug keeps it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import BIN, ENV, ROOT, free_port

BAD_LABEL = "class id 7 is not an integer in 0..1"


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> Path:
    """A tiny dataset with one out-of-range class id (the start-up scan refuses it)."""
    from yolofuse_scale.data import write_synthetic_dataset

    yaml_path = write_synthetic_dataset(tmp_path_factory.mktemp("bad_data"), n_train=8, n_val=4, imgsz=64, seed=0)
    label = sorted((yaml_path.parent / "labels" / "train").glob("*.txt"))[0]
    with open(label, "a") as fh:
        fh.write("7 0.5 0.5 0.2 0.2\n")
    return yaml_path


def _run(cmd: list[str], env: dict | None = None, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0, proc.stdout + proc.stderr


def _no_traceback_of_ours(out: str) -> None:
    """No frame of this project and no rank's traceback; torchrun's own ChildFailedError report stays."""
    assert not re.search(r'File ".*(yolofuse_scale|train\.py)', out), out[-4000:]
    assert "[rank0]: Traceback" not in out and "[rank1]: Traceback" not in out, out[-4000:]
    assert out.count("Traceback") <= 1, out[-4000:]  # at most torchrun's, from the launcher process
    if "Traceback" in out:
        assert "ChildFailedError" in out, out[-4000:]


def _torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}", *args]


TRAIN = ["train.py", "--model", "yolov8t", "--imgsz", "64", "--epochs", "1", "--batch-size", "2", "--workers", "0",
         "--no-val"]


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_bad_dataset_is_reported_once(bad_data, tmp_path):
    proc, seconds, out = _run(_torchrun(*TRAIN, "--data", str(bad_data), "--output-dir", str(tmp_path / "run")))
    assert proc.returncode != 0, out[-4000:]
    assert out.count(BAD_LABEL) == 1, out[-4000:]
    _no_traceback_of_ours(out)
    assert seconds < 60, seconds


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_config_error_before_the_process_group_is_reported_once(tmp_path):
    proc, seconds, out = _run(_torchrun(*TRAIN, "--lr", "-1", "--output-dir", str(tmp_path / "run")))
    assert proc.returncode != 0, out[-4000:]
    assert out.count("--lr must be > 0, got -1.0") == 1, out[-4000:]
    _no_traceback_of_ours(out)
    assert seconds < 60, seconds


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_error_seen_by_one_rank_only_ends_the_job(tmp_path):
    """Rank 1 alone fails while rank 0 waits in a collective: rank 1 prints, the job ends at once (no hang
    until --dist-timeout)."""
    script = tmp_path / "one_rank.py"
    script.write_text(textwrap.dedent("""
        import sys
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        from yolofuse_scale.data.config import DataError
        from yolofuse_scale.errors import run_entry


        def main():
            dist.init_process_group("gloo", timeout=timedelta(seconds=300))
            if dist.get_rank() == 1:
                raise DataError("node-local.yaml: only rank 1 sees this")
            dist.all_reduce(torch.zeros(1))  # rank 0 waits here for a peer that is gone


        sys.exit(run_entry(main))
    """))
    proc, seconds, out = _run(_torchrun(str(script)))
    assert proc.returncode != 0, out[-4000:]
    assert out.count("[rank 1] error: node-local.yaml: only rank 1 sees this") == 1, out[-4000:]
    _no_traceback_of_ours(out)
    assert seconds < 60, seconds


def test_python_train_bad_dataset_and_debug_traceback(bad_data, tmp_path):
    args = [sys.executable, *TRAIN, "--data", str(bad_data), "--output-dir", str(tmp_path / "run")]
    proc, _, out = _run(args)
    assert proc.returncode == 1, out[-4000:]
    assert out.count(BAD_LABEL) == 1 and "Traceback" not in out, out[-4000:]
    assert "error: " in out
    debug, _, out = _run([*args, "--debug"])
    assert debug.returncode != 0 and "Traceback" in out and "DataError" in out, out[-4000:]


@pytest.mark.parametrize("args", [
    ["val", "--weights", "{missing}/best.pt", "--data", "{data}"],
    ["predict", "--weights", "{missing}/best.pt", "--rgb", "{root}/images/val", "--ir", "{root}/imagesIR/val"],
    ["export-onnx", "--weights", "{missing}/best.pt"],
    ["checkpoint-to-weights", "{missing}/step_8", "{missing}/out.pt"],
])
def test_cli_commands_on_a_missing_file(args, bad_data, tmp_path):
    missing = tmp_path / "nowhere"
    fill = {"missing": missing, "data": bad_data, "root": bad_data.parent}
    proc, _, out = _run([sys.executable, "-m", "yolofuse_scale", *(a.format(**fill) for a in args)])
    assert proc.returncode == 1, out[-4000:]
    assert "Traceback" not in out and f"{missing}/" in out, out[-4000:]
    assert out.count("error: ") == 1, out


def test_export_debug_shows_the_cause(tmp_path):
    env = {**ENV, "YOLOFUSE_DEBUG": "1"}
    proc, _, out = _run([sys.executable, "-m", "yolofuse_scale", "export-onnx", "--weights", str(tmp_path / "x.pt")],
                        env)
    assert proc.returncode != 0 and "Traceback" in out and "FileNotFoundError" in out, out[-4000:]


def test_run_entry_reports_user_errors_and_keeps_bugs(capsys, monkeypatch):
    from yolofuse_scale.data.config import DataError
    from yolofuse_scale.errors import ConfigError, run_entry

    monkeypatch.delenv("YOLOFUSE_DEBUG", raising=False)

    def fail(exc):
        raise exc

    for exc in (DataError("a.yaml:3: bad"), ConfigError("--x must be 1"), FileNotFoundError(2, "No such file", "f")):
        assert run_entry(fail, exc) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    with pytest.raises(ZeroDivisionError):  # not a user error: a bug, with its traceback
        run_entry(lambda: 1 / 0)
    with pytest.raises(KeyError):
        run_entry(fail, KeyError("x"))
    monkeypatch.setenv("YOLOFUSE_DEBUG", "1")
    with pytest.raises(DataError):
        run_entry(fail, DataError("a.yaml: bad"))
    assert run_entry(lambda: 0) == 0 and run_entry(lambda: None) == 0 and run_entry(lambda: 3) == 3


def test_native_crash_prints_a_python_stack_and_is_told_from_a_python_error():
    """A segfault inside a command prints where in Python it happened (``run_entry`` enables
    faulthandler), and the suite's launcher tells such a crash from an ordinary failure (it reruns the
    first kind once: tests/helpers.py)."""
    from tests.helpers import native_crash

    crash = ("import ctypes\nfrom yolofuse_scale.errors import run_entry\n"
             "def segfaulting_step():\n    ctypes.string_at(0)\nrun_entry(segfaulting_step)\n")
    proc = subprocess.run([sys.executable, "-c", crash], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -11, proc.stderr[-2000:]
    assert "Fatal Python error: Segmentation fault" in proc.stderr and "segfaulting_step" in proc.stderr
    assert native_crash(proc) == "signal 11"
    error = subprocess.run([sys.executable, "-c", "raise ValueError('Segmentation fault')"], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=60)
    assert error.returncode == 1 and native_crash(error) is None
    # torchrun's failure table for a rank that segfaulted (as printed in CI), and for a Python error
    table = "Root Cause (first observed failure):\n  exitcode  : {} (pid: 8961)\n"
    assert native_crash(subprocess.CompletedProcess([], 1, "", table.format(-11))) == "signal 11"
    assert native_crash(subprocess.CompletedProcess([], 1, "", table.format(1))) is None
