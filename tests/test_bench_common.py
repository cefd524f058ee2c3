"""The benchmarks' shared launcher, run readers and environment record (``yolofuse_scale/bench/``, named for
the checkout's scripts by benchmarks/common.py): the record, the launcher's timeout, and that every
benchmark goes through them."""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

import yolofuse_scale
from benchmarks import common
from tests.helpers import ROOT
from yolofuse_scale.bench import launch

KEYS = {"host", "machine_label", "platform", "python", "cpu", "cpu_cores", "cpu_affinity", "gpus", "interconnect",
        "device_kind", "threads_per_process", "versions", "cuda", "git_commit", "git_dirty", "command"}


def test_environment_record_has_every_key():
    env = common.environment(threads=2, machine_label="test box", command=["python", "-m", "x", "--label", "a b"])
    assert KEYS <= set(env), KEYS - set(env)
    assert set(env["versions"]) == {*common.PACKAGES, "yolofuse-scale"}
    assert env["versions"]["yolofuse-scale"] == yolofuse_scale.__version__  # a wheel has no commit: its release
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
    # installed into site-packages: that folder stays where the interpreter puts it (after the standard library)
    monkeypatch.setattr(launch.site, "getsitepackages", lambda: [str(ROOT)])
    assert launch.train_env()["PYTHONPATH"] == "/elsewhere"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/built")  # a build already made elsewhere is passed on
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = common.train_env()
    assert env["TORCH_EXTENSIONS_DIR"] == "/built" and env["OMP_NUM_THREADS"] == "7"


def test_launcher_commands():
    """The package's own train command (what an installed wheel has, not the checkout's train.py), under
    every launcher; the accelerate YAML is the packaged one, DeepSpeed's launcher takes ``--module``."""
    train = ["-m", "yolofuse_scale", "train", "--epochs", "1"]
    assert common.train_command(["--epochs", "1"]) == [sys.executable, *train]
    torchrun = common.launcher_command("torchrun", 2, port=1234)
    assert torchrun[1:] == ["--nproc_per_node=2", "--master_port=1234"] and torchrun[0].endswith("torchrun")
    acc = common.launcher_command("accelerate", 4, port=99, accelerate_config="zero2")
    packaged = ROOT / "yolofuse_scale" / "configs" / "accelerate"
    assert acc[1:4] == ["launch", "--config_file", str(packaged / "zero2.yaml")]
    assert Path(acc[3]).is_file() and acc[4:] == ["--num_processes=4", "--main_process_port=99"]
    assert common.launcher_command(["torchrun", "--nproc_per_node", "8"]) == ["torchrun", "--nproc_per_node", "8"]
    assert common.train_command(["--epochs", "1"], ["torchrun", "--nproc_per_node", "8"])[3:] == train
    assert common.train_command(["--epochs", "1"], ["/opt/bin/deepspeed", "--num_gpus", "8"])[3:] == [
        "--module", *train[1:]]
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
    fields = launch.stat_fields(pid)
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


#: every benchmark file: the checkout's scripts and their modules, and the package's benchmark (less the two
#: modules that start processes for all of them: the launcher, and the record's git and nvidia-smi queries)
BENCHMARKS = sorted([*(p for p in (ROOT / "benchmarks").rglob("*.py") if p.name not in ("common.py", "__init__.py")),
                     *(p for p in (ROOT / "yolofuse_scale" / "bench").glob("*.py")
                       if p.name not in ("launch.py", "environment.py", "__init__.py"))])
#: the files that launch trainings (the others measure in process, or only read or render results)
LAUNCHERS = {"benchmarks/memory.py", "benchmarks/activation_checkpointing.py", "benchmarks/fusion_study.py",
             "benchmarks/compare/runs.py", "yolofuse_scale/bench/measure.py", "yolofuse_scale/bench/collectives.py",
             "benchmarks/ray_overhead.py"}
#: the files that write a benchmark's results: each carries the shared environment record
RECORDERS = {"benchmarks/memory.py", "benchmarks/activation_checkpointing.py", "benchmarks/fusion_study.py",
             "benchmarks/compare_ultralytics.py", "yolofuse_scale/bench/sweep.py", "benchmarks/ray_overhead.py"}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_benchmarks_launch_only_through_the_shared_launcher(path):
    """No benchmark starts a process itself (its own launcher, env and timeout): each goes through
    ``yolofuse_scale/bench/launch.py`` (``common.`` in the checkout's scripts) and writes its record."""
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    calls = {f"{n.func.value.id}.{n.func.attr}" for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
    assert "subprocess" not in imported and not calls & {"os.system", "os.popen", "os.execv", "os.spawnv"}
    used = {c.split(".")[1] for c in calls if c.split(".")[0] in ("common", "launch")}
    used |= {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    name = path.relative_to(ROOT).as_posix()
    if name in LAUNCHERS:
        assert used & {"run_command", "run_training"}, used
    if name in RECORDERS:
        assert "environment" in used, used
