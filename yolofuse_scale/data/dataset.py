"""The paired dataset: decoding a scanned pair into one stacked array, and batching.

Which pairs exist and whether they are sound is decided beforehand by ``scan.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from ultralytics.utils.instance import Instances

from yolofuse_scale.data.augment import AugmentRecipe, PairAugment
from yolofuse_scale.data.cache import CACHE_MODES, PairCache, cache_folder, cache_key, open_pair_cache, resize_long_side
from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.imagefile import layout, orient, read_bytes
from yolofuse_scale.data.sampler import MicroBatchWindows
from yolofuse_scale.data.scan import Sample
from yolofuse_scale.data.transforms import chw_tensor, letterbox_pair


def read_image(path: Path, channels: int) -> np.ndarray:
    """Read an image as (H, W, channels) uint8: RGB order for 3 channels, grayscale for 1, upright.

    Any layout on disk is accepted (gray, gray + alpha, palette, BGR, BGRA, CMYK; 8 or 16 bit), so 1-channel
    thermal files can feed a 3-channel IR stem and vice versa. The decoder is chosen by the content (OpenCV
    sniffs; a PNG named ``.jpg`` is a PNG) and the EXIF orientation is applied, as Ultralytics' reader does
    (``imagefile.py``). Raises :class:`DataError` if the file cannot be read or decoded.
    """
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    return decode_bytes(data, channels, path)


def decode_bytes(data: bytearray, channels: int, path: Path | str) -> np.ndarray:
    """:func:`read_image` of a file's bytes already read (``path`` names it in messages)."""
    try:
        # IMREAD_UNCHANGED keeps 16 bits (stretched below) and ignores the EXIF orientation, applied here
        # from the same parser as the device loader's and the scan's, so the three cannot disagree
        im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error as e:  # some truncated files make the decoder raise instead of return None
        raise DataError(f"{path}: cannot be decoded as an image ({e})") from e
    if im is None or im.size == 0:
        raise DataError(f"{path}: cannot be decoded as an image")
    try:
        im = conform_channels(im, channels, bgr=True)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from e
    return orient(im, layout(data).orientation)


