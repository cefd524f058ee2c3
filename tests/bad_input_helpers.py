"""What the bad-input battery (tests/test_bad_input_*.py) shares: a tiny dataset to plant bad input in
(``small_data_template``, copied per test by ``fresh_data``; fixtures, imported by the modules that use them),
the commands run as a user runs them (``run_cli``), and the contract every kind is checked against: one clear
message naming the file, the line (where there is one) and what is wrong, a non-zero exit without a Python
traceback (``assert_clean_error``; in process: ``assert_user_error``), and nothing written before lost
(``_snapshot``). The weights and checkpoint kinds read one real tiny run, ``small_run`` in tests/conftest.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ENV, ROOT


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


# what the data kinds share (tests/test_bad_input_data.py, _images.py, _data_yaml.py, _obb.py)
def _tr(d: Path, folder: str, i: int, ext: str = "png") -> Path:
    """A file of the template's training split: ``_tr(d, "labels", 3, "txt")``."""
    return d / folder / "train" / f"train_{i:05d}.{ext}"


def _scan_data(d: Path, policy: str = "error"):
    """What the trainer gets from the start-up scan: load data.yaml, scan train and val (DataError on a bad yaml)."""
    from yolofuse_scale.data import load_data_config, scan_dataset

    return scan_dataset(load_data_config(d / "data.yaml"), ("train", "val"), policy)


def _data_error(d: Path) -> str:
    from yolofuse_scale.data import DataError

    try:
        result = _scan_data(d)
    except DataError as e:  # data.yaml itself
        return str(e)
    assert result.error is not None, f"no error for the planted input; the scan says:\n{result.report()}"
    return result.error


TINY_TRAIN = ["--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--max-steps", "1",
              "--epochs", "1", "--no-val", "--warmup-epochs", "0"]


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


class _Touch:
    """A pickled object whose unpickling creates a file: what a malicious pickle does, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _write_gadget(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state": _Touch(marker)}, path)
    return path


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a run folder but the caches: what a refused start must leave as it was."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "cache" not in p.parts[-2]}


def _code(marker: Path) -> str:
    """A Python expression that creates ``marker`` if anything evaluates it."""
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"
