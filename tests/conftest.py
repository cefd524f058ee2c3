"""Fixtures and hooks only: one tiny synthetic dataset per session and a cache of real training runs.

Multi-process runs cost seconds each on 2 cores, and several tests read the same run (its weights,
its log, its checkpoints), so every run is launched at most once per session, keyed by its launcher
and arguments. Under pytest-xdist (``make test`` runs 2 workers) "once per session" holds across the
workers too: the dataset and the cached runs live in a folder the workers share (``_shared``), and the
first worker to need one builds it under a file lock while the other waits for it instead of training it
again. Runs use the tiny model scale, 64 px images and validation off unless a test needs it.
What test modules import (``launch``, ``ENV``, ``ROOT``, ...) is in tests/helpers.py: pytest imports this
file as ``conftest``, and a test module importing ``tests.conftest`` would get a second copy of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# plain modules the tests import: their asserts explain a failure as a test module's do
pytest.register_assert_rewrite("tests.helpers", "tests.bad_input_helpers")

from tests import helpers  # noqa: E402  (after the rewrite hook is registered)
from tests.bad_input_helpers import run_cli  # noqa: E402
from tests.helpers import BASE_ARGS, ENV, ROOT, Run, launch  # noqa: E402


def pytest_configure(config):
    """Under pytest-xdist (``make test``: 2 workers on 2 cores) each worker computes on one thread, as the
    runs it launches do (``OMP_NUM_THREADS=1`` in tests/helpers.py): two workers at torch's default of one
    thread per core would ask for twice the cores there are. Collection imports PyTorch, Ultralytics and the
    package without the cyclic collector, as a command starts (yolofuse_scale/startup.py), until
    :func:`pytest_collection_finish`."""
    gc.disable()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_finish(session):
    """What collection made is frozen (the tests' collections never walk PyTorch's modules); the collector is on."""
    gc.freeze()
    gc.enable()


@pytest.fixture(autouse=True)
def _current_test(request):
    """``launch`` checks the running test's ``slow`` marker (tests/helpers.py)."""
    helpers.CURRENT[0] = request.node
    yield
    helpers.CURRENT[0] = None


#: Seconds each test module took in a full ``make test`` (the per-test times of a JUnit report summed by module):
#: only the order in which the groups are handed to the workers, heaviest first, comes from it; a module missing
#: here counts as :data:`UNTIMED_SECONDS`. Refresh: ``make test-durations``.
DURATIONS = Path(__file__).with_name("durations.json")
UNTIMED_SECONDS = 10
#: The modules whose tests use a Ray cluster (``ray_cluster``, one per module): one group, so one worker starts them
#: one after the other (two local clusters at once on 2 cores would only fight over them). A module not listed is
#: refused at collection.
RAY_MODULES = {"tests/test_ray.py", "tests/test_fusion_study.py"}
#: Modules handed out a test at a time: tests/test_gpu.py's launches spread over benchmarks/gpu_session.sh's 6
#: workers (one GPU); tests that read the same cached run wait while one worker makes it (``_shared``).
PER_TEST_MODULES = {"tests/test_gpu.py"}


def _group(nodeid: str) -> str:
    """The pytest-xdist work unit of a test: its module (:data:`RAY_MODULES`: ``ray``; :data:`PER_TEST_MODULES`:
    the test itself)."""
    module = nodeid.split("::", 1)[0]
    if module in PER_TEST_MODULES:
        return nodeid
    return "ray" if module in RAY_MODULES else module