def stack_pair(rgb: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Stack (H, W, 3) RGB and (h, w, C_ir) IR into (H, W, 3 + C_ir); IR is resized to RGB's size if needed."""
    if ir.shape[:2] != rgb.shape[:2]:
        ir = cv2.resize(ir, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        ir = ir[..., None] if ir.ndim == 2 else ir
    return np.concatenate([rgb, ir], axis=2)


def conform_channels(im: np.ndarray, channels: int, bgr: bool = False) -> np.ndarray:
    """Bring a decoded image (gray, gray + alpha, 3- or 4-channel; 8 or 16 bit) to (H, W, channels) uint8.

    ``bgr`` says the colour order of a 3/4-channel input (OpenCV's decoders give BGR; arrays handed to
    the Python API are RGB). The output is RGB for 3 channels and grayscale for 1.
    """
    if im.dtype != np.uint8:  # 16-bit thermal TIFFs: stretch each frame's range to 8 bits
        im = cv2.normalize(im, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if im.ndim == 3 and im.shape[2] in (1, 2):  # gray or gray + alpha
        im = im[..., 0]
    elif im.ndim == 3 and im.shape[2] == 4:  # BGRA: alpha carries no scene content
        im = im[..., :3]
    if im.ndim != 2 and not (im.ndim == 3 and im.shape[2] == 3):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {im.shape}")
    if channels == 1:
        if im.ndim == 3:
            im = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(im[..., None])
    if im.ndim == 2:
        return np.repeat(im[..., None], 3, axis=2)
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(im)


_REDUCED = {  # libjpeg decodes straight to 1/2, 1/4, 1/8 of the size, skipping most of the inverse DCT
    (2, 3): cv2.IMREAD_REDUCED_COLOR_2, (4, 3): cv2.IMREAD_REDUCED_COLOR_4, (8, 3): cv2.IMREAD_REDUCED_COLOR_8,
    (2, 1): cv2.IMREAD_REDUCED_GRAYSCALE_2, (4, 1): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, 1): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def jpeg_reduction(sample: Sample, imgsz: int) -> int:
    """The largest factor (8, 4, 2, else 1) a JPEG pair (by content, as the scan read it) can be decoded down by
    and still have a long side of at least ``imgsz``. LLVIP at 640 px: 2, the 1280x1024 frames decode as
    640x512, ~3x faster."""
    if sample.hw is None or sample.formats != ("jpeg", "jpeg"):
        return 1
    return next((f for f in (8, 4, 2) if max(sample.hw) // f >= imgsz), 1)


def read_jpeg_reduced(path: Path, channels: int, factor: int) -> np.ndarray:
    """A JPEG decoded at 1/``factor`` of its size, as :func:`read_image` returns it (RGB or 1-channel, upright:
    OpenCV's orientation is switched off and the shared parser's applied, as there)."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        im = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor, channels] | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:
        raise DataError(f"{path}: cannot be decoded as an image ({e})") from e
    if im is None or im.size == 0:
        raise DataError(f"{path}: cannot be decoded as an image")
    im = im[..., None] if channels == 1 else cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
    return orient(im, layout(data).orientation)


class PairedRGBIRDataset(Dataset):
    """RGB + IR pairs as one stacked uint8 tensor ``(3 + ir_channels, imgsz, imgsz)``, RGB first.

    ``augment=False`` (validation, ``--no-augment``): letterbox only. ``augment=True``: the YOLOv8
    recipe of ``augment.py`` (mosaic, random perspective, mixup, HSV on RGB, IR gain, flip), with
    mosaic off in the last ``recipe.close_mosaic`` of ``epochs``. Its randomness is a function of
    ``(seed, epoch, index)`` only, so a sample looks the same whatever the worker count, world size or
    resume point.
    """

    def __init__(
        self,
        samples: list[Sample],
        imgsz: int,
        augment: bool,
        ir_channels: int = 3,
        seed: int = 0,
        recipe: AugmentRecipe | None = None,
        epochs: int | None = None,
        partner_windows: MicroBatchWindows | None = None,
    ):
        """``partner_windows``: the sampler's micro-batches, read with ``recipe.mosaic_partners`` = micro_batch."""
        if ir_channels not in (1, 3):
            raise ValueError(f"ir_channels must be 1 or 3, got {ir_channels}")
        if imgsz <= 0:
            raise ValueError(f"imgsz must be positive, got {imgsz}")
        self.samples, self.imgsz, self.augment = samples, imgsz, augment
        self.ir_channels, self.seed, self.epochs = ir_channels, seed, epochs
        self.recipe = recipe or AugmentRecipe()
        self.pipeline = PairAugment(self.resized_labels, len(samples), imgsz, self.recipe) if augment else None
        self.cache: PairCache | None = None
        # recipe.mosaic_partners == "micro_batch": partners from the sample's micro-batch (``partner_windows``);
        # the pairs of the last two micro-batches stay decoded in this process, so each pair is decoded about
        # once per epoch, not four times (~85 MB a worker at 640 px, batch 16). Entries are read-only: a
        # transform writing into a shared copy would fail loudly, not change a later sample. The default,
        # "dataset", ignores the windows and keeps nothing: a partner drawn from the whole set is rarely
        # one of the few pairs a worker decoded last.
        by_batch = partner_windows is not None and self.recipe.mosaic_partners == "micro_batch"
        self.partner_windows = partner_windows if by_batch else None
        self._recent: OrderedDict[int, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()
        self._recent_cap = 2 * partner_windows.batch_size if by_batch else 0
        # The epoch lives in shared memory: DataLoader workers (persistent ones included) hold a copy of
        # this object made when they started, and would otherwise keep augmenting with that epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws ``__getitem__`` makes (no effect without augment).

        Call it before iterating the epoch's loader: workers read it when they build each sample.
        """
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.samples)

    def load_pair(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The stacked (H, W, 3 + C_ir) pair at its original size."""
        s = self.samples[index]
        rgb = read_image(s.rgb, 3)
        ir = read_image(s.ir, self.ir_channels)
        if ir.shape[:2] != rgb.shape[:2]:  # the scan reports this; only a hand-made sample list gets here
            raise DataError(f"{s.rgb}: RGB is {rgb.shape[1]}x{rgb.shape[0]} but {s.ir} is {ir.shape[1]}x{ir.shape[0]}")
        return np.concatenate([rgb, ir], axis=2), rgb.shape[:2]

    def use_cache(self, mode: str, folders: list[Path] | tuple[Path, ...], log=print) -> None:
        """Read pairs from the node's shared decoded-pair cache (``ram`` or ``disk``; see ``cache.py``),
        building it first if no process has. Training sets only: cached pairs are resized, so the
        ``ratio_pad`` of a letterboxed item no longer maps to the original image."""
        if mode == "none":
            return
        if mode not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        key = cache_key(self.samples, self.imgsz, self.ir_channels)
        self.cache = None  # build from the decoder itself
        self.cache = open_pair_cache(cache_folder(mode, folders), key, len(self), self._decode_resized, self.imgsz,
                                     log)

    def resized_pair(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The stacked pair resized so its long side is ``imgsz``, and its original (h, w)."""
        hit = self._recent.get(index)
        if hit is not None:
            self._recent.move_to_end(index)
            return hit
        pair, ori = self._decode_resized(index)
        if self._recent_cap:
            pair.flags.writeable = False
            self._recent[index] = (pair, ori)
            while len(self._recent) > self._recent_cap:
                self._recent.popitem(last=False)
        return pair, ori

    def _decode_resized(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self.cache is not None:
            return self.cache.get(index)
        s = self.samples[index]
        factor = jpeg_reduction(s, self.imgsz)
        if factor > 1:  # what a bilinear resize would throw away is never decoded
            rgb, ir = read_jpeg_reduced(s.rgb, 3, factor), read_jpeg_reduced(s.ir, self.ir_channels, factor)
            if ir.shape[:2] == rgb.shape[:2]:
                return resize_long_side(np.concatenate([rgb, ir], axis=2), self.imgsz), s.hw
        pair, ori = self.load_pair(index)
        return resize_long_side(pair, self.imgsz), ori

    def resized_labels(self, index: int) -> dict:
        """Ultralytics' label dict of a pair, resized so its long side is ``imgsz`` (as its ``load_image``)."""
        pair, (h0, w0) = self.resized_pair(index)
        boxes = self.samples[index].boxes
        return {"img": pair, "cls": boxes[:, :1].copy(), "ori_shape": (h0, w0), "resized_shape": pair.shape[:2],
                "instances": Instances(boxes[:, 1:].copy(), bbox_format="xywh", normalized=True),
                "im_file": str(self.samples[index].rgb)}

    def __getitem__(self, index: int) -> dict:
        """The pair (letterboxed, or augmented) with its targets.

        ``img`` is uint8 ``(3 + ir_channels, imgsz, imgsz)``, R, G, B then IR; ``bboxes`` are xywh
        normalised to that canvas; ``ratio_pad`` is ``((r, r), (padw, padh))`` for ``scale_boxes``
        (identity for an augmented sample, whose boxes do not map back to one original).
        """
        if self.pipeline is None:
            pair, ori_shape = self.load_pair(index) if self.cache is None else self.cache.get(index)
            boxes = self.samples[index].boxes
            img, xywh, ratio_pad = letterbox_pair(pair, boxes[:, 1:], self.imgsz)
            cls = boxes[:, :1]
        else:
            epoch = self.epoch
            mosaic = self.epochs is None or self.recipe.mosaic_on(epoch, self.epochs)
            window = self.partner_windows(epoch, index) if self.partner_windows else None
            labels = self.pipeline(self.resized_labels(index), (self.seed, epoch, index), mosaic, window)
            img = labels["img"]
            xywh, cls, ori_shape, ratio_pad = augmented_targets(labels)
        return {
            "img": chw_tensor(img),
            "cls": torch.from_numpy(np.asarray(cls, dtype=np.float32).copy()),
            "bboxes": torch.from_numpy(np.asarray(xywh, dtype=np.float32).reshape(-1, 4)),
            "im_file": str(self.samples[index].rgb),
            "ir_file": str(self.samples[index].ir),
            "ori_shape": ori_shape,
            "ratio_pad": ratio_pad,
            "index": index,
        }


def augmented_targets(labels: dict) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """(xywh normalised to the output image, cls (N, 1), ori_shape, ratio_pad) of an augmented sample's labels
    (``--loader device`` reads the same from its plan's labels)."""
    img = labels["img"]
    inst = labels["instances"]
    inst.convert_bbox("xywh")
    inst.normalize(img.shape[1], img.shape[0])
    return inst.bboxes, labels["cls"].reshape(-1, 1), labels["ori_shape"], ((1.0, 1.0), (0.0, 0.0))


def collate_pairs(batch: list[dict]) -> dict:
    """Stack images; concatenate targets with ``batch_idx`` (the format ``v8DetectionLoss`` reads)."""
    # torch's default collate of a tensor list: in a worker it stacks straight into shared memory,
    # saving a second copy of the batch (26 MB at 640 px, batch 16) on its way to the main process
    return {"img": default_collate([b["img"] for b in batch]), **collate_targets(batch)}


def collate_targets(batch: list[dict]) -> dict:
    """A batch's targets and sample records, as both loaders hand them to the loop."""
    return {
        "cls": torch.cat([b["cls"] for b in batch]),
        "bboxes": torch.cat([b["bboxes"] for b in batch]),
        "batch_idx": torch.cat([torch.full((len(b["cls"]),), float(i)) for i, b in enumerate(batch)]),
        "im_file": [b["im_file"] for b in batch],
        "ir_file": [b["ir_file"] for b in batch],
        "ori_shape": [b["ori_shape"] for b in batch],
        "ratio_pad": [b["ratio_pad"] for b in batch],
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
    }
