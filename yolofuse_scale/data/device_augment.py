"""``--loader device``: the workers ship encoded files (or cached pairs) and an augmentation plan; the training
device decodes and draws.

Why: on a GPU box the CPU recipe (4 JPEG decodes, a 1280x1280 mosaic, one warp and an HSV round trip per
sample, ~20 ms a sample on one core) needs many workers to keep a fast model fed. Here a worker does no
pixel work: per sample it returns

- a :class:`Plan`: every random choice of the recipe (partners, mosaic centre, the 3x3 matrix, mixup
  ratio, HSV gains, IR gain, flip) and the final boxes. It is made by :class:`PlanAugment`, which *is*
  ``augment.PairAugment``: the same composition of Ultralytics' transforms, seeded by the same
  ``(seed, epoch, index)``, with classes that record each image operation instead of doing it. So the
  draws, their order and the box updates (clip, ``box_candidates``) are the CPU pipeline's, exactly:
  the boxes of a sample are equal in both pipelines, and its pixels differ only by interpolation
  (cv2's fixed-point bilinear vs ``grid_sample``; JPEGs are decoded at full size here, where the CPU
  path lets libjpeg decode at 1/2-1/8) and the HSV arithmetic (cv2's uint8 HSV vs float);
- for every pair the plan reads (the sample and its partners), without ``--cache``: the encoded bytes of
  its RGB and IR files (uint8 tensors) when they are 8-bit gray or RGB(A) JPEGs or PNGs by content, which
  torchvision decodes to OpenCV's pixels, with their EXIF orientation (``imagefile.py``: read from the bytes
  the worker holds anyway); every other file (palette or 16-bit PNG, CMYK JPEG, WebP, TIFF, BMP) is decoded
  by the worker with the CPU loader's own ``read_image``, so rare layouts cost worker time, never a
  difference; with ``--cache ram|disk``: the cached pair itself, decoded and resized so its
  long side is imgsz (``cache.py``: the same file, key and builder as ``--loader cpu --cache``, so either
  loader reuses the other's cache), copied out of the mapping as one ``(H, W, 3 + C_ir)`` uint8 tensor. The
  sources are then the CPU pipeline's bytes and only the warp's interpolation and the HSV arithmetic differ.
  It costs bandwidth, not compute: a 640x512 RGB+IR pair is 2 MB of uint8, several times its JPEGs, on the
  way to the main process and to the device (never floats: they become floats on the device, see
  :meth:`DeviceAugment.upload`).

Per batch the training process (:class:`DeviceAugment`) decodes every file once (``decode_jpeg`` on the
device for JPEG; ``decode_image`` on the CPU, then a copy, for PNG; cached pairs are copied as they
are), turns it upright by its EXIF orientation (a transpose and flips on the device: torchvision 0.29's
``apply_exif_orientation`` is ignored by its CUDA decoder), resizes (a no-op for cached pairs), composes
mosaics, warps every image of the batch with one ``grid_sample`` per canvas side (mosaics: 2 x imgsz; single
pairs, pasted top-left on a grey imgsz square: imgsz; so one or two calls whatever the batch size, and a
sample's pixels do not depend on its batch), from
each sample's inverse 3x3 matrix (so perspective works too), blends mixups, and applies HSV (RGB), the IR
gain and the flip to the whole batch at once, with torch ops. It costs device time and memory: the warp
inputs of the batch are alive together, in canvases kept from one batch to the next (a 6-channel 1280x1280
float mosaic is 39 MB, so a batch of 16 at 640 px holds ~0.6 GB of them, twice that with mixup on every
sample, plus the grids), and it runs in the step (logged as data time), not beside it.

Validation (:func:`validation_data`) takes the same road: its workers ship each sample's two encoded files and a
``Letterbox`` plan (the CPU path's ``letterbox_geometry``, from the scan's header size) with the CPU val batch's
targets, and :class:`DeviceLetterbox` decodes, resizes (long side imgsz) and pads (``PAD_VALUE``) on the device,
leaving the targets on the host where ``evaluate`` reads them. The boxes are the CPU val batch's exactly; pixels
differ by the bilinear rounding (cv2's fixed point vs float; both decode JPEGs at full size for the letterbox:
at most 1 level on the CPU, and nvJPEG's IDCT may differ from libjpeg's by about as much). The val set is never
cached, with either loader (``cache.py``): ``--cache`` changes nothing in validation, so both loaders validate
the same pixels up to that rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ultralytics.data.augment import MixUp, RandomFlip, RandomPerspective
from ultralytics.utils.instance import Instances

from yolofuse_scale.data.augment import PairAugment, _IRGain, _PairMixUp, _PairMosaic
from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.dataset import (
    PairedRGBIRDataset,
    augmented_targets,
    collate_pairs,
    collate_targets,
    decode_bytes,
    jpeg_reduction,
)
from yolofuse_scale.data.imagefile import STEPS, layout, oriented_size, pil_orientation, read_bytes
from yolofuse_scale.data.scan import Sample
from yolofuse_scale.data.transforms import PAD_VALUE, letterbox_boxes, letterbox_geometry

# ----------------------------------------------------------------------------------------- the plan


@dataclass
class Source:
    """Pair ``index`` resized so its long side is imgsz: ``hw`` = (h, w) as the CPU path's ``resized_pair``."""

    index: int
    hw: tuple[int, int]


