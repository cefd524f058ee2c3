"""DeepSpeed ZeRO-1/2 through the same loop: equal to DDP, and the loop's settings win over the JSON."""

from __future__ import annotations

import json

import pytest
import torch

from yolofuse_scale.config import OptimConfig, ParallelConfig, RunConfig, TrainConfig
from yolofuse_scale.engine.strategy.deepspeed import deepspeed_config
from yolofuse_scale.errors import DistributedSetupError

STEPS = ["--max-steps", "3", "--no-val", "--no-ema"]


def _weights(run) -> dict[str, torch.Tensor]:
    sd = torch.load(run.out / "weights" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "config"),
    [("deepspeed", "zero2"), ("torchrun", "zero1"), pytest.param("accelerate:zero1", None, marks=pytest.mark.nightly),
     ("accelerate:zero2", None)],
)
def test_zero_matches_ddp(train_run, launcher, config):
    """Every launcher: DeepSpeed's own, torchrun + --deepspeed, accelerate launch with a ZeRO config."""
    ddp = train_run("torchrun", 2, 1, *STEPS)
    flag = ["--deepspeed", f"ds_configs/{config}.json"] if config else []
    ds = train_run(launcher, 2, 1, *STEPS, *flag)
    assert "(deepspeed: DEEPSPEED, mixed precision no)" in ds.output
    assert not (ds.out / "run.lock").exists()  # the folder's lock was taken and given back under this launcher
    # DeepSpeed reduces in its own bucket order: equal within float rounding, not bit for bit.
    for a, b in zip(ddp.log, ds.log):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a, b)
    wa, wb = _weights(ddp), _weights(ds)
    va = torch.cat([wa[k].flatten().double() for k in wa])
    vb = torch.cat([wb[k].flatten().double() for k in wa])
    assert float((va - vb).norm() / va.norm()) <= 1e-5


def _cfg(tmp_path, **entries):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, **entries}))
    return str(path)


def test_loop_settings_are_written_into_the_config(tmp_path):
    run = RunConfig(train=TrainConfig(batch_size=8, grad_accum=3), optim=OptimConfig(clip_grad=10.0))
    ds = deepspeed_config(_cfg(tmp_path, gradient_clipping="auto"), run, world_size=2)
    assert ds["gradient_clipping"] == 10.0  # not Accelerate's auto-fill of 1.0
    assert ds["gradient_accumulation_steps"] == 3 and ds["train_batch_size"] == 48
    assert ds["train_micro_batch_size_per_gpu"] == 8


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"gradient_accumulation_steps": 4}, "'gradient_accumulation_steps': 4 contradicts the loop's --grad-accum"),
        ({"gradient_clipping": 1.0}, "'gradient_clipping': 1.0 contradicts the loop's --clip-grad = 10.0"),
        ({"optimizer": {"type": "Adam"}}, "remove the 'optimizer' section"),
        ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage 4: DeepSpeed has stages 0-3"),
        ({"bf16": {"enabled": True}}, "'bf16.enabled' casts the whole model, BatchNorm included"),
    ],
)
def test_contradicting_configs_are_refused(tmp_path, entries, message):
    path = _cfg(tmp_path, **entries)
    with pytest.raises(DistributedSetupError) as e:
        deepspeed_config(path, RunConfig(), world_size=1)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_mixed_precision_keeps_batchnorm_fp32_under_deepspeed(tmp_path):
    """bf16 becomes DeepSpeed's torch_autocast (fp32 parameters, BN included), never bf16.enabled."""
    ds = deepspeed_config(_cfg(tmp_path), RunConfig(parallel=ParallelConfig(mixed_precision="bf16")), world_size=2)
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in ds
    for stage in (0, 2):  # stage 0 used to train in fp32 silently
        with pytest.raises(DistributedSetupError, match=rf"fp16 under ZeRO \(stage {stage}\): DeepSpeed's autocast"):
            deepspeed_config(_cfg(tmp_path, zero_optimization={"stage": stage}),
                             RunConfig(parallel=ParallelConfig(mixed_precision="fp16")), world_size=2)


