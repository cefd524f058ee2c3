"""YOLOv11-RGBT's input selectors and joins, written from their behaviour, so its fusion configs build here.

YOLOv11-RGBT's model YAMLs (``ultralytics/cfg/models/11-RGBT/``) read one stacked input, ``ch: 4``: the
RGB channels (in R, G, B order) then one infrared channel, which is exactly this project's input with
``ir_channels: 1`` (``ch: 6`` with a 3-channel IR image). Its plain fusion modes need five modules:

- ``Silence``: passes its input on (their layer 0, the stacked tensor).
- ``SilenceChannel [a, b]``: channels ``a`` to ``b - 1`` of its input (``[0, 3]`` RGB, ``[3, 4]`` IR).
- ``ADD [alpha]``: ``x0 + alpha * x1`` of two maps of one shape; ``alpha`` defaults to 0.5, as theirs.
- ``ChannelToNumber``: the stacked input -> the RGB and IR images as *two batch items* each, ``(2B, 3, H, W)``
  (RGB images first; a 1-channel IR image repeated to 3 channels), so one backbone sees both modalities
  with shared weights.
- ``NumberToChannel``: the inverse join, ``(2B, C, H, W)`` -> ``(B, 2C, H, W)``: each image's RGB features
  then its IR features, concatenated along channels.

Ultralytics' parser (used unmodified) knows the output width of none of them but ``Silence`` (width in =
width out), and cannot give a layer of its unknown kind two inputs. So, as for DEYOLO's DEA
(attention.py's ``expand_rows``), each other row is rewritten into rows it can size: the layer (told its
input width, computed here the parser's way; ``ADD`` reads a ``Concat`` of its two inputs) returning a
one-element list, then an ``Index`` declaring the output width. ``ADD``'s ``Concat`` costs one copy of
both maps per call; the others only add a list around their output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from yolofuse_scale.model.safe_config.limits import ModelConfigError

RGB_CHANNELS = 3  # their ChannelToNumber, like this project, takes the first three channels as RGB


class Silence(nn.Module):
    """Return the input unchanged."""

    def forward(self, x):  # noqa: D102 - trivially documented above
        return x


class SilenceChannel(nn.Module):
    """Channels ``start`` .. ``end - 1`` of a ``(B, C, H, W)`` map (a view, no copy)."""

    def __init__(self, start: int, end: int):
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x[:, self.start:self.end]


class ADD(nn.Module):
    """``x[0] + alpha * x[1]`` for a pair of maps of one shape."""

    def __init__(self, alpha: float = 0.5):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        return torch.add(x[0], x[1], alpha=self.alpha)


class ChannelToNumber(nn.Module):
    """``(B, 3 + C_ir, H, W)`` -> ``(2B, 3, H, W)``: items ``0..B-1`` the RGB images, ``B..2B-1`` the IR ones.

    A 1-channel IR image is repeated to three channels (a view until the concatenation copies it).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rgb, ir = x[:, :RGB_CHANNELS], x[:, RGB_CHANNELS:]
        if ir.shape[1] == 1:
            ir = ir.expand(-1, RGB_CHANNELS, -1, -1)
        elif ir.shape[1] != RGB_CHANNELS:
            raise ValueError(f"ChannelToNumber: expected 3 RGB + 1 or 3 IR channels, got {x.shape[1]}")
        return torch.cat((rgb, ir), 0)


class NumberToChannel(nn.Module):
    """``(2B, C, H, W)`` -> ``(B, 2C, H, W)``: the first half of the batch (RGB) then the second (IR) on channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.shape[0] % 2:
            raise ValueError(f"NumberToChannel: the batch ({x.shape[0]}) must hold RGB and IR halves")
        return torch.cat(x.chunk(2, 0), 1)


# ----------------------------------------------------------------------------------------------------
# The layers the rewritten rows name: each returns a one-element list, for the Index row after it.


class SilenceChannelLayer(SilenceChannel):
    """A YAML ``SilenceChannel [a, b]`` row: ``[x[:, a:b]]``."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [super().forward(x)]