@dataclass
class Letterbox:
    """Pair ``index`` (original ``hw``) resized to (nh, nw) and pasted at (top, left) on a grey imgsz canvas."""

    index: int
    hw: tuple[int, int]
    nw: int
    nh: int
    left: int
    top: int
    imgsz: int


@dataclass
class Mosaic:
    """A grey ``size x size`` canvas; tiles: (source, (y1a, y2a, x1a, x2a) on the canvas, (y1b, y2b, x1b, x2b) in it)"""

    size: int
    tiles: list[tuple[Source, tuple[int, int, int, int], tuple[int, int, int, int]]]


@dataclass
class Warp:
    """``src`` warped by the 3x3 ``matrix`` (source -> output pixels, as cv2) to an output of ``size`` = (w, h)."""

    src: Any
    matrix: np.ndarray
    size: tuple[int, int]
    perspective: bool


@dataclass
class Blend:
    """MixUp: ``floor(a * r + b * (1 - r))``, as Ultralytics' ``astype(np.uint8)``."""

    a: Any
    b: Any
    r: float


@dataclass
class Plan:
    """One sample: the image tree, then HSV gains (RGB; None: off), the IR gain (None: off), the flip."""

    root: Any
    hsv: np.ndarray | None = None
    ir_gain: float | None = None
    flip: bool = False
    sources: list[int] = field(default_factory=list)  # the pair indices whose files the tree reads


def _shape_only(h: int, w: int, c: int) -> np.ndarray:
    """A zero-byte stand-in image: the transforms read its shape, never its pixels (a broadcast view)."""
    return np.broadcast_to(np.zeros((), np.uint8), (h, w, c))


class _PlanMosaic(_PairMosaic):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        tiles = [(it["labels_patch"]["plan"], (it["y1a"], it["y2a"], it["x1a"], it["x2a"]),
                  (it["y1b"], it["y2b"], it["x1b"], it["x2b"])) for it in params["layout"]]
        s = 2 * self.imgsz
        labels["plan"] = Mosaic(s, tiles)
        labels["img"] = _shape_only(s, s, labels["img"].shape[2])
        return labels


class _PlanPerspective(RandomPerspective):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        w, h = params["size"]
        labels["plan"] = Warp(labels["plan"], np.asarray(params["M"], np.float64), (w, h), bool(self.perspective))
        labels["img"] = _shape_only(h, w, labels["img"].shape[2])
        labels["resized_shape"] = (h, w)
        return labels


class _PlanMixUp(_PairMixUp):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        labels["plan"] = Blend(labels["plan"], labels["mix_labels"][0]["plan"], float(params["r"]))
        return labels


class _PlanHSV:
    """Ultralytics' ``RandomHSV`` draw (the same call on the same generator), recorded."""

    def __init__(self, recipe):
        self.gains = [recipe.hsv_h, recipe.hsv_s, recipe.hsv_v]
        self.on = bool(recipe.hsv_h or recipe.hsv_s or recipe.hsv_v)

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.on:
            labels["hsv"] = np.random.uniform(-1, 1, 3) * self.gains
        return labels


