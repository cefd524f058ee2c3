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


# ------------------------------------------------------------------------------------------ checkpoints
# (truncated, missing, extra, edited files; another run's lineage; another model)


# ------------------------------------------------------------------------------------------ weights
# (edited model dict, wrong tensors, not a weights file, code in a model dict)
