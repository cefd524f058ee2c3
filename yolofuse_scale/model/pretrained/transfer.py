"""The tensor transfers both mappings share (the built-in variants' by declared origins, a model YAML's by
structure): the state-dict keys they read, the stream a layer prefers to copy, a stem adapted to the IR channels,
a new fusion conv as the average of the two streams, and the class-dependent Detect layers.

Choices, and why:

- the IR stem of a 1-channel IR image gets the **sum** over the RGB input channels of the pretrained
  first conv: a gray image g then gives exactly the response the RGB model gives to the RGB image
  (g, g, g) (the mean would give a third of it). With 3 IR channels the weights are copied.
- data-level fusion: the stem's RGB part is **half** the pretrained weight and its IR part half the
  adapted one, so an IR image equal to the RGB image's gray level gives the pretrained response
  (copying both whole would double it, and the BN statistics after it would be off by 2x); both
  modalities feed the trunk from the first step. Zero-initialising the IR part would keep the RGB
  response exactly but start the model blind to IR, the modality that matters at night.
- the fusion 1x1 convs (early, mid) are new: initialised to the **average of the two streams**
  (output channel c = (rgb_c + ir_c) / 2), so channel c of the fused map means what channel c
  meant to the pretrained neck; the default random init would scramble the channels the pretrained
  neck and head read. Its BN and SiLU stay as built (they still act once more on the average).
- the class-dependent Detect layers (``cv3.*`` and YOLO26's ``one2one_cv3.*``: the final class
  convs, and the convs before them whose width Ultralytics derives from the class count, matched by
  :data:`CLASS_BRANCH` and :data:`CLASS_CONV`) keep the model's own initialisation (Ultralytics' class-prior
  bias) when the class count differs, and are copied when it is the same.
"""

from __future__ import annotations

import re

import torch

#: A layer's tensor in a state dict: ``model.{layer}.{rest}``.
KEY = re.compile(r"^model\.(\d+)\.(.+)$")
LEVEL = re.compile(r"^((?:one2one_)?cv[234])\.(\d+)\.(.+)$")  # a head's per-level branches (cv4: OBB's angle)
CLASS_BRANCH = re.compile(r"^(one2one_)?cv3\.\d+\.")
CLASS_CONV = re.compile(r"^(one2one_)?cv3\.\d+\.2\.(weight|bias)$")
#: The stream whose copy of a single-stream layer each stream of the built model takes, in order of preference.
_PREFER = {"rgb": ("rgb", "shared", "ir"), "ir": ("ir", "shared", "rgb"), "shared": ("shared", "rgb", "ir"),
           "fusion": ("fusion",), "attention": ("attention",)}


def find_by_stream(table: dict, src: int, stream: str):
    """``table[(src, s)]`` for the first stream s that ``stream`` prefers (its own, then shared, then the other)."""
    for s in _PREFER[stream]:
        if (src, s) in table:
            return table[(src, s)]
    return None


def grouped(sd: dict[str, torch.Tensor]) -> dict[int, dict[str, str]]:
    """``model.{i}.{rest}`` keys by layer: ``{i: {rest: key}}``."""
    out: dict[int, dict[str, str]] = {}
    for key in sd:
        m = KEY.match(key)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = key
    return out


def shape_of(t: torch.Tensor) -> str:
    """A tensor's shape as the report writes it: ``[16,3,3,3]``."""
    return "[" + ",".join(map(str, t.shape)) + "]"


def adapt_stem(w: torch.Tensor, dst: torch.Tensor, stream: str) -> tuple[torch.Tensor, str] | None:
    """The pretrained first conv's weight (out, 3, k, k) for a stem reading ``dst.shape[1]`` channels."""
    if w.ndim != 4 or w.shape[1] != 3 or dst.ndim != 4 or (dst.shape[0], *dst.shape[2:]) != (w.shape[0], *w.shape[2:]):
        return None
    gray = w.sum(1, keepdim=True)  # a gray IR image answers like the RGB model to the same gray in RGB
    if stream == "ir" and dst.shape[1] == 1:
        return gray, "sum over the 3 RGB input channels -> 1 IR channel"
    if stream == "shared" and dst.shape[1] in (4, 6):  # data-level: one stem reads 3 + C_ir channels
        ir = gray if dst.shape[1] == 4 else w
        return torch.cat([w, ir], 1) * 0.5, (f"RGB part = 1/2 the pretrained weight, IR part = 1/2 "
                                             f"{'its sum over RGB channels' if dst.shape[1] == 4 else 'the same'}")
    return None


def average_fusion(w: torch.Tensor) -> torch.Tensor:
    """A fusion conv's weight (C, 2C, 1, 1) mapping [rgb; ir] to (rgb + ir) / 2, channel by channel."""
    c = w.shape[0]
    eye = torch.eye(c, dtype=w.dtype, device=w.device)
    return (torch.cat([eye, eye], 1) * 0.5).reshape(w.shape)


def write_plan(plan: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy each (model tensor, value) pair of a mapping's plan, in order, without recording gradients."""
    with torch.no_grad():
        for t, value in plan:
            t.copy_(value)
