"""Cross-modal attention layers of DEYOLO and YOLOFuse's DEFA, written from their documented behaviour.

- ``DECA`` (dual-enhancement channel attention): each stream is re-weighted per channel by a gate made
  from the *other* stream's channel descriptor (squeeze-excitation, shared between the streams) times a
  global descriptor of both streams together (a 3x3 conv of the concatenated pair, pooled to 1x1 by a
  learned strided depthwise pyramid made for a ``kernel_size`` x ``kernel_size`` map).
- ``DEPA`` (dual-enhancement spatial attention): each stream is re-weighted per pixel by a map made
  from the *other* stream (two kernel sizes, merged by a 5x5 conv) plus a map of both streams.
- ``DEA`` = DECA then DEPA; its output is ``sigmoid(rgb' + ir')``, one map with the streams' width.
- ``DEAPair``: DECA then DEPA, the re-weighted pair returned concatenated (``2C`` channels) for a fusion
  conv to mix: the attention of ``--fusion dea`` (``variants.py``), with a 1x1 joint conv in DECA.
- ``DEFA`` (dynamic enhanced fusion attention, YOLOFuse): RGB tokens attend to IR tokens; the result is
  filtered by a k x k kernel predicted per image, added to each stream through a per-pixel gate
  computed from both, and the sum is refined by a 3x3 conv.
- ``C2f_BiFocus``: Ultralytics' ``C2f`` followed by DEYOLO's bi-direction focus: the map's two
  checkerboard phases are packed horizontally and vertically, convolved, scattered back, and merged
  with the input by a depthwise-separable conv.

Ultralytics' parser (used unmodified) only knows the widths of its own layers and cannot give a layer
of ours two inputs. So :func:`expand_rows` rewrites each row naming one of these modules into rows it
does understand: a ``Concat`` of the two inputs (two-input modules), the module (told its widths,
computed here the parser's way), and an ``Index`` that declares its output width. The built model
therefore has one or two layers more per such row than the YAML lists; the stored YAML is the user's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import C2f, Conv
from ultralytics.utils.ops import make_divisible

from yolofuse_scale.model.align import FlowAlignLayer
from yolofuse_scale.model.safe_config.limits import ModelConfigError

# ----------------------------------------------------------------------------------------------------
# DEYOLO: DECA, DEPA, DEA


class DECA(nn.Module):
    """Cross-modal channel attention on an ``(rgb, ir)`` pair of ``(B, C, H, W)`` maps -> the pair re-weighted.

    Args:
        channels: C, the width of both maps.
        kernel_size: the map side the learned pooling pyramid is made for (DEYOLO: the side at 640 px,
            80/40/20 at P3/P4/P5); a map of another size is first average-resampled to it.
        p_kernel: the pyramid's first two kernel sizes (= strides); the third is ``kernel_size / (k1 * k2)``.
        reduction: squeeze-excitation reduction of the (shared) channel descriptor.
        joint_kernel: kernel of the conv that mixes the concatenated pair into the global descriptor
            (DEYOLO: 3). Its output is pooled to one value per channel, and the pyramid's first depthwise
            kernel already sees a neighbourhood, so 1 keeps the descriptor at 1/9 of the cost: 2C^2 weights
            and MACs per pixel instead of 18C^2, the largest term of DEA at full width.
    """

    def __init__(self, channels: int = 512, kernel_size: int = 80, p_kernel: list[int] | None = None,
                 reduction: int = 16, joint_kernel: int = 3):
        super().__init__()
        k1, k2 = p_kernel or (5, 4)
        k3 = kernel_size // (k1 * k2)
        if k3 < 1:
            raise ValueError(f"DECA kernel_size {kernel_size} is smaller than its pyramid's kernels {k1}x{k2}")
        self.kernel_size = kernel_size
        hidden = max(channels // reduction, 1)
        self.excite = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                    nn.Linear(hidden, channels, bias=False), nn.Sigmoid())
        self.joint = Conv(2 * channels, channels, joint_kernel)
        # Depthwise, stride = kernel: a learned pooling that sees each pixel once (cheap: C*k^2 weights each).
        self.pyramid = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(channels, channels, k, k, groups=channels), nn.SiLU()) for k in (k1, k2, k3)
        ))

    def _global(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        g = self.joint(torch.cat((rgb, ir), 1))
        if tuple(g.shape[-2:]) != (self.kernel_size,) * 2:
            # Any other size is resampled to the nominal grid first, so the pyramid (its weights) serves at
            # every image size; DEYOLO averages instead there, which leaves the pyramid without gradient:
            # DDP (find_unused_parameters off) and ZeRO would stop on it at any size but 640 px.
            g = F.adaptive_avg_pool2d(g, self.kernel_size)
        return self.pyramid(g).mean((2, 3), keepdim=True)  # 1x1 already when kernel_size = k1 * k2 * k3

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        rgb, ir = x
        b, c = rgb.shape[:2]
        d_rgb = self.excite(rgb.mean((2, 3))).view(b, c, 1, 1)
        d_ir = self.excite(ir.mean((2, 3))).view(b, c, 1, 1)
        g = self._global(rgb, ir)
        return rgb * torch.sigmoid(d_ir * g), ir * torch.sigmoid(d_rgb * g)


class DEPA(nn.Module):
    """Cross-modal spatial attention on an ``(rgb, ir)`` pair -> the pair re-weighted per pixel.

    Args:
        channels: C, the width of both maps.
        m_kernel: the two kernel sizes whose one-channel responses make a stream's spatial map.
    """

    def __init__(self, channels: int = 512, m_kernel: list[int] | None = None):
        super().__init__()
        ka, kb = m_kernel or (3, 7)
        self.rgb_maps = nn.ModuleList((Conv(channels, 1, ka), Conv(channels, 1, kb)))
        self.ir_maps = nn.ModuleList((Conv(channels, 1, ka), Conv(channels, 1, kb)))
        self.rgb_merge, self.ir_merge = Conv(2, 1, 5), Conv(2, 1, 5)
        self.rgb_joint, self.ir_joint = Conv(channels, 1, 3), Conv(channels, 1, 3)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        rgb, ir = x
        s_rgb = self.rgb_merge(torch.cat([m(rgb) for m in self.rgb_maps], 1))
        s_ir = self.ir_merge(torch.cat([m(ir) for m in self.ir_maps], 1))
        joint = torch.sigmoid(self.rgb_joint(rgb) + self.ir_joint(ir))
        return rgb * torch.sigmoid(joint + s_ir), ir * torch.sigmoid(joint + s_rgb)


class DEA(nn.Module):
    """DEYOLO's dual-enhancement attention: DECA, then DEPA, then ``sigmoid(rgb + ir)`` -> ``(B, C, H, W)``."""

    def __init__(self, channels: int = 512, kernel_size: int = 80, p_kernel: list[int] | None = None,
                 m_kernel: list[int] | None = None, reduction: int = 16, joint_kernel: int = 3):
        super().__init__()
        self.deca = DECA(channels, kernel_size, p_kernel, reduction, joint_kernel)
        self.depa = DEPA(channels, m_kernel)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # noqa: D102
        rgb, ir = self.depa(self.deca(x))
        return torch.sigmoid(rgb + ir)