def pytest_collection_modifyitems(items):
    """Tests that read cached training runs are ``slow`` (``make test-fast`` leaves them out). The groups
    (:func:`_group`) are ordered heaviest first (:data:`DURATIONS`), each keeping its tests' order."""
    for item in items:
        if "train_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        if "ray_cluster" in getattr(item, "fixturenames", ()) and _group(item.nodeid) != "ray":
            raise pytest.UsageError(f"{item.nodeid} uses ray_cluster: add its module to conftest.RAY_MODULES")
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    group_seconds: dict[str, float] = {}
    for group, module in {(_group(item.nodeid), item.nodeid.split("::", 1)[0]) for item in items}:
        group_seconds[group] = group_seconds.get(group, 0) + seconds.get(Path(module).stem, UNTIMED_SECONDS)
    items.sort(key=lambda item: (-group_seconds[_group(item.nodeid)], _group(item.nodeid)))  # stable


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` runs without the plugin that defines it
def pytest_xdist_make_scheduler(config, log):
    """``-n 2 --dist loadgroup`` (``make test``): a module's tests run on one worker, so its module-scoped fixtures
    (a training, three 2-node jobs) are made once, and the groups are handed out in the collection's order,
    heaviest first: the minutes-long groups start at once and the last ones handed out are short, so both workers
    end together. pytest-xdist's own ``loadgroup`` reads ``xdist_group`` markers through a test-id attribute that
    pytest 9.2 no longer has (every test was a group of its own: a module's fixtures were made on both workers,
    measured); its scope function is replaced here (:func:`_group`), its scheduler kept."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    config.option.loadscopereorder = False  # by test count otherwise: the 4 Ray tests (3 minutes) last
    return ModuleGroups(config, log)


@contextlib.contextmanager
def _shared(tmp_path_factory, name: str) -> Iterator[Path]:
    """``<shared>/name``, held under an exclusive lock: the one folder every xdist worker of this session sees
    (the base temp folder's parent under xdist, which gives each worker a folder of its own in it). The caller
    builds the content unless its ``DONE`` marker is there, and writes the marker last."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        yield root / name


def _once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The shared folder ``name``, built by ``build(folder)`` by the first worker that asks (see ``_shared``)."""
    with _shared(tmp_path_factory, name) as folder:
        if not (folder / "DONE").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that died while building left
            folder.mkdir()
            build(folder)
            (folder / "DONE").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from yolofuse_scale.data import write_synthetic_dataset

    # 128 px: at 64 px the synthetic people are ~12 px tall and an untrained YOLO's first box guesses
    # (~160 px) overlap nothing, so the assigner has no signal for many steps.
    folder = _once(tmp_path_factory, "data", lambda d: write_synthetic_dataset(d, n_train=128, n_val=32, imgsz=128,
                                                                                seed=0))
    return folder / "data.yaml"


@pytest.fixture(scope="session")
def train_run(tiny_data, tmp_path_factory):
    """``train_run(launcher, nproc, grad_accum, *extra)`` -> Run, launched once per session per key (across the
    xdist workers: the run folder and its output are shared, ``_shared``)."""
    cache: dict[tuple, Run] = {}

    def get(launcher: str, nproc: int, grad_accum: int, *extra: str) -> Run:
        key = (launcher, nproc, grad_accum, *extra)
        if key not in cache:
            name = f"run_{launcher.replace(':', '_')}{nproc}x{grad_accum}_" + \
                hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
            with _shared(tmp_path_factory, name) as out:
                record = out.parent / f"{name}.json"
                if record.is_file():  # trained by this or another worker: its output as it was printed
                    r = json.loads(record.read_text())
                    proc = subprocess.CompletedProcess(r["args"], r["returncode"], r["stdout"], r["stderr"])
                    cache[key] = Run(out, proc)
                else:
                    shutil.rmtree(out, ignore_errors=True)
                    args = ["train.py", "--data", str(tiny_data), *BASE_ARGS, "--grad-accum", str(grad_accum),
                            "--output-dir", str(out), *extra]
                    run = launch(launcher, nproc, args, out)
                    record.write_text(json.dumps({"args": list(map(str, run.proc.args)), "stdout": run.proc.stdout,
                                                  "returncode": run.proc.returncode, "stderr": run.proc.stderr}))
                    cache[key] = run
        return cache[key]

    return get


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One real 2-step training run (single process) on an 8-pair dataset at 64 px: its checkpoint and
    weights/last.pt, which the bad-input checkpoint and weights tests copy or read, never change. Once per
    session, not once per module: it costs ~10 s on 2 cores."""
    from yolofuse_scale.data import write_synthetic_dataset

    def build(folder: Path) -> None:
        data = write_synthetic_dataset(folder / "data", n_train=8, n_val=4, imgsz=64, seed=0)
        proc = run_cli("train.py", "--data", str(data), "--model", "yolov8t", "--fusion", "mid", "--imgsz", "64",
                       "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val", "--output-dir",
                       str(folder / "run"))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    return _once(tmp_path_factory, "small_run", build) / "run"


def write_obb_copy(data_yaml: Path, out: Path) -> Path:
    """A copy of a synthetic dataset (``write_synthetic_dataset``) whose labels are oriented boxes (``task: obb``):
    each box written as its four corners, clockwise from the top left, Ultralytics' OBB format ``cls x1 y1 x2 y2 x3
    y3 x4 y4`` normalised. Images are hard-linked (copied where links are refused). The model side's tests train,
    validate and compare strategies on it; it is only as oriented as the synthetic people are (upright), which
    is all a parity or resume test needs."""
    import yaml

    src = data_yaml.parent
    for image in sorted(src.rglob("*.png")):
        dst = out / image.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(image, dst)
        except OSError:
            shutil.copy2(image, dst)
    for label in sorted((src / "labels").rglob("*.txt")):
        rows = []
        for line in label.read_text().splitlines():
            c, xc, yc, w, h = (float(v) for v in line.split())
            x1, y1, x2, y2 = xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
            rows.append(" ".join([str(int(c)), *(f"{v:.6f}" for v in (x1, y1, x2, y1, x2, y2, x1, y2))]))
        dst = out / label.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("".join(r + "\n" for r in rows))
    spec = yaml.safe_load(data_yaml.read_text())
    spec.pop("path", None)
    (out / "data.yaml").write_text(yaml.safe_dump({**spec, "task": "obb"}, sort_keys=False))
    return out / "data.yaml"


@pytest.fixture(scope="session")
def tiny_obb_data(tiny_data, tmp_path_factory) -> Path:
    """``tiny_data`` with oriented-box labels (``write_obb_copy``): the model side of issue 26 trains on it."""
    return write_obb_copy(tiny_data, tmp_path_factory.mktemp("obb_data"))


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


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for a module's Ray tests (tests/test_ray.py; the fusion study's sweep, nightly), held by a
    child process of its own: drivers join it with ``--ray-address``; it is shut down when the module ends. (Kept
    for the session, its idle daemons took ~4% of a core for the rest of it; the group runs first, heaviest.)"""
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
