"""Launching one training (or any command) to its end or its timeout, the way a user's cluster would.

    run = run_training(["--data", d, "--output-dir", out, ...], launcher="torchrun", nproc=2, threads=1,
                       timeout=600, log=out / "stdout.txt")
    run.ok, run.error(), run.command, run.wall_s

- :func:`train_env`: the environment a run gets: the folder this package was imported from first on
  ``PYTHONPATH`` (a run measures this code, not another installed copy; left out where it is a
  site-packages folder the interpreter finds anyway), ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` when
  given. (DeepSpeed's prebuilt CPU op is found by the package itself, in the launched process:
  ``engine/strategy/cpu_comm_op.py``.)
- :func:`train_command` / :func:`launcher_command`: ``python``, ``torchrun`` or ``accelerate launch``
  (with the packaged ``configs/accelerate/<config>.yaml``), or any launcher prefix a user gives
  (``deepspeed ...`` included), then ``-m yolofuse_scale train ARGS``: the installed package's own
  entry point, so an installed wheel launches as a checkout does.
- :func:`run_command`: runs one command to the end or to its timeout; a run past its timeout is
  stopped with its whole process tree (see there), and counts as failed instead of hanging a sweep.

Standard library only at import.
"""

from __future__ import annotations

import os
import signal
import site
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolofuse_scale.bench.environment import source_root

BIN = Path(sys.executable).parent
#: the launched program: this package's ``train`` command (``yolofuse-scale train`` = ``train.py``)
TRAIN_MODULE = ("yolofuse_scale", "train")
#: the same training without gradient synchronisation: the --no-sync-baseline runs (``no_sync.py``)
NO_SYNC_MODULE = ("yolofuse_scale.bench.no_sync",)
#: seconds a timed-out run gets between SIGTERM and SIGKILL: torchrun's own grace for its workers is 30 s
STOP_GRACE_S = 40.0


# ------------------------------------------------------------------------------------------ launching
def train_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """``os.environ`` for a launched run: this package's folder first on PYTHONPATH, thread counts.

    ``threads``: OMP/MKL intra-op threads per process (None or 0: inherited). ``extra``: more variables.
    """
    path = [*_import_path(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return {**env, **extra}


def _import_path() -> list[str]:
    """What a child needs on PYTHONPATH to import the ``yolofuse_scale`` this process runs."""
    root = source_root()
    sites = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    # site-packages itself on PYTHONPATH would put it before the standard library
    return [] if root in sites else [str(root)]


def free_port() -> int:
    """A TCP port free on this host now (for a launcher's rendezvous; another process may take it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(launcher: str | list[str] = "python", nproc: int = 1, *, port: int | None = None,
                     accelerate_config: str = "ddp") -> list[str]:
    """The words before the program: ``python`` (one process), ``torchrun`` or ``accelerate`` (``nproc``
    processes, rendezvous on ``port`` or a free one, the packaged ``configs/accelerate/<accelerate_config>.yaml``),
    or a list: a user's own prefix (e.g. ``torchrun --nproc_per_node 8``), used as given."""
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
        config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / f"{accelerate_config}.yaml"
        return [str(BIN / "accelerate"), "launch", "--config_file", str(config), f"--num_processes={nproc}",
                f"--main_process_port={port}"]
    raise ValueError(f"launcher {launcher!r}: expected python, torchrun, accelerate or a command prefix")


def module_command(prefix: list[str], module: str, *args: str) -> list[str]:
    """``prefix -m module args``: every launcher runs a module with ``-m`` except DeepSpeed's (``--module``)."""
    flag = "--module" if Path(prefix[0]).name == "deepspeed" else "-m"
    return [*prefix, flag, module, *args]


def train_command(train_args: list[str], launcher: str | list[str] = "python", nproc: int = 1,
                  module: tuple[str, ...] = TRAIN_MODULE, **kw: Any) -> list[str]:
    """``[launcher..., -m, yolofuse_scale, train, *train_args]`` (``module``: another program taking the train
    flags, e.g. :data:`NO_SYNC_MODULE`; see :func:`launcher_command` for the rest)."""
    return module_command(launcher_command(launcher, nproc, **kw), *module, *train_args)


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
                cwd: Path | None = None, log: Path | None = None, grace_s: float = STOP_GRACE_S) -> RunResult:
    """Run ``cmd`` (in ``cwd``, default: this process's) to its end or to ``timeout`` seconds; its output
    also goes to ``log`` if given.

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


def run_training(train_args: list[str], *, launcher: str | list[str] = "python", nproc: int = 1,
                 threads: int | None = None, env: dict[str, str] | None = None, timeout: float | None = None,
                 log: Path | None = None, accelerate_config: str = "ddp",
                 module: tuple[str, ...] = TRAIN_MODULE) -> RunResult:
    """``yolofuse-scale train train_args`` (or ``module``'s program) under ``launcher``, in :func:`train_env` (or
    ``env``), until done or ``timeout``."""
    cmd = train_command(train_args, launcher, nproc, module, accelerate_config=accelerate_config)
    return run_command(cmd, env if env is not None else train_env(threads), timeout, log=log)


# ------------------------------------------------------------------------------- stopping a process tree
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


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) is index 0, field 4
    (ppid) index 1; None where the process is gone (or there is no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    fields = stat_fields(pid)
    return fields[19] if fields else None  # field 22, start time: tells a pid apart from its reuse


def _descendants(pid: int) -> dict[int, str | None]:
    """Every process below ``pid`` -> its start time (from /proc: empty where there is none, e.g. macOS)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        fields = stat_fields(int(name)) if name.isdigit() else None
        if fields:
            children.setdefault(int(fields[1]), []).append(int(name))
    out: dict[int, str | None] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = _start_time(child)
            todo.append(child)
    return out
