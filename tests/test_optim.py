"""The optimizer recipe: ``--scale-lr`` (SGD and AdamW, on real torch optimizer steps) and the warm-up rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yolofuse_scale.config import OptimConfig
from yolofuse_scale.engine.optim import WEIGHT, Schedule, build_optimizer, effective_lr_wd

NBS, IMAGES = 64, 1024  # f = 16: the scale where the old rule's decay was 16x too strong


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _step(model: nn.Module, opt: torch.optim.Optimizer, grad_scale: float) -> torch.Tensor:
    """One step from a fixed gradient (times ``grad_scale``); return the conv weight after it."""
    model.zero_grad()
    x = torch.ones(2, 3, 5, 5)
    (model(x).square().mean() * grad_scale).backward()
    opt.step()
    return model[0].weight.detach().clone()


def test_linear_sgd_is_ultralytics_update_at_f_times_nbs_images():
    """Ultralytics at 1,024 images: lr as given, a summed loss (16x our mean-gradient) and wd x 16.
    Ours under `linear`: lr x 16, wd as given. The two SGD steps must agree (Goyal et al.'s rule)."""
    cfg = OptimConfig(lr=0.01, weight_decay=5e-3, scale_lr="linear", nbs=NBS)
    f = IMAGES / NBS
    ours = _model()
    w_ours = _step(ours, build_optimizer(ours, cfg, IMAGES), grad_scale=1.0)
    ref = _model()
    ref_cfg = OptimConfig(lr=cfg.lr, weight_decay=cfg.weight_decay * f, scale_lr="none", nbs=NBS)
    w_ref = _step(ref, build_optimizer(ref, ref_cfg, IMAGES), grad_scale=f)
    torch.testing.assert_close(w_ours, w_ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_adamw_decoupled_decay_follows_lr_only(rule):
    """With a zero gradient AdamW only decays: w <- w (1 - lr_eff x wd), lr_eff = lr x f (or sqrt f), wd as given."""
    cfg = OptimConfig(optimizer="adamw", lr=0.001, weight_decay=0.05, scale_lr=rule, nbs=NBS)
    model = _model()
    opt = build_optimizer(model, cfg, IMAGES)
    w0 = model[0].weight.detach().clone()
    w1 = _step(model, opt, grad_scale=0.0)
    factor = IMAGES / NBS if rule == "linear" else math.sqrt(IMAGES / NBS)
    torch.testing.assert_close(w1, w0 * (1 - cfg.lr * factor * cfg.weight_decay), rtol=1e-6, atol=0)
    assert opt.param_groups[WEIGHT]["weight_decay"] == cfg.weight_decay


@pytest.mark.parametrize("rule, lr", [("none", 0.01), ("linear", 0.16), ("sqrt", 0.04)])
def test_effective_lr_and_wd(rule, lr):
    for optimizer in ("sgd", "adamw"):
        got_lr, got_wd = effective_lr_wd(OptimConfig(optimizer=optimizer, lr=0.01, scale_lr=rule, nbs=NBS), IMAGES)
        assert got_lr == pytest.approx(lr) and got_wd == 5e-4


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="--scale-lr must be none, linear or sqrt"):
        OptimConfig(scale_lr="quadratic")


def _schedule(warmup_epochs: float, epochs: int, steps_per_epoch: int) -> Schedule:
    return Schedule(OptimConfig(warmup_epochs=warmup_epochs), steps_per_epoch, epochs, peak_lr=0.01)


@pytest.mark.parametrize(("warmup", "epochs", "per_epoch", "steps"), [
    (3.0, 100, 100, 300),  # 3 epochs of 100 steps
    (3.0, 100, 10, 100),  # the 100-step floor (Ultralytics <= 8.3): 3 epochs of 10 steps are too few
    (1.0, 10, 32, 100),  # the ablation's setting: 32 steps an epoch, the floor applies
    (3.0, 2, 10, 10),  # capped at epochs - 1 (Ultralytics 8.4): the last epoch runs at the scheduled lr
    (3.0, 1, 10, 0),  # a 1-epoch run: no warm-up
    (0.5, 10, 700, 350),  # round(350.0)
    (0.0, 10, 10, 0),
])
def test_warmup_has_a_floor_and_leaves_the_last_epoch(warmup, epochs, per_epoch, steps):
    assert _schedule(warmup, epochs, per_epoch).warmup_steps == steps


def test_warmup_without_its_floor_is_ultralytics_8_4s():
    cfg = OptimConfig(warmup_epochs=3.0, warmup_min_steps=0)
    assert Schedule(cfg, 10, 100, peak_lr=0.01).warmup_steps == 30
    assert Schedule(cfg, 10, 2, peak_lr=0.01).warmup_steps == 10


def test_a_short_run_reaches_the_peak_lr_after_warmup():
    """3 epochs of 4 steps (12 steps; the 100-step floor alone would never end warm-up; the cap does): lr
    rises from 0 toward the scheduled lr over the 2 capped warm-up epochs and is the scheduled lr from
    step 8 on; momentum is back at its value then. Without decay (lrf 1) the scheduled lr is lr0 itself:
    the run reaches its peak."""
    sched = _schedule(3.0, epochs=3, steps_per_epoch=4)
    opt = build_optimizer(_model(), sched.cfg, 64)
    lrs, moms = [], []
    for step in range(12):
        lrs.append(sched.apply(opt, step))
        moms.append(opt.param_groups[WEIGHT]["momentum"])
    assert sched.warmup_steps == 8
    assert lrs[:8] == pytest.approx([0.01 * sched.decay(s) * s / 8 for s in range(8)])
    assert lrs[8:] == pytest.approx([0.01 * sched.decay(s) for s in range(8, 12)])
    assert max(moms[:8]) < sched.cfg.momentum and moms[8:] == [sched.cfg.momentum] * 4
    flat = Schedule(OptimConfig(warmup_epochs=3.0, lrf=1.0), 4, 3, peak_lr=0.01)
    assert [flat.apply(opt, s) for s in (0, 7, 8, 11)] == pytest.approx([0.0, 0.01 * 7 / 8, 0.01, 0.01])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_update_is_one_fused_kernel_and_the_per_tensor_loops_result(optimizer):
    # fused (one kernel over every tensor) where torch has it; FSDP2's DTensors have no fused SGD: foreach.
    cfg = OptimConfig(optimizer=optimizer, lr=0.01, weight_decay=5e-4, nbs=NBS)
    model = _model()
    opt = build_optimizer(model, cfg, IMAGES)
    assert opt.defaults["fused"] is True
    sharded = build_optimizer(_model(), cfg, IMAGES, dtensor_params=True).defaults
    assert (sharded["foreach"], sharded["fused"]) == ((True, None) if optimizer == "sgd" else (None, True))
    ref = _model()
    ref_opt = build_optimizer(ref, cfg, IMAGES)
    for group in ref_opt.param_groups:  # torch's default on CPU: the per-tensor loop
        group.update(fused=None, foreach=False)
    for _ in range(3):
        w, w_ref = _step(model, opt, 1.0), _step(ref, ref_opt, 1.0)
    # the same rule: equal to float rounding (vectorised tails round differently, ~1e-7)
    torch.testing.assert_close(w, w_ref, rtol=1e-5, atol=1e-7)


def test_per_epoch_decay_holds_ultralytics_lf_of_the_epoch():
    # --decay-every epoch: lr0 * lf(epoch) for every step of the epoch (Ultralytics' LambdaLR); the default
    # follows the same curve step by step.
    cfg = OptimConfig(warmup_epochs=0, schedule="linear", lrf=0.01, decay_every="epoch")
    sched = Schedule(cfg, steps_per_epoch=10, epochs=5, peak_lr=0.1)
    lf = [max(1 - e / 5, 0) * 0.99 + 0.01 for e in range(5)]
    assert [round(sched.decay(s), 12) for s in (0, 9, 10, 19, 49)] == [round(x, 12) for x in
                                                                      (lf[0], lf[0], lf[1], lf[1], lf[4])]
    per_step = Schedule(OptimConfig(warmup_epochs=0, schedule="linear", lrf=0.01), 10, 5, peak_lr=0.1)
    assert per_step.decay(10) == pytest.approx(lf[1]) and per_step.decay(15) < per_step.decay(10)
