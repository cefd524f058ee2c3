"""The suite's own rules (tests/helpers.py, tests/conftest.py): ``launch`` refuses a training or a multi-process
run from a test not marked ``slow`` (so ``make test-fast`` stays free of them), and the test modules import the
shared helpers from ``tests.helpers``, the one copy whose state conftest's hooks set: pytest imports conftest.py
as ``conftest``, so a module importing ``tests.conftest`` would get a second copy of it.
"""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT, _require_slow_marker, launch


def test_launch_refuses_a_training_from_a_test_not_marked_slow(tmp_path):
    with pytest.raises(AssertionError, match=r"test_helpers\.py::test_launch_refuses_a_training_from_a_test_not_"
                                             r"marked_slow launches a training: mark it @pytest\.mark\.slow"):
        launch("python", 1, ["train.py", "--help"], tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything ran


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate", "deepspeed"])
def test_launch_refuses_a_multi_process_launcher_from_a_test_not_marked_slow(tmp_path, launcher):
    with pytest.raises(AssertionError, match=f"launches {launcher}: mark it @pytest.mark.slow"):
        launch(launcher, 2, ["-m", "yolofuse_scale", "--help"], tmp_path)


def test_a_test_marked_slow_may_launch_and_any_test_may_run_a_command(request):
    """The check reads the running test's own marker: with ``slow`` a launch is allowed; a one-process command
    that is not a training (``python -m yolofuse_scale val ...``) needs no marker."""
    _require_slow_marker("python", ["-m", "yolofuse_scale", "val", "--help"])
    request.node.add_marker(pytest.mark.slow)
    _require_slow_marker("torchrun", ["train.py"])
    _require_slow_marker("python", ["-m", "yolofuse_scale", "train"])


def test_no_test_module_imports_conftest():
    """``from tests.conftest import launch`` would load conftest.py a second time, as another module."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno}" for n in names if n.split(".")[-1] == "conftest"]
            if isinstance(node, ast.ImportFrom) and any(a.name == "conftest" for a in node.names):
                found.append(f"{path.name}:{node.lineno}")
    assert found == [], found
