"""What every benchmark shares: launching train.py, reading what it wrote, and one environment record.

    from benchmarks import common

    run = common.run_training(["--data", d, "--output-dir", out, ...], launcher="torchrun", nproc=2,
                              threads=1, timeout=600, log=out / "stdout.txt")
    if run.ok:
        steps, summary = common.read_log(out), common.read_metrics(out)
    record = {"environment": common.environment(threads=1, command=[...]), ...}

- :func:`train_env`: the environment a run gets: the checkout first on ``PYTHONPATH`` (a run measures
  this tree, not another installed copy), ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` when given. (The
  prebuilt DeepSpeed CPU op is found by the package itself: ``engine/strategy/cpu_comm_op.py``.)
- :func:`train_command` / :func:`launcher_command`: ``python``, ``torchrun`` or ``accelerate launch``
  (with ``configs/accelerate/<config>.yaml``), or any launcher prefix a user gives, then ``train.py ARGS``.
- :func:`run_command`: runs one command to the end or to its timeout; a run past its timeout is
  stopped with its whole process tree (see there), and counts as failed instead of hanging a sweep.
- :func:`environment`: versions, git commit (+ dirty), CPU, GPUs, threads, host or machine label and
  the command line: the same keys in every benchmark's results.

Standard library only at import (torch is imported by :func:`environment` when it is installed).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: the packages whose versions every result carries
PACKAGES = ("torch", "torchvision", "accelerate", "deepspeed", "ultralytics", "numpy")
#: seconds a timed-out run gets between SIGTERM and SIGKILL: torchrun's own grace for its workers is 30 s
STOP_GRACE_S = 40.0


# ------------------------------------------------------------------------------------------ launching
def train_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """``os.environ`` for a launched run: the checkout first on PYTHONPATH, thread counts.

    ``threads``: OMP/MKL intra-op threads per process (None or 0: inherited). ``extra``: more variables.
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return {**env, **extra}


def free_port() -> int:
    """A TCP port free on this host now (for a launcher's rendezvous; another process may take it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(launcher: str | list[str] = "python", nproc: int = 1, *, port: int | None = None,
                     accelerate_config: str = "ddp") -> list[str]:
    """The words before ``train.py``: ``python`` (one process), ``torchrun`` or ``accelerate`` (``nproc``
    processes, rendezvous on ``port`` or a free one, ``configs/accelerate/<accelerate_config>.yaml``), or a
    list: a user's own prefix (e.g. ``torchrun --nproc_per_node 8``), used as given."""
    if isinstance(launcher, list):
        return list(launcher) or [sys.executable]
    if launcher == "python":
        if nproc != 1:
            raise ValueError(f"launcher 'python' runs one process, not {nproc}")
        return [sys.executable]
    port = port or free_port()
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), f"--nproc_per_node={nproc}", f"--master_port={port}"]
    if launcher == "accelerate":
        return [str(BIN / "accelerate"), "launch", "--config_file",
                str(ROOT / "configs" / "accelerate" / f"{accelerate_config}.yaml"), f"--num_processes={nproc}",
                f"--main_process_port={port}"]
    raise ValueError(f"launcher {launcher!r}: expected python, torchrun, accelerate or a command prefix")


def train_command(train_args: list[str], launcher: str | list[str] = "python", nproc: int = 1, **kw: Any) -> list[str]:
    """``[launcher..., <checkout>/train.py, *train_args]`` (see :func:`launcher_command` for the rest)."""
    return [*launcher_command(launcher, nproc, **kw), str(ROOT / "train.py"), *train_args]


@dataclass
class RunResult:
    command: list[str]
    returncode: int | None  # None: stopped at its timeout
    output: str  # stdout and stderr, interleaved as written
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])

    def error(self, timeout: float | None = None) -> str:
        """One line saying why the run failed ("" when it did not)."""
        if self.timed_out:
            return f"timed out after {timeout} s" if timeout else "timed out"
        return "" if self.ok else f"exit {self.returncode}: " + self.tail().replace("\n", " | ")


def run_command(cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None, *,
                cwd: Path = ROOT, log: Path | None = None, grace_s: float = STOP_GRACE_S) -> RunResult:
    """Run ``cmd`` to its end or to ``timeout`` seconds; its output also goes to ``log`` if given.

    A run past its timeout gets SIGTERM first, not subprocess.run's SIGKILL: torchrun starts its
    workers in sessions of their own and only its SIGTERM handler stops them, so a killed torchrun
    would leave them holding the GPU for the rest of the sweep. After ``grace_s`` whatever is left
    of the process tree (recorded before the SIGTERM, so orphans are found too) is SIGKILLed, with
    the process groups its members lead (a worker's DataLoader processes). The child stays in our
    process group, so a signal to the benchmark's group (gpu_session.sh's ``timeout``) reaches it.
    """
    env = os.environ.copy() if env is None else env
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    try:
        try:
            output, _ = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            output, code = _stop_tree(proc, grace_s), None
    finally:  # the benchmark itself interrupted (Ctrl-C): do not leave the run behind
        if proc.poll() is None:
            proc.terminate()
    result = RunResult(list(cmd), code, output, time.perf_counter() - t0)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    return result


