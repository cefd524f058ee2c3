"""What only a CUDA GPU exercises: NCCL, SyncBatchNorm, CUDA autocast (bf16 and fp16 with Accelerate's
GradScaler), FSDP2 and DeepSpeed ZeRO on CUDA tensors.

Real ``train.py`` runs under ``torchrun`` at world size 1 (2 for SyncBatchNorm, when two GPUs exist),
with the CPU suite's tiny model, 128 px synthetic data and a few optimizer steps; each run is launched
once per session and shared (``train_run`` in conftest.py). On a machine without CUDA every test here
skips; ``bash benchmarks/gpu_session.sh`` runs them on a GPU machine and keeps the junit XML.

GPU kernels are not bitwise deterministic (atomic adds in cuDNN's weight gradients and in the
upsample backward), so a resumed run is compared with the uninterrupted one within a tolerance, not
bit for bit as on CPU (tests/test_training.py). The tolerances are 10-100x what two steps at lr 0.002
amplify such rounding to, and far below what a lost optimizer state, EMA or data position changes.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import BASE_ARGS, launch
from tests.test_strategies import assert_bf16_keeps_batchnorm_fp32, relative_difference

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_session.sh)")]

#: 4 optimizer steps, a checkpoint at step 2 (the resume point) and 4, no validation; the parity lr.
STEPS = ["--max-steps", "4", "--save-every-steps", "2", "--no-val", "--lr", "0.002"]
#: What the trainer's start-up line says per strategy on one CUDA process (trainer.py, `process(es) on`).
SETUP = {"ddp": "ddp: MULTI_GPU", "fsdp": "fsdp: FSDP", "zero2": "deepspeed: DEEPSPEED",
         "zero3": "deepspeed: DEEPSPEED"}
#: Checkpoint content each strategy's save_state writes (besides our JSON/safetensors).
STATE_FILES = {"fsdp": ["pytorch_model_fsdp_0", "optimizer_0"],
               "zero2": ["pytorch_model", "zero_full_state.safetensors"], "zero3": ["pytorch_model"]}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def flag(strategy: str) -> list[str]:
    return [] if strategy == "ddp" else ["--strategy", strategy]


def losses_after(run, step: int) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in run.log if r["step"] > step}


def ema_weights(run) -> dict[str, torch.Tensor]:
    sd = torch.load(run.out / "weights" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in sd.items() if not k.endswith(BUFFERS)}


def resume_from_step_2(whole, tiny_data, tmp_path, *extra: str):
    """Continue ``whole``'s step-2 checkpoint to step 4 in a fresh output folder (same flags)."""
    out = tmp_path / "resumed"
    args = ["train.py", "--data", str(tiny_data), *BASE_ARGS, "--grad-accum", "1", "--output-dir", str(out), *STEPS,
            *extra, "--resume", str(whole.out / "checkpoints" / "step_2")]
    return launch("torchrun", 1, args, out)


def assert_resumes_like(whole, resumed, rtol: float) -> None:
    assert "resumed from" in resumed.output and "at step 2" in resumed.output, resumed.output[-2000:]
    a, b = losses_after(whole, 2), losses_after(resumed, 2)
    assert sorted(b) == sorted(a) and max(a) == 4, (a, b)
    for step in a:
        assert abs(a[step] - b[step]) <= rtol * abs(a[step]), (step, a[step], b[step])
    assert relative_difference(ema_weights(whole), ema_weights(resumed)) <= rtol


#: Run under torchrun: the process group the strategy module builds, and one collective on it.
NCCL_PROBE = """
import torch
from yolofuse_scale.config import RunConfig
from yolofuse_scale.engine.strategy.accelerator import build_accelerator

acc = build_accelerator(RunConfig())
x = torch.ones(3, device=acc.device)
torch.distributed.all_reduce(x)
print(f"backend={torch.distributed.get_backend()} device={x.device.type} type={acc.distributed_type.value} "
      f"sum={x.sum().item():g}")
torch.distributed.destroy_process_group()
"""


# ------------------------------------------------------------------------------------------ (a) NCCL
def test_torchrun_one_process_uses_nccl_and_trains(train_run, tmp_path):
    run = train_run("torchrun", 1, 1, *STEPS)
    assert "1 process(es) on cuda (ddp: MULTI_GPU, mixed precision no)" in run.output, run.output[-2000:]
    probe = tmp_path / "nccl_probe.py"
    probe.write_text(NCCL_PROBE)
    out = launch("torchrun", 1, [str(probe)], tmp_path).output
    assert "backend=nccl device=cuda type=MULTI_GPU sum=3" in out, out[-2000:]
    # Training moves the weights (Accelerate's model.safetensors at the step-2 and step-4 checkpoints).
    before, after = (load_file(run.out / "checkpoints" / f"step_{n}" / "model.safetensors") for n in (2, 4))
    before, after = ({k: v for k, v in sd.items() if not k.endswith(BUFFERS)} for sd in (before, after))
    assert all(torch.isfinite(v).all() for v in after.values())
    assert relative_difference(before, after) > 1e-6
    assert [r["step"] for r in run.log] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in run.log)


# --------------------------------------------------------------------------------------- (b) SyncBN
def test_sync_bn_on_one_gpu_is_declined_with_a_message(train_run):
    """SyncBatchNorm at world size 1 would compute plain BatchNorm (torch skips the collective), so
    the strategy module keeps BatchNorm and says why; the run trains."""
    run = train_run("torchrun", 1, 1, "--max-steps", "2", "--no-val", "--sync-bn")
    assert "--sync-bn ignored: a single process has nothing to synchronise with" in run.output
    assert [r["step"] for r in run.log] == [1, 2]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm synchronises processes: needs 2 GPUs")
