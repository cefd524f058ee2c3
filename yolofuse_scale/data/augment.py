"""Training augmentation of a stacked RGB+IR pair: the YOLOv8 recipe, with geometry shared by both.

The pair travels as one ``(H, W, 3 + C_ir)`` array, so every geometric transform moves RGB and IR
together by construction (same mosaic tiles, same affine matrix, same flip). Ultralytics 8.4's own
classes carry such an array and are reused as they are:

- ``Mosaic`` (canvas of ``img.shape[2]`` channels), ``RandomPerspective`` (``cv2.warpAffine`` takes any
  channel count; its 4-value border fills every channel with 114), ``MixUp`` (a blend), ``RandomFlip``
  (its draw and box update; the image itself is flipped by ``cv2.flip``, which is faster, see ``_PairFlip``).

Written here, and why:

- HSV on RGB only: ``RandomHSV`` returns a non-3-channel image untouched, so it is applied to the RGB
  slice and the slice written back. (It assumes BGR; on RGB the hue shift runs the other way round
  the colour wheel, which a symmetric random shift does not notice.)
- IR intensity jitter (``ir_gain``): thermal images have no hue or saturation; a random gain is the
  photometric change that means something for them. Off by default (Ultralytics has no IR).
- IR misregistration (``ir_shift``, ``ir_scale``, ``ir_rotate``; :class:`_IRMisregister`): the one transform
  that moves the two modalities *apart*. Real rigs are not registered pixel for pixel (two lenses side by side,
  a calibration that drifts, a parallax that changes with depth), so the IR image is warped against RGB by a
  random shift, zoom and rotation about the image centre, on the finished canvas, boxes untouched (they are
  RGB's, as a dataset's labels are): a fusion model then learns not to rely on the two being aligned.
- Where the randomness comes from: Ultralytics' classes draw from the global ``random`` and
  ``numpy.random`` generators, and ``Mosaic`` picks partners from a buffer of the images a worker
  loaded last (up to min(n, 8 x batch, 1000); 3 draws with replacement, the sample itself included).
  Here both global generators are re-seeded from ``(seed, epoch, index)`` around each sample (and
  restored after, so nothing else's stream moves), and Ultralytics' buffer is off: partners are drawn
  by that seeded generator (``_Partners.draw``), 3 distinct pairs other than the sample itself (a
  mosaic always shows 4 different images, at any batch size, 1 included), from a pool that
  ``recipe.mosaic_partners`` names (:class:`SampleDraw`, ``sampler.MicroBatchWindows``):

  - ``pool`` (the default): the sample's micro-batch plus as many other pairs (at least 3) drawn from
    the whole set by ``(seed, epoch, micro-batch)``. A DataLoader worker builds whole micro-batches, so
    with its buffer of decoded pairs (``buffer.py``) it decodes each pool member once: at most 2
    decodes per sample, 2 x batch-size distinct pairs per batch;
  - ``dataset``: the whole training set (4 decodes per mosaic unless the pairs are cached or buffered;
    about 4 x batch-size distinct pairs per batch);
  - ``micro_batch``: the micro-batch itself (1 decode per sample, batch-size distinct pairs per batch,
    4 copies of one image at batch size 1).

  A sample's augmentation then depends on nothing else: not the worker count, the world size, or
  the order of earlier samples, which is what lets a resumed or re-sharded run see the same images
  (micro-batches are cut from one order at every world size). Cost: two state save/restores per
  sample (~20 us).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import cv2
import numpy as np
import torch
from ultralytics.data.augment import Compose, MixUp, Mosaic, RandomFlip, RandomHSV, RandomPerspective

from yolofuse_scale.data.transforms import PAD_VALUE

#: The IR misregistration a fusion that tolerates it trains with when the user sets no bound (``ir_shift``,
#: ``ir_scale``, ``ir_rotate``): up to 1.5 % of the image either way, +/-3 % zoom, +/-0.5 degree, the bounds the
#: misregistration study measured (benchmarks/results/fusion_misreg_2core_cpu).
MISREGISTRATION = {"ir_shift": 0.015, "ir_scale": 0.03, "ir_rotate": 0.5}
#: What ``--help`` shows as these bounds' default.
FUSIONS_DEFAULT = "0.015/0.03/0.5 on a registration: loose set for data/early/mid, else 0"

#: ``--mosaic-partners``: where a mosaic's (and mixup's) partner pairs are drawn from.
MosaicPartners = Literal["pool", "dataset", "micro_batch"]


@dataclass(frozen=True)
class AugmentRecipe:
    """The YOLOv8 hyper-parameters (Ultralytics' defaults), plus the IR jitter.

    Each field's docstring is its ``--help`` line (config/flags.py reads them); the run's data section holds
    one recipe and names its flags after these fields (``scale`` is ``--aug-scale``: ``--scale`` is the model's).
    """

    mosaic: float = 1.0
    """probability of a 4-pair mosaic (same tiles for RGB and IR)"""
    mixup: float = 0.0
    """probability of blending a sample with another one"""
    degrees: float = 0.0
    """random rotation range, +/- degrees"""
    translate: float = 0.1
    """random translation range, +/- fraction of the image size"""
    scale: float = 0.5
    """random zoom range, 1 +/- this (Ultralytics' `scale`)"""
    shear: float = 0.0
    """random shear range, +/- degrees"""
    perspective: float = 0.0
    """random perspective factor (0: affine only)"""
    fliplr: float = 0.5
    """probability of a horizontal flip"""
    hsv_h: float = 0.015
    """hue augmentation gain (RGB only)"""
    hsv_s: float = 0.7
    """saturation augmentation gain (RGB only)"""
    hsv_v: float = 0.4
    """value (brightness) augmentation gain (RGB only)"""
    ir_gain: float = 0.0
    """IR intensity augmentation: multiply IR by a gain in 1 +/- this (IR only)"""
    ir_shift: float | None = field(default=None, metadata={"type": float, "shown_default": FUSIONS_DEFAULT})
    """IR misregistration: move IR against RGB by up to +/- this fraction of the image size in x and in y (boxes
    stay in RGB's frame). Unset, each of ir_shift/ir_scale/ir_rotate is a default: 0.015/0.03/0.5 when data.yaml says
    registration: loose and the fusion is one the misregistration study found it helps (data, early, mid;
    docs/data.md), else 0 (off: an aligned set, training labels that are IR's own, the other fusions, a model YAML);
    never applied to --fusion rgb|ir;
    set, the bounds apply to any data; 0 0 0 turns it off"""
    ir_scale: float | None = field(default=None, metadata={"type": float, "shown_default": FUSIONS_DEFAULT})
    """IR misregistration: zoom IR about the image centre by 1 +/- this (less than 1)"""
    ir_rotate: float | None = field(default=None, metadata={"type": float, "shown_default": FUSIONS_DEFAULT})
    """IR misregistration: rotate IR about the image centre by up to +/- this many degrees"""
    close_mosaic: int = 10
    """turn mosaic and mixup off for the last N epochs"""
    mosaic_partners: MosaicPartners = "pool"
    """where mosaic and mixup partners come from, drawn from (seed, epoch, index): pool (the sample's micro-batch
    plus as many other pairs of the whole set: at most 2 decodes per sample, each worker's buffer of decoded pairs
    holds the pool), dataset (3 distinct other pairs of the whole training set: the most diverse; without --cache
    each mosaic decodes 4 pairs unless the set fits the buffer) or micro_batch (the sample's own micro-batch: about
    1 decode per sample, but only batch-size distinct images per batch, 4 copies of one image at --batch-size 1)"""

    def mosaic_on(self, epoch: int, epochs: int) -> bool:
        """Whether ``epoch`` (0-based) of ``epochs`` still uses mosaic and mixup."""
        return epoch < epochs - self.close_mosaic

    @property
    def misregisters(self) -> bool:
        """Whether the IR misregistration is on (an unset bound counts as 0 until :meth:`for_fusion` sets it)."""
        return bool(self.ir_shift or self.ir_scale or self.ir_rotate)

    def for_fusion(self, on: bool) -> AugmentRecipe:
        """This recipe with each unset misregistration bound set: to :data:`MISREGISTRATION`'s value when ``on`` (a
        ``registration: loose`` set and a fusion the study found it helps: ``RunConfig.training_recipe``), to 0
        otherwise. A bound the user set (0 included) is kept."""
        return replace(self, **{k: (v if on else 0.0) if getattr(self, k) is None else getattr(self, k)
                                for k, v in MISREGISTRATION.items()})

    def for_one_modality(self) -> AugmentRecipe:
        """This recipe for a model that reads one modality (``--fusion rgb|ir``): without the IR misregistration,
        which an RGB model never sees and which would only move an IR model's only image away from its labels
        (they are in RGB's frame). Everything else, every draw included, is unchanged."""
        return replace(self, ir_shift=0.0, ir_scale=0.0, ir_rotate=0.0)


@contextmanager
def seeded_global_rngs(key: tuple[int, ...]) -> Iterator[None]:
    """Seed Python's ``random`` and NumPy's global generator from ``key``; restore both afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    words = np.random.SeedSequence(list(key)).generate_state(4)
    random.seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words[2:])
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class _Partners:
    """What Ultralytics' mix transforms ask of a dataset: a length and ``get_image_and_label(i)``, plus the
    draw of partner indices (``draw``) that ``_PairMosaic`` and ``_PairMixUp`` use instead of theirs.

    While a sample is augmented, ``own`` is its dataset index and ``window`` (if set) the dataset indices
    partners are drawn from; ``fetched`` lists the indices loaded for it, in order (partners of partners
    included): what a test or a debugging session reads to see which images a sample is made of.
    """

    cache = None  # read by Mosaic.__init__ to choose the partner buffer; the buffer is switched off below
    use_obb = False  # read by Mosaic.__init__ (preserve_obb): PairAugment sets it for oriented boxes

    def __init__(self, load: Callable[[int], dict[str, Any]], n: int):
        self.load, self.n = load, n
        self.own = -1
        self.window: np.ndarray | None = None
        self.fetched: list[int] = []

    def __len__(self) -> int:
        return self.n

    def get_image_and_label(self, index: int) -> dict[str, Any]:
        self.fetched.append(index)
        return self.load(index)

    def draw(self, k: int) -> list[int]:
        """``k`` partner indices from the global ``random`` (seeded per sample): distinct and other than
        ``own`` whenever the pool has that many, else with replacement (a set of < 4 pairs, a tiny window)."""
        if self.window is None:
            if 0 <= self.own < self.n and self.n - 1 >= k:  # k of the n - 1 others, without a list of n
                return [i + (i >= self.own) for i in random.sample(range(self.n - 1), k)]
            return random.choices(range(self.n), k=k)
        pool = [int(i) for i in self.window]
        others = [i for i in pool if i != self.own]
        return random.sample(others, k) if len(others) >= k else random.choices(pool, k=k)


class _PairMosaic(Mosaic):
    """Ultralytics' ``Mosaic`` with its partners from ``_Partners.draw`` (its own draw: 3 with replacement)."""

    def get_indexes(self) -> list[int]:
        return self.dataset.draw(self.n - 1)


class _PairMixUp(MixUp):
    """Ultralytics' ``MixUp`` with its partner from ``_Partners.draw`` (never the sample itself)."""

    def get_indexes(self) -> list[int]:
        return self.dataset.draw(1)


def _take(img: np.ndarray, first: int, last: int) -> np.ndarray:
    """Channels ``first:last`` as a contiguous array. ``cv2.mixChannels``: ~10x faster than numpy's
    strided copy of a channel slice (0.4 vs 4 ms for 640x640 RGB out of RGB+IR on one core)."""
    out = np.empty((*img.shape[:2], last - first), img.dtype)
    cv2.mixChannels([img], [out], [v for c in range(first, last) for v in (c, c - first)])
    return out


def _put(img: np.ndarray, part: np.ndarray, first: int) -> None:
    """Write ``part`` into channels ``first:`` of ``img`` in place (the inverse of :func:`_take`)."""
    cv2.mixChannels([part], [img], [v for c in range(part.shape[2]) for v in (c, c + first)])


def _writable(img: np.ndarray) -> np.ndarray:
    """``img`` if the photometric transforms may write into it, else a contiguous copy. After a warp it is
    the warp's own new array; a pair that no geometric transform touched is still the read-only decoded
    (or cached) one, which other samples of the micro-batch read too."""
    return img if img.flags.writeable and img.flags.c_contiguous else np.array(img, order="C")


class _RGBHSV:
    """Ultralytics' ``RandomHSV`` on the first three channels only (it skips any other channel count)."""

    def __init__(self, recipe: AugmentRecipe):
        self.hsv = RandomHSV(hgain=recipe.hsv_h, sgain=recipe.hsv_s, vgain=recipe.hsv_v)
        self.on = bool(recipe.hsv_h or recipe.hsv_s or recipe.hsv_v)  # RandomHSV draws nothing when off

    @classmethod
    def from_recipe(cls, recipe: AugmentRecipe) -> _RGBHSV:
        return cls(recipe)

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if not self.on:  # skips the two channel copies (~0.8 ms at 640 px) around a transform that does nothing
            return labels
        img = _writable(labels["img"])
        rgb = _take(img, 0, 3)
        self.hsv({"img": rgb})  # in place
        _put(img, rgb, 0)
        labels["img"] = img
        return labels


class _IRGain:
    """Multiply the IR channels by one gain drawn from ``1 +/- ir_gain`` (a look-up table, clipped)."""

    def __init__(self, gain: float):
        self.gain = gain

    @classmethod
    def from_recipe(cls, recipe: AugmentRecipe) -> _IRGain:
        return cls(recipe.ir_gain)

    def draw(self) -> float:
        """The gain (one draw of the global NumPy RNG): ``--loader device``'s plan records this same draw."""
        return 1.0 + np.random.uniform(-self.gain, self.gain)

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.gain:
            g = self.draw()
            lut = np.clip(np.arange(256) * g, 0, 255).astype(np.uint8)
            img = _writable(labels["img"])
            ir = _take(img, 3, img.shape[2])
            _put(img, cv2.LUT(ir, lut).reshape(ir.shape), 3)
            labels["img"] = img
        return labels


class _IRMisregister:
    """Warp the IR channels only, by one random shift, zoom and rotation about the image centre (bilinear, grey
    border, as the other warps); RGB and the boxes stay where they are. Off (and no draw) when all three bounds
    are 0, so a recipe without it draws exactly what it drew before it existed."""

    def __init__(self, shift: float, scale: float, rotate: float):
        self.shift, self.scale, self.rotate = shift, scale, rotate
        self.on = bool(shift or scale or rotate)  # AugmentRecipe.misregisters

    @classmethod
    def from_recipe(cls, recipe: AugmentRecipe) -> _IRMisregister:
        return cls(recipe.ir_shift or 0.0, recipe.ir_scale or 0.0, recipe.ir_rotate or 0.0)  # unset: 0

    def draw(self, h: int, w: int) -> np.ndarray:
        """The 2x3 matrix (IR pixels -> moved IR pixels, as cv2) from one draw of 4 uniforms of the global NumPy
        RNG: ``--loader device``'s plan records this same draw."""
        ux, uy, us, ur = np.random.uniform(-1, 1, 4)
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(ur * self.rotate), float(1 + us * self.scale))
        m[:, 2] += (ux * self.shift * w, uy * self.shift * h)
        return m

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.on:
            img = _writable(labels["img"])
            h, w = img.shape[:2]
            ir = _take(img, 3, img.shape[2])
            moved = cv2.warpAffine(ir, self.draw(h, w), (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 4)
            _put(img, moved.reshape(ir.shape), 3)
            labels["img"] = img
        return labels


class _PairFlip(RandomFlip):
    """Ultralytics' ``RandomFlip`` (its draw and its box update), with the image flipped by ``cv2.flip``
    into a new contiguous array instead of ``np.fliplr``'s view. The view is free here but makes the
    final HWC -> CHW copy slower, and it keeps ``transforms.chw_tensor`` off its fast path: for RGB + 1-channel
    IR at 640 px, flip + CHW measured 0.34 ms against 0.58 ms. ``cv2.flip`` is slower than the view's
    strided copy above 4 channels (RGB + 3-channel IR), which therefore keep the view."""

    @classmethod
    def from_recipe(cls, recipe: AugmentRecipe) -> _PairFlip:
        return cls(direction="horizontal", p=recipe.fliplr)

    def apply_image(self, labels: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        img = labels["img"]
        if params["flip"] and params["direction"] == "horizontal" and img.shape[2] <= 4:
            labels["img"] = cv2.flip(img, 1)
            return labels
        return super().apply_image(labels, params)


@dataclass(frozen=True)
class Transforms:
    """The transform classes :class:`PairAugment` composes. The default does the pixel work; ``--loader device``
    passes classes that record each image operation instead (``device/plan.py``), so both pipelines run one
    composition: the same draws from the same generators in the same order, and the same box updates.
    ``photometric``: the tail after mixup, in order, each built by ``cls.from_recipe(recipe)``: the per-sample
    operations on the finished canvas that move no box (the IR misregistration warps IR, but leaves the boxes in
    RGB's frame); a new one is one class added here (and its recording twin, for the device loader)."""

    mosaic: type[Mosaic] = _PairMosaic
    affine: type[RandomPerspective] = RandomPerspective
    mixup: type[MixUp] = _PairMixUp
    photometric: tuple[type, ...] = (_RGBHSV, _IRGain, _PairFlip, _IRMisregister)


class PairAugment:
    """The training pipeline: mosaic -> random perspective -> mixup -> HSV (RGB) -> IR gain -> flip -> IR
    misregistration.

    ``load(i)`` returns Ultralytics' label dict of pair ``i`` (stacked image resized so its long side is
    ``imgsz``, ``cls``, ``instances`` normalised xywh, ``ori_shape``, ``im_file``: ``labels.label_dict``); the
    result is an ``imgsz x imgsz`` stacked image with boxes in ``instances``. ``transforms``: which classes do
    each step (see :class:`Transforms`). ``obb``: the instances are oriented boxes (their corners as ``segments``,
    ``labels.OrientedLabels``), moved as Ultralytics' OBB pipeline moves them (``preserve_obb``).
    """

    def __init__(self, load: Callable[[int], dict[str, Any]], n: int, imgsz: int, recipe: AugmentRecipe,
                 transforms: Transforms = Transforms(), obb: bool = False):
        self.partners = partners = _Partners(load, n)
        # oriented boxes (labels.py): Ultralytics' switch for its OBB pipeline, as v8_transforms sets it for an OBB
        # dataset: Mosaic reads the dataset's use_obb, RandomPerspective takes preserve_obb; with it a box cut by the
        # border keeps its angle (the rectangle of its visible part in its own axes) instead of being squashed
        partners.use_obb = obb
        t = transforms
        affine = t.affine(degrees=recipe.degrees, translate=recipe.translate, scale=recipe.scale,
                          shear=recipe.shear, perspective=recipe.perspective, size=(imgsz, imgsz), preserve_obb=obb)
        mosaic = t.mosaic(partners, imgsz=imgsz, p=recipe.mosaic)
        mosaic.buffer_enabled = False  # see the module docstring: partners from the seeded RNG only
        pre = Compose([mosaic, affine])
        tail = [cls.from_recipe(recipe) for cls in t.photometric]
        self.with_mosaic = Compose([pre, t.mixup(partners, pre_transform=pre, p=recipe.mixup), *tail])
        self.without_mosaic = Compose([affine, *tail])  # close_mosaic: Ultralytics also drops mixup then

    def __call__(self, labels: dict[str, Any], key: tuple[int, ...], mosaic: bool,
                 window: np.ndarray | None = None) -> dict[str, Any]:
        """Augment ``labels`` with randomness drawn from ``key`` = (seed, epoch, index) only; mosaic and
        mixup partners come from the dataset indices in ``window`` (None: the whole dataset)."""
        p = self.partners
        p.own, p.window, p.fetched = key[-1], window, []
        try:
            with seeded_global_rngs(key):
                return (self.with_mosaic if mosaic else self.without_mosaic)(labels)
        finally:
            p.own, p.window = -1, None


class SampleDraw:
    """What a sample's augmentation is drawn from in the current epoch, for both loaders: the key ``(seed, epoch,
    index)``, whether mosaic is on (``close_mosaic``), and the partner pool of ``recipe.mosaic_partners``.

    The epoch lives in shared memory: DataLoader workers (persistent ones included) hold a copy of the dataset
    made when they started, and would otherwise keep augmenting with that epoch. ``partner_windows``: the
    training sampler's micro-batches (``sampler.MicroBatchWindows``); without them (a dataset built outside the
    trainer) every rule draws from the whole set.
    """

    def __init__(self, seed: int = 0, recipe: AugmentRecipe | None = None, epochs: int | None = None,
                 partner_windows=None):
        self.seed, self.recipe, self.epochs = seed, recipe or AugmentRecipe(), epochs
        self.windows = partner_windows
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __call__(self, index: int) -> tuple[tuple[int, int, int], bool, np.ndarray | None]:
        """(key, mosaic, window) of sample ``index``: :class:`PairAugment`'s arguments."""
        epoch, rule = self.epoch, self.recipe.mosaic_partners
        mosaic = self.epochs is None or self.recipe.mosaic_on(epoch, self.epochs)
        if self.windows is None or rule == "dataset":
            window = None
        else:
            window = self.windows(epoch, index) if rule == "micro_batch" else self.windows.pool(epoch, index)
        return (self.seed, epoch, index), mosaic, window
