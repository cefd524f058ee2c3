"""Decoding a pair's files on the CPU into arrays, and the shape that decode gives, known from the header alone.

The format of a file is read from its content and its EXIF orientation from its bytes (``imagefile.py``); this
module turns those bytes into pixels. The CPU loader, the pair cache's builder, ``predict`` and the device
loader's workers (for the files torchvision cannot decode as OpenCV does) all decode here, so they agree by
construction; :func:`resized_hw` is the device loader's way of knowing, without decoding, the shape
:func:`decode_resized` gives.

A pair's IR file is read as its sample says (``Sample.ir_read``, from data.yaml): a frame deeper than 8 bits is
mapped to 8 bits by ``ir_mapping`` (:func:`map_depth`; RGB deeper than 8 bits keeps the per-frame min-max), and an
unaligned rig's IR frame is warped into RGB's frame by ``ir_homography`` (``registration.py``), both before anything
else sees the pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolofuse_scale.data.cache import resize_long_side
from yolofuse_scale.data.config import DataError, IRMapping
from yolofuse_scale.data.imagefile import layout, orient, oriented_size, pil_orientation, read_bytes
from yolofuse_scale.data.registration import register_ir
from yolofuse_scale.data.sample import Sample

_REDUCED = {  # libjpeg decodes straight to 1/2, 1/4, 1/8 of the size, skipping most of the inverse DCT
    (2, 3): cv2.IMREAD_REDUCED_COLOR_2, (4, 3): cv2.IMREAD_REDUCED_COLOR_4, (8, 3): cv2.IMREAD_REDUCED_COLOR_8,
    (2, 1): cv2.IMREAD_REDUCED_GRAYSCALE_2, (4, 1): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, 1): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def check_pair_args(imgsz: int, ir_channels: int) -> None:
    """What both loaders' datasets refuse at construction: pairs are decoded to 3 + 1 or 3 + 3 channels."""
    if ir_channels not in (1, 3):
        raise ValueError(f"ir_channels must be 1 or 3, got {ir_channels}")
    if imgsz <= 0:
        raise ValueError(f"imgsz must be positive, got {imgsz}")


def read_image(path: Path, channels: int, reduce: int = 1, mapping: IRMapping | None = None) -> np.ndarray:
    """Read an image as (H, W, channels) uint8: RGB order for 3 channels, grayscale for 1, upright.

    Any layout on disk is accepted (gray, gray + alpha, palette, BGR, BGRA, CMYK; 8 or 16 bit, float TIFF), so
    1-channel thermal files can feed a 3-channel IR stem and vice versa. The decoder is chosen by the content (OpenCV
    sniffs; a PNG named ``.jpg`` is a PNG) and the EXIF orientation is applied, as Ultralytics' reader does
    (``imagefile.py``). ``reduce`` (2, 4, 8: JPEGs only, see :func:`jpeg_reduction`): decoded at that fraction
    of the size. ``mapping``: how a frame deeper than 8 bits becomes 8 bits (:func:`map_depth`; None: each frame's
    min..max). Raises :class:`DataError` if the file cannot be read or decoded.
    """
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    return decode_bytes(data, channels, path, reduce, mapping)


