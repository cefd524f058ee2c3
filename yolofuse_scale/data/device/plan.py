"""``--loader device``, the plan: every random choice of a sample as a tree of image operations that render themselves.

A worker runs the CPU pipeline's own composition (``augment.PairAugment``, seeded by the same ``(seed, epoch,
index)``) with the transform classes of :data:`RECORDING`: the same draws from the same generators in the same
order, and the same box updates (clip, ``box_candidates``), but each image operation is recorded instead of done,
into a tree of nodes:

- :class:`Source` (a pair resized so its long side is imgsz, as the CPU path's ``resized_pair``) and
  :class:`Letterbox` (validation, ``--no-augment``) are the leaves, the pairs whose files the worker ships;
- :class:`Mosaic`, :class:`Warp` (the 3x3 matrix of ``RandomPerspective``) and :class:`Blend` (mixup) combine them;

and the per-sample draws on the finished canvas (HSV gains, IR gain, flip, the IR misregistration's matrix) into
``Plan.photometric``, applied to the whole batch by the
recording classes themselves (``apply``). Each node knows where its pixels come from (``sources``), what size it
renders to (``out_hw``), its outermost warps (``warps``: the device batches those, ``render.DeviceAugment``) and how
to render itself from a :class:`Frames` (the batch's decoded pairs), every stage rounded to integers as the CPU
path's uint8 stages. A new image operation is one node class here and its recording transform; a new photometric
one is one recording class with its ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from ultralytics.data.augment import RandomPerspective

from yolofuse_scale.data.augment import (
    _RGBHSV,
    Transforms,
    _IRGain,
    _IRMisregister,
    _PairFlip,
    _PairMixUp,
    _PairMosaic,
)
from yolofuse_scale.data.transforms import PAD_VALUE


class Frames(Protocol):
    """What a node renders from: the batch's decoded pairs and what was already computed from them
    (``render.DeviceAugment`` provides it)."""

    def pair(self, index: int) -> torch.Tensor:
        """(3 + C_ir, H, W) float pair ``index`` at its file size."""

    def resized(self, index: int, hw: tuple[int, int]) -> torch.Tensor:
        """Pair ``index`` resized to ``hw`` (once per batch)."""

    def warped(self, node: Warp) -> torch.Tensor:
        """``node`` warped (batched with the batch's other warps when they are known ahead)."""


def resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) float -> (C, h, w), bilinear with half-pixel centres and no antialias (cv2's INTER_LINEAR), rounded."""
    if tuple(x.shape[1:]) == tuple(hw):
        return x
    return F.interpolate(x[None], size=hw, mode="bilinear", align_corners=False).round_().clamp_(0, 255)[0]


# ------------------------------------------------------------------------------------------- nodes
class Node:
    """A plan node; the subclasses below say how they render."""

    def sources(self) -> Iterator[int]:
        """The pair indices whose pixels this tree reads."""
        raise NotImplementedError

    def out_hw(self) -> tuple[int, int]:
        """The (h, w) this tree renders to, read from the plan alone."""
        raise NotImplementedError

    def warps(self) -> Iterator[Warp]:
        """The outermost warps of this tree (a warp's own input is rendered, nested warps included, before it)."""
        return iter(())

    def render(self, frames: Frames) -> torch.Tensor:
        """(C, h, w) float, integer-valued, 0..255."""
        raise NotImplementedError

    def paste_shifted(self, frames: Frames, canvas: torch.Tensor) -> None:
        """This tree rendered, minus 114, into the top left of ``canvas`` (a warp's input; exact: integer values)."""
        x = self.render(frames)
        torch.sub(x, PAD_VALUE, out=canvas[:, : x.shape[1], : x.shape[2]])


@dataclass
class Source(Node):
    """Pair ``index`` resized so its long side is imgsz: ``hw`` = (h, w) as the CPU path's ``resized_pair``."""

    index: int
    hw: tuple[int, int]

    def sources(self) -> Iterator[int]:
        yield self.index

    def out_hw(self) -> tuple[int, int]:
        return self.hw

    def render(self, frames: Frames) -> torch.Tensor:
        return frames.resized(self.index, self.hw)


@dataclass
class Letterbox(Node):
    """Pair ``index`` (original ``hw``) resized to (nh, nw) and pasted at (top, left) on a grey imgsz canvas."""

    index: int
    hw: tuple[int, int]
    nw: int
    nh: int
    left: int
    top: int
    imgsz: int

    def sources(self) -> Iterator[int]:
        yield self.index

    def out_hw(self) -> tuple[int, int]:
        return self.imgsz, self.imgsz

    def render(self, frames: Frames) -> torch.Tensor:
        x = resize(frames.pair(self.index), (self.nh, self.nw))
        out = x.new_full((x.shape[0], self.imgsz, self.imgsz), float(PAD_VALUE))
        out[:, self.top: self.top + self.nh, self.left: self.left + self.nw] = x
        return out


Tile = tuple[Node, tuple[int, int, int, int], tuple[int, int, int, int]]


@dataclass
class Mosaic(Node):
    """A grey ``size x size`` canvas; tiles: (source, (y1a, y2a, x1a, x2a) on the canvas, (y1b, y2b, x1b, x2b) in it)"""

    size: int
    tiles: list[Tile]

    def sources(self) -> Iterator[int]:
        for src, _, _ in self.tiles:
            yield from src.sources()

    def out_hw(self) -> tuple[int, int]:
        return self.size, self.size

    def warps(self) -> Iterator[Warp]:
        for src, _, _ in self.tiles:
            yield from src.warps()

    def render(self, frames: Frames) -> torch.Tensor:
        out = None
        for src, (y1a, y2a, x1a, x2a), (y1b, y2b, x1b, x2b) in self.tiles:
            x = src.render(frames)
            if out is None:
                out = x.new_full((x.shape[0], self.size, self.size), float(PAD_VALUE))
            out[:, y1a:y2a, x1a:x2a] = x[:, y1b:y2b, x1b:x2b]
        return out

    def paste_shifted(self, frames: Frames, canvas: torch.Tensor) -> None:
        """The tiles straight into the warp's canvas, which is thereby also the mosaic (the rest stays 0, its grey)."""
        for src, (y1a, y2a, x1a, x2a), (y1b, y2b, x1b, x2b) in self.tiles:
            x = src.render(frames)
            torch.sub(x[:, y1b:y2b, x1b:x2b], PAD_VALUE, out=canvas[:, y1a:y2a, x1a:x2a])


@dataclass
class Warp(Node):
    """``src`` warped by the 3x3 ``matrix`` (source -> output pixels, as cv2) to an output of ``size`` = (w, h)."""

    src: Node
    matrix: np.ndarray
    size: tuple[int, int]
    perspective: bool

    def sources(self) -> Iterator[int]:
        return self.src.sources()

    def out_hw(self) -> tuple[int, int]:
        return self.size[1], self.size[0]

    def warps(self) -> Iterator[Warp]:
        yield self

    def render(self, frames: Frames) -> torch.Tensor:
        return frames.warped(self)


@dataclass
class Blend(Node):
    """MixUp: ``floor(a * r + b * (1 - r))``, as Ultralytics' ``astype(np.uint8)``."""

    a: Node
    b: Node
    r: float

    def sources(self) -> Iterator[int]:
        yield from self.a.sources()
        yield from self.b.sources()

    def out_hw(self) -> tuple[int, int]:
        return self.a.out_hw()

    def warps(self) -> Iterator[Warp]:
        yield from self.a.warps()
        yield from self.b.warps()

    def render(self, frames: Frames) -> torch.Tensor:
        a, b = self.a.render(frames), self.b.render(frames)
        return (a * self.r + b * (1 - self.r)).floor_()


@dataclass
class Plan:
    """One sample: the image tree, then the photometric draws by their recording class's ``key`` (absent: off)."""

    root: Node
    photometric: dict[str, Any] = field(default_factory=dict)
    sources: list[int] = field(default_factory=list)  # the pair indices whose files the tree reads


# ------------------------------------------------------------------------------- the recording transforms
def shape_only(h: int, w: int, c: int) -> np.ndarray:
    """A zero-byte stand-in image: the transforms read its shape, never its pixels (a broadcast view)."""
    return np.broadcast_to(np.zeros((), np.uint8), (h, w, c))


def _record(labels: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    labels.setdefault("photometric", {})[key] = value
    return labels


class _PlanMosaic(_PairMosaic):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        tiles = [(it["labels_patch"]["plan"], (it["y1a"], it["y2a"], it["x1a"], it["x2a"]),
                  (it["y1b"], it["y2b"], it["x1b"], it["x2b"])) for it in params["layout"]]
        s = 2 * self.imgsz
        labels["plan"] = Mosaic(s, tiles)
        labels["img"] = shape_only(s, s, labels["img"].shape[2])
        return labels


class _PlanPerspective(RandomPerspective):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        w, h = params["size"]
        labels["plan"] = Warp(labels["plan"], np.asarray(params["M"], np.float64), (w, h), bool(self.perspective))
        labels["img"] = shape_only(h, w, labels["img"].shape[2])
        labels["resized_shape"] = (h, w)
        return labels


class _PlanMixUp(_PairMixUp):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        labels["plan"] = Blend(labels["plan"], labels["mix_labels"][0]["plan"], float(params["r"]))
        return labels


class _PlanIRMisregister(_IRMisregister):
    """``augment._IRMisregister``'s draw (its 2x3 matrix), recorded; on the device, the IR channels of the samples
    that drew one warped by it in one ``grid_sample`` (:func:`warp_affine_114`)."""

    key = "ir_warp"

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        return _record(labels, self.key, self.draw(*labels["img"].shape[:2])) if self.on else labels

    @staticmethod
    def apply(imgs: torch.Tensor, values: list[np.ndarray | None]) -> torch.Tensor:
        picked = [i for i, v in enumerate(values) if v is not None]
        if picked:
            ir = imgs[picked, 3:]
            imgs[picked, 3:] = warp_affine_114(ir, np.stack([values[i] for i in picked]))
        return imgs


def warp_affine_114(x: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
    """cv2.warpAffine(INTER_LINEAR, border 114, same size) of each (C, H, W) float image of ``x`` by its 2x3
    ``matrices`` (cv2's: source -> output pixels), rounded: output pixel (x, y) samples ``inv(M) @ (x, y, 1)``,
    half-pixel centres (align_corners=False). Elementwise, not a batched matmul, as ``render``'s warps: a sample's
    pixels do not depend on its batch."""
    b, _, h, w = x.shape
    full = np.zeros((b, 3, 3))
    full[:, :2], full[:, 2, 2] = matrices, 1.0
    inv = np.linalg.inv(full)[:, :2]  # (B, 2, 3) output -> source pixels
    inv = inv * np.array([2.0 / w, 2.0 / h]).reshape(1, 2, 1)  # -> grid_sample's [-1, 1], folded into the matrix
    inv[:, :, 2] += np.array([1.0 / w - 1, 1.0 / h - 1])
    a = torch.from_numpy(inv).to(torch.float32).to(x.device)  # (B, 2, 3)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=x.device),
                            torch.arange(w, dtype=torch.float32, device=x.device), indexing="ij")
    col = [a[:, :, k].view(b, 1, 1, 2) for k in range(3)]
    grid = xs[None, :, :, None] * col[0] + ys[None, :, :, None] * col[1] + col[2]  # (B, H, W, 2)
    out = F.grid_sample(x - PAD_VALUE, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.add_(PAD_VALUE).round_().clamp_(0, 255)


class _PlanHSV(_RGBHSV):
    """Ultralytics' ``RandomHSV`` draw (the same call on the same generator), recorded; applied on the device with
    :func:`hsv_jitter`."""

    key = "hsv"

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.on:
            _record(labels, self.key, np.random.uniform(-1, 1, 3) * [self.hsv.hgain, self.hsv.sgain, self.hsv.vgain])
        return labels

    @staticmethod
    def apply(imgs: torch.Tensor, values: list[np.ndarray | None]) -> torch.Tensor:
        if any(v is not None for v in values):
            gains = torch.tensor(np.stack([v if v is not None else np.zeros(3) for v in values]),
                                 dtype=torch.float32, device=imgs.device)
            imgs[:, :3] = hsv_jitter(imgs[:, :3], gains)
        return imgs


class _PlanIRGain(_IRGain):
    """``augment._IRGain``'s draw, recorded; on the device, the IR channels times the gain, clipped and floored."""

    key = "ir_gain"

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        return _record(labels, self.key, self.draw()) if self.gain else labels

    @staticmethod
    def apply(imgs: torch.Tensor, values: list[float | None]) -> torch.Tensor:
        if any(v is not None for v in values):
            g = torch.tensor([1.0 if v is None else v for v in values], device=imgs.device).view(-1, 1, 1, 1)
            imgs[:, 3:] = (imgs[:, 3:] * g).clamp_(0, 255).floor_()
        return imgs


class _PlanFlip(_PairFlip):
    """Ultralytics' ``RandomFlip`` draw and box update, the image flip recorded; on the device, one ``where``."""

    key = "flip"

    def apply_image(self, labels: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return _record(labels, self.key, bool(params["flip"]) and params["direction"] == "horizontal")

    @staticmethod
    def apply(imgs: torch.Tensor, values: list[bool | None]) -> torch.Tensor:
        flip = torch.tensor([bool(v) for v in values], device=imgs.device).view(-1, 1, 1, 1)
        return torch.where(flip, imgs.flip(-1), imgs) if bool(flip.any()) else imgs


#: ``PairAugment``'s composition with every image operation recorded into ``labels["plan"]`` (and
#: ``labels["photometric"]``) and no pixel touched.
RECORDING = Transforms(mosaic=_PlanMosaic, affine=_PlanPerspective, mixup=_PlanMixUp,
                       photometric=(_PlanHSV, _PlanIRGain, _PlanFlip, _PlanIRMisregister))


def hsv_jitter(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Ultralytics' ``RandomHSV`` look-up tables on (B, 3, H, W) float 0..255 with per-sample gains (B, 3).

    As the CPU path (which hands RGB to cv2's BGR conversion), channel 0 is read as blue: the hue shift
    runs the same way round the wheel in both pipelines. cv2's uint8 HSV (H in 0..179, S and V in
    0..255) is reproduced with rounding, then each table, then HSV -> RGB in float, rounded.
    """
    b, g, r = x[:, 0], x[:, 1], x[:, 2]
    v, vmin = x.amax(1), x.amin(1)
    d = v - vmin
    s = torch.where(v > 0, d * 255 / v.clamp_min(1), torch.zeros_like(v)).round()
    dd = d.clamp_min(1e-6)
    hue = torch.where(v == r, 60 * (g - b) / dd, torch.where(v == g, 120 + 60 * (b - r) / dd, 240 + 60 * (r - g) / dd))
    hue = torch.where(d == 0, torch.zeros_like(hue), hue) % 360
    h = (hue / 2).round() % 180
    gh, gs, gv = (gains[:, i].view(-1, 1, 1) for i in range(3))
    h = ((h + gh * 180) % 180).floor()
    s = torch.where(s == 0, s, (s * (gs + 1)).clamp(0, 255).floor())
    v = (v * (gv + 1)).clamp(0, 255).floor()
    # HSV -> colour: f(n) = v - v s max(0, min(k, 4 - k, 1)), k = (n + H / 60) mod 6; (R, G, B) = f(5), f(3), f(1)
    hd, sv = h * 2 / 60, s / 255 * v

    def f(n: float) -> torch.Tensor:
        k = (n + hd) % 6
        return v - sv * torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    return torch.stack([f(1), f(3), f(5)], 1).round_().clamp_(0, 255)  # back in the (B, G, R) slots
