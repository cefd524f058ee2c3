"""The EMA rule on plain tensors (the sharded strategies are covered by the parity tests)."""

from __future__ import annotations

import math

import torch
from torch import nn

from yolofuse_scale.engine.ema import ShardedEMA


def test_ema_follows_ultralytics_rule_for_parameters_and_float_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ShardedEMA(model, decay=0.9, tau=2.0)
    before = {k: v.clone() for k, v in ema.tensors.items()}
    assert "1.num_batches_tracked" not in ema.tensors  # integer buffers are not averaged
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(2.0)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2.0))
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    for k, v in ema.tensors.items():
        torch.testing.assert_close(v, d * before[k] + (1 - d) * state[k], rtol=1e-6, atol=1e-6)


def test_ema_of_a_lower_precision_model_stays_fp32():
    model = nn.Linear(4, 2)
    ema = ShardedEMA(model, decay=0.5, tau=1e-9)  # d = 0.5 from the first update
    model.to(torch.bfloat16)
    ema.update(model)
    assert all(v.dtype == torch.float32 for v in ema.tensors.values())


def test_ema_averages_the_tensor_in_its_slot_even_after_it_was_replaced():
    # The slots are found once; a buffer swapped for a new tensor (as .to() or a strategy does) must still
    # be the one averaged, not the object seen at the first update.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ShardedEMA(model, decay=0.5, tau=1e-9)
    ema.update(model)
    model[1].running_mean = torch.full((4,), 8.0)  # a new object in the module's _buffers
    before = ema.tensors["1.running_mean"].clone()
    ema.update(model)
    torch.testing.assert_close(ema.tensors["1.running_mean"], 0.5 * before + 0.5 * 8.0)


def test_ema_loaded_from_a_state_dict_is_the_one_updated():
    model = nn.Linear(4, 2)
    ema = ShardedEMA(model, decay=0.5, tau=1e-9)
    ema.update(model)
    saved = {k: torch.full_like(v, 2.0) for k, v in ema.tensors.items()}
    ema.load_full(saved, model, updates=7)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    torch.testing.assert_close(ema.tensors["weight"], torch.full((2, 4), 3.0))
    assert ema.updates == 8
