"""What an image file holds, read from its bytes: its format (by content, never by name), its EXIF orientation,
and the layout that decides which decoder ``--loader device`` may use. Shared by the scan (sizes; a JPEG's EXIF
block as Pillow read it with the header), the CPU loader (``decode.read_image``) and the device loader, so the
three agree by construction.

Format by content: a PNG named ``.jpg`` is a PNG, as OpenCV and Pillow (and so the scan) read it.

EXIF orientation is applied, as Ultralytics (8.4) trains on it: its ``imread`` decodes with OpenCV's
``IMREAD_COLOR``, which turns JPEG, PNG (``eXIf`` chunk, before or after the pixel data) and WebP (``EXIF``
chunk) files upright for orientations 2-8, and its ``exif_size`` reports the displayed size (sides swapped for
5-8), so labels drawn on the displayed image are trained where they were drawn. OpenCV's TIFF decoder applies
the TIFF orientation tag in every mode, and Pillow already reports a TIFF's displayed size: TIFF needs nothing
here. BMP has no EXIF. Values outside 1-8 (0 from some cameras) mean "as stored", as for OpenCV and Pillow.

Cost: a walk over the JPEG segments before the first scan (a handful: ~4 us), over a PNG's chunk headers (~60
us for a 1.4 MB frame in 8 KB chunks, 0.3 % of its decode; ``bytes.find`` of the chunk name costs 20x that) or a
WebP's few chunks, on bytes the loaders read anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Pillow's format names of what every loader decodes -> ours (MPO: a camera JPEG with a second picture inside).
PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "DIB": "bmp",
               "TIFF": "tiff"}
#: Formats whose EXIF orientation the loaders apply themselves (OpenCV's ``IMREAD_UNCHANGED`` ignores it).
ORIENTED = frozenset({"jpeg", "png", "webp"})
_TAG_ORIENTATION = 0x0112
_SOF_HUFFMAN = (0xC0, 0xC1, 0xC2)  # baseline, extended, progressive (Huffman): what every JPEG decoder reads
_SOF_OTHER = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)  # lossless, hierarchical, arithmetic


def sniff(head: bytes | bytearray) -> str | None:
    """The format of a file from its first 12 bytes: jpeg, png, webp, bmp, tiff, gif, or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


@dataclass(frozen=True)
class Layout:
    """What the bytes of one image say: ``fmt`` (by content), ``orientation`` (1-8; 1 where nothing is to be
    done), and ``plain``: an 8-bit gray or RGB(A) JPEG or PNG, which torchvision decodes to OpenCV's pixels
    (palette, 1/2/4/16-bit PNGs and CMYK, 12-bit or arithmetic JPEGs are not plain)."""

    fmt: str | None
    orientation: int = 1
    plain: bool = False


def layout(data: bytes | bytearray) -> Layout:
    """:class:`Layout` of a whole file's bytes."""
    fmt = sniff(data[:12])
    if fmt == "jpeg":
        return Layout(fmt, *_jpeg(data))
    if fmt == "png":
        depth, colour = (data[24], data[25]) if len(data) > 25 else (0, 0)
        return Layout(fmt, _png_orientation(data), depth == 8 and colour in (0, 2, 4, 6))
    if fmt == "webp":
        return Layout(fmt, _webp_orientation(data))
    return Layout(fmt)


def pil_orientation(im: Image.Image, path: Path | str) -> int:
    """The orientation the loaders apply to a file Pillow has opened (the scan's view): a JPEG's from the EXIF
    block Pillow read with its header (the first ``Exif`` APP1, as :func:`layout` picks it; no more IO), a PNG's
    or WebP's from the file's bytes (a PNG's are all read by ``verify`` anyway)."""
    fmt = PIL_FORMATS.get(im.format or "")
    if fmt == "jpeg":
        exif = im.info.get("exif")
        return _tiff_orientation(exif) if exif else 1
    return layout(read_bytes(path)).orientation if fmt in ORIENTED else 1