def test_offload_configs_accept_the_loops_optimizer():
    from tests.helpers import ROOT

    ds = deepspeed_config(str(ROOT / "ds_configs" / "zero3_offload.json"), RunConfig(), world_size=2)
    assert ds["zero_force_ds_cpu_optimizer"] is False
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_broken_json_names_the_line(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{\n  "zero_optimization": {"stage": 2},\n  oops\n}')
    with pytest.raises(DistributedSetupError, match=r"ds.json:3: not valid JSON"):
        deepspeed_config(str(path), RunConfig(), world_size=1)


@pytest.mark.slow
@pytest.mark.nightly  # a 12-epoch ZeRO-2 run (~45 s in CI); CI keeps the property's FSDP2 cell (the same averaging)
def test_zero2_ranks_validate_and_save_one_model(train_run, tiny_data):
    """DeepSpeed never syncs BatchNorm buffers: without the averaging before validation and saving, each
    rank would evaluate its shard with its own running statistics and the run's mAP would not be the
    mAP of the saved weights. With it, a one-process `val` of weights/last.pt reproduces metrics.json.
    (CI: tests/test_strategies.py's FSDP2 run checks the same averaging, sync_batchnorm_buffers, and DDP's in
    tests/test_ddp.py; this ZeRO-2 cell is the nightly tier's.)"""
    from tests.helpers import launch

    run = train_run("torchrun", 2, 1, "--deepspeed", "ds_configs/zero2.json", "--no-val")  # the final epoch's val
    logged = json.loads((run.out / "metrics.json").read_text())["metrics"]
    assert logged["mAP50"] > 0.3, logged  # a trained model, so the comparison means something
    val = launch("python", 1, ["-m", "yolofuse_scale", "val", "--weights", str(run.out / "weights" / "last.pt"),
                               "--data", str(tiny_data), "--batch-size", "8", "--workers", "0"], run.out)
    line = [ln for ln in val.proc.stdout.splitlines() if ln.startswith("{")][-1]
    again = json.loads(line)
    assert again["mAP50"] == logged["mAP50"] and again["mAP50-95"] == logged["mAP50-95"]


@pytest.mark.slow
def test_zero3_checkpoint_at_another_world_size_is_refused_up_front(train_run, tiny_data, tmp_path):
    """ZeRO-1/2 checkpoints re-partition (test_training.py); ZeRO-3's cannot yet, and say so before loading."""
    from tests.helpers import BASE_ARGS, launch

    steps = ["--max-steps", "5", "--no-val", "--lr", "0.002", "--strategy", "zero3"]
    run = train_run("torchrun", 2, 1, *steps)
    last = sorted((run.out / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))[-1]
    out = tmp_path / "one"
    args = ["train.py", "--data", str(tiny_data), *BASE_ARGS, *steps, "--resume", str(last), "--output-dir", str(out)]
    r = launch("torchrun", 1, args, out, check=False)
    assert r.proc.returncode != 0
    assert "written by 2 DeepSpeed rank(s), resumed with 1" in r.output


@pytest.mark.slow
def test_a_deepspeed_cpu_run_leaves_no_shared_memory_behind(train_run):
    """DeepSpeed's CPU communication op maps ~66 MB of /dev/shm per rank when all ranks are local (its
    own launcher sets LOCAL_SIZE) and never unlinks it; a run unlinks its ranks' segments at the end
    (strategy/deepspeed.release_shm_workspace). The run is test_zero_matches_ddp's, from the cache."""
    import os
    import re
    from pathlib import Path

    run = train_run("deepspeed", 2, 1, *STEPS, "--deepspeed", "ds_configs/zero2.json")
    port = re.search(r"--master_port=(\d+)", " ".join(run.proc.args)).group(1)
    left = sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))
    assert not left, left


