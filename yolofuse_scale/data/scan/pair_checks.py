"""The checks of one pair: both files exist, their headers decode (no pixel decode) to the same displayed size, or
with data.yaml's ``ir_homography`` the warped IR frame covers RGB's; the label file (and with ``labels_ir`` the
IR image's own, the split's ``label_policy`` picking the boxes: ``modality.py``) parsed by ``label_rows.py``. What
the scan lets through cannot crash a step.

Cost: one ``stat`` per file plus a header read (JPEG: the header, its EXIF orientation included, and the
last two bytes, the whole file only when those are not the end marker; PNG: the chunk CRCs, then the
chunk headers again for an ``eXIf`` chunk, no pixel decode), on a thread
pool because on network file systems the latency, not the CPU, dominates.
"""

from __future__ import annotations

import functools
import os
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from yolofuse_scale.data import layouts
from yolofuse_scale.data.config import DatasetSpec
from yolofuse_scale.data.imagefile import PIL_FORMATS, oriented_size, pil_orientation
from yolofuse_scale.data.labels import KINDS
from yolofuse_scale.data.layouts import Listed
from yolofuse_scale.data.modality import apply_policy
from yolofuse_scale.data.registration import coverage
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.scan.label_rows import COLUMNS, parse_label_file
from yolofuse_scale.data.scan.listing import file_stat, label_path_for
from yolofuse_scale.data.scan.records import Problem


def jpeg_end(data: bytes) -> int | None:
    """Offset just past a JPEG's end-of-image marker, found by walking its segments; None if the data
    stops before it (a truncated file).

    Bytes after the marker (camera trailers, a converter's padding) are not part of the image: decoders
    stop at the marker. The walk cannot be fooled by an ``FF D9`` inside the data: segments are skipped
    by their length (an EXIF thumbnail ends with its own marker), and entropy-coded data escapes every
    ``FF`` it contains as ``FF 00`` (``FF D0``-``FF D7`` are restart markers, ``FF FF`` padding).
    """
    n, pos = len(data), 2  # after SOI
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return None  # not at a marker: the structure is broken
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > n:
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return None
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos += 2
                elif nxt == 0xFF:
                    pos += 1
                else:
                    break
    return None


def _jpeg_problem(path: Path) -> str | None:
    """Why a JPEG is truncated, or None. Fast path: it ends with the end-of-image marker (two bytes read).
    Otherwise the whole file is walked (:func:`jpeg_end`): data after the marker is accepted, as
    Ultralytics accepts (and rewrites) such files; a file that stops before it is not."""
    with open(path, "rb") as fh:
        fh.seek(-2, os.SEEK_END)
        if fh.read(2) == b"\xff\xd9":
            return None
        fh.seek(0)
        data = fh.read()
    if jpeg_end(data) is None:
        return "truncated JPEG (the data stops before the end-of-image marker)"
    return None


@dataclass(frozen=True)
class Header:
    """What the scan read from an image's header: the displayed ``size`` (width, height: EXIF orientation
    applied, as the loaders apply it), the format by content, and the orientation."""

    size: tuple[int, int]
    fmt: str
    orientation: int = 1
    bits: int = 8  #: bits per sample: 8, 16, or 32 (float or 32-bit integer TIFFs)


def _bits(im: Image.Image) -> int:
    """Bits per sample of an opened image, from its header: Pillow's mode, a PNG's raw mode (a 16-bit colour PNG
    opens as 8-bit ``RGB`` with raw mode ``RGB;16B``), a TIFF's BitsPerSample tag."""
    raw = im.tile[0][3] if im.tile else None
    rawmode = str(raw[0] if isinstance(raw, tuple) and raw else raw)
    if ";16" in rawmode or im.mode.startswith("I;16"):
        return 16
    if im.mode in ("I", "F"):
        return 32
    tag = getattr(im, "tag_v2", None)
    bps = tag.get(258) if tag is not None else None
    if bps:
        return int(max(bps) if isinstance(bps, tuple) else bps)
    return 8


def image_header_problem(path: Path) -> tuple[Header | None, str | None]:
    """``(Header, None)`` for an image every loader decodes, ``(None, why)`` otherwise.

    No pixel decode: PIL reads the header (the format from the content, whatever the name says); a JPEG must
    reach its end-of-image marker (a truncated download does not; see :func:`_jpeg_problem`), other formats go
    through ``Image.verify`` (PNG: every chunk and its CRC). A format the loaders do not read (a GIF named
    ``.png``) is a problem here, not a failed step hours later.
    """
    try:
        with Image.open(path) as im:
            size, pil_format, bits = im.size, im.format, _bits(im)
            fmt = PIL_FORMATS.get(pil_format)
            if fmt is None:
                return None, (f"a {pil_format} image (read from its content; the loaders read JPEG, PNG, WebP, BMP "
                              f"and TIFF, whatever the file name says)")
            if fmt == "jpeg":
                why = _jpeg_problem(path)
                if why:
                    return None, why
            else:
                im.verify()
            orientation = pil_orientation(im, path)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for bad files
        return None, f"unreadable or truncated image ({type(e).__name__}: {e})"
    if size[0] < 1 or size[1] < 1:
        return None, f"image has no pixels ({size[0]}x{size[1]})"
    return Header(oriented_size(*size, orientation), fmt, orientation, bits), None