class ADDLayer(ADD):
    """A YAML ``ADD`` row: reads ``Concat(x0, x1)`` and returns ``[x0 + alpha * x1]``."""

    def __init__(self, c0: int, c1: int, alpha: float = 0.5):
        super().__init__(alpha)
        self.split = (c0, c1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [super().forward(x.split(self.split, 1))]


class ChannelToNumberLayer(ChannelToNumber):
    """A YAML ``ChannelToNumber`` row."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [super().forward(x)]


class NumberToChannelLayer(NumberToChannel):
    """A YAML ``NumberToChannel`` row."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [super().forward(x)]


#: YAML name -> the class Ultralytics' parser namespace gets under that name (detector.py registers them).
#: ``Silence`` is built as it is; the others' rows are rewritten by :data:`EXPANDERS` first.
PARSER_LAYERS = {"Silence": Silence, "SilenceChannel": SilenceChannelLayer, "ADD": ADDLayer,
                 "ChannelToNumber": ChannelToNumberLayer, "NumberToChannel": NumberToChannelLayer}
#: Modules whose arguments index the stacked input's channels: the YAML's ``ch`` must be the data's.
INPUT_SLICING = frozenset({"SilenceChannel", "ChannelToNumber"})


def _one_input(f: Any, n: int, where: str) -> None:
    if not isinstance(f, int) or n != 1:
        raise ModelConfigError(f"{where}: expects one input layer and repeats 1, got from {f!r}, repeats {n}")


def _silence_channel(i, f, nf, n, args, widths, where):
    _one_input(f, n, where)
    c_in = widths.of(i, f)
    ok = len(args) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    if not ok or not 0 <= args[0] < args[1] <= c_in:
        raise ModelConfigError(f"{where}: args {args!r} must be [start, end] channel indices with "
                               f"0 <= start < end <= {c_in} (its input has {c_in} channels)")
    c_out = args[1] - args[0]
    return c_out, [[nf, 1, "SilenceChannel", list(args)], [None, 1, "Index", [c_out, 0]]]


def _add(i, f, nf, n, args, widths, where):
    if not (isinstance(f, list) and len(f) == 2) or n != 1:
        raise ModelConfigError(f"{where}: expects from: [layer, layer] and repeats 1, got from {f!r}, repeats {n}")
    if len(args) > 1 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ModelConfigError(f"{where}: args {args!r} must be [] or [alpha] (a number; default 0.5)")
    c0, c1 = (widths.of(i, x) for x in f)
    if c0 != c1:
        raise ModelConfigError(f"{where}: its inputs have {c0} and {c1} channels; ADD needs equal widths")
    return c0, [[nf, 1, "Concat", [1]], [None, 1, "ADD", [c0, c1, *args]], [None, 1, "Index", [c0, 0]]]


def _channel_to_number(i, f, nf, n, args, widths, where):
    _one_input(f, n, where)
    c_in = widths.of(i, f)
    if args or c_in - RGB_CHANNELS not in (1, 3):
        raise ModelConfigError(f"{where}: takes no args and a stacked RGB + IR input (4 or 6 channels), "
                               f"got args {args!r} and {c_in} channels")
    return RGB_CHANNELS, [[nf, 1, "ChannelToNumber", []], [None, 1, "Index", [RGB_CHANNELS, 0]]]


def _number_to_channel(i, f, nf, n, args, widths, where):
    _one_input(f, n, where)
    if args:
        raise ModelConfigError(f"{where}: takes no args, got {args!r}")
    c_out = 2 * widths.of(i, f)
    return c_out, [[nf, 1, "NumberToChannel", []], [None, 1, "Index", [c_out, 0]]]


#: YAML name -> ``(row index, from, renumbered from, repeats, args, widths, where) -> (output width, rows)``,
#: for attention.py's ``expand_rows``.
EXPANDERS = {"SilenceChannel": _silence_channel, "ADD": _add, "ChannelToNumber": _channel_to_number,
             "NumberToChannel": _number_to_channel}


def check_input_channels(d: dict[str, Any], channels: int, source: str) -> None:
    """Refuse a YAML that slices the stacked input by channel index but was written for another channel count.

    Its indices are absolute (``SilenceChannel [3, 4]`` is the IR of a ``ch: 4`` input, one third of a
    3-channel IR image's), so data with another IR channel count would train silently on part of its input.
    """
    used = sorted({r[2] for r in list(d.get("backbone", [])) + list(d.get("head", [])) if r[2] in INPUT_SLICING})
    if used and "ch" in d and d["ch"] != channels:
        ir = d["ch"] - RGB_CHANNELS
        fix = f"use data with ir_channels: {ir} or " if ir in (1, 3) else ""
        raise ModelConfigError(
            f"{source}: ch: {d['ch']} but the data gives {channels} channels (RGB + {channels - RGB_CHANNELS}-channel "
            f"IR); its {', '.join(used)} rows select input channels by index, "
            f"so {fix}write the config for ch: {channels}")