# ------------------------------------------------------------------------------------------ the CPU comm op
@pytest.mark.slow
def test_a_launch_without_an_extensions_dir_uses_the_prebuilt_op(train_run):
    """tests/helpers.py sets no TORCH_EXTENSIONS_DIR: a DeepSpeed launch finds the op `make install` built
    and says so, instead of compiling it (30-100 s) into torch's default folder. The run is
    test_zero_matches_ddp's, from the cache."""
    import os
    import sys
    from pathlib import Path

    run = train_run("deepspeed", 2, 1, *STEPS, "--deepspeed", "ds_configs/zero2.json")
    found = [line for line in run.output.splitlines() if line.startswith("DeepSpeed CPU comm op:")]
    assert len(found) == 1 and found[0].startswith("DeepSpeed CPU comm op: using the prebuilt "), run.output[-3000:]
    where = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions") / "deepspeed_shm_comm"
    # (the deepspeed launcher starts its workers with the interpreter's resolved path: a venv symlink differs)
    assert Path(found[0].rsplit(" ", 1)[1]).resolve() == (where / "deepspeed_shm_comm.so").resolve()


@pytest.fixture
def shm_builder(monkeypatch):
    """DeepSpeed's builder of the CPU comm op, with an empty op cache for the test (restored after it)."""
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    owner = next(c for c in type(builder).__mro__ if "_loaded_ops" in vars(c))
    monkeypatch.setattr(owner, "_loaded_ops", {})
    return builder


def test_the_prebuilt_op_is_handed_to_deepspeed_without_a_build(shm_builder, monkeypatch):
    """The venv's op is imported as built (nothing in its folder is written) and DeepSpeed's load returns it."""
    import sys
    from pathlib import Path

    from yolofuse_scale.engine.strategy import cpu_comm_op

    folder = Path(sys.prefix) / "torch_extensions" / "deepspeed_shm_comm"
    if not (folder / "deepspeed_shm_comm.so").is_file():
        pytest.skip("no prebuilt op in this venv (make install builds it)")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "")  # recorded, so that the value prepare() sets is undone
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    said = []
    line = cpu_comm_op.prepare(said.append)
    assert line == f"DeepSpeed CPU comm op: using the prebuilt {folder / 'deepspeed_shm_comm.so'}"
    assert said and shm_builder.load().__file__ == str(folder / "deepspeed_shm_comm.so")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_a_compile_is_announced_before_it_starts(shm_builder, tmp_path, monkeypatch):
    """An extensions folder without the op: one line says what is compiled, where and about how long (the
    compile itself, ~90 s, is DeepSpeed's and is not run here); with another process holding the build
    lock, that this one waits for it."""
    import fcntl

    from yolofuse_scale.engine.strategy import cpu_comm_op

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    line = cpu_comm_op.prepare(lambda _: None)
    build = tmp_path / "deepspeed_shm_comm"
    assert line == (f"DeepSpeed CPU comm op: {build / 'deepspeed_shm_comm.so'}: not built yet; compiling "
                    f"deepspeed_shm_comm now with the C++ compiler into {build}, about 30-100 s (once per folder; "
                    "`make install` prebuilds it into .venv/torch_extensions, or set TORCH_EXTENSIONS_DIR to a "
                    "folder that holds it)")
    assert shm_builder._loaded_ops == {}  # nothing loaded: DeepSpeed builds it when it starts
    with open(build / "lock", "w") as held:  # torch's build lock is an flock on this file
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cpu_comm_op.prepare(lambda _: None).endswith(
            "; another process is compiling it now (it holds the build lock): this one waits for it")


def test_a_killed_builds_lock_file_blocks_nobody(tmp_path):
    """What a compile cut at a time cap leaves: the `lock` file stays, but torch 2.14 locks it with flock
    (filelock.FileLock), which dies with its process; the next build takes it at once."""
    import subprocess
    import sys

    import filelock
    from torch.utils._filelock import FileLock

    assert issubclass(FileLock, filelock.UnixFileLock)  # what cpp_extension's build lock is
    code = ("import sys, time\nfrom filelock import FileLock\nheld = FileLock(sys.argv[1])\nheld.acquire()\n"
            "print('held', flush=True)\ntime.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):  # filelock's Timeout is a TimeoutError
            FileLock(str(tmp_path / "lock")).acquire(timeout=0.2)
        holder.kill()
        holder.wait()
        assert (tmp_path / "lock").exists()
        with FileLock(str(tmp_path / "lock")).acquire(timeout=1):
            pass
    finally:
        holder.kill()
