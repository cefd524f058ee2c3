"""``device=`` / ``--device``: which devices a training runs on, and the local launch of one process per device.

Ultralytics' spelling, what it means here:

- ``device=0`` (or ``cuda:0``): one process on GPU 0; ``device=0,1`` (or ``[0,1]``): one process per listed GPU,
  a DDP job started here: the same elastic launch ``torchrun --standalone --nproc_per_node N`` runs
  (``torch.distributed.run``, in this process), each worker running ``yolofuse-scale train`` with the same
  settings. The GPUs are chosen with ``CUDA_VISIBLE_DEVICES``, as Ultralytics does: the numbers are the
  machine's (or those of a ``CUDA_VISIBLE_DEVICES`` already set: ``device=0,1`` then means its first two).
- ``device=cpu``: one process on the CPU, even where GPUs exist. ``device=cpu:N``: N CPU processes, DDP over
  gloo (Ultralytics has no CPU DDP; this is how a multi-process job is tried, and tested, without GPUs).
- Unset: as before, one process (GPU 0 if there is one, else the CPU), or whatever a launcher started.

Refused: a device list under a launcher (torchrun, accelerate, deepspeed, Slurm: it has chosen the devices
and started one process per device already), ``-1`` (Ultralytics' "idle GPU" search), ``mps`` and other
backends, a GPU that is not there, the same GPU twice.

One process trains in this process (its ``CUDA_VISIBLE_DEVICES`` set before CUDA starts; Python that already
started CUDA with other devices is refused, as the setting would do nothing). Several: the run folder is
chosen here first (``engine/run_dir.py``: one numbered folder for the whole job), then the workers start
with ``--output-dir`` set to it. A worker's error is printed once, by the worker (``errors.py``); the launch
then ends with exit code 1 and torch's own summary of which worker failed.
"""

from __future__ import annotations

import os
import re
import sys
from typing import NamedTuple

from yolofuse_scale.errors import ConfigError


class Devices(NamedTuple):
    """What ``device=`` asked for: ``kind`` cpu or cuda, the GPU numbers (cuda), the number of processes."""

    kind: str
    gpus: tuple[int, ...]
    nproc: int
    text: str  # as the user wrote it, for messages

    @property
    def visible(self) -> str:
        """``CUDA_VISIBLE_DEVICES`` for the processes: the listed GPUs (mapped through one already set), or none."""
        if self.kind == "cpu":
            return ""
        already = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if already:
            if max(self.gpus) >= len(already):
                raise ConfigError(f"device={self.text}: CUDA_VISIBLE_DEVICES={','.join(already)} makes "
                                  f"{len(already)} GPU(s) visible, numbered 0-{len(already) - 1}", settings=("device",))
            return ",".join(already[g] for g in self.gpus)
        return ",".join(map(str, self.gpus))


def parse_devices(text: str) -> Devices:
    """``0``, ``0,1``, ``[0,1]``, ``cuda:0``, ``cpu``, ``cpu:4`` -> :class:`Devices` (else a ConfigError)."""
    raw = str(text).strip()
    spec = raw.strip("[]()").replace(" ", "").lower()
    cpu = re.fullmatch(r"cpu(?::(\d+))?", spec)
    if cpu:
        n = int(cpu.group(1) or 1)
        if n < 1:
            raise ConfigError(f"device={raw}: cpu:N needs N >= 1 processes", settings=("device",))
        return Devices("cpu", (), n, raw)
    parts = [p.removeprefix("cuda:") for p in spec.removeprefix("cuda:").split(",")] if spec else []
    if spec in ("cuda", "gpu"):
        parts = ["0"]
    if not parts or not all(p.isdigit() for p in parts):
        hint = ("-1 (Ultralytics' search for an idle GPU) is not supported: name the GPUs" if "-1" in spec else
                "mps and other backends are not supported here" if re.match(r"[a-z]", spec) else "")
        raise ConfigError(f"device={raw}: expected GPU numbers (0 or 0,1,2,3), cpu, or cpu:N (N CPU processes)"
                          + (f"; {hint}" if hint else ""), settings=("device",))
    gpus = tuple(int(p) for p in parts)
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"device={raw}: a GPU is listed twice (one process per GPU)", settings=("device",))
    return Devices("cuda", gpus, len(gpus), raw)


def refuse_under_launcher(devices: Devices) -> None:
    """device= under torchrun/accelerate/deepspeed/Slurm: the launcher chose the devices (one process each)."""
    from yolofuse_scale.engine.strategy.launch import launched

    if launched():
        raise ConfigError(f"device={devices.text} under a launcher (RANK {os.environ.get('RANK', '?')} of WORLD_SIZE "
                          f"{os.environ.get('WORLD_SIZE', '?')}): the launcher already started one process per device; "
                          "drop device= (or launch without torchrun/accelerate: device=0,1 starts the processes "
                          "itself)", settings=("device",))


def use_in_process(devices: Devices) -> None:
    """One process: make this process see only the chosen device (before CUDA starts) and check it does."""
    import torch

    visible = devices.visible  # once: it reads the variable it then replaces
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    count = torch.cuda.device_count() if devices.kind == "cuda" or torch.cuda.is_available() else 0
    want = 1 if devices.kind == "cuda" else 0
    if count != want:
        if devices.kind == "cuda" and count == 0:
            raise ConfigError(f"device={devices.text}: no such CUDA device here (CUDA_VISIBLE_DEVICES="
                              f"{visible} leaves none; torch {torch.__version__}, CUDA "
                              f"{torch.version.cuda or 'none'})", settings=("device",))
        raise ConfigError(f"device={devices.text}: this Python process started CUDA with {count} visible device(s) "
                          "before device= could choose them; pass device= in a fresh process (or set "
                          "CUDA_VISIBLE_DEVICES before starting Python)", settings=("device",))


def use_for_workers(devices: Devices) -> None:
    """Several processes: the workers' ``CUDA_VISIBLE_DEVICES`` (inherited), and a check that they will see every
    listed GPU (the parent touches CUDA only for that count). Before anything is created for the job."""
    visible = devices.visible  # once: it reads the variable it then replaces
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if devices.kind == "cuda":
        import torch

        if torch.cuda.device_count() != devices.nproc:
            raise ConfigError(f"device={devices.text}: {torch.cuda.device_count()} of these {devices.nproc} GPU(s) "
                              f"are visible (CUDA_VISIBLE_DEVICES={visible}); name GPUs this machine has",
                              settings=("device",))


def launch(devices: Devices, worker_argv: list[str]) -> int:
    """Start ``devices.nproc`` local workers running ``python -m yolofuse_scale train WORKER_ARGV`` through
    torch's elastic launch (``torchrun --standalone``'s path, in this process); their exit code (0 or 1).
    :func:`use_for_workers` first."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", f"--nproc_per_node={devices.nproc}", "-m", "yolofuse_scale", "train",
                       *worker_argv])
    sys.stdout.flush()
    try:
        run(args)
    except ChildFailedError:  # the failing worker printed its error once (errors.report); torch logged which
        return 1
    return 0


def drop_device_flag(argv: list[str]) -> list[str]:
    """``argv`` without its ``--device X`` / ``--device=X`` (what the workers get: they are the devices)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--device":
            skip = True
        elif not token.startswith("--device="):
            out.append(token)
    return out