def check_pair(cfg: DatasetSpec, item: Listed, policy: str = "rgb") -> tuple[Sample | None, list[Problem]]:
    """Pair one RGB image with its IR file and label; check both headers and every label row. With the IR images'
    own labels (``labels_ir``), both label files are read and ``policy`` (the split's) decides the boxes."""
    rgb, problems = item.rgb, []
    key = str(rgb)
    if item.ir is not None:  # named by the listing (a pairs file, DEYOLO's position)
        ir = item.ir
    else:
        ir_name = layouts.ir_of(cfg, key)
        if ir_name is None:
            why = f"{rgb}: no folder named '{cfg.images_dir}' in the path, so its partner file cannot be found"
            return None, [Problem(f"{item.origin}: {why}" if item.origin else why, key, kind="unpairable path")]
        ir = Path(ir_name)
    label = item.label or Path(layouts.label_of(cfg, key))
    if file_stat(rgb) is None:
        where = f"{item.origin}: image {rgb}" if item.origin else str(rgb)
        what = f"is a broken symbolic link (to {os.readlink(rgb)})" if os.path.islink(rgb) else "does not exist"
        return None, [Problem(f"{where} {what}", key, kind="missing image")]
    if file_stat(ir) is None:
        if item.ir is not None:
            return None, [Problem(f"{item.origin}: IR image {ir} does not exist", key, kind="no IR partner")]
        return None, [Problem(f"{rgb}: RGB image without IR partner (expected {ir})", key, kind="no IR partner")]
    if item.label is not None and file_stat(label) is None:  # named in a pairs file: it must be there
        return None, [Problem(f"{item.origin}: label file {label} does not exist (an image without objects needs an "
                              "empty .txt)", key, kind="missing label file")]
    heads = []
    for p in (rgb, ir):
        head, why = image_header_problem(p)
        if why:
            problems.append(Problem(f"{p}: {why}", key, kind="unreadable image"))
        heads.append(head)
    homography = cfg.ir_read.homography
    if heads[0] and heads[1] and homography is not None:  # registered at read time: sizes may differ
        _, why = cached_coverage(homography, heads[1].size, heads[0].size)
        if why:
            problems.append(Problem(f"{rgb}: {why}", key, kind="IR outside the RGB frame"))
    elif heads[0] and heads[1] and heads[0].size != heads[1].size:
        (w0, h0), (w1, h1) = heads[0].size, heads[1].size
        turned = [f"{name} turned by its EXIF orientation {h.orientation}"
                  for name, h in (("RGB", heads[0]), ("IR", heads[1])) if h.orientation >= 5]
        shown = f" (as displayed: {' and '.join(turned)})" if turned else (
            "; pairs from an unaligned rig need data.yaml's ir_homography (yolofuse-scale register)")
        problems.append(Problem(f"{rgb}: RGB is {w0}x{h0} but its IR partner {ir} is {w1}x{h1}{shown}", key,
                                kind="RGB/IR size mismatch"))
    has_label = file_stat(label) is not None
    boxes = _labels(label, cfg, problems, key) if has_label else _no_rows(cfg)
    label_ir, counts = None, None
    if cfg.labels_ir is not None:
        boxes, label_ir, counts = _modality_labels(cfg, rgb, boxes, policy, problems, key)
    hw = (heads[0].size[1], heads[0].size[0]) if heads[0] else None
    formats = (heads[0].fmt, heads[1].fmt) if heads[0] and heads[1] else None
    ir_hw = (heads[1].size[1], heads[1].size[0]) if heads[1] else None
    return Sample(rgb, ir, label if has_label else None, boxes, hw, formats, label_ir=label_ir, label_counts=counts,
                  ir_bits=heads[1] and heads[1].bits, ir_hw=ir_hw), problems


def _no_rows(cfg: DatasetSpec) -> np.ndarray:
    return np.zeros((0, COLUMNS[cfg.task]), np.float32)


def _labels(path: Path, cfg: DatasetSpec, problems: list[Problem], key: str) -> np.ndarray:
    return parse_label_file(path, cfg.nc, problems, key, cfg.task)


def _modality_labels(cfg: DatasetSpec, rgb: Path, rgb_rows: np.ndarray, policy: str, problems: list[Problem],
                     key: str) -> tuple[np.ndarray, Path | None, tuple[int, int, int, int]]:
    """(the rows ``policy`` keeps, the IR label file when there is one, ``modality.LabelCounts`` as a tuple)."""
    path = label_path_for(rgb, cfg.images_dir, cfg.labels_ir)
    has = file_stat(path) is not None
    ir_rows = _labels(path, cfg, problems, key) if has else _no_rows(cfg)
    rows, counts = apply_policy(policy, rgb_rows, ir_rows, KINDS[cfg.task].corners, cfg.union_iou)
    return rows, path if has else None, astuple(counts)


@functools.lru_cache(maxsize=64)
def cached_coverage(h: tuple, ir_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> tuple[float, str | None]:
    """``registration.coverage``, once per pair of sizes (a rig has one or a few)."""
    return coverage(h, ir_wh, rgb_wh)