class DEAPair(DEA):
    """DEA's two cross-modal attentions without its merge: ``(rgb, ir)`` -> ``cat(rgb', ir')``, ``(B, 2C, H, W)``.

    DEA's own output, ``sigmoid(rgb' + ir')``, is a gate in (0, 1) with the streams' width, not features;
    ``--fusion dea`` keeps both re-weighted streams and lets the same 1x1 fusion conv as ``mid`` mix them
    (and, with ``--pretrained``, start as their average). Same arguments as :class:`DEA`; the joint conv
    defaults to 1x1 here (see :class:`DECA`).
    """

    def __init__(self, channels: int = 512, kernel_size: int = 80, p_kernel: list[int] | None = None,
                 m_kernel: list[int] | None = None, reduction: int = 16, joint_kernel: int = 1):
        super().__init__(channels, kernel_size, p_kernel, m_kernel, reduction, joint_kernel)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # noqa: D102
        return torch.cat(self.depa(self.deca(x)), 1)


# ----------------------------------------------------------------------------------------------------
# YOLOFuse: DEFA


class DEFA(nn.Module):
    """Dynamic enhanced fusion attention on an ``(rgb, ir)`` pair -> one ``(B, C, H, W)`` map.

    Attention is over all H*W tokens (memory ~ heads * (H*W)^2 without a fused kernel; PyTorch's
    scaled-dot-product attention keeps it linear on GPU), so it is meant for P3 and coarser maps.

    Args:
        channels: C, the width of both maps (a multiple of ``num_heads``).
        reduction: the gate's hidden width is ``max(C // reduction, 1)``.
        num_heads: attention heads.
        dynamic_k: side of the per-image kernel.
    """

    def __init__(self, channels: int = 512, reduction: int = 16, num_heads: int = 8, dynamic_k: int = 5):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"DEFA: {channels} channels do not split into {num_heads} attention heads")
        self.k = dynamic_k
        self.kernel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 4 * channels, 1), nn.ReLU(),
                                    nn.Conv2d(4 * channels, dynamic_k * dynamic_k, 1))
        self.attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(nn.Conv2d(2 * channels, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, 2, 3, padding=1), nn.Sigmoid())
        self.refine = Conv(channels, channels, 3)

    def _dynamic_filter(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Correlate every channel of image b with image b's own k x k kernel (a grouped conv, one group
        per (image, channel): no k^2-fold unfolded copy of the map)."""
        b, c, h, w = x.shape
        kernel = weights.view(b, 1, 1, self.k, self.k).expand(b, c, 1, self.k, self.k).reshape(b * c, 1, self.k, self.k)
        return F.conv2d(x.reshape(1, b * c, h, w), kernel, padding=self.k // 2, groups=b * c).view(b, c, h, w)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # noqa: D102
        rgb, ir = x
        b, c, h, w = rgb.shape
        weights = self.kernel(rgb + ir).flatten(1).softmax(1)  # (B, k*k), sums to 1
        q, kv = rgb.flatten(2).transpose(1, 2), ir.flatten(2).transpose(1, 2)  # (B, HW, C)
        cross = self.attn(q, kv, kv, need_weights=False)[0].transpose(1, 2).reshape(b, c, h, w)
        cross = self._dynamic_filter(cross, weights)
        g_rgb, g_ir = self.gate(torch.cat((rgb, ir), 1)).chunk(2, 1)
        return self.refine((rgb + g_ir * cross) + (ir + g_rgb * cross))


# ----------------------------------------------------------------------------------------------------
# DEYOLO: C2f_BiFocus


def _pack_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two checkerboard phases of ``(B, C, H, W)``, each packed along W into ``(B, C, H, W/2)``:
    phase 0 holds the pixels with row + column even, phase 1 the others, rows kept in place."""
    b, c, h, w = x.shape
    even, odd = x[:, :, 0::2], x[:, :, 1::2]
    p0 = torch.stack((even[..., 0::2], odd[..., 1::2]), 3).reshape(b, c, h, w // 2)
    p1 = torch.stack((even[..., 1::2], odd[..., 0::2]), 3).reshape(b, c, h, w // 2)
    return p0, p1


def _unpack_rows(p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_pack_rows`: scatter the two packed phases back to their pixels."""
    b, c, h, half = p0.shape
    even = torch.stack((p0[:, :, 0::2], p1[:, :, 0::2]), 4).reshape(b, c, h // 2, 2 * half)
    odd = torch.stack((p1[:, :, 1::2], p0[:, :, 1::2]), 4).reshape(b, c, h // 2, 2 * half)
    return torch.stack((even, odd), 3).reshape(b, c, h, 2 * half)


class BiFocus(nn.Module):
    """Bi-direction focus: each checkerboard phase, packed horizontally and vertically, gets a 3x3 conv of
    its own (pixels two apart become neighbours: a wider view at full resolution); the four results go
    back to their pixels, and ``[x, horizontal, vertical]`` is merged by a depthwise-separable conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.h = nn.ModuleList(Conv(channels, channels, 3) for _ in range(2))
        self.v = nn.ModuleList(Conv(channels, channels, 3) for _ in range(2))
        self.depthwise = Conv(3 * channels, 3 * channels, 3, g=3 * channels)
        self.pointwise = Conv(3 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"BiFocus needs an even map size, got {tuple(x.shape[-2:])} (image size a multiple of 8)")
        horizontal = _unpack_rows(*(conv(p) for conv, p in zip(self.h, _pack_rows(x))))
        t = x.transpose(-1, -2)  # vertical packing = row packing of the transposed map
        vertical = _unpack_rows(*(conv(p.transpose(-1, -2)).transpose(-1, -2)
                                  for conv, p in zip(self.v, _pack_rows(t)))).transpose(-1, -2)
        return self.pointwise(self.depthwise(torch.cat((x, horizontal, vertical), 1)))


class C2f_BiFocus(nn.Module):  # noqa: N801 - the YAML name DEYOLO's configs use
    """Ultralytics' ``C2f(c1, c2, n, shortcut, g, e)`` followed by :class:`BiFocus` over its output."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c2f = C2f(c1, c2, int(n), shortcut, g, e)
        self.bifocus = BiFocus(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.bifocus(self.c2f(x))


# ----------------------------------------------------------------------------------------------------
# The layers the rewritten rows name: each returns a one-element list, for the Index row after it.


class DEALayer(nn.Module):
    """A YAML ``DEA`` row: reads ``Concat(rgb, ir)`` and returns ``[DEA((rgb, ir))]``."""

    def __init__(self, c_rgb: int, c_ir: int, *args: Any):
        super().__init__()
        self.split = (c_rgb, c_ir)
        self.block = DEA(c_rgb, *args)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [self.block(x.split(self.split, 1))]


class DEAPairLayer(DEALayer):
    """A YAML ``DEAPair`` row: reads ``Concat(rgb, ir)`` and returns ``[DEAPair((rgb, ir))]`` (2C channels)."""

    def __init__(self, c_rgb: int, c_ir: int, *args: Any):
        nn.Module.__init__(self)
        self.split = (c_rgb, c_ir)
        self.block = DEAPair(c_rgb, *args)


class DEFALayer(DEALayer):
    """A YAML ``DEFA`` row: reads ``Concat(rgb, ir)`` and returns ``[DEFA((rgb, ir))]``."""

    def __init__(self, c_rgb: int, c_ir: int, *args: Any):
        nn.Module.__init__(self)
        self.split = (c_rgb, c_ir)
        self.block = DEFA(c_rgb, *args)


class C2fBiFocusLayer(nn.Module):
    """A YAML ``C2f_BiFocus`` row: ``repeats`` blocks in a row (the first c1 -> c2, the others c2 -> c2)."""

    def __init__(self, c1: int, c2: int, repeats: int, *args: Any):
        super().__init__()
        self.blocks = nn.Sequential(*(C2f_BiFocus(c1 if i == 0 else c2, c2, *args) for i in range(repeats)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        return [self.blocks(x)]


#: YAML name -> the layer class a rewritten row names (registered in Ultralytics' parser namespace).
ROW_LAYERS = {"DEA": DEALayer, "DEAPair": DEAPairLayer, "DEFA": DEFALayer, "C2f_BiFocus": C2fBiFocusLayer,
              "FlowAlign": FlowAlignLayer}
PAIR_MODULES = frozenset({"DEA", "DEAPair", "DEFA", "FlowAlign"})
#: Pair modules that return both streams concatenated (twice the width their first argument gives).
CONCAT_PAIR_MODULES = frozenset({"DEAPair"})
#: Modules whose FLOPs are not proportional to the image area, counted by model_summary at the real size:
#: DEFA's attention grows with the area squared; DECA's pyramid always works on its nominal grid.
QUADRATIC_MODULES = (DEFA, DECA)
#: Ultralytics' layers whose first argument is their output width, scaled by the model's width.
_SCALED_WIDTH = frozenset({"Conv", "C2f", "C3k2", "C2PSA", "SPPF"})


class _Widths:
    """Output width of each row, by the rules Ultralytics' ``parse_model`` applies to the allowed modules."""

    def __init__(self, d: dict[str, Any], ch_in: int):
        scales = d.get("scales")
        if scales:
            self.depth, self.width, self.max_channels = scales[d.get("scale") or next(iter(scales))]
        else:
            self.depth, self.width = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
            self.max_channels = math.inf
        self.ch_in = ch_in
        self.out: list[int] = []

    def scaled(self, c: int) -> int:
        return make_divisible(min(c, self.max_channels) * self.width, 8)

    def repeats(self, n: int) -> int:
        return max(round(n * self.depth), 1) if n > 1 else n

    def of(self, i: int, f: int) -> int:
        """Width of input ``f`` (absolute or relative) of row ``i``."""
        j = i + f if f < 0 else f
        return self.ch_in if j < 0 else self.out[j]

    def add(self, i: int, f: Any, m: str, args: list[Any]) -> None:
        if m in _SCALED_WIDTH:
            c = self.scaled(args[0])
        elif m == "Concat":
            c = sum(self.of(i, x) for x in f)
        elif m == "Index" or m in ROW_LAYERS:
            c = args[0]  # already resolved by the caller (Index: ModalitySelector's rewrite; ours: below)
        else:
            c = self.of(i, f) if isinstance(f, int) else None  # Upsample, input modules; Detect is read by no one
        self.out.append(c)


def expansion(m: str) -> tuple[int, int]:
    """What :func:`expand_rows` makes of one row naming ``m``: (layers built, position of the module's own
    layer among them). A pair module: Concat, module, Index; another of ours: module, Index; else the row."""
    if m in PAIR_MODULES:
        return 3, 1
    return (2, 0) if m in ROW_LAYERS else (1, 0)


def expand_rows(d: dict[str, Any], ch_in: int, where: str = "model config",
                expanders: dict[str, Callable[..., tuple[int, list[list[Any]]]]] | None = None) -> None:
    """Rewrite, in place, the rows of ``d`` that name a module of this file into rows Ultralytics' parser
    builds (see the module docstring); ``from`` indices are renumbered to match. A dictionary without
    such rows is left exactly as it is.

    ``expanders`` rewrite rows naming other modules (rgbt.py's): YAML name -> a function of
    ``(row index, from, renumbered from, repeats, args, widths, where)`` returning (output width, rows)."""
    expanders = expanders or {}
    rows = list(d.get("backbone", [])) + list(d.get("head", []))
    if not any(r[2] in ROW_LAYERS or r[2] in expanders for r in rows):
        return
    widths = _Widths(d, ch_in)
    new_index: list[int] = []  # old row -> the new row holding its output
    sections: dict[str, list[list[Any]]] = {"backbone": [], "head": []}
    n_backbone = len(d.get("backbone", []))
    count = 0
    for i, (f, n, m, args) in enumerate(rows):
        def remap(x: int, i: int = i) -> int:
            j = i + x if x < 0 else x
            return -1 if j < 0 else new_index[j]

        nf = [remap(x) for x in f] if isinstance(f, list) else remap(f)
        if m in ROW_LAYERS:
            out, expanded = _expand(i, f, nf, n, m, list(args), widths, f"{where}: layer {i} {m}")
            widths.out.append(out)
        elif m in expanders:
            out, expanded = expanders[m](i, f, nf, n, list(args), widths, f"{where}: layer {i} {m}")
            widths.out.append(out)
        else:
            expanded = [[nf, n, m, args]]
            widths.add(i, f, m, args)
        for k in range(1, len(expanded)):  # the rows of one expansion read the row before them
            expanded[k][0] = count + k - 1
        count += len(expanded)
        new_index.append(count - 1)
        sections["backbone" if i < n_backbone else "head"].extend(expanded)
    d["backbone"], d["head"] = sections["backbone"], sections["head"]


def _expand(i: int, f: Any, nf: Any, n: int, m: str, args: list[Any], widths: _Widths,
            where: str) -> tuple[int, list[list[Any]]]:
    """(output width, rows) for one row naming one of our modules."""
    if not args or not isinstance(args[0], int):
        raise ModelConfigError(f"{where}: the first argument must be the output width, got {args!r}")
    c_out = widths.scaled(args[0])
    if m in PAIR_MODULES:
        if not (isinstance(f, list) and len(f) == 2) or n != 1:
            raise ModelConfigError(f"{where}: expects from: [rgb_layer, ir_layer] and repeats 1, "
                                   f"got from {f!r}, repeats {n}")
        c_rgb, c_ir = (widths.of(i, x) for x in f)
        if not c_rgb == c_ir == c_out:
            raise ModelConfigError(f"{where}: its inputs have {c_rgb} and {c_ir} channels, but its width {args[0]} "
                             f"scales to {c_out}; the three must be equal")
        c_pair = 2 * c_out if m in CONCAT_PAIR_MODULES else c_out
        return c_pair, [[nf, 1, "Concat", [1]], [None, 1, m, [c_rgb, c_ir, *args[1:]]], [None, 1, "Index", [c_pair, 0]]]
    if not isinstance(f, int):
        raise ModelConfigError(f"{where}: expects one input layer, got from {f!r}")
    c_in = widths.of(i, f)
    return c_out, [[nf, 1, m, [c_in, c_out, widths.repeats(n), *args[1:]]], [None, 1, "Index", [c_out, 0]]]
