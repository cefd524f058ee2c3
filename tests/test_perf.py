"""What the loop reports about a step: the MFU's peak under each precision label, the fp16 gradient norm."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from yolofuse_scale.engine.perf import precision_key, table_peak_flops
from yolofuse_scale.engine.strategy import clip_grad_norm


@pytest.mark.parametrize(("label", "tflops"), [
    ("bf16 (torch_autocast)", 989.0),  # DeepSpeed bf16, as effective_precision names it: was divided by fp32's 494
    ("bf16", 989.0), ("fp16", 989.0), ("no", 494.0),
])
def test_mfu_peak_follows_the_precision_label(label, tflops):
    assert table_peak_flops("NVIDIA H200", label) == tflops * 1e12
    assert precision_key(label) == ("fp32" if label == "no" else label[:4])


@pytest.fixture
def fresh_state():
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def _setup(scaler: torch.amp.GradScaler | None):
    """A prepared model and optimizer; with ``scaler``, Accelerate's fp16 state as it builds it on a GPU
    (on CPU it builds no scaler), so backward scales the loss and the optimizer steps through the scaler.
    The forward stays fp32 (``native_amp`` is set after ``prepare``, which would add fp16 autocast) so
    the two runs differ only in the loss scale."""
    torch.manual_seed(0)
    acc = Accelerator(cpu=True, mixed_precision="fp16" if scaler else "no")
    acc.scaler = scaler
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    acc.native_amp = scaler is not None
    loss = model(torch.linspace(-1, 1, 32).view(4, 8)).square().sum()
    acc.backward(loss)
    return acc, model, opt


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_fp16_grad_norm_is_the_unscaled_norm(fresh_state, clip):
    """With a loss scale of 2**16 the logged norm and the step equal the unscaled run's, clipping or not
    (before: --clip-grad 0 logged 65,536 x the norm)."""
    acc, model, opt = _setup(None)
    want = clip_grad_norm(acc, model, clip)
    opt.step()
    want_w = [p.detach().clone() for p in model.parameters()]
    AcceleratorState._reset_state(True)
    acc, model, opt = _setup(torch.amp.GradScaler("cpu", init_scale=2.0**16))
    got = clip_grad_norm(acc, model, clip)
    opt.step()  # the scaler must not unscale a second time
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert want > 1.0  # clipping at 1 is active
    for p, w in zip(model.parameters(), want_w):
        torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-7)
