"""benchmarks/common.py: the environment record, the launcher's timeout, and that every benchmark goes through it."""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from benchmarks import common
from tests.conftest import ROOT

KEYS = {"host", "machine_label", "platform", "python", "cpu", "cpu_cores", "cpu_affinity", "gpus", "interconnect",
        "device_kind", "threads_per_process", "versions", "cuda", "git_commit", "git_dirty", "command"}


def test_environment_record_has_every_key():
    env = common.environment(threads=2, machine_label="test box", command=["python", "-m", "x", "--label", "a b"])
    assert KEYS <= set(env), KEYS - set(env)
    assert set(env["versions"]) == set(common.PACKAGES)
    assert env["versions"]["torch"].split(".")[0].isdigit() and env["versions"]["ultralytics"].startswith("8.")
    assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"]) and isinstance(env["git_dirty"], bool)
    assert env["command"] == "python -m x --label 'a b'" and env["machine_label"] == "test box"
    assert env["threads_per_process"] == 2 and env["cpu_cores"] >= env["cpu_affinity"] >= 1
    assert env["cpu"] and env["host"]
    json.dumps(env)  # written as is into every results.json


def test_environment_is_recorded_where_git_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git (nor nvidia-smi) on it
    monkeypatch.delenv("GPU_SESSION_COMMIT", raising=False)
    env = common.environment()
    assert env["git_commit"] == "unknown" and env["git_dirty"] is False
    # gpu_session.sh's variable for a tree copied without .git names the commit instead
    monkeypatch.setenv("GPU_SESSION_COMMIT", "abc123")
    assert common.environment()["git_commit"] == "abc123"


def test_train_env_puts_the_checkout_first_and_sets_threads(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    env = common.train_env(3, OPENCV_LOG_LEVEL="ERROR")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and env["OPENCV_LOG_LEVEL"] == "ERROR"
    # unset stays unset: the package finds the prebuilt DeepSpeed op of the interpreter that runs (cpu_comm_op)
    assert "TORCH_EXTENSIONS_DIR" not in env
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/built")  # a build already made elsewhere is passed on
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = common.train_env()
    assert env["TORCH_EXTENSIONS_DIR"] == "/built" and env["OMP_NUM_THREADS"] == "7"


def test_launcher_commands():
    assert common.train_command(["--epochs", "1"]) == [sys.executable, str(ROOT / "train.py"), "--epochs", "1"]
    torchrun = common.launcher_command("torchrun", 2, port=1234)
    assert torchrun[1:] == ["--nproc_per_node=2", "--master_port=1234"] and torchrun[0].endswith("torchrun")
    acc = common.launcher_command("accelerate", 4, port=99, accelerate_config="zero2")
    assert acc[1:4] == ["launch", "--config_file", str(ROOT / "configs" / "accelerate" / "zero2.yaml")]
    assert Path(acc[3]).is_file() and acc[4:] == ["--num_processes=4", "--main_process_port=99"]
    assert common.launcher_command(["torchrun", "--nproc_per_node", "8"]) == ["torchrun", "--nproc_per_node", "8"]
    with pytest.raises(ValueError, match="one process"):
        common.launcher_command("python", 2)


def test_a_failed_run_reports_its_exit_code_and_output(tmp_path):
    code = "import sys; print('out'); print('the reason', file=sys.stderr); sys.exit(3)"
    run = common.run_command([sys.executable, "-c", code], log=tmp_path / "logs" / "run.txt")
    assert run.returncode == 3 and not run.ok and not run.timed_out
    assert run.error() == "exit 3: out | the reason"
    assert (tmp_path / "logs" / "run.txt").read_text() == run.output


@pytest.mark.slow  # a process tree stopped at its timeout: seconds by design
def test_a_run_past_its_timeout_is_stopped_by_sigterm_and_reported():
    """torchrun stops its workers (in sessions of their own) only from its SIGTERM handler: the
    benchmark's per-run timeout must send that, and count the run as failed instead of crashing."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (print('stopped by SIGTERM', flush=True), sys.exit(0)))\n"
             "print('started', flush=True)\n"
             "time.sleep(60)\n")
    run = common.run_command([sys.executable, "-c", child], timeout=3)
    assert run.timed_out and "started" in run.output and "stopped by SIGTERM" in run.output, run.output
    assert run.error("--run-timeout 3") == "timed out after --run-timeout 3 s"


def _alive(pid: int) -> bool:
    fields = common._stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # a zombie is dead, only not yet reaped by its new parent


@pytest.mark.slow  # a process tree stopped at its timeout: seconds by design
def test_the_timeout_kills_the_whole_tree_even_where_sigterm_is_ignored(tmp_path):
    """A launcher that ignores SIGTERM, with a child in its process group (a DataLoader worker) and one in
    a session of its own (torchrun's worker) that holds the output pipe: all three are gone afterwards."""
    pids = tmp_path / "pids.json"
    child = ("import json, signal, subprocess, sys, time\n"
             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
             "sleep = [sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "time.sleep(120)']\n"
             "same = subprocess.Popen(sleep)\n"
             "own = subprocess.Popen(sleep, start_new_session=True)\n"
             f"open({str(pids)!r}, 'w').write(json.dumps([same.pid, own.pid]))\n"
             "print('started', flush=True)\n"
             "time.sleep(120)\n")
    t0 = time.monotonic()
    run = common.run_command([sys.executable, "-c", child], timeout=4, grace_s=1)
    assert run.timed_out and "started" in run.output, run.output
    assert time.monotonic() - t0 < 30  # communicate() did not wait for the orphans' pipe
    launched = json.loads(pids.read_text())
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in launched) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in launched), [p for p in launched if _alive(p)]


BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py")
#: the benchmarks that launch trainings (the others measure in process or only read results)
LAUNCHERS = {"scaling.py", "memory.py", "activation_checkpointing.py", "fusion_study.py", "compare_ultralytics.py"}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmarks_launch_only_through_common(path):
    """No benchmark starts a process itself (its own launcher, env and timeout): each goes through common."""
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    calls = {f"{n.func.value.id}.{n.func.attr}" for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
    assert "subprocess" not in imported and not calls & {"os.system", "os.popen", "os.execv", "os.spawnv"}
    if path.name in LAUNCHERS:
        used = {c.split(".")[1] for c in calls if c.startswith("common.")}
        assert used & {"run_command", "run_training"} and "environment" in used, used