def _stop_tree(proc: subprocess.Popen, grace_s: float) -> str:
    """SIGTERM to ``proc``, ``grace_s`` seconds, then SIGKILL to what is left of its tree; its output."""
    tree = _descendants(proc.pid)
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=grace_s)  # returns once every holder of the pipe is gone
    except subprocess.TimeoutExpired:
        output = None
    if proc.returncode is None:  # not reaped yet, so its pid is still its own: what started meanwhile
        tree.update(_descendants(proc.pid))
    for pid, start in tree.items():
        if start is None or _start_time(pid) != start:
            continue  # gone, or its pid is another process's now
        try:
            if os.getpgid(pid) == pid:  # a group leader: torchrun's worker, with its loader workers
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    if output is None:
        output, _ = proc.communicate()
    return output


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): field 4 (ppid) is index 1."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None  # field 22, start time: tells a pid apart from its reuse


def _descendants(pid: int) -> dict[int, str | None]:
    """Every process below ``pid`` -> its start time (from /proc: empty where there is none, e.g. macOS)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        fields = _stat_fields(int(name)) if name.isdigit() else None
        if fields:
            children.setdefault(int(fields[1]), []).append(int(name))
    out: dict[int, str | None] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = _start_time(child)
            todo.append(child)
    return out


def run_training(train_args: list[str], *, launcher: str | list[str] = "python", nproc: int = 1,
                 threads: int | None = None, env: dict[str, str] | None = None, timeout: float | None = None,
                 log: Path | None = None, accelerate_config: str = "ddp") -> RunResult:
    """``train.py train_args`` under ``launcher``, in :func:`train_env` (or ``env``), until done or ``timeout``."""
    cmd = train_command(train_args, launcher, nproc, accelerate_config=accelerate_config)
    return run_command(cmd, env if env is not None else train_env(threads), timeout, log=log)


# -------------------------------------------------------------------------------------------- reading
def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-step records (``train_log.jsonl``: step, step_time_s, phases, comm, ...)."""
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines() if line]


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's summary (``metrics.json``: step, metrics, params, gflops, peak_memory, ...)."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


# ---------------------------------------------------------------------------------------- environment
def write_results(out: Path, result: dict[str, Any], text: str, report: str = "report.md") -> None:
    """``out/results.json`` (the numbers) and ``out/<report>`` (the table people read), then the table on stdout."""
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / report).write_text(text)
    print(text)


def environment(*, threads: int | str | None = None, machine_label: str = "",
                command: list[str] | None = None) -> dict[str, Any]:
    """Where and with what a result was measured; the same keys in every benchmark's results.

    ``threads``: intra-op threads per process (default: OMP_NUM_THREADS, else "torch default");
    ``command``: the benchmark's command line (default: this process's). Works without git, without
    a .git folder, without nvidia-smi and without torch (those fields then say "unknown" or are empty).
    """
    gpus = _gpus()
    commit, dirty = _git_state()
    return {
        "host": platform.node(), "machine_label": machine_label, "platform": platform.platform(),
        "python": platform.python_version(), "cpu": _cpu_model(), "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpus": gpus, "interconnect": _interconnect() if gpus else "none",
        "device_kind": "gpu" if gpus else "cpu process",
        "threads_per_process": threads or os.environ.get("OMP_NUM_THREADS", "torch default"),
        "versions": {p: _version(p) for p in PACKAGES}, "cuda": _cuda_version(),
        "git_commit": commit, "git_dirty": dirty,
        "command": shlex.join([sys.executable, *sys.argv] if command is None else command),
    }


def _version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    """git's output in the checkout, or None: a GPU machine may get the tree without git or without .git."""
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _git_state() -> tuple[str, bool]:
    """(commit, dirty): "unknown" / False without git; GPU_SESSION_COMMIT names the commit of a bare tree."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return os.environ.get("GPU_SESSION_COMMIT") or "unknown", False
    return commit, bool(_git("status", "--porcelain", "--untracked-files=no"))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):  # not Linux, or an ARM kernel without "model name"
        return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """GPU names: nvidia-smi's (no CUDA context in this process: it would hold memory all sweep), else torch's."""
    if shutil.which("nvidia-smi"):
        try:
            p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)
            if p.returncode == 0:
                return [line.strip() for line in p.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import torch
    except ImportError:
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _interconnect() -> str:
    try:
        p = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return p.stdout.strip() or "unknown"


def _cuda_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda
