"""What the loop reports about a step: the MFU's peak under each precision label, the fp16 gradient norm,
the step meter's record, the logged losses' one host copy."""

from __future__ import annotations

import time

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils._python_dispatch import TorchDispatchMode

from yolofuse_scale.engine.perf import CommMeter, PrecisionProbe, StepMeter, precision_key, table_peak_flops
from yolofuse_scale.engine.step_values import non_finite, step_values
from yolofuse_scale.engine.strategy.accelerator import clip_grad_norm


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


def test_step_meter_record_holds_the_logged_keys_and_times_the_phases(fresh_state):
    """One StepMeter makes a step's whole record: keys in the order train_log.jsonl has them, phase times
    from its marks, images/s and MFU from its clock, the first step's extras once; time between steps
    (after ``record``, before ``start``) is charged to no step."""
    acc, model, opt = _setup(torch.amp.GradScaler("cpu", init_scale=2.0**16))
    opt.step()  # a real fp16 step through Accelerate's optimizer: step_was_skipped is its flag
    probed = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    meter = StepMeter(acc.device, phases=True, images_per_step=8, world_size=2, flops_per_image=1e9, peak_flops=1e12,
                      mfu_precision="fp32", comm=CommMeter(), probe=PrecisionProbe(probed),
                      scaled_optimizer=opt)
    losses = {"loss": 0.5, "box": 0.25, "cls": 0.125, "dfl": 0.125, "loss_backprop": 32.0}
    meter.start()
    time.sleep(0.05)
    meter.mark("data")
    probed(torch.zeros(1, 1, 8, 8))
    meter.mark("forward")
    meter.mark("backward")
    meter.capture_state(model, opt)
    meter.mark("optim")
    first = meter.record(1, 0, losses, 0.01, 2.0)
    assert list(first) == ["step", "epoch", "loss", "box", "cls", "dfl", "loss_backprop", "lr", "grad_norm",
                           "images_per_s", "step_time_s", "time_data_s", "time_forward_s", "time_backward_s",
                           "time_optim_s", "mfu", "comm", "step_skipped", "model_state_bytes", "compute_dtypes",
                           "mfu_precision"]
    assert first["time_data_s"] >= 0.05 and first["step_time_s"] >= sum(v for k, v in first.items()
                                                                         if k.startswith("time_"))
    assert first["images_per_s"] == 8 / first["step_time_s"]
    assert first["mfu"] == 1e9 * first["images_per_s"] / 2 / 1e12
    assert first["step_skipped"] is False and first["comm"] == {} and first["mfu_precision"] == "fp32"
    assert first["model_state_bytes"] == meter.state_bytes and first["model_state_bytes"][0]["params"] > 0
    assert first["compute_dtypes"]["conv"] == "weight float32, output float32"
    time.sleep(0.05)  # logging and saving: no step's time
    meter.start()
    meter.mark("data")
    second = meter.record(2, 0, losses, 0.01, 2.0)
    assert second["step_time_s"] < 0.05 and "compute_dtypes" not in second and "model_state_bytes" not in second
    meter = StepMeter(acc.device, phases=False, images_per_step=8, world_size=1, flops_per_image=1e9, peak_flops=0.0,
                      mfu_precision="fp32", comm=None, probe=PrecisionProbe(probed))
    meter.start()
    meter.mark("data")
    meter.mark("forward")
    rec = meter.record(2, 0, losses, 0.01, 2.0)
    assert "time_data_s" in rec and not {"time_forward_s", "mfu", "comm", "step_skipped"} & set(rec)


class _ScalarReads(TorchDispatchMode):
    """Counts ``item()``/``float()``/``bool()`` of a tensor (``_local_scalar_dense``): each a host sync on a GPU."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("norm_dtype", [torch.float32, torch.bfloat16, None])  # None: DeepSpeed's Python float
def test_step_values_are_each_values_float_in_one_copy(norm_dtype):
    """The logged losses, grad norm and flag equal a float() of each (what the loop logged before), bit for
    bit, and reach the host without a scalar read: one copy (``tolist``; on the CPU the dispatcher does not
    see it) instead of nine reads per step."""
    torch.manual_seed(0)
    names = ("box", "cls", "dfl")
    reduced = torch.cat([torch.rand(3) * 7, torch.tensor([21.123456, 0.5])])  # items x accum, objective, flag
    norm = torch.tensor(161.14936, dtype=norm_dtype) if norm_dtype else 161.14936
    with _ScalarReads() as mode:
        got = step_values(reduced, norm, 2, names)
        flag = non_finite(reduced[-2], norm, check_norm=True)
    assert mode.reads == 0
    items = reduced[:3] / 2
    assert got.losses == {"loss": float(items.sum()), **{k: float(v) for k, v in zip(names, items)},
                          "loss_backprop": float(reduced[-2])}
    assert list(got.losses) == ["loss", *names, "loss_backprop"]
    assert got.grad_norm == float(norm) and got.non_finite is True  # a rank's flag (mean 0.5 > 0)
    assert float(flag) == 0.0


def test_non_finite_flags_the_objective_and_unless_fp16_the_norm():
    finite, nan, inf = torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))
    assert float(non_finite(nan, finite, check_norm=True)) == 1.0
    assert float(non_finite(nan, finite, check_norm=False)) == 1.0  # a non-finite loss is never routine
    assert float(non_finite(finite, inf, check_norm=True)) == 1.0
    assert float(non_finite(finite, float("nan"), check_norm=True)) == 1.0
    assert float(non_finite(finite, inf, check_norm=False)) == 0.0  # fp16: the grad scaler skips that step
    assert step_values(torch.tensor([1.0, 1.0, 1.0, 64.0, 0.0]), finite, 1, ("box", "cls", "dfl")).non_finite is False