def oriented_size(w: int, h: int, orientation: int) -> tuple[int, int]:
    """(width, height) as displayed: orientations 5-8 turn the image a quarter."""
    return (h, w) if orientation >= 5 else (w, h)


#: orientation -> (transpose first, then flip rows, flip columns): the displayed image from the stored one
STEPS = {2: (False, False, True), 3: (False, True, True), 4: (False, True, False), 5: (True, False, False),
         6: (True, False, True), 7: (True, True, True), 8: (True, True, False)}


def orient(im: np.ndarray, orientation: int) -> np.ndarray:
    """An (H, W[, C]) decoded image turned upright (a new contiguous array; the input itself for 1)."""
    if orientation not in STEPS:
        return im
    transpose, rows, cols = STEPS[orientation]
    if transpose:
        im = im.swapaxes(0, 1)
    if rows:
        im = im[::-1]
    if cols:
        im = im[:, ::-1]
    return np.ascontiguousarray(im)


def read_bytes(path: Path | str) -> bytearray:
    """A file's bytes in a writable buffer (``np.frombuffer`` and ``torch.frombuffer`` share it, no copy)."""
    with open(path, "rb") as fh:
        buf = bytearray(os.fstat(fh.fileno()).st_size)
        n = fh.readinto(buf)
    return buf if n == len(buf) else buf[:n]


# ------------------------------------------------------------------------------------------ parsers
def _tiff_orientation(t: bytes | bytearray) -> int:
    """Orientation tag of the first IFD of an EXIF (TIFF-structured) block; 1 if absent or malformed."""
    if t[:6] == b"Exif\x00\x00":  # some writers keep the JPEG prefix in PNG/WebP chunks too
        t = t[6:]
    order = {b"II": "little", b"MM": "big"}.get(bytes(t[:2]))
    if order is None or len(t) < 8:
        return 1
    ifd = int.from_bytes(t[4:8], order)
    if ifd + 2 > len(t):
        return 1
    for i in range(int.from_bytes(t[ifd : ifd + 2], order)):
        p = ifd + 2 + 12 * i
        if p + 12 > len(t):
            break
        if int.from_bytes(t[p : p + 2], order) == _TAG_ORIENTATION:
            kind = int.from_bytes(t[p + 2 : p + 4], order)
            size = {3: 2, 4: 4}.get(kind)  # SHORT, or LONG from a careless writer
            v = int.from_bytes(t[p + 8 : p + 8 + size], order) if size else 1
            return v if 1 <= v <= 8 else 1
    return 1


def _jpeg(data: bytes | bytearray) -> tuple[int, bool]:
    """(orientation from the first ``Exif`` APP1, plain): the segments before the first scan are walked."""
    o, plain, pos, n = None, False, 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return o or 1, plain  # broken structure: the decoder will say so
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA or marker == 0xD9 or end > n:
            break
        if marker == 0xE1 and o is None and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            o = _tiff_orientation(data[pos + 10 : end])
        elif marker in _SOF_HUFFMAN:
            plain = data[pos + 4] == 8 and data[pos + 9] in (1, 3)  # 8-bit, gray or YCbCr/RGB (not CMYK/YCCK)
        elif marker in _SOF_OTHER:
            plain = False
        pos = end
    return o or 1, plain


def _png_orientation(data: bytes | bytearray) -> int:
    """Orientation from an ``eXIf`` chunk, wherever it is (OpenCV reads one after the pixel data too)."""
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return _tiff_orientation(data[pos + 8 : pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    return 1


def _webp_orientation(data: bytes | bytearray) -> int:
    """Orientation from the ``EXIF`` chunk of an extended WebP."""
    pos, n = 12, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"EXIF":
            return _tiff_orientation(data[pos + 8 : pos + 8 + length])
        pos += 8 + length + (length & 1)
    return 1
