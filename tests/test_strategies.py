"""Every strategy through the one loop, at world size 2 on CPU (gloo), against DDP.

The parity matrix trains 5 optimizer steps with gradient clipping active (the gradient norms of
these first steps are in the hundreds, the clip norm is 10) and the EMA on, at accumulation 1 and
2, and compares each step's loss and the final EMA weights with the DDP run (which test_ddp.py
proves equal to a one-process reference). The strategies reduce gradients in other orders (FSDP2's
reduce-scatter, ZeRO's buckets), so they agree to float rounding, which training amplifies about
tenfold per step at these gradient norms: measured worst cases are in the closing table of the
README ("Choosing a strategy"). A wrong clip or accumulation scale is 1e-3 and several % of loss.
"""

from __future__ import annotations

import json

import pytest
import torch

STEPS = ["--max-steps", "5", "--no-val", "--lr", "0.002"]
STRATEGIES = ["fsdp", "zero1", "zero2", "zero3", "zero3_offload"]


def _params(run) -> dict[str, torch.Tensor]:
    sd = torch.load(run.out / "weights" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||theta_a - theta_b|| / ||theta_a|| over all parameters."""
    assert a.keys() == b.keys()
    va = torch.cat([a[k].flatten().double() for k in a])
    vb = torch.cat([b[k].flatten().double() for k in a])
    return float((va - vb).norm() / va.norm())


# CI time: zero3_offload runs ZeRO-3's math with states in host memory, and ZeRO-1 accumulates as
# ZeRO-2 does (DeepSpeed's engine, not the loop, accumulates under every stage): accumulation 1 each.
# Nightly: zero3_offload (zero3's arithmetic with the states in host memory) and zero3 at accumulation 2 (the
# engine accumulates alike under every stage: zero2's accumulation-2 cell is CI's).
# Nightly too: zero1 at accumulation 1, whose parity with DDP CI checks through its JSON (tests/test_deepspeed.py:
# test_zero_matches_ddp[torchrun-zero1]; --strategy zero1 names that file).
NIGHTLY = {("zero3_offload", 1), ("zero3", 2), ("zero1", 1)}
MATRIX = [pytest.param(s, a, marks=[pytest.mark.nightly] if (s, a) in NIGHTLY else [])
          for s in STRATEGIES for a in (1, 2) if (s, a) not in (("zero3_offload", 2), ("zero1", 2))]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "accum"), MATRIX)
def test_strategy_matches_ddp(train_run, strategy, accum):
    ddp = train_run("torchrun", 2, accum, *STEPS)
    run = train_run("torchrun", 2, accum, *STEPS, "--strategy", strategy)
    assert f"({strategy.split('_')[0] if strategy == 'fsdp' else 'deepspeed'}:" in run.output
    assert len(run.log) == len(ddp.log) == 5
    assert all(r["grad_norm"] > 10 for r in ddp.log)  # clipping is active at every step
    for a, b in zip(ddp.log, run.log):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a, b)
    assert relative_difference(_params(ddp), _params(run)) <= 1e-5


@pytest.mark.slow
def test_sharded_strategies_hold_less_per_rank(train_run):
    """Model-state bytes per rank (parameters, gradients, optimizer state, engine buffers), logged
    at the first step. FSDP2 shards everything: about half of DDP at 2 ranks. ZeRO-3 keeps an fp32
    master partition beside the parameter partition (DeepSpeed compares a torch.device with a
    string and never aliases them), so with SGD it holds ~2/3 of DDP."""
    held = {}
    for strategy in ["ddp", "fsdp", "zero3"]:
        run = train_run("torchrun", 2, 1, *STEPS, *([] if strategy == "ddp" else ["--strategy", strategy]))
        per_rank = run.log[0]["model_state_bytes"]
        assert len(per_rank) == 2
        held[strategy] = max(r["total"] for r in per_rank)
    print(json.dumps(held))
    assert held["fsdp"] <= 0.6 * held["ddp"], held
    assert held["zero3"] <= 0.75 * held["ddp"], held


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", pytest.param("zero3", marks=pytest.mark.nightly)])
def test_activation_checkpointing_changes_nothing_but_memory(train_run, strategy):
    """Recomputed C2f/SPPF blocks give the same losses, weights *and* BatchNorm statistics (a naive
    recompute updates the running statistics twice)."""
    flag = [] if strategy == "ddp" else ["--strategy", strategy]
    plain = train_run("torchrun", 2, 1, *STEPS, *flag)
    ac = train_run("torchrun", 2, 1, *STEPS, *flag, "--activation-checkpointing")
    assert [r["loss"] for r in plain.log] == [r["loss"] for r in ac.log]
    a = torch.load(plain.out / "weights" / "last.pt", weights_only=True)["model"]
    b = torch.load(ac.out / "weights" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


@pytest.mark.slow
# zero2 exercises DeepSpeed's torch_autocast (nightly: CI's bf16 runs are DDP's and FSDP2's)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", pytest.param("zero2", marks=pytest.mark.nightly)])
def test_bf16_keeps_batchnorm_fp32(train_run, strategy):
    """bf16 under every strategy: convolutions compute in bf16, BatchNorm weights stay fp32, and the
    first loss is the fp32 run's within bf16 rounding. (fp16 needs a GPU grad scaler: GPU script.)"""
    flag = [] if strategy == "ddp" else ["--strategy", strategy]
    fp32 = train_run("torchrun", 2, 1, *STEPS, *flag)
    bf16 = train_run("torchrun", 2, 1, *STEPS, *flag, "--mixed-precision", "bf16")
    assert_bf16_keeps_batchnorm_fp32(fp32, bf16)


def assert_bf16_keeps_batchnorm_fp32(fp32, bf16) -> None:
    """The first step's probe (perf.PrecisionProbe): bf16 convolutions, fp32 BatchNorm weights;
    the fp32 run computes everything in fp32; bf16's first loss is fp32's within 5%; all finite."""
    dtypes = bf16.log[0]["compute_dtypes"]
    assert dtypes["conv"].endswith("output bfloat16"), dtypes
    assert dtypes["batchnorm"].startswith("weight float32"), dtypes
    assert fp32.log[0]["compute_dtypes"] == {"conv": "weight float32, output float32",
                                             "batchnorm": "weight float32, output float32"}
    # MFU divides by the peak of the precision that ran (DeepSpeed's comes from its JSON, not Accelerate)
    assert (bf16.log[0]["mfu_precision"], fp32.log[0]["mfu_precision"]) == ("bf16", "fp32")
    assert abs(bf16.log[0]["loss"] - fp32.log[0]["loss"]) <= 0.05 * fp32.log[0]["loss"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in bf16.log)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", pytest.param("zero3_offload", marks=pytest.mark.nightly)])
def test_accelerate_config_runs_the_same_training(train_run, strategy):
    """`accelerate launch --config_file configs/accelerate/<strategy>.yaml` (the GPU form users copy,
    adapted to CPU/gloo by the strategy module) trains exactly as `torchrun ... --strategy <strategy>`.
    (zero3.yaml differs from zero3_offload.yaml only in the JSON it names; ZeRO-3's second step costs
    ~30 s on CPU while DeepSpeed analyses its parameter trace, so CI runs one of the two.)"""
    flagged = train_run("torchrun", 2, 1, *STEPS, "--strategy", strategy)
    launched = train_run(f"accelerate:{strategy}", 2, 1, *STEPS)
    assert [r["loss"] for r in launched.log] == [r["loss"] for r in flagged.log]
    assert torch.equal(*(torch.cat([v.flatten().double() for v in _params(r).values()]) for r in (flagged, launched)))


@pytest.mark.slow
def test_sharded_ema_run_reports_the_saved_weights_metrics(train_run, tiny_data, strategy="fsdp"):
    """FSDP2 keeps 1/N of the EMA per rank (its parameters) and whole BatchNorm statistics per rank,
    averaged before validation and saving: the run's final metrics are `val` of its last.pt, exactly.
    (DDP: test_ddp.py; ZeRO-2: test_deepspeed.py, nightly. ZeRO-3 stores the EMA as FSDP2 does, through the same
    local_tensor/full_tensor; its 12-epoch run takes over 5 minutes on 2 shared cores, so it is not here.)
    It starts from the weights of the session's 12-epoch DDP run (--pretrained), so that 2 epochs end with
    metrics worth comparing (mAP50 0.72 here; from scratch it took 12 epochs to pass 0.3, 118 s of CI's 2 cores)."""
    from tests.helpers import launch

    trained = train_run("torchrun", 2, 1).out / "weights" / "last.pt"  # tests/test_ddp.py's run
    # EMA on, 2 epochs; validated at the end only (--no-val): the averaging before it is what is checked
    run = train_run("torchrun", 2, 1, "--strategy", strategy, "--no-val", "--epochs", "2", "--pretrained",
                    str(trained))
    reported = json.loads((run.out / "metrics.json").read_text())["metrics"]
    assert reported["mAP50"] > 0.3, reported
    out = run.out / "val"
    launch("python", 1, ["-m", "yolofuse_scale", "val", "--weights", str(run.out / "weights" / "last.pt"), "--data",
                         str(tiny_data), "--batch-size", "8", "--workers", "0", "--no-plots", "--out", str(out)], out)
    assert json.loads((out / "metrics.json").read_text()) == reported