def test_sync_bn_converts_and_trains_on_two_gpus(train_run):
    run = train_run("torchrun", 2, 1, "--max-steps", "2", "--no-val", "--sync-bn")
    m = re.search(r"--sync-bn: (\d+) BatchNorm layers are SyncBatchNorm", run.output)
    assert m and int(m.group(1)) > 0, run.output[-2000:]
    assert "2 process(es) on cuda (ddp: MULTI_GPU" in run.output
    assert all(math.isfinite(r["loss"]) for r in run.log) and run.log[-1]["step"] == 2


# ------------------------------------------------------------------------------------------ (c) bf16
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2"])
def test_bf16_on_cuda_computes_convs_in_bf16_and_batchnorm_in_fp32(train_run, strategy):
    fp32 = train_run("torchrun", 1, 1, *STEPS, *flag(strategy))
    bf16 = train_run("torchrun", 1, 1, *STEPS, *flag(strategy), "--mixed-precision", "bf16")
    precision = "bf16 (torch_autocast)" if strategy.startswith("zero") else "bf16"
    assert f"on cuda ({SETUP[strategy]}, mixed precision {precision})" in bf16.output, bf16.output[-2000:]
    assert_bf16_keeps_batchnorm_fp32(fp32, bf16)  # bf16 convs, fp32 BatchNorm, step-1 loss within 5%
    assert bf16.log[-1]["step"] == 4


# ------------------------------------------------------------------------------------------ (d) fp16
def test_fp16_with_grad_scaler_runs_saves_the_scaler_and_resumes(train_run, tiny_data, tmp_path):
    """DDP + fp16 autocast + Accelerate's GradScaler. Its first steps overflow (the initial scale,
    2**16, is far above what these gradients allow) and are skipped, not errors; the scale that
    found the working range is saved (scaler.pt, listed in the manifest) and restored on resume, so
    the resumed steps skip and step exactly as the uninterrupted run's."""
    whole = train_run("torchrun", 1, 1, *STEPS, "--mixed-precision", "fp16")
    assert "on cuda (ddp: MULTI_GPU, mixed precision fp16)" in whole.output, whole.output[-2000:]
    assert whole.log[-1]["step"] == 4 and all(math.isfinite(r["loss"]) for r in whole.log)
    dtypes = whole.log[0]["compute_dtypes"]
    assert dtypes["conv"].endswith("output float16") and dtypes["batchnorm"].startswith("weight float32"), dtypes
    ckpt = whole.out / "checkpoints" / "step_2"
    assert "scaler.pt" in json.loads((ckpt / "manifest.json").read_text())
    scaler = torch.load(ckpt / "scaler.pt", weights_only=True)
    assert 0 < scaler["scale"] <= 2.0**16, scaler
    resumed = resume_from_step_2(whole, tiny_data, tmp_path, "--mixed-precision", "fp16")
    assert_resumes_like(whole, resumed, rtol=1e-2)  # fp16 rounding of the nondeterministic sums


# ------------------------------------------------------------------------------- (e) FSDP2 and ZeRO
@pytest.mark.parametrize("strategy", ["fsdp", "zero2", "zero3"])
def test_sharded_strategy_trains_saves_and_resumes_on_cuda(train_run, tiny_data, tmp_path, strategy):
    whole = train_run("torchrun", 1, 1, *STEPS, *flag(strategy))
    assert f"1 process(es) on cuda ({SETUP[strategy]}, mixed precision no)" in whole.output, whole.output[-2000:]
    assert [r["step"] for r in whole.log] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in whole.log)
    ckpt = whole.out / "checkpoints" / "step_2"
    assert all((ckpt / name).exists() for name in STATE_FILES[strategy]), sorted(p.name for p in ckpt.iterdir())
    resumed = resume_from_step_2(whole, tiny_data, tmp_path, *flag(strategy))
    assert_resumes_like(whole, resumed, rtol=1e-3)


# ------------------------------------------------------------------- inference and the loop's MFU
def test_api_on_cuda_agrees_with_cpu_and_the_loop_logs_mfu(train_run, tiny_data):
    """The Python API on CUDA (TF32 convolutions): the model's raw boxes and scores agree with the
    CPU's, and the API returns the same top detection; the training log carries MFU on known GPUs."""
    from yolofuse_scale import FusionDetector
    from yolofuse_scale.engine.perf import PEAK_TFLOPS

    run = train_run("torchrun", 1, 1, *STEPS)
    weights = run.out / "weights" / "last.pt"
    cpu, gpu = (FusionDetector.load(weights, device=d, conf=0.001) for d in ("cpu", "cuda"))
    for rgb in sorted((tiny_data.parent / "images" / "val").glob("*.png"))[:4]:
        ir = tiny_data.parent / "imagesIR" / "val" / rgb.name
        x = cpu.preprocess(rgb, ir)[0]
        with torch.no_grad():
            a = cpu.model(x)[0][0].float()  # (4 + classes, anchors): xywh in input pixels, then scores
            b = gpu.model(x.cuda())[0][0].float().cpu()
        assert a.shape == b.shape
        boxes, scores = (a[:4], b[:4]), (a[4:], b[4:])
        assert (boxes[0] - boxes[1]).abs().max() < 0.05 * x.shape[-1], "box coordinates (pixels)"
        assert (scores[0] - scores[1]).abs().max() < 0.01, "class scores"
        top_a, top_b = cpu(rgb, ir, max_det=1), gpu(rgb, ir, max_det=1)
        assert len(top_a) == len(top_b) == 1
        assert abs(float(top_a.scores[0]) - float(top_b.scores[0])) < 0.01
    name = torch.cuda.get_device_name()
    if any(part in name for part, _ in PEAK_TFLOPS):
        assert all(0 < r["mfu"] < 1 for r in run.log), run.log[-1]
