"""The second step of the check, :func:`check_model_size`, where the model is built, once the rows are rewritten
for Ultralytics' parser: **the parameters implied**. Ultralytics' own parser builds the model on PyTorch's
``meta`` device (shapes only, no memory), so the count is exact for every block, whatever its internal
structure; global registration hooks count the modules and parameters as they are created and stop the
construction as soon as :data:`MAX_PARAMS` (2 billion: 8 GB of fp32 weights, 7x the largest real two-stream
model, YOLOv6x's ~280M) or :data:`MAX_MODULES` module registrations (10,000; YOLOv9e as a two-stream model,
the largest real one, makes ~3,600) is passed. The convolution, pooling, padding and upsampling layers built
are then held to :data:`MAX_WIDTH` channels (3x the widest real one, the 5,120-channel 1x1 conv in RT-DETR-x's
HGBlock), kernels, strides, paddings and dilations of at most :data:`MAX_SPATIAL`, upsampling by at most
:data:`MAX_UPSAMPLE` per layer and fixed output sizes of at most :data:`MAX_OUTPUT_SIZE`. It costs one
construction without memory: ~20 ms for a tiny model, ~100 ms at scale x, next to seconds for the real build
(the first one in a process also imports PyTorch's meta kernels, ~1 s, which the training and inference
commands have imported already); past the module budget it stops within ~0.5 s.
"""

from __future__ import annotations

import copy
from typing import Any

from yolofuse_scale.model.safe_config.activation import default_activation
from yolofuse_scale.model.safe_config.limits import MAX_NC, ModelConfigError, first_line, int_in, is_number, short
from yolofuse_scale.model.safe_config.schema import head_modules

MAX_PARAMS = 2_000_000_000
MAX_MODULES = 10_000  #: module registrations while it is built
MAX_WIDTH = 16_384  #: channels of any convolution's input or output (a class-count output aside)
MAX_SPATIAL = 64  #: kernel size, stride, padding, dilation
MAX_UPSAMPLE = 8  #: an upsampling layer's scale factor
MAX_OUTPUT_SIZE = 4096  #: a fixed output size (nn.Upsample(size=...), adaptive pooling)


class _OverBudget(Exception):
    """Raised from a registration hook to stop a construction that passed the budget."""


#: What Ultralytics' parser (or a block's constructor) raises on rows that do not fit together.
BUILD_ERRORS = (TypeError, ValueError, IndexError, KeyError, AttributeError, RuntimeError, AssertionError,
                ZeroDivisionError, OverflowError)


def check_model_size(d: dict[str, Any], ch: int, act: Any, source: str) -> int:
    """Refuse a model whose construction passes :data:`MAX_PARAMS` parameters or :data:`MAX_MODULES`
    modules, or whose layers pass :data:`MAX_WIDTH` / :data:`MAX_SPATIAL` / :data:`MAX_UPSAMPLE`; return
    its parameter count. ``d`` is the dictionary as Ultralytics' parser gets it (checked by
    ``schema.check_model_dict``, its rows rewritten, no ``activation`` key; ``act`` the parsed activation).

    Builds it with Ultralytics' parser on the ``meta`` device: exact, allocates nothing, and the hooks
    stop it at the first module or parameter past the budget.
    """
    import torch
    from torch.nn.modules import module as torch_module
    from ultralytics.nn.tasks import parse_model

    problem = int_in(1, MAX_NC)(d["nc"]) if "nc" in d else None
    if problem:
        raise ModelConfigError(f"{source}: nc {short(d['nc'])} {problem}")
    tally = {"modules": 0, "params": 0}

    def count_module(parent, name, child):
        tally["modules"] += 1
        if tally["modules"] > MAX_MODULES:
            raise _OverBudget(f"more than {MAX_MODULES} modules (the largest real two-stream models have ~3,600)")

    def count_params(parent, name, param):
        if param is not None:
            tally["params"] += param.numel()
            if tally["params"] > MAX_PARAMS:
                raise _OverBudget(f"more than {MAX_PARAMS:,} parameters implied (the largest real two-stream "
                                  "models have ~300 million); refused before anything was allocated")

    hooks = [torch_module.register_module_module_registration_hook(count_module),
             torch_module.register_module_parameter_registration_hook(count_params)]
    try:
        with torch.device("meta"), default_activation(act):
            layers, _ = parse_model(copy.deepcopy(d), ch, verbose=False)
    except _OverBudget as e:
        raise ModelConfigError(f"{source}: {e}") from None
    except BUILD_ERRORS as e:
        raise ModelConfigError(f"{source}: Ultralytics cannot build this model ({type(e).__name__}: "
                               f"{first_line(e)})") from None
    finally:
        for h in hooks:
            h.remove()
    _check_layers(layers, source)
    return sum(p.numel() for p in layers.parameters())


#: Layer attributes bounded by :func:`_check_layers`: (bound, what).
_SPATIAL_ATTRS = {"kernel_size": MAX_SPATIAL, "stride": MAX_SPATIAL, "padding": MAX_SPATIAL,
                  "dilation": MAX_SPATIAL, "output_padding": MAX_SPATIAL, "scale_factor": MAX_UPSAMPLE,
                  "size": MAX_OUTPUT_SIZE, "output_size": MAX_OUTPUT_SIZE}


def _check_layers(layers, source: str) -> None:
    from torch import nn

    heads = head_modules()
    for i, layer in enumerate(layers):
        in_head = type(layer).__name__ in heads  # a head's class convolutions are as wide as the class count
        for name, m in layer.named_modules():
            if not type(m).__module__.startswith("torch.nn.modules"):
                continue
            where = f"{source}: layer {i} ({type(layer).__name__}){' ' + name if name else ''}: {type(m).__name__}"
            if isinstance(m, nn.modules.conv._ConvNd):
                widths = (m.in_channels,) if in_head else (m.in_channels, m.out_channels)
                if max(widths) > MAX_WIDTH:
                    raise ModelConfigError(f"{where} is {m.in_channels} -> {m.out_channels} channels wide; at most "
                                           f"{MAX_WIDTH} (3x the widest real one, RT-DETR-x's 5120)")
            for attr, bound in _SPATIAL_ATTRS.items():
                value = vars(m).get(attr)
                values = value if isinstance(value, (tuple, list)) else [value]
                if any(is_number(v) and abs(v) > bound for v in values):
                    raise ModelConfigError(f"{where} has {attr} {short(value)}; at most {bound}")
