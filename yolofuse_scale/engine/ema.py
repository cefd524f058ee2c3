"""Exponential moving average of the weights, kept on each rank's local part of every tensor.

The update is Ultralytics' ``ModelEMA`` rule (decay 0.9999 ramped by ``1 - exp(-updates / 2000)``,
over every floating parameter and buffer), applied element-wise. Element-wise means a rank can
update just the shard it holds: under FSDP2 (DTensor shards) and ZeRO-3 (flat partitions) each
rank keeps 1/N of the EMA, and the full EMA exists only while it is gathered for validation and
saving. Ultralytics' ``ModelEMA`` deep-copies the module instead, which under ZeRO-3 copies
parameters of shape [0] and then averages nothing, silently.
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from yolofuse_scale.engine.strategy.batchnorm import average_running_stats
from yolofuse_scale.engine.strategy.sharded import full_state_dict, local_shard, local_tensor, named_state


class ShardedEMA:
    """EMA of ``model``'s floating parameters and buffers, on this rank's local parts."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.decay, self.tau, self.updates = decay, tau, 0
        self.tensors = {
            name: local_tensor(t).detach().clone() for name, t in named_state(model) if t.is_floating_point()
        }
        self._slots: list[tuple[torch.Tensor, dict, str]] = []
        self._slots_of: torch.nn.Module | None = None  # the model _slots were found in

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One EMA step from ``model``'s current local parts (no communication)."""
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        emas, current = self._pairs(model)
        # ema += (1 - d) * (current - ema), one fused op over all tensors: a per-tensor mul_/add_ with a
        # temporary cost 10 ms a step on yolov8n on one CPU thread (~5% of the step), this ~1 ms.
        torch._foreach_lerp_(emas, current, 1 - d)

    def _pairs(self, model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(EMA tensors, the model's current local parts) in matching order.

        Where each tensor lives (its module's ``_parameters`` or ``_buffers`` dict and key) is found
        once per model: walking the module tree with ``named_parameters``/``named_buffers`` every step
        cost ~3 ms of a ~100 ms yolov8n step on one CPU thread (profiled against Ultralytics'
        ``ModelEMA``, ``benchmarks/results/step_profile_2core_cpu``). The tensor is still looked up in
        its slot each step, so a buffer that ``.to()`` or a strategy replaced is the one averaged."""
        if self._slots_of is not model:
            slots = []
            for name in self.tensors:
                owner, _, key = name.rpartition(".")
                mod = model.get_submodule(owner)
                slots.append((self.tensors[name], mod._parameters if key in mod._parameters else mod._buffers, key))
            self._slots, self._slots_of = slots, model
        emas, current = [], []
        for ema, where, key in self._slots:
            t = local_tensor(where[key])
            emas.append(ema)
            current.append(t if t.dtype == ema.dtype else t.to(ema.dtype))
        return emas, current

    def full_state_dict(self, accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole EMA on every rank. Collective: gathers shards, makes BatchNorm statistics equal on all ranks."""
        average_running_stats(accelerator, [t for k, t in self.tensors.items() if _is_running_stat(k)])
        return full_state_dict(model, self.tensors)

    def load_full(self, state_dict: dict[str, torch.Tensor], model: torch.nn.Module, updates: int) -> None:
        """Take this rank's part of a full EMA state dict (as saved; any world size wrote it)."""
        missing = sorted(set(self.tensors) - set(state_dict))
        if missing:
            raise KeyError(f"the saved EMA lacks {len(missing)} tensor(s), e.g. {missing[:3]}")
        like = dict(named_state(model))
        for name in self.tensors:
            # in the layout the EMA has (the model's: channels-last weights, strategy/memory_format.py), not the file's
            self.tensors[name] = torch.empty_like(self.tensors[name]).copy_(local_shard(state_dict[name], like[name]))
        self.updates = updates
        self._slots_of = None  # the EMA tensors are new objects: find the slots again


def _is_running_stat(name: str) -> bool:
    return name.endswith(("running_mean", "running_var"))
