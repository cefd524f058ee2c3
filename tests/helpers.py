"""What the test modules share: the checkout's paths and environment, real launches of train.py and the
package under real launchers (``launch``), their results (``Run``) and the arguments the cached runs share.

A plain module, imported once as ``tests.helpers`` by the test modules and by tests/conftest.py alike: the state
conftest's hooks set here (``CURRENT``, the running test) is the state ``launch`` reads. (conftest.py itself is
imported by pytest as ``conftest``, so a name kept there and imported as ``tests.conftest`` would be a second copy.)
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


#: The test running now (set by tests/conftest.py's autouse fixture): ``launch`` checks its ``slow`` marker.
CURRENT: list = [None]


def _require_slow_marker(launcher: str, args: list[str]) -> None:
    """Keep the fast tier (``-m "not slow"``) free of trainings and multi-process runs: a test that
    launches one must say so with ``@pytest.mark.slow``."""
    training = args[:1] == ["train.py"] or args[:3] == ["-m", "yolofuse_scale", "train"]
    node = CURRENT[0]
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


#: The arguments every cached training run shares: tiny model, 128 px, deterministic data, no warm-up, and no
#: pictures (results.png, labels.jpg, previews, the final curves: a 2-rank run took 10.9 s with them and 9.7 s
#: without at 5 steps, 15.6 s and 9.6 s at 8 steps ending in a validation, on a 2-core Xeon VM; tests that look at
#: them, test_run_folder.py and test_trackers.py, pass --plots or their own arguments).
BASE_ARGS = ["--model", "yolov8t", "--fusion", "mid", "--imgsz", "128", "--batch-size", "8", "--epochs", "12",
             "--workers", "0", "--no-augment", "--warmup-epochs", "0", "--seed", "3", "--lr", "0.02",
             "--no-plots"]


def train_yaml_briefly(data: Path, model_yaml: Path, out: Path) -> Run:
    """``python train.py --model FILE.yaml`` for 3 steps at 64 px (tiny scale); asserts the run trained."""
    run = launch("python", 1, ["train.py", "--data", str(data), "--model", str(model_yaml), "--scale", "t",
                               "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--max-steps", "3",
                               "--epochs", "1", "--no-val", "--warmup-epochs", "0", "--output-dir", str(out)], out)
    assert [r["step"] for r in run.log] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in run.log)
    assert (out / "weights" / "last.pt").is_file()
    return run


def assert_recompute_gives_the_same_gradients(model, checkpointed, batch) -> None:
    """One training step's backward in ``model`` and in ``checkpointed`` (its copy with activation checkpointing
    applied): every gradient equal to the bit, since recomputation replays the same kernels on the same inputs."""
    import torch

    from yolofuse_scale.engine.task import DetectionTask

    for m in (model, checkpointed):
        m.train()
        loss, _ = DetectionTask(m, nbs=64).step(m, batch)
        loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for n, p in checkpointed.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=0, atol=0, msg=n)
