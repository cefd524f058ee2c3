"""The modules that turn a stacked RGB+IR input into the streams a fusion YAML wires up.

The model always receives ONE tensor ``(B, C_rgb + C_ir, H, W)`` with the RGB channels first and the
IR channels after them (IR may be 1 or 3 channels). That keeps the data loader, DDP/FSDP/DeepSpeed
input handling and ONNX export single-input. A two-stream model (its first YAML row is one of the
modules below) splits that tensor into ``[rgb, ir]`` before layer 0; a single-stream model (its
first row is an ordinary layer such as ``Conv``) gets the stacked tensor as it is ("data" /
data-level fusion).

YOLOFuse's YAML schema is honoured from its documented behaviour:

- ``IdentityInput``: passes the input through (here: the ``[rgb, ir]`` pair).
- ``ModalitySelector [k]``: picks modality ``k`` (1 = RGB, 2 = IR, as YOLOFuse's config comments say).
  It is rewritten to Ultralytics' own ``Index`` layer when the YAML is parsed, because Ultralytics'
  ``parse_model`` only knows the output width of layers it recognises: ``Index`` takes its output
  width from its first argument, which the rewrite sets to that modality's channel count.
- ``ModalConcat``: concatenates the pair back into one stacked tensor (data-level fusion).
"""

from __future__ import annotations

import torch
from torch import nn

#: YAML module names that mark a model as two-stream (it wants the ``[rgb, ir]`` pair as input).
STREAM_INPUT_MODULES = frozenset({"IdentityInput", "ModalitySelector", "ModalConcat"})


class IdentityInput(nn.Module):
    """Return the input unchanged (YOLOFuse's layer 0 of a two-stream model)."""

    def forward(self, x):  # noqa: D102 - trivially documented above
        return x


class ModalConcat(nn.Module):
    """Concatenate the ``[rgb, ir]`` pair along channels: data-level fusion inside a two-stream YAML."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:  # noqa: D102
        if isinstance(x, torch.Tensor):
            return x
        if len(x) == 1 and isinstance(x[0], (list, tuple)):  # a `from: [-1]` row wraps the pair once more
            x = x[0]
        return torch.cat(list(x), self.d)


def split_modalities(x: torch.Tensor, rgb_channels: int) -> list[torch.Tensor]:
    """Split a stacked ``(B, C_rgb + C_ir, H, W)`` tensor into ``[rgb, ir]``: views of an NCHW tensor; of a
    channels-last one (the training step's), channels-last copies, since a channel slice of NHWC is
    neither layout and each stream's stem would reorder it anyway (1 % of a yolov8n mid-fusion step)."""
    parts = [x[:, :rgb_channels], x[:, rgb_channels:]]
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        parts = [p.contiguous(memory_format=torch.channels_last) for p in parts]
    return parts
