"""Feature alignment of IR to RGB before the two are joined: the ``-align`` variants (``variants.py``).

Why: a real RGB+IR rig is not registered pixel for pixel (two lenses side by side, a calibration that drifts, a
parallax that changes with depth), and a fusion that joins the two maps position by position then mixes a person's
IR response with the background beside it in RGB. The labels are in RGB's frame, so it is IR that has to move.

What :class:`FlowAlign` does, at one level (P2, or each of P3/P4/P5): a small conv head reads both maps side by
side and predicts a 2-D offset per position (a flow field, in cells of that map); the IR map is resampled at its
positions plus that offset (bilinear, ``grid_sample``), and the result goes to the variant's join (``early``'s
and ``mid``'s concatenation + 1x1 conv; ``variants._mid`` can put it before ``dea``'s attention too, no variant
does yet) in place of the raw IR map. The offset conv starts at zero, so a
new model starts as the variant without alignment, and the offsets grow only as far as the detection loss asks:
no alignment labels, no extra loss.

Implemented from the ideas of these papers, not from any code:

- deformable convolution (Dai et al., "Deformable Convolutional Networks", ICCV 2017; Zhu et al., DCNv2, CVPR
  2019): offsets predicted by a conv from the features themselves, zero-initialised, trained by the task loss
  alone, with bilinear sampling at the offset positions;
- feature-level alignment of one frame's features to another's by predicted offsets before they are fused (Tian
  et al., "TDAN: Temporally-Deformable Alignment Network", CVPR 2020; Wang et al., EDVR's PCD alignment, CVPRW
  2019): the offsets are predicted from the concatenation of the reference (here RGB) and the moving (IR) maps;
- the weakly aligned RGB-T setting: Zhang et al., "Weakly Aligned Cross-Modal Learning for Multispectral
  Pedestrian Detection" (AR-CNN, ICCV 2019) shows that position shifts between the modalities cost detectors and
  aligns the sensed modality's features to the reference one by predicted shifts (per region there); DAMSDet
  (Guo et al., ECCV 2024) and C2Former (Yuan et al., IEEE TGRS 2024) sample the other modality at learned offsets
  for the same reason, inside a DETR's deformable attention. Here the offsets are dense and per level, which fits a
  YOLO's convolutional neck and costs a few convs.

Cost per level of width C (hidden width h = max(C / 4, 8)): a 1x1 conv 2C -> h, a 3x3 conv h -> h and a 3x3 conv
h -> 2, about 2Ch + 9h^2 weights (~70k at C = 256), and one bilinear resampling of the IR map; the offsets are
bounded to 2 cells (``FlowAlign``'s ``reach``), a position outside the map reads its border.
ONNX: ``grid_sample`` is the GridSample operator (opset 16+; the exporter's default is 18).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv


def cell_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, h, w, 2) ``grid_sample`` coordinates (x, y) of the cell centres of an h x w map (align_corners=False):
    sampling there gives the map back."""
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]


def warp_by_flow(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) resampled at each cell plus ``flow`` (B, 2, H, W: x then y offsets, in cells), bilinear;
    positions outside the map read its border; returned in ``x``'s dtype.

    The grid and the sampling are float32 whatever the model's precision: in bf16 (8 bits of mantissa) a cell
    centre's coordinate on an 80-cell map is off by up to a third of a cell, so even zero offsets blurred the
    map (values off by up to 0.5 on unit-variance maps, under ``--mixed-precision bf16`` or a bf16 DeepSpeed
    model). It costs one float32 copy of the IR map per level."""
    _, _, h, w = x.shape
    scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=torch.float32)
    grid = cell_grid(h, w, x.device, torch.float32) + flow.float().permute(0, 2, 3, 1) * scale
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


class FlowAlign(nn.Module):
    """``(rgb, ir)`` maps of width C -> the IR map warped onto RGB's positions by a predicted flow, ``(B, C, H, W)``.

    Args:
        channels: C, the width of both maps.
        hidden: width of the offset head (default ``max(C // 4, 8)``).
        reach: the largest offset, in cells of this map (``reach * tanh(raw / reach)``: the identity near 0, the
            same gradient at the start). Unbounded, the coarse levels' offsets ran away in training (up to 20
            and 47 cells on 8x8 and 4x4 maps of the hard synthetic scene: IR read from the border, a way to
            switch it off rather than to align it); 2 cells is 16/32/64 px at P3/P4/P5.
    """

    def __init__(self, channels: int, hidden: int | None = None, reach: float = 2.0):
        super().__init__()
        hidden = max(channels // 4, 8) if hidden is None else hidden
        self.reach = float(reach)
        self.squeeze = Conv(2 * channels, hidden, 1)
        self.context = Conv(hidden, hidden, 3)
        self.offset = nn.Conv2d(hidden, 2, 3, padding=1)
        nn.init.zeros_(self.offset.weight)  # the identity at the start: the variant without alignment
        nn.init.zeros_(self.offset.bias)

    def flow(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) float32 offsets, in cells of this map, at which IR is sampled for each RGB cell."""
        raw = self.offset(self.context(self.squeeze(torch.cat((rgb, ir), 1)))).float()  # 2 channels: cheap
        return self.reach * torch.tanh(raw / self.reach)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # noqa: D102
        rgb, ir = x
        return warp_by_flow(ir, self.flow(rgb, ir))


class FlowAlignLayer(nn.Module):
    """A YAML ``FlowAlign`` row (attention.py's row rewriting): reads ``Concat(rgb, ir)`` and returns
    ``[FlowAlign((rgb, ir))]``, the aligned IR map (C channels)."""

    def __init__(self, c_rgb: int, c_ir: int, *args: Any):
        super().__init__()
        self.split = (c_rgb, c_ir)
        self.block = FlowAlign(c_rgb, *args)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [self.block(x.split(self.split, 1))]
