"""Where and with what a result was measured: one record, the same keys in every benchmark's results.

    record = environment(threads=1, machine_label="8xH100", command=[sys.executable, "-m", ...])

Versions of the packages that set the numbers (this package's own included: an installed wheel has no
git commit), the git commit and dirty flag of the source tree the package was imported from (where it
is a checkout), CPU, cores, GPUs and their interconnect, threads per process, host or machine label,
and the command line. Works without git, without a ``.git`` folder, without nvidia-smi and without
torch: those fields then say "unknown" or are empty. Standard library only at import.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yolofuse_scale

#: the packages whose versions every result carries (besides this one's, ``yolofuse-scale``)
PACKAGES = ("torch", "torchvision", "accelerate", "deepspeed", "ultralytics", "numpy")


def source_root() -> Path:
    """The folder ``yolofuse_scale`` was imported from: a source checkout, site-packages, a ``--target`` folder."""
    return Path(yolofuse_scale.__file__).resolve().parents[1]


def environment(*, threads: int | str | None = None, machine_label: str = "",
                command: list[str] | None = None) -> dict[str, Any]:
    """The record (see the module docstring).

    ``threads``: intra-op threads per process (default: OMP_NUM_THREADS, else "torch default");
    ``command``: the benchmark's command line (default: this process's).
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
        "versions": {**{p: _version(p) for p in PACKAGES}, "yolofuse-scale": yolofuse_scale.__version__},
        "cuda": _cuda_version(), "git_commit": commit, "git_dirty": dirty,
        "command": shlex.join([sys.executable, *sys.argv] if command is None else command),
    }


def _version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    """git's output in the source checkout, or None: not a checkout (an installed wheel: its folder may lie
    inside someone else's repository), no git, or a tree copied without ``.git`` (a GPU machine's)."""
    root = source_root()
    if not (root / ".git").exists():  # a folder (a clone) or a file (a worktree)
        return None
    try:
        p = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
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
