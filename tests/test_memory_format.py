"""Convolution weights channels-last where the step feeds NHWC images (one process, DDP): the strides gradients
arrive in, the numbers, the bytes a checkpoint holds, and a resume (engine/strategy/memory_format.py). The real
2-process DDP run, without DDP's stride warning and equal to one process bit for bit: tests/test_ddp.py."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator

from tests.test_model import _batch
from yolofuse_scale.config import ParallelConfig
from yolofuse_scale.engine.ema import ShardedEMA
from yolofuse_scale.engine.strategy.accelerator import prepare_model
from yolofuse_scale.engine.strategy.memory_format import keep_optimizer_layout
from yolofuse_scale.engine.task import DetectionTask
from yolofuse_scale.model import build_model


def _model(family: str = "yolov8t", fusion: str = "mid", channels_last: bool | None = True) -> torch.nn.Module:
    """A seeded model as the loop has it after ``prepare_model`` (one plain process); ``None``: not prepared."""
    torch.manual_seed(0)
    model = build_model(family, fusion, nc=2, ir_channels=1)
    if channels_last is None:
        return model
    return prepare_model(Accelerator(cpu=True), model, ParallelConfig(channels_last=channels_last), log=None)


def _backward(model: torch.nn.Module) -> torch.Tensor:
    loss, _ = DetectionTask(model).step(model, _batch(4))
    loss.backward()
    return loss.detach()


# yolov8t mid: a 1-channel IR stem, (16, 1, 3, 3); yolo11t: 1x1 and depthwise convolutions besides.
@pytest.mark.parametrize(("family", "fusion"), [("yolov8t", "mid"), ("yolo11t", "mid")])
def test_weight_gradients_arrive_in_the_weights_strides(family, fusion):
    """DDP builds its bucket views from the parameters' strides and compares each gradient's with them, stride for
    stride: with NCHW weights the weight of a 1-channel stem or a depthwise kernel came back with other strides
    (the same memory order: AccumulateGrad keeps it) and DDP warned "Grad strides do not match bucket view
    strides" on every run. Prepared channels-last, every gradient has its parameter's exact strides."""
    model = _model(family, fusion)
    _backward(model)
    wrong = [(n, tuple(p.shape), p.stride(), p.grad.stride()) for n, p in model.named_parameters()
             if p.grad is not None and p.grad.stride() != p.stride()]
    assert not wrong, wrong[:5]
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_no_channels_last_leaves_the_weights_nchw():
    assert all(p.is_contiguous() for p in _model(channels_last=False).parameters())


def test_channels_last_weights_change_the_numbers_only_by_rounding():
    """Same arithmetic in another memory order: the bound of test_model's NHWC-vs-NCHW images test, as strict.
    (yolo11t: its depthwise convolutions take another kernel; yolov8t's results were bit-identical.)"""
    nchw, nhwc = _model("yolo11t", channels_last=None), _model("yolo11t")
    losses = [_backward(m) for m in (nchw, nhwc)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    a, b = (torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]) for m in (nchw, nhwc))
    assert float((a - b).norm() / a.norm()) < 1e-3


def _trained(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """One real fused SGD step (momentum buffers exist), as the loop builds its optimizer."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    keep_optimizer_layout(opt)
    _backward(model)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def _save_state(model, opt, folder) -> None:
    acc = Accelerator(cpu=True)
    acc.prepare(model, opt)
    acc.save_state(str(folder))


def test_a_checkpoint_holds_the_bytes_an_nchw_run_writes(tmp_path):
    """Accelerate's save_state of channels-last weights and momentum: the same files, byte for byte, as the same
    values held NCHW (safetensors refuses a non-contiguous tensor; a pickled one keeps its strides). Saving leaves
    the live optimizer state channels-last (fused SGD reads it in the weights' memory order)."""
    nhwc, opt = _trained(_model())
    nchw = _model(channels_last=None)
    nchw.load_state_dict(nhwc.state_dict())
    opt_nchw = torch.optim.SGD(nchw.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    opt_nchw.load_state_dict(opt.state_dict())
    assert all(p.is_contiguous() for p in nchw.parameters())
    assert all(s["momentum_buffer"].is_contiguous() for s in opt_nchw.state.values())
    _save_state(nhwc, opt, tmp_path / "nhwc")
    _save_state(nchw, opt_nchw, tmp_path / "nchw")
    for name in ("model.safetensors", "optimizer.bin"):
        assert (tmp_path / "nhwc" / name).read_bytes() == (tmp_path / "nchw" / name).read_bytes(), name
    assert all(opt.state[p]["momentum_buffer"].stride() == p.stride() for p in nhwc.parameters() if p in opt.state)


def test_a_resume_lays_the_optimizer_state_and_the_ema_out_like_the_weights(tmp_path):
    """A checkpoint's momentum is NCHW (this code's, as above, or an older one's). Loaded as saved, fused SGD would
    apply it to the wrong elements of a channels-last weight; laid out like the weights, the step after the resume
    is the uninterrupted run's step exactly. The EMA, loaded from its (contiguous) file, keeps the weights' layout."""
    model, opt = _trained(_model())
    _save_state(model, opt, tmp_path / "ckpt")
    resumed = _model()
    opt_resumed = torch.optim.SGD(resumed.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    keep_optimizer_layout(opt_resumed)
    acc = Accelerator(cpu=True)
    acc.prepare(resumed, opt_resumed)
    acc.load_state(str(tmp_path / "ckpt"))
    assert all(opt_resumed.state[p]["momentum_buffer"].stride() == p.stride() for p in resumed.parameters()
               if p.requires_grad)
    for m, o in ((model, opt), (resumed, opt_resumed)):
        _backward(m)
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))

    ema = ShardedEMA(resumed)
    saved = {k: v.contiguous() for k, v in copy.deepcopy(ema.tensors).items()}
    ema.load_full(saved, resumed, updates=1)
    params = dict(resumed.named_parameters())
    assert all(ema.tensors[k].stride() == params[k].stride() for k in params)
    assert all(torch.equal(ema.tensors[k], saved[k]) for k in saved)
