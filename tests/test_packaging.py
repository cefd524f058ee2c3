"""The installed package is self-contained: a wheel built from this tree, installed outside it, runs every
command (the scaling benchmark included); the configs the strategies read ship inside the package, and the
checkout's ``ds_configs/`` and ``configs/accelerate/`` are the same files (symlinks), not copies that can
drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import yolofuse_scale
from tests.helpers import BIN, ENV, ROOT, free_port
from yolofuse_scale.config import ParallelConfig, RunConfig
from yolofuse_scale.engine.strategy.deepspeed import PACKAGED_CONFIGS, deepspeed_config, deepspeed_file
from yolofuse_scale.errors import DistributedSetupError

PACKAGE_CONFIGS = ROOT / "yolofuse_scale" / "configs"
#: What ``yolofuse-scale --help`` lists; the wheel test checks the installed CLI lists exactly these.
COMMANDS = {"train", "val", "checkpoint-to-weights", "bench", "synth", "convert", "register", "predict", "export-onnx",
            "tune"}


def test_checkout_config_folders_are_the_packaged_ones():
    """One source of truth: the paths users and docs name resolve into the package."""
    for top, packaged in [("ds_configs", "deepspeed"), ("configs/accelerate", "accelerate")]:
        assert (ROOT / top).is_symlink(), f"{top} must be a symlink into yolofuse_scale/configs/ (git core.symlinks?)"
        assert (ROOT / top).resolve() == (PACKAGE_CONFIGS / packaged).resolve()
    assert Path(str(PACKAGED_CONFIGS)).resolve() == PACKAGE_CONFIGS.resolve()
    # every accelerate DeepSpeed config names a JSON that exists (from the checkout root, as documented)
    for path in sorted((PACKAGE_CONFIGS / "accelerate").glob("*.yaml")):
        named = yaml.safe_load(path.read_text()).get("deepspeed_config", {}).get("deepspeed_config_file")
        if named:
            assert (ROOT / named).is_file(), f"{path.name}: {named}"


def test_accelerate_configs_deepspeed_file_works_from_any_directory(tmp_path, monkeypatch):
    """The shipped YAMLs name ``ds_configs/<name>.json`` relative to the working directory; where that
    directory has no such file (an installed wheel, run elsewhere), the packaged JSON is used."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "ds_configs/zero2.json")
    path, origin = deepspeed_file(ParallelConfig())
    assert Path(path) == PACKAGE_CONFIGS / "deepspeed" / "zero2.json"
    # a file of that name in the working directory is the user's own: it wins
    (tmp_path / "ds_configs").mkdir()
    (tmp_path / "ds_configs" / "zero2.json").write_text('{"zero_optimization": {"stage": 1}}')
    assert deepspeed_file(ParallelConfig())[0] == "ds_configs/zero2.json"
    # a missing file is named with where it came from (not as a --deepspeed flag the user never passed)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "ds_configs/nothing.json")
    path, origin = deepspeed_file(ParallelConfig())
    with pytest.raises(DistributedSetupError, match="^the accelerate config's deepspeed_config_file ds_configs/no"):
        deepspeed_config(path, RunConfig(), world_size=1, origin=origin)
    assert deepspeed_file(ParallelConfig(strategy="zero3"))[0] == str(PACKAGE_CONFIGS / "deepspeed" / "zero3.json")


def test_this_process_imports_this_checkout():
    import yolofuse_scale

    assert Path(yolofuse_scale.__file__).resolve() == (ROOT / "yolofuse_scale" / "__init__.py").resolve()


def test_bare_pytest_imports_this_checkout():
    """``pytest`` (not only ``python -m pytest``) from the root: the tests import ``tests.helpers`` and this
    tree's package, not another (editable) install's; pyproject's ``pythonpath = ["."]`` provides both."""
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    r = _run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "tests/test_packaging.py", "-k",
              "test_this_process_imports_this_checkout"], ROOT, env)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:]


# ----------------------------------------------------------------------------- the wheel, installed
def _copy_tree(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files (what a clone plus the work in progress holds), so the
    build never sees this checkout's build/ or egg-info leftovers; symlinks stay symlinks."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    for rel in filter(None, listed.stdout.split("\0")):
        src, out = ROOT / rel, dst / rel
        if not src.is_symlink() and not src.exists():  # deleted but not yet staged
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, out)


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


