"""Convolution weights in the layout their gradients arrive in, and what that asks of saving and loading.

With ``--channels-last`` (the default) the step hands the model NHWC images (``engine/task.py``), and oneDNN
(CPU) and cuDNN (GPU) return every convolution's weight gradient channels-last. Weights left NCHW broke the
layout contract each step: oneDNN copied every weight with more than one input channel and a kernel above 1x1
to NHWC, and AccumulateGrad copied its NHWC gradient back to the parameter's NCHW layout; where the two layouts
differ only in the stride of a size-1 dimension (1x1 convolutions, single-input-channel stems, depthwise
kernels) the gradient kept its own strides, which DDP's bucket views (built from the parameters' strides) do
not have: "Grad strides do not match bucket view strides" on every DDP run, one process included. With the
weights channels-last (:func:`channels_last_weights`) parameter, gradient and bucket view agree stride for
stride, and those copies are gone: 165 a step fewer in forward and backward on yolov8n (profiled, one CPU thread).
Cost: torch's CPU fused SGD copies each non-contiguous gradient to a contiguous temporary (55 copies, about
2.3 ms a step on yolov8n); the net, measured in CPU time on a shared 2-core CPU: about 2 % less per step in one
process, no change measurable at 2 (DDP's own cost, about 9 ms a step of gloo work per rank, is the same in
either layout).

Where: one process and DDP. Not FSDP2 (``fully_shard`` refuses a non-contiguous parameter and computes with
views of its own contiguous all-gather buffer) nor DeepSpeed (ZeRO moves every parameter into contiguous flat
buffers): there the weights stay NCHW and AccumulateGrad copies the gradients into their layout, as before.

What the layout asks of the rest:

- Saving: Accelerate writes the weights contiguous (safetensors takes nothing else) and the optimizer's state
  comes out of ``state_dict()`` contiguous (:func:`keep_optimizer_layout`; pickled, it would keep its strides),
  so a checkpoint holds the bytes an NCHW run with the same values writes. Costs one copy of the state a save.
- Loading: ``load_state_dict`` copies into the parameters and keeps their layout, but an optimizer takes its
  state as given: after every load (a resume; also Accelerate's ``prepare``, which moves the state to the
  device through ``state_dict`` and ``load_state_dict``) each state tensor is laid out like its parameter
  again. torch's fused SGD and AdamW kernels walk parameter, gradient and state as flat memory: a momentum
  buffer laid out otherwise (any checkpoint's, this code's or an older one) would be applied to the wrong
  elements, silently.
- The EMA, the evaluation copy and the portable weights: the EMA's tensors are clones of the parameters, so
  channels-last too (``ema.py`` keeps that layout when it loads); the evaluation model is copied before the
  strategy prepares the model and stays NCHW (validation and ``weights/*.pt`` unchanged).
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from yolofuse_scale.config import ParallelConfig

#: Strategies that put every parameter into buffers of their own (contiguous): the layout would not survive.
_OWN_BUFFERS = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def channels_last_weights(accelerator: Accelerator, model: torch.nn.Module, cfg: ParallelConfig) -> bool:
    """Lay ``model``'s 4-D parameters (convolution weights) out channels-last where the step feeds NHWC images
    and the strategy keeps the parameters as they are (one process, DDP); return whether it did. Before the
    optimizer and the DDP wrapper exist: DDP builds its bucket views from the parameters' strides."""
    if not cfg.channels_last or accelerator.distributed_type in _OWN_BUFFERS:
        return False
    # .to(memory_format=...) also restrides the ambiguous ones (a (C, 1, 3, 3) weight is NCHW and NHWC at once
    # in memory, yet the backward returns it with channels-last strides); Tensor.contiguous would keep them.
    model.to(memory_format=torch.channels_last)
    return True


def keep_optimizer_layout(optimizer: torch.optim.Optimizer) -> None:
    """Save ``optimizer``'s state contiguous and lay it out like its parameters after a load (see the module
    docstring); nothing when every parameter is contiguous (NCHW runs, FSDP2, DeepSpeed)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if all(p.is_contiguous() for p in params):
        return
    optimizer.register_state_dict_post_hook(_contiguous_optimizer_state)
    optimizer.register_load_state_dict_post_hook(_state_like_params)


def _contiguous_optimizer_state(optimizer, state_dict: dict) -> dict:
    # New inner dicts: Optimizer.state_dict() hands out the live per-parameter dicts, which must keep their layout.
    state_dict["state"] = {
        i: {k: v.contiguous() if isinstance(v, torch.Tensor) and not v.is_contiguous() else v for k, v in s.items()}
        for i, s in state_dict["state"].items()
    }
    return state_dict


def _state_like_params(optimizer) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype, device=value.device).copy_(value)
