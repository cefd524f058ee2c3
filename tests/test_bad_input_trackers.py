"""Bad input for the trackers (``--log-with``): a tracker whose package is missing, a name that is no tracker.

A missing package is made real without uninstalling it: a ``sitecustomize.py`` on ``PYTHONPATH`` makes Python's
path finder answer "not found" for the hidden top-level packages, exactly as on a machine without them
(``importlib.util.find_spec`` returns None, ``import`` raises ModuleNotFoundError). Before, such a run trained to
exit 0 and tracked nothing, with one UserWarning from Accelerate at the top of its log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bad_input_helpers import _train_config, assert_clean_error, assert_user_error, run_cli
from tests.helpers import ENV

HIDE = '''\
import importlib.machinery
import os

_HIDDEN = set(os.environ.get("HIDE_PACKAGES", "").split(","))
_find_spec = importlib.machinery.PathFinder.find_spec


def _hiding_find_spec(fullname, path=None, target=None):
    if fullname.partition(".")[0] in _HIDDEN:
        return None
    return _find_spec(fullname, path, target)


importlib.machinery.PathFinder.find_spec = staticmethod(_hiding_find_spec)
'''


def _without(tmp_path: Path, *packages: str) -> dict[str, str]:
    """The test environment with ``packages`` uninstalled as far as Python can tell."""
    site = tmp_path / "hide"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE)
    return {**ENV, "PYTHONPATH": f"{site}:{ENV['PYTHONPATH']}", "HIDE_PACKAGES": ",".join(packages)}


def test_a_tracker_not_installed_is_one_error_before_any_work(tmp_path):
    env = _without(tmp_path, "wandb", "mlflow")
    probe = subprocess.run([sys.executable, "-c", "import wandb"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'wandb'" in probe.stderr  # hidden: as if never installed
    out = tmp_path / "run"
    proc = run_cli("train.py", "--log-with", "tensorboard,wandb,mlflow", "--output-dir", str(out), "--epochs", "1",
                   env=env)
    text = assert_clean_error(proc, "--log-with tensorboard,wandb,mlflow: wandb and mlflow are not installed "
                                    "(pip install 'yolofuse-scale[trackers]' installs TensorBoard, MLflow and W&B; or "
                                    "drop wandb and mlflow from --log-with)")
    assert proc.returncode == 1 and text.count("error:") == 1 and not out.exists()  # nothing read, nothing written


def test_a_tracker_not_installed_in_a_config_file_names_its_line(tmp_path, monkeypatch, capsys):
    """In-process: MLflow's import name is pointed at a package that exists nowhere, so the check's real
    ``find_spec`` finds nothing, as on a machine without MLflow (the subprocess above hides a real one)."""
    from yolofuse_scale.engine import trackers

    monkeypatch.setitem(trackers.MODULES, "mlflow", ("yolofuse_scale_test_no_such_package",))
    config = tmp_path / "run.yaml"
    config.write_text("version: 2\noptim:\n  lr: 0.02\nlog:\n  log_with: mlflow\n")
    assert_user_error(_train_config("--config", str(config)),
                      f"{config}:5: log.log_with: --log-with mlflow: mlflow is not installed (pip install "
                      "'yolofuse-scale[trackers]'", capsys=capsys)


def test_log_with_names_trackers_only(capsys):
    assert_user_error(_train_config("--log-with", "tensorboard,comet"),
                      "--log-with must be one of tensorboard, wandb, mlflow or none, or several trackers "
                      "comma-separated (tensorboard,mlflow), got 'tensorboard,comet'", capsys=capsys)
