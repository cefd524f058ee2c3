"""Shared fixtures: one tiny synthetic dataset per session and a cache of real training runs.

Multi-process runs cost seconds each on 2 cores, and several tests read the same run (its weights,
its log, its checkpoints), so every run is launched at most once per session, keyed by its launcher
and arguments. Runs use the tiny model scale, 64 px images and validation off unless a test needs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

# pytest imports this file as `conftest`; the test modules import it as `tests.conftest`. One module,
# not two copies: the state below (the running test, for launch's slow-marker check) is shared.
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]
# One intra-op thread per process: 2 ranks on 2 cores do not oversubscribe, and the single-process
# reference computes with the same kernels and thread count as each rank (needed for bitwise parity).
# DeepSpeed's CPU communication op is compiled (~90 s) once by `make install` into the venv; launched
# runs find it themselves (engine/strategy/cpu_comm_op.py), so no TORCH_EXTENSIONS_DIR is set here.
# An existing PYTHONPATH is kept after the repository: the GPU script may install wheels with --target.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "TOKENIZERS_PARALLELISM": "false"}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    out: Path
    proc: subprocess.CompletedProcess

    @property
    def log(self) -> list[dict]:
        return [json.loads(line) for line in (self.out / "train_log.jsonl").read_text().splitlines()]

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


#: The test running now (set by the autouse fixture below): ``launch`` checks its ``slow`` marker.
_CURRENT: list = [None]


@pytest.fixture(autouse=True)
def _current_test(request):
    _CURRENT[0] = request.node
    yield
    _CURRENT[0] = None


def pytest_collection_modifyitems(items):
    """Tests that read cached training runs are ``slow`` (``make test-fast`` leaves them out)."""
    for item in items:
        if "train_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def _require_slow_marker(launcher: str, args: list[str]) -> None:
    """Keep the fast tier (``-m "not slow"``) free of trainings and multi-process runs: a test that
    launches one must say so with ``@pytest.mark.slow``."""
    training = args[:1] == ["train.py"] or args[:3] == ["-m", "yolofuse_scale", "train"]
    node = _CURRENT[0]
    if (launcher != "python" or training) and node is not None and node.get_closest_marker("slow") is None:
        what = "a training" if training else launcher
        raise AssertionError(f"{node.nodeid} launches {what}: mark it @pytest.mark.slow (the fast tier, "
                             "make test-fast, runs no trainings and no multi-process runs)")


#: How a launcher reports a rank that died of a signal in native code (not a Python error):
#: torchrun's failure table, Python's own faulthandler (``errors.run_entry`` enables it), a bare kill.
_NATIVE_CRASH = re.compile(r"exitcode\s*:\s*-(11|6|7|8)\b|Fatal Python error: (Segmentation fault|Aborted|Bus error)")


def native_crash(proc: subprocess.CompletedProcess) -> str | None:
    """The signal a rank of ``proc`` died of in native code, or None (also for a clean Python error)."""
    if proc.returncode in (-11, -6, -7, -8):
        return f"signal {-proc.returncode}"
    m = _NATIVE_CRASH.search(proc.stderr or "") or _NATIVE_CRASH.search(proc.stdout or "")
    if m is None or proc.returncode == 0:
        return None
    return f"signal {m.group(1)}" if m.group(1) else m.group(2)


def launch(launcher: str, nproc: int, args: list[str], out: Path, timeout: int = 300, check: bool = True) -> Run:
    """Run train.py (or ``-m yolofuse_scale ...`` when args start with a command) under a real launcher.

    A training runs with ``--no-plots`` unless its args say ``--plots`` (they come later and win): the pictures cost
    a run 0.5-2 s of matplotlib on 2 cores; tests/test_run_folder.py asserts them."""
    _require_slow_marker(launcher, args)
    for head in (["train.py"], ["-m", "yolofuse_scale", "train"]):
        if args[: len(head)] == head:
            args = [*head, "--no-plots", *args[len(head):]]
    if launcher == "python":
        assert nproc == 1
        cmd = [sys.executable, *args]
    elif launcher == "torchrun":
        cmd = [str(BIN / "torchrun"), f"--nproc_per_node={nproc}", f"--master_port={free_port()}", *args]
    elif launcher == "deepspeed":  # DeepSpeed's own launcher (it appends --local_rank=N)
        cmd = [str(BIN / "deepspeed"), f"--num_gpus={nproc}", f"--master_port={free_port()}", *args]
    elif launcher.startswith("accelerate"):  # "accelerate" (DDP) or "accelerate:<config name>"
        config = launcher.partition(":")[2] or "ddp"
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / f"configs/accelerate/{config}.yaml"),
               f"--num_processes={nproc}", f"--main_process_port={free_port()}", *args]
    else:
        raise ValueError(launcher)
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    crash = native_crash(proc)
    if crash:
        # A rank killed by a signal in native code (seen once in CI: SIGSEGV in a gloo all-gather of an
        # FSDP2 run, never reproduced in 30 runs here) says nothing about what these tests check, which
        # is a Python-level result. Run it once more from scratch and say so; a second crash fails.
        warnings.warn(f"{' '.join(cmd[:3])} ...: a rank died of {crash}; rerun once. Output tail:\n"
                      f"{proc.stderr[-3000:]}", stacklevel=2)
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return Run(out, proc)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from yolofuse_scale.data import write_synthetic_dataset

    # 128 px: at 64 px the synthetic people are ~12 px tall and an untrained YOLO's first box guesses
    # (~160 px) overlap nothing, so the assigner has no signal for many steps.
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=128, n_val=32, imgsz=128, seed=0)


#: The arguments every cached training run shares: tiny model, 128 px, deterministic data, no warm-up.
BASE_ARGS = ["--model", "yolov8t", "--fusion", "mid", "--imgsz", "128", "--batch-size", "8", "--epochs", "12",
             "--workers", "0", "--no-augment", "--warmup-epochs", "0", "--seed", "3", "--lr", "0.02"]


@pytest.fixture(scope="session")
def train_run(tiny_data, tmp_path_factory):
    """``train_run(launcher, nproc, grad_accum, *extra)`` -> Run, launched once per session per key."""
    cache: dict[tuple, Run] = {}

    def get(launcher: str, nproc: int, grad_accum: int, *extra: str) -> Run:
        key = (launcher, nproc, grad_accum, *extra)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"run_{launcher}{nproc}x{grad_accum}")
            args = ["train.py", "--data", str(tiny_data), *BASE_ARGS, "--grad-accum", str(grad_accum),
                    "--output-dir", str(out), *extra]
            cache[key] = launch(launcher, nproc, args, out)
        return cache[key]

    return get


def train_yaml_briefly(data: Path, model_yaml: Path, out: Path) -> Run:
    """``python train.py --model FILE.yaml`` for 3 steps at 64 px (tiny scale); asserts the run trained."""
    run = launch("python", 1, ["train.py", "--data", str(data), "--model", str(model_yaml), "--scale", "t",
                               "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--max-steps", "3",
                               "--epochs", "1", "--no-val", "--warmup-epochs", "0", "--output-dir", str(out)], out)
    assert [r["step"] for r in run.log] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in run.log)
    assert (out / "weights" / "last.pt").is_file()
    return run



#: Ray's test cluster: one local cluster per session (Ray starts in seconds, not milliseconds), 2 CPUs
_RAY_HOLDER = """
import os, sys
import ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the session ends (the fixture closes stdin)
ray.shutdown()
"""


@dataclass
class RayCluster:
    address: str
    env: dict  # ENV for a driver that joins it (Ray Train's metrics export and preemption watcher off, as locally)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the session's Ray tests (tests/test_ray.py, the fusion study's sweep), held by a
    child process of its own: drivers join it with ``--ray-address``; it is shut down at the session's end."""
    # RAY_AUTH_MODE=token: a joining driver sends the token (~/.ray/auth_token) the local cluster was started with
    env = {**ENV, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_METRICS_ENABLED": "0",
           "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_AUTH_MODE": "token"}
    holder = subprocess.Popen([sys.executable, "-c", _RAY_HOLDER, "2"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address = holder.stdout.readline().strip()
        assert address, "the Ray test cluster did not start"
        yield RayCluster(address, env)
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:  # its cluster's processes are in its session: end them with it
            os.killpg(holder.pid, 9)
            holder.wait()
