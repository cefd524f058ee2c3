"""Real 2-process DDP (gloo) against a single-process reference that accumulates the same micro-batches."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import launch

pytestmark = pytest.mark.slow

STEPS = ["--max-steps", "3", "--no-val", "--no-ema"]


def _params(run) -> dict[str, torch.Tensor]:
    ckpt = sorted((run.out / "checkpoints").glob("step_*"))[-1]
    return load_file(ckpt / "model.safetensors")


def _rel_diff(a: dict, b: dict, keys) -> float:
    va = torch.cat([a[k].flatten().double() for k in keys])
    vb = torch.cat([b[k].flatten().double() for k in keys])
    return float((va - vb).norm() / va.norm())


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_ddp_matches_single_process_accumulation(train_run, launcher):
    ddp = train_run(launcher, 2, 1, *STEPS)
    ref = train_run("python", 1, 2, *STEPS)
    assert "2 process(es) on cpu (ddp: MULTI_CPU" in ddp.output, ddp.output[-2000:]
    # channels-last images and weights: every gradient has its bucket view's strides (engine/strategy/memory_format.py)
    assert "Grad strides do not match bucket view strides" not in ddp.output
    log_d, log_r = ddp.log, ref.log
    assert [r["step"] for r in log_d] == [r["step"] for r in log_r] == [1, 2, 3]
    # gloo sums two ranks' gradients and divides by 2, the reference adds two halves: on this CPU
    # the reduction order is the same, so losses and parameters are bit-identical (the issue's
    # fallback tolerance, 1e-5 relative on the parameter vector, is not needed).
    assert [(d["loss"], d["loss_backprop"]) for d in log_d] == [(r["loss"], r["loss_backprop"]) for r in log_r]
    pd, pr = _params(ddp), _params(ref)
    # Parameters only: BatchNorm running statistics are rank 0's under DDP (broadcast_buffers) but
    # see both micro-batches in the reference, by design.
    keys = [k for k in pr if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    init = _initial_params()
    assert _rel_diff(pr, init, keys) > 1e-4, "training moved the weights"
    assert all(torch.equal(pr[k], pd[k]) for k in keys), f"relative difference {_rel_diff(pr, pd, keys):.2e}"


def test_logged_loss_is_the_sum_of_its_components(train_run):
    """`loss` is box + cls + dfl (what Ultralytics' progress bar shows, comparable across batch sizes);
    the backpropagated objective, nbs (64) x that, is logged as `loss_backprop`. Before, `loss` was the
    objective: "loss 21.12 (box 0.000 cls 0.330 dfl 0.000)"."""
    run = train_run("torchrun", 2, 1, *STEPS)
    for r in run.log:
        parts = r["box"] + r["cls"] + r["dfl"]
        assert r["loss"] == pytest.approx(parts, rel=1e-6), r
        assert r["loss_backprop"] == pytest.approx(64 * parts, rel=1e-5), r
    first = run.log[0]
    assert f"loss {first['loss']:.3f} (box {first['box']:.3f} cls {first['cls']:.3f}" in run.output


def _initial_params() -> dict[str, torch.Tensor]:
    """The weights the runs started from: the trainer seeds (--seed 3) then builds the model."""
    from accelerate.utils import set_seed

    from yolofuse_scale.model import build_model

    set_seed(3)
    return build_model("yolov8t", "mid", nc=2, ir_channels=1).state_dict()


def test_ddp_run_writes_all_outputs(train_run):
    run = train_run("torchrun", 2, 1)  # full run: 12 epochs of 8 steps, validation, EMA
    out = run.out
    for rel in ("config.yaml", "train_log.jsonl", "metrics.json", "weights/last.pt", "weights/best.pt"):
        assert (out / rel).is_file(), rel
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_80", "step_88", "step_96"]  # --keep-last 3
    rec = run.log[-1]
    assert {"step", "epoch", "loss", "loss_backprop", "box", "cls", "dfl", "lr", "images_per_s"} <= set(rec)
    payload = torch.load(out / "weights" / "last.pt", weights_only=True)
    assert payload["names"] and payload["ir_channels"] in (1, 3) and payload["model"]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["mAP50"] <= 1.0
    # only the main process prints: one "done:" line
    assert run.output.count("done: step") == 1


def test_val_one_and_two_processes_agree(train_run, tiny_data):
    weights = train_run("torchrun", 2, 1).out / "weights" / "last.pt"
    args = ["-m", "yolofuse_scale", "val", "--weights", str(weights), "--data", str(tiny_data), "--batch-size", "4",
            "--workers", "0", "--no-plots"]
    one = launch("python", 1, args, weights.parent)
    two = launch("torchrun", 2, args, weights.parent)
    line1 = [ln for ln in one.proc.stdout.splitlines() if ln.startswith("{")]
    line2 = [ln for ln in two.proc.stdout.splitlines() if ln.startswith("{")]
    assert len(line1) == 1 and len(line2) == 1, two.output
    assert json.loads(line1[0]) == json.loads(line2[0])


@pytest.mark.parametrize("nproc", [1, 2])
def test_reported_metrics_are_the_saved_weights_metrics(train_run, tiny_data, nproc):
    """The run's final metrics (metrics.json, and best.pt's metadata) are exactly what `val` measures on the
    weights it wrote, with 1 and with 2 processes. Under DDP with EMA, each rank's last forward moves its own
    BatchNorm statistics (and so its EMA's); before the fix every rank validated its shard with its own
    statistics while only rank 0's were saved (0.7164 reported, 0.7145 measured on the demo)."""
    run = train_run("torchrun", 2, 1)  # 2 processes, EMA and validation on
    reported = json.loads((run.out / "metrics.json").read_text())["metrics"]
    assert reported["mAP50"] > 0.3, reported  # a trained model: the comparison means something
    best_meta = torch.load(run.out / "weights" / "best.pt", weights_only=True)["metrics"]
    for name, want in (("last.pt", reported), ("best.pt", best_meta)):
        out = run.out / f"val_{name}_{nproc}"
        args = ["-m", "yolofuse_scale", "val", "--weights", str(run.out / "weights" / name), "--data",
                str(tiny_data), "--batch-size", "8", "--workers", "0", "--no-plots", "--out", str(out)]
        launch("python" if nproc == 1 else "torchrun", nproc, args, out)
        got = json.loads((out / "metrics.json").read_text())
        assert got == want, (name, {k: (got[k], want.get(k)) for k in got if got[k] != want.get(k)})
        if nproc == 2:
            break  # best.pt once is enough


def test_short_cpu_training_beats_an_untrained_model(train_run, tiny_data):
    """12 epochs (96 steps of 16 images, ~30 s on 2 cores) lift mAP50 far above an untrained model's.

    Measured when written: 0.000 untrained, 0.77 trained. The bar is set at 0.3 so that harmless
    changes to the synthetic generator do not break it while a broken loop (no learning) still does.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from yolofuse_scale.data import PairedRGBIRDataset, collate_pairs, load_data_config, scan_split
    from yolofuse_scale.engine.evaluate import evaluate
    from yolofuse_scale.model import build_model

    trained = json.loads((train_run("torchrun", 2, 1).out / "metrics.json").read_text())["metrics"]
    cfg = load_data_config(tiny_data)
    set_seed(3)
    untrained_model = build_model("yolov8t", "mid", nc=cfg.nc, ir_channels=cfg.ir_channels)
    loader = DataLoader(PairedRGBIRDataset(scan_split(cfg, "val"), 128, augment=False, ir_channels=1),
                        batch_size=8, collate_fn=collate_pairs)
    untrained = evaluate(untrained_model, loader, Accelerator(cpu=True), cfg.names)
    print(f"mAP50 untrained {untrained['mAP50']:.4f} -> trained {trained['mAP50']:.4f}")
    assert untrained["mAP50"] < 0.02
    assert trained["mAP50"] > 0.3 and trained["mAP50"] > untrained["mAP50"] + 0.25