class _PlanIRGain(_IRGain):
    """``augment._IRGain``'s draw, recorded."""

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.gain:
            labels["ir_gain"] = self.draw()
        return labels


class _PlanFlip(RandomFlip):
    def apply_image(self, labels: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        labels["flip"] = bool(params["flip"]) and params["direction"] == "horizontal"
        return labels


class PlanAugment(PairAugment):
    """``PairAugment`` with every image operation recorded into ``labels["plan"]`` and no pixel touched."""

    mosaic_cls = _PlanMosaic
    affine_cls = _PlanPerspective
    mixup_cls: type[MixUp] = _PlanMixUp
    hsv_cls = _PlanHSV
    ir_gain_cls = _PlanIRGain
    flip_cls = _PlanFlip


def _sources(node: Any, out: list[int]) -> list[int]:
    if isinstance(node, (Source, Letterbox)):
        out.append(node.index)
    elif isinstance(node, Mosaic):
        for src, _, _ in node.tiles:
            _sources(src, out)
    elif isinstance(node, Warp):
        _sources(node.src, out)
    elif isinstance(node, Blend):
        _sources(node.a, out)
        _sources(node.b, out)
    return out


def _warps(node: Any, out: list) -> list:
    """The outermost ``Warp`` nodes of a tree (a warp's own input is rendered, nested warps included, before it)."""
    if isinstance(node, Warp):
        out.append(node)
    elif isinstance(node, Mosaic):
        for src, _, _ in node.tiles:
            _warps(src, out)
    elif isinstance(node, Blend):
        _warps(node.a, out)
        _warps(node.b, out)
    return out


def _hw(node: Any) -> tuple[int, int]:
    """The (h, w) a tree renders to, read from the plan alone."""
    if isinstance(node, Source):
        return node.hw
    if isinstance(node, Letterbox):
        return node.imgsz, node.imgsz
    if isinstance(node, Mosaic):
        return node.size, node.size
    if isinstance(node, Warp):
        return node.size[1], node.size[0]
    if isinstance(node, Blend):
        return _hw(node.a)
    raise TypeError(f"unknown plan node {type(node).__name__}")


def header_hw(path: Path) -> tuple[int, int]:
    """(h, w) as displayed, from the image header (PIL reads the header only, the EXIF orientation is applied as
    the scan applies it); for samples the scan did not size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = oriented_size(*im.size, pil_orientation(im, path))
    except OSError as e:
        raise DataError(f"{path}: cannot read the image size ({e})") from e
    return h, w


def resized_hw(sample: Sample, imgsz: int) -> tuple[int, int]:
    """The shape ``PairedRGBIRDataset.resized_pair`` gives this sample, from its header size alone: a JPEG
    decoded at 1/f (libjpeg rounds its sides up) is then resized so its long side is ``imgsz``."""
    h, w = sample.hw or header_hw(sample.rgb)
    f = jpeg_reduction(sample, imgsz)
    if f > 1:
        h, w = -(-h // f), -(-w // f)
    r = imgsz / max(h, w)
    return (min(round(h * r), imgsz), min(round(w * r), imgsz)) if r != 1 else (h, w)


# --------------------------------------------------------------------------------------- the worker

def encoded_file(path: Path, channels: int) -> tuple[str, torch.Tensor, str, int]:
    """``("jpeg" | "encoded", file bytes, path, EXIF orientation)`` for a plain JPEG or PNG by content (see
    ``imagefile.Layout``), else ``("raw", HWC uint8 upright, path, 1)`` decoded here by the CPU loader's code."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    head = layout(data)  # a few segment or chunk headers of the bytes just read
    if head.plain:
        kind = "jpeg" if head.fmt == "jpeg" else "encoded"
        return kind, torch.frombuffer(data, dtype=torch.uint8), str(path), head.orientation
    return "raw", torch.from_numpy(decode_bytes(data, channels, path)), str(path), 1


class EncodedPairDataset(PairedRGBIRDataset):
    """The training set of ``--loader device``: items are plans, targets and encoded files (see the module doc).

    The plan and the targets are those ``PairedRGBIRDataset`` (same arguments) would draw for the same
    ``(seed, epoch, index)``; ``set_epoch`` and the partner windows work as there.
    """

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._recent_cap = 0  # nothing is decoded in the worker, so nothing is kept
        if self.augment:
            self.pipeline = PlanAugment(self.planned_labels, len(self.samples), self.imgsz, self.recipe)

    # use_cache is PairedRGBIRDataset's: the same key, file and builder (OpenCV), so a cache written by either
    # loader serves both, and a sample's source pixels are the CPU pipeline's bit for bit

    def source_shapes(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((h, w) of the pair the recipe starts from, its original (h, w)): the cached pair's when there is a
        cache, else what ``resized_pair`` would decode, from the header size alone."""
        if self.cache is not None:
            h, w = self.cache.shapes[index][:2]
            return (h, w), tuple(self.cache.ori_shapes[index])
        s = self.samples[index]
        hw = resized_hw(s, self.imgsz)
        return hw, s.hw or hw

    def planned_labels(self, index: int) -> dict:
        """``resized_labels`` without the pixels: a shape-only image and the plan leaf of the pair."""
        s = self.samples[index]
        (h, w), ori = self.source_shapes(index)
        boxes = s.boxes
        return {"img": _shape_only(h, w, 3 + self.ir_channels), "plan": Source(index, (h, w)),
                "cls": boxes[:, :1].copy(), "ori_shape": ori, "resized_shape": (h, w),
                "instances": Instances(boxes[:, 1:].copy(), bbox_format="xywh", normalized=True),
                "im_file": str(s.rgb)}

    def plan(self, index: int) -> tuple[Plan, np.ndarray, np.ndarray, tuple, tuple]:
        """(plan, xywh, cls, ori_shape, ratio_pad) of a sample, as ``PairedRGBIRDataset[index]`` has them."""
        s = self.samples[index]
        if self.pipeline is None:  # with a cache, the CPU path letterboxes the cached (resized) pair too
            hw, ori = self.source_shapes(index) if self.cache is not None else (s.hw or header_hw(s.rgb),) * 2
            nw, nh, left, top, r = letterbox_geometry(*hw, self.imgsz)
            root = Letterbox(index, hw, nw, nh, left, top, self.imgsz)
            xywh = letterbox_boxes(s.boxes[:, 1:], nw, nh, left, top, self.imgsz)
            plan = Plan(root)
            return plan, xywh, s.boxes[:, :1], ori, ((r, r), (float(left), float(top)))
        epoch = self.epoch
        mosaic = self.epochs is None or self.recipe.mosaic_on(epoch, self.epochs)
        window = self.partner_windows(epoch, index) if self.partner_windows else None
        labels = self.pipeline(self.planned_labels(index), (self.seed, epoch, index), mosaic, window)
        plan = Plan(labels["plan"], labels.get("hsv"), labels.get("ir_gain"), labels.get("flip", False))
        xywh, cls, ori_shape, ratio_pad = augmented_targets(labels)
        return plan, xywh, cls, ori_shape, ratio_pad

    def __getitem__(self, index: int) -> dict:
        plan, xywh, cls, ori_shape, ratio_pad = self.plan(index)
        plan.sources = sorted(set(_sources(plan.root, [])))
        files = {i: self.payload(i) for i in plan.sources}
        s = self.samples[index]
        return {"plan": plan, "files": files,
                "cls": torch.from_numpy(np.asarray(cls, dtype=np.float32).copy()),
                "bboxes": torch.from_numpy(np.asarray(xywh, dtype=np.float32).reshape(-1, 4)),
                "im_file": str(s.rgb), "ir_file": str(s.ir), "ori_shape": ori_shape, "ratio_pad": ratio_pad,
                "index": index}

    def payload(self, i: int) -> tuple:
        """What a worker ships for pair ``i``: ``("frame", (H, W, 3 + C_ir) uint8, path)``, the cached decoded
        pair (already resized: the device neither decodes nor resizes it), or the two encoded files."""
        if self.cache is not None:  # a copy out of the read-only mapping: it travels to the main process
            return "frame", torch.from_numpy(np.array(self.cache.get(i)[0])), str(self.samples[i].rgb)
        return encoded_file(self.samples[i].rgb, 3), encoded_file(self.samples[i].ir, self.ir_channels)


def collate_encoded(batch: list[dict]) -> dict:
    """``collate_pairs``' targets; plans as a list; the files of every pair the batch reads, once each."""
    files: dict[int, tuple] = {}
    for b in batch:
        files.update(b["files"])
    return {"plans": [b["plan"] for b in batch], "files": files, **collate_targets(batch)}


# --------------------------------------------------------------------------------------- the device


def conform(t: torch.Tensor, channels: int) -> torch.Tensor:
    """A decoded (C, H, W) uint8 image (RGB order; gray(+alpha), RGB(A)) as ``channels`` channels, as
    ``dataset.conform_channels``: alpha dropped, cv2's gray weights. (16-bit files never get here: the worker
    decodes them with the CPU loader's code, see :func:`encoded_file`.)"""
    if t.shape[0] in (2, 4):
        t = t[: t.shape[0] - 1]
    if channels == 1 and t.shape[0] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=t.device).view(3, 1, 1)
        return (t.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if channels == 3 and t.shape[0] == 1:
        return t.expand(3, -1, -1)
    return t


def orient(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """A decoded (C, H, W) image turned upright by its EXIF orientation (``imagefile.orient``'s steps)."""
    if orientation not in STEPS:
        return t
    transpose, rows, cols = STEPS[orientation]
    t = t.transpose(1, 2) if transpose else t
    dims = [d for d, flip in ((1, rows), (2, cols)) if flip]
    return t.flip(dims) if dims else t.contiguous()


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) float -> (C, h, w), bilinear with half-pixel centres and no antialias (cv2's INTER_LINEAR), rounded."""
    if tuple(x.shape[1:]) == tuple(hw):
        return x
    return F.interpolate(x[None], size=hw, mode="bilinear", align_corners=False).round_().clamp_(0, 255)[0]


class DeviceAugment:
    """Turn a ``collate_encoded`` batch into ``collate_pairs``' batch on ``device``: ``img`` uint8
    ``(B, 3 + ir_channels, imgsz, imgsz)``, targets moved. Deterministic given the plans (no RNG here)."""

    def __init__(self, imgsz: int, ir_channels: int, device: torch.device | str):
        self.imgsz, self.ir_channels, self.device = imgsz, ir_channels, torch.device(device)
        self._grids: dict[tuple[int, int], torch.Tensor] = {}
        self._buffers: dict[int, torch.Tensor] = {}  # the warp canvases of the largest batch so far, per side

    def __call__(self, batch: dict) -> dict:
        pairs = self.decode(batch["files"])
        imgs = self.render_batch([p.root for p in batch["plans"]], pairs)
        img = self.photometric(imgs, batch["plans"]).to(torch.uint8)
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
               for k, v in batch.items() if k not in ("plans", "files")}
        out["img"] = img
        return out

    # decode: every file of the batch once; JPEGs in one batched call (nvJPEG on CUDA)
    def decode(self, files: dict[int, tuple]) -> dict[int, torch.Tensor]:
        """{pair index: (3 + C_ir, H, W) float pair at its file size on the device} from ``collate_encoded``'s files."""
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (for TorchCodec), on each call
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
            return self._decode(files)

    def upload(self, t: torch.Tensor) -> torch.Tensor:
        """The one host -> device copy of the pixels: of uint8 images (decoded on the host, or cached) only;
        JPEG bytes go to ``decode_jpeg`` on the device instead."""
        return t.to(self.device, non_blocking=True)

    def _decode(self, files: dict[int, tuple]) -> dict[int, torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        pairs = {i: self.upload(f[1]).permute(2, 0, 1).float() for i, f in files.items() if f[0] == "frame"}
        files = {i: f for i, f in files.items() if f[0] != "frame"}  # the rest: encoded files, decoded here
        order = [(i, m) for i in files for m in (0, 1)]
        decoded: dict[tuple[int, int], torch.Tensor] = {}
        jpegs = [(i, m) for i, m in order if files[i][m][0] == "jpeg"]
        if jpegs:
            dev = self.device if self.device.type == "cuda" else "cpu"
            try:
                outs = decode_jpeg([files[i][m][1] for i, m in jpegs], mode=ImageReadMode.UNCHANGED, device=dev)
            except RuntimeError:  # one bad file fails the whole batched call: find it
                outs = [self._decode_one(decode_jpeg, files[i][m], dev) for i, m in jpegs]
            decoded.update(zip(jpegs, outs))
        for i, m in order:
            kind, data = files[i][m][:2]
            if kind == "encoded":
                decoded[i, m] = self._decode_one(decode_image, files[i][m], "cpu")
            elif kind == "raw":
                decoded[i, m] = data.permute(2, 0, 1)
        for i in files:
            rgb = conform(orient(self.upload(decoded[i, 0]), files[i][0][3]), 3)
            ir = conform(orient(self.upload(decoded[i, 1]), files[i][1][3]), self.ir_channels)
            if ir.shape[1:] != rgb.shape[1:]:  # the scan reports this; stack_pair's rule otherwise
                ir = _resize(ir.float(), tuple(rgb.shape[1:]))
            pairs[i] = torch.cat([rgb.float(), ir.float()])
        return pairs

    @staticmethod
    def _decode_one(fn, file: tuple[str, torch.Tensor, str, int], dev) -> torch.Tensor:
        from torchvision.io import ImageReadMode

        try:
            kw = {"device": dev} if fn.__name__ == "decode_jpeg" else {}
            return fn(file[1], mode=ImageReadMode.UNCHANGED, **kw)
        except RuntimeError as e:
            raise DataError(f"{file[2]}: cannot be decoded as an image ({str(e).splitlines()[0]})") from e

    # render: the plan's image tree, each stage rounded to integers as the CPU path's uint8 stages
    def render_batch(self, roots: list[Any], pairs: dict[int, torch.Tensor]) -> torch.Tensor:
        """(B, C, imgsz, imgsz) float: the trees of a batch, every warp of the batch in one ``grid_sample`` per
        canvas size (see :meth:`warp_all`), then the mixup blends."""
        resized: dict[tuple, torch.Tensor] = {}
        warped = self.warp_all([w for r in roots for w in _warps(r, [])], pairs, resized)
        return torch.stack([self.render(r, pairs, resized, warped) for r in roots])

    def render(self, node: Any, pairs: dict[int, torch.Tensor], resized: dict,
               warped: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """One tree; ``warped``: its warps already done by :meth:`warp_all` (by ``id``), else done here."""
        if isinstance(node, Source):
            key = (node.index, node.hw)
            if key not in resized:
                resized[key] = _resize(pairs[node.index], node.hw)
            return resized[key]
        if isinstance(node, Letterbox):
            x = _resize(pairs[node.index], (node.nh, node.nw))
            out = x.new_full((x.shape[0], node.imgsz, node.imgsz), float(PAD_VALUE))
            out[:, node.top: node.top + node.nh, node.left: node.left + node.nw] = x
            return out
        if isinstance(node, Mosaic):
            out = None
            for src, (y1a, y2a, x1a, x2a), (y1b, y2b, x1b, x2b) in node.tiles:
                x = self.render(src, pairs, resized, warped)
                if out is None:
                    out = x.new_full((x.shape[0], node.size, node.size), float(PAD_VALUE))
                out[:, y1a:y2a, x1a:x2a] = x[:, y1b:y2b, x1b:x2b]
            return out
        if isinstance(node, Warp):
            if warped is None or id(node) not in warped:
                warped = self.warp_all([node], pairs, resized)
            return warped[id(node)]
        if isinstance(node, Blend):
            a, b = self.render(node.a, pairs, resized, warped), self.render(node.b, pairs, resized, warped)
            return (a * node.r + b * (1 - node.r)).floor_()
        raise TypeError(f"unknown plan node {type(node).__name__}")

    def _grid(self, w: int, h: int) -> torch.Tensor:
        """Homogeneous output pixel centres (3, h*w), cached per size (one allocation per run)."""
        if (w, h) not in self._grids:
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=self.device),
                                    torch.arange(w, dtype=torch.float32, device=self.device), indexing="ij")
            self._grids[w, h] = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=self.device)])
        return self._grids[w, h]

    def canvas_side(self, h: int, w: int) -> int:
        """The square a warp input is padded into: the smallest multiple of imgsz that holds it (a mosaic:
        2 x imgsz, as it is; a single pair, long side imgsz: imgsz). It depends on the input alone, so a
        sample's pixels do not depend on what else is in its batch (world size, batch size)."""
        return self.imgsz * max(1, -(-max(h, w) // self.imgsz))

    def warp_all(self, nodes: list[Warp], pairs: dict[int, torch.Tensor], resized: dict) -> dict[int, torch.Tensor]:
        """{id(node): warped (C, h, w)} for these warps: one ``grid_sample`` per (canvas side, output size,
        perspective or not), so the kernel launches of a batch do not grow with its size (a batch holds at most
        two canvas sides, mosaic and not; perspective is the recipe's, the same for all). Each input is written
        minus 114 at the top left of a zeroed canvas: beyond it reads 0, what the zeros padding reads outside
        the canvas, so sampling there is sampling outside the image (grey). A mosaic's tiles go straight into
        its canvas, which is thereby also its mosaic (no canvas of its own, no copy)."""
        groups: dict[tuple, list[Warp]] = {}
        for n in nodes:  # grouped by the plan's shapes, so each input is written as soon as it is rendered
            groups.setdefault((self.canvas_side(*_hw(n.src)), n.size, n.perspective), []).append(n)
        out: dict[int, torch.Tensor] = {}
        for (side, size, _), group in groups.items():
            x = self._canvases(len(group), side)
            for j, n in enumerate(group):
                self._paste_shifted(n.src, x[j], pairs, resized)
            warped = self._warp_canvases(x, group, size)
            out.update((id(n), warped[j]) for j, n in enumerate(group))
        return out

    def _canvases(self, n: int, side: int) -> torch.Tensor:
        """(n, C, side, side) zeros in a buffer kept between batches (grid_sample's output is a new tensor, so
        nothing refers to it after the call): a fresh 80-160 MB allocation a batch costs the CPU path its page
        faults (more than the per-sample version's smaller canvases), and is cheap on CUDA either way."""
        shape = (n, 3 + self.ir_channels, side, side)
        buf = self._buffers.get(side)
        if buf is None or buf.numel() < np.prod(shape):
            buf = self._buffers[side] = torch.empty(int(np.prod(shape)), device=self.device)
        return buf[: int(np.prod(shape))].view(shape).zero_()

    def _paste_shifted(self, node: Any, canvas: torch.Tensor, pairs: dict[int, torch.Tensor], resized: dict) -> None:
        """``node`` rendered, minus 114, into the top left of ``canvas`` (exact: the values are integers)."""
        if isinstance(node, Mosaic):  # the tiles; the rest of the canvas stays 0, the mosaic's grey
            for src, (y1a, y2a, x1a, x2a), (y1b, y2b, x1b, x2b) in node.tiles:
                x = self.render(src, pairs, resized)
                torch.sub(x[:, y1b:y2b, x1b:x2b], PAD_VALUE, out=canvas[:, y1a:y2a, x1a:x2a])
            return
        x = self.render(node, pairs, resized)
        torch.sub(x, PAD_VALUE, out=canvas[:, : x.shape[1], : x.shape[2]])

    def _sampling_grid(self, nodes: list[Warp], size: tuple[int, int], side: int) -> torch.Tensor:
        """(B, h, w, 2) ``grid_sample`` coordinates on ``side``-square canvases: output pixel (x, y) samples
        ``inv(matrix) @ (x, y, 1)`` (divided by its w under perspective), with half-pixel centres
        (align_corners=False: pixel i spans [i, i+1), normalised by 2 / side).

        Elementwise ops on the batch, not a batched matmul: bmm's blocking depends on the batch size (rows
        differ in the last bit), and a sample must not depend on its batch. Affine: the normalisation is
        folded into the matrix (float64, once per sample), so the grid is 2 multiply-adds a pixel."""
        w, h = size
        px, py, _ = (t.view(1, -1, 1) for t in self._grid(w, h))  # (1, h*w, 1)
        inv = np.stack([np.linalg.inv(n.matrix) for n in nodes])
        k = 2.0 / side
        if not nodes[0].perspective:  # the group shares it (warp_all's key)
            a = inv[:, :2] * k
            a[:, :, 2] += k / 2 - 1
            a = torch.from_numpy(a).to(torch.float32).to(self.device).transpose(1, 2).unsqueeze(2)  # (B, 3, 1, 2)
            grid = px * a[:, 0] + py * a[:, 1] + a[:, 2]
        else:
            t = torch.from_numpy(inv).to(torch.float32).to(self.device).transpose(1, 2).unsqueeze(2)  # (B, 3, 1, 3)
            src = px * t[:, 0] + py * t[:, 1] + t[:, 2]  # (B, h*w, 3) source pixel coordinates, homogeneous
            grid = (src[..., :2] / src[..., 2:] + 0.5) * k - 1
        return grid.view(len(nodes), h, w, 2)

    def _warp_canvases(self, x: torch.Tensor, nodes: list[Warp], size: tuple[int, int]) -> torch.Tensor:
        """cv2.warpAffine/warpPerspective(INTER_LINEAR, border 114) of (B, C, S, S) canvases holding images
        minus 114 (see :meth:`warp_all`), each by its node's matrix, in one ``grid_sample``."""
        grid = self._sampling_grid(nodes, size, x.shape[-1])
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.add_(PAD_VALUE).round_().clamp_(0, 255)

    def warp(self, x: torch.Tensor, matrix: np.ndarray, size: tuple[int, int], perspective: bool) -> torch.Tensor:
        """One (C, H, W) image warped as :meth:`warp_all` warps it in a batch (cv2.warpAffine/warpPerspective)."""
        side = self.canvas_side(*x.shape[1:])
        canvas = x.new_zeros((1, x.shape[0], side, side))
        torch.sub(x, PAD_VALUE, out=canvas[0, :, : x.shape[1], : x.shape[2]])
        return self._warp_canvases(canvas, [Warp(None, matrix, size, perspective)], size)[0]

    # photometric: the whole batch at once (HSV on RGB, IR gain, flip)
    def photometric(self, imgs: torch.Tensor, plans: list[Plan]) -> torch.Tensor:
        dev = imgs.device
        if any(p.hsv is not None for p in plans):
            gains = torch.tensor(np.stack([p.hsv if p.hsv is not None else np.zeros(3) for p in plans]),
                                 dtype=torch.float32, device=dev)
            imgs[:, :3] = hsv_jitter(imgs[:, :3], gains)
        if any(p.ir_gain is not None for p in plans):
            g = torch.tensor([1.0 if p.ir_gain is None else p.ir_gain for p in plans], device=dev).view(-1, 1, 1, 1)
            imgs[:, 3:] = (imgs[:, 3:] * g).clamp_(0, 255).floor_()
        flip = torch.tensor([p.flip for p in plans], device=dev).view(-1, 1, 1, 1)
        if bool(flip.any()):
            imgs = torch.where(flip, imgs.flip(-1), imgs)
        return imgs


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


class DeviceLetterbox(DeviceAugment):
    """Validation's ``batch_to_device`` under ``--loader device``: a ``collate_encoded`` batch of letterbox plans
    -> ``collate_pairs``' batch, ``img`` uint8 ``(B, 3 + ir_channels, imgsz, imgsz)`` on the device, every other
    key as the CPU val batch has it, on the host (``evaluate`` indexes the targets there, as it always has)."""

    def __call__(self, batch: dict) -> dict:
        roots = [p.root for p in batch["plans"]]
        if not all(isinstance(r, Letterbox) for r in roots):  # an augmented set handed to validation
            raise ValueError("DeviceLetterbox renders letterbox plans only (a set built with augment=False)")
        pairs = self.decode(batch["files"])
        img = torch.stack([self.render(r, pairs, {}) for r in roots]).to(torch.uint8)
        return {**{k: v for k, v in batch.items() if k not in ("plans", "files")}, "img": img}


def validation_data(samples: list[Sample], imgsz: int, ir_channels: int, loader: str,
                    device: torch.device | str) -> tuple[PairedRGBIRDataset, Callable, Callable | None]:
    """(dataset, collate_fn, batch_to_device for ``evaluate``) of a validation split. ``loader``: ``cpu``, the
    workers decode and letterbox with OpenCV (batch_to_device None: ``evaluate`` moves ``img``); ``device``,
    they ship the encoded files and :class:`DeviceLetterbox` draws on ``device``. Never cached (see above)."""
    if loader == "device":
        dataset = EncodedPairDataset(samples, imgsz, augment=False, ir_channels=ir_channels)
        return dataset, collate_encoded, DeviceLetterbox(imgsz, ir_channels, device)
    return PairedRGBIRDataset(samples, imgsz, augment=False, ir_channels=ir_channels), collate_pairs, None
