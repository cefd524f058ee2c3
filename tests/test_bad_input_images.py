"""Image files: what the scan accepts, every loader reads, and reads alike; what they cannot read, the scan refuses.

Each kind (a layout, a format, an EXIF orientation, a name that lies about the format, ...) is planted in a copy of
the battery's small dataset (80x64 frames). For every kind the scan accepts, this file's own and the battery's
``DATA_ACCEPTED`` alike:

- the scan's sizes are the decoded sizes, and Ultralytics' (``exif_size``); the CPU loader reads what Ultralytics'
  ``imread`` reads (the EXIF orientation applied: labels refer to the displayed image), upright;
- ``--loader device`` gives the CPU loader's boxes exactly and its pixels within the device-loader tests'
  tolerances (tests/test_device_loader.py), in training (letterbox, and the augmented recipe) and validation;
- the pair cache holds the pixels the loaders decode, and both loaders read the same cached bytes.

At ``--imgsz 32`` the frames are at least twice the size, so JPEG pairs take the CPU loader's reduced decode.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _data_error, _scan_data, _tr
from tests.test_bad_input_data import DATA_ACCEPTED
from yolofuse_scale.data import PairedRGBIRDataset, load_data_config, scan_split
from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.data.cache import resize_long_side
from yolofuse_scale.data.decode import read_image
from yolofuse_scale.data.imagefile import layout, orient, pil_orientation
from yolofuse_scale.data.loaders import training_feed, validation_feed

S = 32
small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures


# ------------------------------------------------------------------------------------------ planting
def _pil(d: Path, folder: str, i: int) -> Image.Image:
    with Image.open(_tr(d, folder, i)) as im:
        return im.copy()


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _cv2(arr: np.ndarray, ext: str = ".png") -> bytes:
    return cv2.imencode(ext, arr)[1].tobytes()


def _pair(d: Path, i: int, rgb: bytes | None = None, ir: bytes | None = None, ext: str = "png") -> None:
    """Pair ``i`` rewritten: ``rgb``/``ir`` bytes (None: the file's present bytes), both named ``.ext`` (a pair
    shares its file name)."""
    for folder, data in (("images", rgb), ("imagesIR", ir)):
        old = next(_tr(d, folder, i).parent.glob(f"train_{i:05d}.*"))
        data = old.read_bytes() if data is None else data
        old.unlink()
        _tr(d, folder, i, ext).write_bytes(data)


def _exif(orientation: int) -> Image.Exif:
    e = Image.Exif()
    e[0x0112] = orientation
    return e


# what a camera stored before tagging the file with orientation o (Pillow's turns undo o; 6 and 8 the other way)
T = Image.Transpose
_STORED = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90,
           7: T.TRANSVERSE, 8: T.ROTATE_270}


def _turned(im: Image.Image, o: int, fmt: str, **kw) -> bytes:
    """``im`` stored as a camera turned by orientation ``o`` stores it, tagged ``o``: displayed, it is ``im``."""
    return _encode(im.transpose(_STORED[o]) if o in _STORED else im, fmt, exif=_exif(o), **kw)


def _re(fmt: str, i: int = 1, **kw):
    """Both files of pair ``i`` re-encoded by Pillow in ``fmt``."""
    ext = {"JPEG": "jpg", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp"}[fmt]

    def plant(d: Path) -> list[int]:
        _pair(d, i, _encode(_pil(d, "images", i), fmt, **kw), _encode(_pil(d, "imagesIR", i), fmt, **kw), ext)
        return [i]
    return plant


def _rgb_as(mode: str, fmt: str = "PNG", upright: bool = False, **kw):
    """The RGB file of pair 1 converted to Pillow ``mode`` (the IR file follows a JPEG's name, unchanged)."""
    def plant(d: Path) -> list[int]:
        im = _pil(d, "images", 1)
        im = im.convert(mode, **kw) if mode != "RGBA" else _with_alpha(im)
        save = {"quality": 95} if fmt == "JPEG" else {}
        _pair(d, 1, _encode(im, fmt, **save), None, "jpg" if fmt == "JPEG" else "png")
        return [1] if upright else []
    return plant


def _with_alpha(im: Image.Image) -> Image.Image:
    im = im.convert("RGBA")
    im.putalpha(Image.linear_gradient("L").resize(im.size))
    return im


def _palette_rgb_transparent(d):
    im = _pil(d, "images", 1).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    _pair(d, 1, _encode(im, "PNG", transparency=0))
    return []


def _ir_colour_mapped(palette: bool):
    """IR as a thermal camera's colour-mapped preview: an RGB (or palette) PNG feeding a 1-channel IR stem."""
    def plant(d):
        for i in (1, 2):
            ir = cv2.applyColorMap(np.asarray(_pil(d, "imagesIR", i)), cv2.COLORMAP_INFERNO)[..., ::-1]
            im = Image.fromarray(np.ascontiguousarray(ir))
            _pair(d, i, None, _encode(im.convert("P", palette=Image.Palette.ADAPTIVE) if palette else im, "PNG"))
        return []
    return plant


def _ir_16bit_png(d):
    ir = np.asarray(_pil(d, "imagesIR", 1)).astype(np.uint16) * 40 + 7000  # raw thermal counts
    _pair(d, 1, None, _cv2(ir))
    return []


def _rgb_16bit_png(d):
    rgb = np.asarray(_pil(d, "images", 1))[..., ::-1].astype(np.uint16) * 257
    _pair(d, 1, _cv2(rgb))
    return []


def _rgb_16bit_tiff_ir(d):
    ir = np.asarray(_pil(d, "imagesIR", 1)).astype(np.uint16) * 40 + 7000
    _pair(d, 1, _encode(_pil(d, "images", 1), "TIFF"), _cv2(ir, ".tiff"), "tiff")
    return []


def _orientations(fmt: str, values: tuple[int, ...], ir_too: bool = True, **kw):
    """Pairs 1, 2, ... stored turned and tagged with each orientation of ``values`` (displayed: the template)."""
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff"}[fmt]

    def plant(d):
        for i, o in enumerate(values, 1):
            rgb = _turned(_pil(d, "images", i), o, fmt, **kw)
            ir = _turned(_pil(d, "imagesIR", i), o, fmt, **kw) if ir_too else _encode(_pil(d, "imagesIR", i), fmt, **kw)
            _pair(d, i, rgb, ir, ext)
        return list(range(1, len(values) + 1))
    return plant


def _rgb_turned_ir_upright(d):
    """A phone's RGB stored sideways with orientation 6 next to an IR camera's upright frame: stored sizes differ,
    displayed sizes agree."""
    _pair(d, 1, _turned(_pil(d, "images", 1), 6, "JPEG", quality=95), _encode(_pil(d, "imagesIR", 1), "JPEG",
                                                                              quality=95), "jpg")
    return [1]


def _misnamed(fmt: str, ext: str):
    def plant(d):
        kw = {"quality": 95} if fmt == "JPEG" else {}
        _pair(d, 1, _encode(_pil(d, "images", 1), fmt, **kw), _encode(_pil(d, "imagesIR", 1), fmt, **kw), ext)
        return [1]
    return plant


def _ir_one_channel_fed_to_three(d):
    y = d / "data.yaml"
    y.write_text(y.read_text().replace("ir_channels: 1", "ir_channels: 3"))
    return [1]


#: kind -> plant(copy of the small dataset) -> the training pairs whose files display the template's pixels
#: (up to compression): the upright check compares them with the template
IMAGE_KINDS = {
    "RGB: grayscale PNG": _rgb_as("L"),
    "RGB: gray + alpha PNG": _rgb_as("LA"),
    "RGB: RGBA PNG": _rgb_as("RGBA", upright=True),
    "RGB: palette PNG": _rgb_as("P", palette=Image.Palette.ADAPTIVE, colors=64),
    "RGB: palette PNG with a transparent entry": _palette_rgb_transparent,
    "RGB: 16-bit PNG": _rgb_16bit_png,
    "RGB: grayscale JPEG": _rgb_as("L", "JPEG"),
    "RGB: CMYK JPEG": _rgb_as("CMYK", "JPEG"),
    "progressive JPEG pair": _re("JPEG", quality=95, progressive=True),
    "IR: colour-mapped RGB PNG, ir_channels 1": _ir_colour_mapped(palette=False),
    "IR: colour-mapped palette PNG, ir_channels 1": _ir_colour_mapped(palette=True),
    "IR: 16-bit PNG": _ir_16bit_png,
    "IR: 16-bit TIFF": _rgb_16bit_tiff_ir,
    "IR: 1-channel files, ir_channels 3": _ir_one_channel_fed_to_three,
    "JPEG pairs with EXIF orientation 2-8": _orientations("JPEG", (2, 3, 4, 5, 6, 7, 8), quality=95),
    "JPEG pair with EXIF orientation 0 (undefined)": _orientations("JPEG", (0,), quality=95),
    "PNG pairs with EXIF orientation 6 and 3": _orientations("PNG", (6, 3)),
    "WebP pair with EXIF orientation 8": _orientations("WEBP", (8,), lossless=True),
    "TIFF pair with EXIF orientation 6": _orientations("TIFF", (6,)),
    "RGB turned by EXIF orientation, IR stored upright": _rgb_turned_ir_upright,
    "WebP pair (lossless)": _re("WEBP", lossless=True),
    "WebP pair (lossy)": _re("WEBP", quality=90),
    "BMP pair": _re("BMP"),
    "PNG pair named .jpg": _misnamed("PNG", "jpg"),
    "JPEG pair named .png": _misnamed("JPEG", "png"),
    "WebP pair named .png": _misnamed("WEBP", "png"),
}
#: what a file that displays the template's pixels may differ by: JPEG (quality 95, a 1/2 decode) and lossy WebP
UPRIGHT_TOL = 4.0


def _plant(kind: str, d: Path) -> list[int]:
    if kind in IMAGE_KINDS:
        return IMAGE_KINDS[kind](d)
    DATA_ACCEPTED[kind](d)
    return []


ALL_ACCEPTED = [*IMAGE_KINDS, *DATA_ACCEPTED]


# ------------------------------------------------------------------------------------------ accepted
def _index(sample) -> int:
    return int(sample.rgb.stem.split("_")[-1])


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_image_kind_is_read_upright_at_the_scans_size_as_ultralytics_reads_it(fresh_data, small_data_template, kind,
                                                                             tmp_path):
    """The scan accepts the kind and reports nothing skipped; every file decodes (CPU loader, full and reduced
    decode, and the pair cache) at the scan's size, which is Ultralytics' ``exif_size``; the RGB file reads as
    Ultralytics' ``imread`` reads it; the planted files display the template's pixels."""
    from ultralytics.data.utils import exif_size
    from ultralytics.utils.patches import imread

    upright = IMAGE_KINDS[kind](fresh_data)
    result = _scan_data(fresh_data)
    samples = result.take(log=lambda _m: None)["train"]
    assert len(samples) == 8 and "nothing skipped" in result.report(), result.report()
    irc = load_data_config(fresh_data / "data.yaml").ir_channels
    for s in samples:
        rgb, ir = read_image(s.rgb, 3), read_image(s.ir, irc)
        assert rgb.shape[:2] == ir.shape[:2] == s.hw == (64, 80), (s.rgb, rgb.shape, ir.shape, s.hw)
        with Image.open(s.rgb) as im:
            assert exif_size(im)[::-1] == s.hw, s.rgb
        ref = imread(str(s.rgb), cv2.IMREAD_COLOR)[..., ::-1]  # Ultralytics' reader, BGR -> RGB
        assert ref.shape == rgb.shape, (s.rgb, ref.shape, rgb.shape)
        if cv2.imdecode(np.fromfile(s.rgb, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint8:  # 16 bit: scaled apart
            assert np.array_equal(ref, rgb), s.rgb

    ds = PairedRGBIRDataset(samples, S, augment=False, ir_channels=irc)
    template = PairedRGBIRDataset(scan_split(load_data_config(small_data_template / "data.yaml"), "train"), S,
                                  augment=False, ir_channels=1)
    resized = [ds.resized_pair(j) for j in range(len(samples))]  # JPEG pairs: the 1/2 decode
    for j, s in enumerate(samples):
        if _index(s) in upright:
            full = ds.load_pair(j)[0].astype(np.float32)
            orig = template.load_pair(_index(s))[0].astype(np.float32)
            if irc == 3:
                orig = np.concatenate([orig[..., :3], np.repeat(orig[..., 3:], 3, axis=2)], axis=2)
            assert np.abs(full - orig).mean() < UPRIGHT_TOL, (s.rgb, np.abs(full - orig).mean())
            small = resize_long_side(orig.astype(np.uint8), S).astype(np.float32)
            assert np.abs(resized[j][0] - small).mean() < UPRIGHT_TOL, (s.rgb, np.abs(resized[j][0] - small).mean())
    ds.use_cache("disk", [tmp_path / "cache"], log=lambda _m: None)
    for j, s in enumerate(samples):
        pair, ori = ds.cache.get(j)
        assert np.array_equal(pair, resized[j][0]) and tuple(ori) == s.hw, s.rgb


def _batches(data_yaml: Path, augment: bool, cache: Path | None = None):
    """The CPU loader's and the device loader's (rendered on CPU tensors) training batch of the whole split."""
    cfg = load_data_config(data_yaml)
    samples = scan_split(cfg, "train")
    kw = {"imgsz": S, "ir_channels": cfg.ir_channels, "device": "cpu", "augment": augment, "seed": 1,
          "recipe": AugmentRecipe(), "epochs": 15, "batch_size": 4, "log": lambda _m: None,
          "cache": "none" if cache is None else "disk", "cache_folders": [cache]}
    feeds = (training_feed("cpu", samples, **kw), training_feed("device", samples, **kw))
    return tuple(f.to_device(f.collate([f.dataset[i] for i in range(len(samples))])) for f in feeds)


def _val_batches(data_yaml: Path):
    cfg = load_data_config(data_yaml)
    samples = scan_split(cfg, "train")
    out = []
    for loader in ("cpu", "device"):
        feed = validation_feed(loader, samples, S, cfg.ir_channels, "cpu")
        out.append(feed.to_device(feed.collate([feed.dataset[i] for i in range(len(samples))])))
    return out


def _same_targets(a: dict, b: dict, *keys: str) -> None:
    for k in ("bboxes", "cls", "batch_idx"):
        assert torch.equal(a[k], b[k]), k
    for k in keys:
        assert a[k] == b[k], k


def _pixels(a: dict, b: dict, max_diff: float | None, mean: float) -> None:
    assert b["img"].dtype == torch.uint8 and b["img"].shape == a["img"].shape
    d = (a["img"].float() - b["img"].float()).abs()
    assert (max_diff is None or d.max() <= max_diff) and d.mean() < mean, (d.max(), d.mean())


@pytest.mark.parametrize("kind", ALL_ACCEPTED)
def test_cpu_and_device_loaders_read_every_accepted_kind_alike(fresh_data, kind, tmp_path):
    """Letterbox (training, augmentation off) and validation: the same targets, pixels within the letterbox test's
    1 level; the augmented recipe: the same boxes, pixels within its JPEG tolerance; with the pair cache: the same
    bytes from either loader."""
    _plant(kind, fresh_data)
    yaml = fresh_data / "data.yaml"
    a, b = _batches(yaml, augment=False)
    _same_targets(a, b, "ratio_pad", "ori_shape")
    _pixels(a, b, 1, 0.2)
    a, b = _val_batches(yaml)
    _same_targets(a, b, "ratio_pad", "ori_shape", "im_file")
    _pixels(a, b, 1, 0.2)
    a, b = _batches(yaml, augment=True)
    assert len(a["bboxes"]) > 0 or kind == "empty label files (background)"
    _same_targets(a, b, "ori_shape")
    _pixels(a, b, None, 2.5)  # JPEG: libjpeg's 1/2 decode vs a full decode + bilinear
    a, b = _batches(yaml, augment=False, cache=tmp_path / "cache")
    _same_targets(a, b, "ratio_pad", "ori_shape")
    assert torch.equal(a["img"], b["img"])


# ------------------------------------------------------------------------------------------ refused
def _plant_gif(d):
    f = _tr(d, "imagesIR", 3)
    f.write_bytes(_encode(_pil(d, "imagesIR", 3), "GIF"))
    return [f"{f}: a GIF image (read from its content; the loaders read JPEG, PNG, WebP, BMP and TIFF", "1 problem(s)"]


def _plant_turned_mismatch(d):
    """RGB tagged orientation 6 but stored upright (a converter that kept the tag): displayed, it is 64x80."""
    _pair(d, 4, _encode(_pil(d, "images", 4), "JPEG", quality=95, exif=_exif(6)), _encode(_pil(d, "imagesIR", 4),
                                                                                          "JPEG", quality=95), "jpg")
    rgb, ir = _tr(d, "images", 4, "jpg"), _tr(d, "imagesIR", 4, "jpg")
    return [f"{rgb}: RGB is 64x80 but its IR partner {ir} is 80x64 (as displayed: RGB turned by its EXIF "
            f"orientation 6)", "1 problem(s)"]


IMAGE_ERRORS = {  # kind: plant(copy) -> the needles the one error message must contain
    "image in a format the loaders do not read (a GIF named .png)": _plant_gif,
    "RGB/IR sizes differ once the EXIF orientation is applied": _plant_turned_mismatch,
}


@pytest.mark.parametrize("kind", list(IMAGE_ERRORS))
def test_image_the_loaders_cannot_read_is_named_by_the_scan(fresh_data, kind):
    needles = IMAGE_ERRORS[kind](fresh_data)
    msg = _data_error(fresh_data)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in:\n{msg}"


#: What this file adds to the battery, one name per kind (the README's count includes them).
IMAGE_KINDS_TRIED = sorted({*IMAGE_KINDS, *IMAGE_ERRORS})


# ------------------------------------------------------------------------------------------ the EXIF parser
def _jpeg_with(segments: list[bytes], base: bytes) -> bytes:
    """``base`` (a JPEG) with ``segments`` (marker + payload) inserted after its start marker."""
    return base[:2] + b"".join(s[:2] + len(s).to_bytes(2, "big") + s[2:] for s in segments) + base[2:]  # len: +2


def _tiff_block(orientation: int, order: str = "II") -> bytes:
    """An EXIF block (TIFF structure) whose first IFD holds only the orientation tag (SHORT)."""
    e = "<" if order == "II" else ">"
    ifd = struct.pack(e + "HHHIHH", 1, 0x0112, 3, 1, orientation, 0)  # one entry: tag, SHORT, count 1, value
    return order.encode() + struct.pack(e + "HI", 42, 8) + ifd + struct.pack(e + "I", 0)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _parser_cases() -> dict[str, tuple[bytes, int]]:
    base = np.zeros((16, 24, 3), np.uint8)
    base[:4, :6] = 255  # a corner mark: every turn moves it
    jpeg, png = _cv2(base, ".jpg"), _cv2(base)
    xmp = b"\xff\xe1http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>"
    iend = png.rindex(b"IEND") - 4
    return {
        "JPEG, big-endian EXIF": (_jpeg_with([b"\xff\xe1Exif\x00\x00" + _tiff_block(6, "MM")], jpeg), 6),
        "JPEG, XMP segment before the EXIF one": (_jpeg_with([xmp, b"\xff\xe1Exif\x00\x00" + _tiff_block(8)], jpeg), 8),
        "JPEG, EXIF after 200 kB of other segments": (_jpeg_with(
            [b"\xff\xe2" + bytes(60000)] * 4 + [b"\xff\xe1Exif\x00\x00" + _tiff_block(5)], jpeg), 5),
        "JPEG, orientation 9 (invalid)": (_jpeg_with([b"\xff\xe1Exif\x00\x00" + _tiff_block(9)], jpeg), 1),
        "PNG, eXIf after the pixel data": (png[:iend] + _png_chunk(b"eXIf", _tiff_block(7)) + png[iend:], 7),
        "PNG, no eXIf": (png, 1),
    }


@pytest.mark.parametrize("case", list(_parser_cases()))
def test_exif_orientation_parser_agrees_with_opencv(case, tmp_path):
    """The orientation read from the bytes (the loaders), applied to the as-stored decode, is OpenCV's
    ``IMREAD_COLOR`` decode (what Ultralytics trains on); the scan's reading (Pillow's header) is the same."""
    data, expected = _parser_cases()[case]
    head = layout(data)
    assert head.orientation == expected
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(orient(stored, head.orientation), cv2.imdecode(np.frombuffer(data, np.uint8),
                                                                         cv2.IMREAD_COLOR))
    f = tmp_path / "x.img"
    f.write_bytes(data)
    with Image.open(f) as im:
        assert pil_orientation(im, f) == expected


def test_an_unidentifiable_file_is_a_data_error_also_after_ultralytics_patched_pillow(tmp_path):
    """Ultralytics (imported by every training and val) patches ``PIL.Image.open``: a file Pillow cannot identify
    then raises ModuleNotFoundError (pi_heif, never installed offline) instead of an OSError. The header read of
    a sample the scan did not size must still end in one DataError naming the file."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch, as any training does)

    from yolofuse_scale.data import DataError
    from yolofuse_scale.data.decode import header_hw

    bad = tmp_path / "noise.png"
    bad.write_bytes(b"not an image at all" * 8)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        header_hw(bad)
