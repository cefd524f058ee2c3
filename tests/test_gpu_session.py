"""benchmarks/gpu_session.sh is run where no one can fix it (a lent GPU, minutes of budget), so what
CI can check without a GPU is checked here, in seconds and without training: the script parses, its
plan has every step, and every flag it and tests/test_gpu.py pass exists in the CLI that receives it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import BASE_ARGS, ENV, ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"


def plan() -> dict[str, list[str]]:
    """Step name -> its command, as ``gpu_session.sh --plan`` prints them (nothing runs)."""
    out = subprocess.run(["bash", str(SCRIPT), "--plan"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return {name: shlex.split(cmd) for name, cmd in (line.split("\t", 1) for line in out.splitlines())}


def test_script_parses_and_plans_every_step():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    steps = plan()
    assert list(steps) == ["env", "deps", "tests", "scaling_n", "scaling_s", "scaling_strategies", "report"]
    assert "tests/test_gpu.py" in steps["tests"] and (ROOT / "tests" / "test_gpu.py").is_file()
    for name, model in (("scaling_n", "yolov8n"), ("scaling_s", "yolov8s")):
        cmd = steps[name]
        assert cmd[cmd.index("--model") + 1] == model and cmd[cmd.index("--imgsz") + 1] == "640"
        assert cmd[cmd.index("--out") + 1].endswith(name)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(not (ROOT / "benchmarks" / "scaling.py").is_file(), reason="benchmarks/scaling.py not merged yet")
def test_sweep_flags_exist_in_the_scaling_benchmark():
    usage = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--help"], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    for name, cmd in plan().items():
        if name.startswith("scaling"):
            missing = [a for a in cmd if a.startswith("--") and a not in usage]
            assert not missing, f"{name}: benchmarks.scaling --help has no {missing}"


def test_gpu_tests_pass_only_flags_train_py_accepts():
    """tests/test_gpu.py skips without CUDA: a renamed flag would surface only on the GPU day."""
    from tests import test_gpu
    from yolofuse_scale.cli import build_train_parser

    parser = build_train_parser()
    for strategy in ("ddp", "fsdp", "zero2", "zero3"):
        for extra in ([], ["--mixed-precision", "bf16"], ["--mixed-precision", "fp16"], ["--sync-bn"],
                      ["--resume", "runs/x/checkpoints/step_2"]):
            parser.parse_args(["--data", "d.yaml", *BASE_ARGS, "--grad-accum", "1", "--output-dir", "o",
                               *test_gpu.STEPS, *test_gpu.flag(strategy), *extra])