def decode_raw(data: bytearray, path: Path | str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """A file's bytes decoded as stored: any depth, OpenCV's channel order, not turned (what the depth mapping and the
    percentile levels of ``levels.py`` read)."""
    try:
        im = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    except cv2.error as e:  # some truncated files make the decoder raise instead of return None
        raise DataError(f"{path}: cannot be decoded as an image ({e})") from e
    if im is None or im.size == 0:
        raise DataError(f"{path}: cannot be decoded as an image")
    return im


def decode_bytes(data: bytearray, channels: int, path: Path | str, reduce: int = 1,
                 mapping: IRMapping | None = None) -> np.ndarray:
    """:func:`read_image` of a file's bytes already read (``path`` names it in messages)."""
    # full size: IMREAD_UNCHANGED keeps 16 bits (mapped below) and ignores the EXIF orientation; reduced: libjpeg
    # decodes to BGR or gray, OpenCV's orientation switched off. Either way the orientation is applied below from
    # the same parser as the device loader's and the scan's, so the three cannot disagree.
    flags = cv2.IMREAD_UNCHANGED if reduce == 1 else _REDUCED[reduce, channels] | cv2.IMREAD_IGNORE_ORIENTATION
    im = decode_raw(data, path, flags)
    if reduce == 1:
        try:
            im = conform_channels(im, channels, bgr=True, mapping=mapping)
        except ValueError as e:
            raise DataError(f"{path}: {e}") from e
    else:
        im = im[..., None] if channels == 1 else cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
    return orient(im, layout(data).orientation)


def map_depth(im: np.ndarray, mapping: IRMapping | None = None) -> np.ndarray:
    """A frame deeper than 8 bits (uint16, int32, float32) as uint8 by ``mapping`` (``config.IRMapping``; None or
    ``minmax``: the frame's own min..max, OpenCV's ``NORM_MINMAX``, bit for bit what every release before did).
    ``range``/``percentile``: ``(raw - lo) * 255 / (hi - lo)``, clipped to 0..255, rounded half up, in float32 (exact
    for 16-bit raw values); ``shift8``: ``floor(raw / 256)`` clipped (``raw >> 8`` for uint16). Every channel alike."""
    if mapping is None or mapping.mode == "minmax":
        return cv2.normalize(im, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if mapping.mode == "shift8":
        if im.dtype == np.uint16:
            return (im >> 8).astype(np.uint8)
        return np.clip(np.floor(im.astype(np.float64) / 256), 0, 255).astype(np.uint8)
    if not mapping.resolved:  # a percentile mapping whose levels scan_dataset did not resolve: a caller's bug
        raise ValueError(f"ir_mapping {mapping.stated}: its levels are resolved over the training set at start")
    scale = np.float32(255.0 / (mapping.hi - mapping.lo))
    out = (im.astype(np.float32) - np.float32(mapping.lo)) * scale
    return np.floor(np.clip(out, 0, 255) + np.float32(0.5)).astype(np.uint8)


def conform_channels(im: np.ndarray, channels: int, bgr: bool = False, mapping: IRMapping | None = None
                     ) -> np.ndarray:
    """Bring a decoded image (gray, gray + alpha, 3- or 4-channel; 8 or 16 bit, float) to (H, W, channels) uint8.

    ``bgr`` says the colour order of a 3/4-channel input (OpenCV's decoders give BGR; arrays handed to
    the Python API are RGB). The output is RGB for 3 channels and grayscale for 1. A deeper image is mapped to 8
    bits first (:func:`map_depth` by ``mapping``; None: each frame's min..max).
    """
    if im.dtype != np.uint8:  # radiometric thermal frames (16-bit PNG/TIFF, float TIFF): see map_depth
        im = map_depth(im, mapping)
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


def stack_pair(rgb: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Stack (H, W, 3) RGB and (h, w, C_ir) IR into (H, W, 3 + C_ir); IR is resized to RGB's size if needed."""
    if ir.shape[:2] != rgb.shape[:2]:
        ir = cv2.resize(ir, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        ir = ir[..., None] if ir.ndim == 2 else ir
    return np.concatenate([rgb, ir], axis=2)


def read_ir(sample: Sample, ir_channels: int, out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A sample's IR frame as the model reads it: mapped to 8 bits by its ``ir_mapping``, and with an
    ``ir_homography`` warped into RGB's frame at ``out_hw`` (RGB as decoded; None: RGB's displayed size)."""
    ir = read_image(sample.ir, ir_channels, mapping=sample.ir_read.mapping)
    h = sample.ir_read.homography
    if h is None:
        return ir
    full = sample.hw or header_hw(sample.rgb)
    return register_ir(ir, h, full, out_hw or full)


def decode_pair(sample: Sample, ir_channels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The stacked (H, W, 3 + C_ir) pair at its original size, and that (h, w)."""
    rgb = read_image(sample.rgb, 3)
    ir = read_ir(sample, ir_channels, rgb.shape[:2])
    if ir.shape[:2] != rgb.shape[:2]:  # the scan reports this; only a hand-made sample list gets here
        raise DataError(f"{sample.rgb}: RGB is {rgb.shape[1]}x{rgb.shape[0]} but {sample.ir} is "
                        f"{ir.shape[1]}x{ir.shape[0]}")
    return np.concatenate([rgb, ir], axis=2), rgb.shape[:2]


def jpeg_reduction(sample: Sample, imgsz: int) -> int:
    """The largest factor (8, 4, 2, else 1) a JPEG pair (by content, as the scan read it) can be decoded down by
    and still have a long side of at least ``imgsz``. LLVIP at 640 px: 2, the 1280x1024 frames decode as
    640x512, ~3x faster."""
    if sample.hw is None or sample.formats is None or sample.formats[0] != "jpeg":
        return 1
    if sample.formats[1] != "jpeg" and sample.ir_read.homography is None:  # both decoded alike, to one size
        return 1
    return next((f for f in (8, 4, 2) if max(sample.hw) // f >= imgsz), 1)


def decode_resized(sample: Sample, imgsz: int, ir_channels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The stacked pair resized so its long side is ``imgsz`` (what the training recipe and the pair cache start
    from), and its original (h, w). What a bilinear resize would throw away is never decoded (a reduced JPEG)."""
    factor = jpeg_reduction(sample, imgsz)
    if factor > 1 and sample.ir_read.homography is not None:  # IR read at full size, warped into the reduced RGB
        rgb = read_image(sample.rgb, 3, factor)
        ir = read_ir(sample, ir_channels, rgb.shape[:2])
        return resize_long_side(np.concatenate([rgb, ir], axis=2), imgsz), sample.hw
    if factor > 1:
        rgb, ir = read_image(sample.rgb, 3, factor), read_image(sample.ir, ir_channels, factor)
        if ir.shape[:2] == rgb.shape[:2]:
            return resize_long_side(np.concatenate([rgb, ir], axis=2), imgsz), sample.hw
    pair, ori = decode_pair(sample, ir_channels)
    return resize_long_side(pair, imgsz), ori


def header_hw(path: Path) -> tuple[int, int]:
    """(h, w) as displayed, from the image header (PIL reads the header only, the EXIF orientation is applied as
    the scan applies it); for samples the scan did not size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = oriented_size(*im.size, pil_orientation(im, path))
    except (OSError, ValueError, ImportError) as e:
        # ImportError: once Ultralytics is imported, its patched Image.open answers a file Pillow cannot identify
        # by importing pi_heif (never installed here: YOLO_AUTOINSTALL is off), which fails with ModuleNotFoundError
        raise DataError(f"{path}: cannot read the image size ({type(e).__name__}: {e})") from e
    return h, w


def resized_hw(sample: Sample, imgsz: int) -> tuple[int, int]:
    """The shape :func:`decode_resized` gives this sample, from its header size alone: a JPEG decoded at 1/f
    (libjpeg rounds its sides up) is then resized so its long side is ``imgsz``."""
    h, w = sample.hw or header_hw(sample.rgb)
    f = jpeg_reduction(sample, imgsz)
    if f > 1:
        h, w = -(-h // f), -(-w // f)
    r = imgsz / max(h, w)
    return (min(round(h * r), imgsz), min(round(w * r), imgsz)) if r != 1 else (h, w)