@dataclass
class Installed:
    site: Path  # the wheel installed with ``pip install --target``: the only yolofuse_scale importable with env
    env: dict[str, str]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """``pip wheel .`` of a copy of this tree -> ``pip install --no-deps --target``: built once for the tests
    below. No network and no new venv: the dependencies are this interpreter's; only the installed copy of
    the package is on ``PYTHONPATH``, and the commands run from folders outside the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    src, dist, site = (root / d for d in ("src", "dist", "site"))
    _copy_tree(src)
    py = [sys.executable]
    _ok(_run([*py, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
             root, ENV, timeout=180))
    (wheel,) = dist.glob("yolofuse_scale-*.whl")
    _ok(_run([*py, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], root, ENV))
    return Installed(site, {**ENV, "PYTHONPATH": str(site)})  # not the checkout: the installed copy or nothing


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_runs_every_command(installed, tmp_path):
    """Every command's --help, synth, and ZeRO-2 training (``--strategy zero2`` and ``accelerate launch`` with
    the packaged YAML) from a directory outside the checkout, with only the installed copy importable.
    ~40 s on 2 cores (the wheel's build included)."""
    site, env, work, py = installed.site, installed.env, tmp_path, [sys.executable]
    where = _ok(_run([*py, "-c", "import yolofuse_scale; print(yolofuse_scale.__file__)"], work, env)).strip()
    assert Path(where).resolve().is_relative_to(site.resolve()), where
    assert (site / "yolofuse_scale" / "data" / "convert" / "splits" / "m3fd_val.txt").is_file(), "M3FD's split ships"

    listing = _ok(_run([*py, "-m", "yolofuse_scale", "--help"], work, env))
    listed = set(re.findall(r"^    (\S+)\s", listing.split("COMMAND", 2)[-1], flags=re.M))
    assert listed == COMMANDS, listing
    assert re.search(r"bench\s+scaling benchmark: throughput", listing), listing
    # Every command's --help from the installed copy, in one interpreter (one start-up, not ten: ~15 s less on 2
    # cores); the listing above already ran `python -m yolofuse_scale` itself.
    helps = ("import contextlib, io, sys\nfrom yolofuse_scale.cli import main\n"
             "for c in sys.argv[1:]:\n    out = io.StringIO()\n"
             "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
             "        main([c, '--help'])\n    print(c, '\\t', out.getvalue().splitlines()[0])\n")
    proc = _run([*py, "-c", helps, *sorted(COMMANDS)], work, env)
    _ok(proc)
    usages = proc.stdout.splitlines()
    assert [ln.split(" \t ")[1].startswith("usage: yolofuse-scale " + c) for c, ln in zip(sorted(COMMANDS), usages)] \
        == [True] * len(COMMANDS), usages

    _ok(_run([*py, "-m", "yolofuse_scale", "synth", "--out", "data", "--train", "8", "--val", "4", "--imgsz", "64"],
             work, env))
    train = ["--data", "data/data.yaml", "--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--max-steps",
             "2", "--no-val", "--no-ema", "--workers", "0"]
    # One plain process, no launcher: DeepSpeed's process group of one is set up by the strategy module.
    out = _ok(_run([*py, "-m", "yolofuse_scale", "train", *train, "--strategy", "zero2", "--output-dir", "zero2"],
                   work, env, timeout=180))
    assert "(deepspeed: DEEPSPEED" in out and (work / "zero2" / "weights" / "last.pt").is_file(), out[-3000:]

    # The packaged accelerate YAML names ds_configs/zero2.json: found in the package from here.
    yaml_file = site / "yolofuse_scale" / "configs" / "accelerate" / "zero2.yaml"
    out = _ok(_run([str(BIN / "accelerate"), "launch", "--config_file", str(yaml_file), "--num_processes", "1",
                    "--main_process_port", str(free_port()), "-m", "yolofuse_scale", "train", *train,
                    "--output-dir", "accel"], work, env, timeout=180))
    assert "(deepspeed: DEEPSPEED" in out and (work / "accel" / "weights" / "last.pt").is_file(), out[-3000:]


@pytest.mark.slow
def test_wheel_runs_the_scaling_benchmark_outside_the_checkout(installed, tmp_path):
    """``yolofuse-scale bench`` from the installed wheel, where neither the checkout's benchmarks/ nor its
    train.py exist: its --help, then a one-device sweep at toy size (one torchrun process, 3 steps, one
    repeat) whose results.json, report.md and plots hold the measured run. ~15 s on 2 cores."""
    env, work = installed.env, tmp_path
    probe = "import importlib.util as u; print([m for m in ('benchmarks', 'tests', 'train') if u.find_spec(m)])"
    assert _ok(_run([sys.executable, "-c", probe], work, env)).strip() == "[]"  # the checkout is out of reach
    bench = [str(installed.site / "bin" / "yolofuse-scale"), "bench"]  # the console script pip installed
    usage = _ok(_run([*bench, "--help"], work, env))
    assert "usage: yolofuse-scale bench" in usage and "--compute-from" in usage, usage
    assert not re.search(r"^ +--compare-ultralytics", usage, re.M)  # other trainers' comparison: the checkout's

    _ok(_run([*bench, "--strategies", "ddp", "--devices", "1", "--model", "yolov8t", "--imgsz", "64", "--batch-size",
              "4", "--steps", "2", "--warmup", "1", "--repeats", "1", "--threads", "1", "--workers", "0", "--out",
              "report"], work, env, timeout=300))
    out = work / "report"
    res = json.loads((out / "results.json").read_text())
    (run,) = res["runs"]
    assert run["label"] == "weak_ddp_n1_b4" and "error" not in run, run.get("error")
    (rep,) = run["repeats"]
    assert rep["steps_timed"] == 2 and run["images_per_s"]["median"] > 0 and run["step_s"] > 0
    assert " -m yolofuse_scale train " in rep["command"] and "train.py" not in rep["command"]
    assert res["environment"]["command"].startswith(f"{sys.executable} -m yolofuse_scale bench --strategies ddp")
    assert res["environment"]["versions"]["yolofuse-scale"] == yolofuse_scale.__version__
    assert res["link_fit"] is None and res["projection"]["topologies"] == {}  # one device: nothing to fit
    report = (out / "report.md").read_text()
    for needle in ("# Scaling report: yolov8t mid fusion, 64 px", "## Weak scaling", "| ddp | 1 | 4 | ",
                   "Where a weak-scaling step goes", "## Projection", "## Definitions"):
        assert needle in report, needle
    for plot in ("throughput.png", "efficiency.png", "memory.png", "breakdown.png"):
        assert (out / plot).stat().st_size > 1000, plot
