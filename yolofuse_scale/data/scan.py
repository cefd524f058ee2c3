"""The one-time scan of a split: pairing RGB with IR, cheap image-header checks, label validation.

Every problem is collected (never the first one only) as ``FILE[:LINE]: what is wrong`` and the
policy decides once, before the first step, what happens: ``error`` stops with the full list, ``skip``
trains on the rest and reports what was left out. What the scan lets through cannot crash a step:
both files exist, their headers decode to the same size, and every label row is valid.

What a folder holds is what Ultralytics would list: symlinked sub-folders are followed (each real
folder once, so a link to an ancestor cannot loop), hidden files and folders (``.*``, macOS' ``._*``
resource forks) are ignored. A pair without a label file is a background image, as in Ultralytics,
but a split where no pair has one (a misnamed ``labels/`` folder) is refused, and so is a validation
split without a single box: both would train or score silently against nothing.

Cost: one ``stat`` per file plus a header read (JPEG: the header, its EXIF orientation included, and the
last two bytes, the whole file only when those are not the end marker; PNG: the chunk CRCs, then the
chunk headers again for an ``eXIf`` chunk, no pixel decode), on a thread
pool because on network file systems the latency, not the CPU, dominates. The result is cached in a
JSON file keyed by a hash of every path, size and mtime, so an unchanged dataset re-scans in the time
of the ``stat`` calls alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image

from yolofuse_scale.data.config import DataError, DatasetSpec
from yolofuse_scale.data.imagefile import PIL_FORMATS, oriented_size, pil_orientation
from yolofuse_scale.io import write_atomic

IMG_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_REPORTED = 20  # problems shown in an error message; the rest are counted
# bump when the checks change: old caches then miss (5: list-file repeats; 6: displayed sizes, formats by content)
SCAN_VERSION = 6
#: ``--on-bad-sample``: what the start-up scan does with bad pairs and labels; the tuple is derived from it.
BadSamplePolicy = Literal["error", "skip"]
POLICIES: tuple[str, ...] = get_args(BadSamplePolicy)
NAMES_SHOWN = 3  # example files named in the start-up summary (pairs without a label file, ...)


def _swap_str(path: str, old: str, new: str) -> str | None:
    """``path`` with its LAST component named ``old`` (nearest the file) renamed ``new``; None if none is.
    On strings: the cached scan does this for every file, and pathlib costs ~10x more."""
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == old:
            parts[i] = new
            return os.sep.join(parts)
    return None


def _swap_component(path: Path, old: str, new: str) -> Path:
    swapped = _swap_str(str(path), old, new)
    if swapped is None:
        raise DataError(f"{path}: no folder named '{old}' in the path, so its partner file cannot be found")
    return Path(swapped)


def ir_path_for(rgb_path: Path, images_dir: str = "images", ir_dir: str = "imagesIR") -> Path:
    """IR partner of an RGB image: the last path component equal to ``images_dir`` becomes ``ir_dir``.

    A directory-component swap, never a substring replace: ``/d/images_v2/images/train/images_1.jpg``
    pairs with ``/d/images_v2/imagesIR/train/images_1.jpg``.
    """
    return _swap_component(Path(rgb_path), images_dir, ir_dir)


def label_path_for(rgb_path: Path, images_dir: str = "images") -> Path:
    """YOLO label file of an image: ``images`` -> ``labels``, suffix -> ``.txt``."""
    return _swap_component(Path(rgb_path), images_dir, "labels").with_suffix(".txt")


@dataclass(frozen=True)
class Sample:
    """One pair and its validated boxes: float32 (n, 5) rows of class, xc, yc, w, h (normalised)."""

    rgb: Path
    ir: Path
    label: Path | None
    boxes: np.ndarray
    hw: tuple[int, int] | None = None  #: (height, width) as displayed (EXIF orientation applied), from the header
    formats: tuple[str, str] | None = None  #: (RGB, IR) format by content (``imagefile.PIL_FORMATS``' names)


@dataclass(frozen=True)
class Problem:
    """One thing wrong. ``rgb`` names the pair it disqualifies (None: no pair to drop, e.g. an IR
    file without RGB partner); ``drops_pair`` is False where skipping loses nothing (a duplicate row
    is dropped and its pair kept)."""

    message: str
    rgb: str | None = None
    drops_pair: bool = True
    kind: str = "problem"  #: short name of what is wrong, counted in the start-up summary


@dataclass
class SplitScan:
    """What the scan found in one split: every pair it could form, and every problem."""

    split: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    from_cache: bool = False
    hidden: int = 0  #: hidden files and folders ignored (``.*``, ``._*``)
    repeats: list[str] = field(default_factory=list)  #: symlinked folders not entered again ("link -> real")

    def kept(self) -> list[Sample]:
        """The pairs no problem disqualifies (what ``--on-bad-sample skip`` trains on)."""
        bad = {p.rgb for p in self.problems if p.drops_pair and p.rgb is not None}
        return [s for s in self.samples if str(s.rgb) not in bad]


def format_problems(where: str, problems: list[str], limit: int | None = MAX_REPORTED) -> str:
    """``where: N problem(s) ...`` followed by one indented line per problem (the first ``limit``)."""
    shown = problems if limit is None else problems[:limit]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more


# ------------------------------------------------------------------------------------------ listing
@dataclass(frozen=True)
class _Listed:
    rgb: Path
    origin: str  # where the path came from, for messages: "list.txt:3" or "" (found in a folder)


@dataclass
class _Walk:
    """What walking one folder found: its image files and what it left out on purpose or could not read."""

    files: list[Path] = field(default_factory=list)
    hidden: int = 0
    repeats: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMG_SUFFIXES


def walk_images(folder: Path) -> _Walk:
    """Every image file below ``folder``, as Ultralytics' recursive glob lists them, plus symlinked folders.

    ``os.walk(followlinks=True)`` enters a symlinked sub-folder (``Path.rglob`` does not, before Python
    3.13), and the ``(device, inode)`` of every folder entered is remembered so each real folder is
    listed once: a link to an ancestor, or a second link to one folder, is recorded, not entered. Names
    starting with ``.`` are skipped at every level (macOS ``._*`` resource forks, ``.DS_Store``,
    ``.git``), as a glob skips them. Paths keep the link's name: pairing swaps path components, and the
    IR and label twins are looked up through the same links. A link to the folder being listed or one of
    its ancestors is not entered at all (it would list other splits). Cost: one ``stat`` per folder.
    """
    out = _Walk()
    seen: set[tuple[int, int]] = set()

    def unreadable(e: OSError) -> None:  # os.walk drops a folder it cannot list without a word otherwise
        out.problems.append(Problem(f"{e.filename}: cannot list this folder ({e.strerror})", kind="unlistable folder"))

    for top, dirs, files in os.walk(folder, followlinks=True, onerror=unreadable):
        try:
            st = os.stat(top)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: list it once
            out.repeats.append(f"{top} -> {os.path.realpath(top)}")
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        out.hidden += sum(d.startswith(".") for d in dirs) + sum(f.startswith(".") and _is_image(f) for f in files)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _loops(top, d, out.repeats))
        out.files += [Path(top, f) for f in sorted(files) if not f.startswith(".") and _is_image(f)]
    return out


def _loops(top: str, name: str, repeats: list[str]) -> bool:
    """Whether sub-folder ``name`` of ``top`` is a link to ``top`` itself or one of its ancestors (entering
    it would list the tree again, and from above the split folder, other splits too); noted in ``repeats``."""
    link = os.path.join(top, name)
    if not os.path.islink(link):
        return False
    target, here = os.path.realpath(link), os.path.realpath(top)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        repeats.append(f"{link} -> {target} (a loop)")
        return True
    return False


def _read_text(path: Path) -> str:
    """A label or list file as text: UTF-8, with or without the byte-order mark Windows editors write."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UnicodeError("UTF-16 text (a 'Unicode' save from a Windows editor); save it as UTF-8")
    return raw.decode("utf-8-sig")


def _list_images(entry: Path, root: Path, walk: _Walk) -> list[_Listed]:
    """Images of one split entry: a folder (searched recursively, see :func:`walk_images`; what it left
    out is added to ``walk``), a ``.txt`` list, or one image."""
    if entry.is_dir():
        found = walk_images(entry)
        walk.hidden += found.hidden
        walk.repeats += found.repeats
        walk.problems += found.problems
        return [_Listed(p, "") for p in found.files]
    if entry.suffix == ".txt":  # an Ultralytics list file: one path a line, relative to the dataset root
        try:
            text = _read_text(entry)
        except (OSError, UnicodeError) as e:
            raise DataError(f"{entry}: cannot read the image list ({e})") from e
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)  # Path() already drops "." components and doubled slashes
                out.append(_Listed(_without_dotdot(p if p.is_absolute() else root / p), f"{entry}:{lineno}"))
        return out
    if entry.suffix.lower() in IMG_SUFFIXES:
        return [_Listed(entry, "")]
    raise DataError(f"{entry}: expected an image folder, a .txt list of images, or an image")


def _without_dotdot(path: Path) -> Path:
    """``path`` with its ``..`` components resolved lexically (``images/../images/val/x.png`` is
    ``images/val/x.png``: one image, one sample, one pairing), where that names the same folder: after a
    symbolic link, ``link/..`` is the parent of the link's target, so such a path is kept as written.
    No full ``resolve()``: a symlinked image must keep its ``images/`` component for pairing. Cost: two
    ``realpath`` calls for a path with ``..``, nothing otherwise."""
    if ".." not in path.parts:
        return path
    lexical = Path(os.path.normpath(path))
    same = os.path.realpath(lexical.parent) == os.path.realpath(path.parent)
    return lexical if same else path


def _same_image_key(path: Path, real_dirs: dict[str, str]) -> str:
    """What makes two listed paths one image for the "listed twice" check: the real folder (symbolic links
    and ``..`` resolved, as :func:`walk_images` enters each real folder once) and the file name. A file
    that is itself a symbolic link is its own entry, as in a folder listing. ``real_dirs`` caches one
    ``realpath`` per folder."""
    folder = str(path.parent)
    if folder not in real_dirs:
        real_dirs[folder] = os.path.realpath(folder)
    return os.path.join(real_dirs[folder], path.name)


def _listed_twice(listed: list[_Listed]) -> tuple[list[_Listed], list[Problem]]:
    """``listed`` without repeats (an image named twice would be trained on, or scored, twice): the first
    spelling of each image is kept, and each later one is a problem naming both places (list file and line,
    or the folder's path). Repeats are found by :func:`_same_image_key`."""
    first: dict[str, _Listed] = {}
    real_dirs: dict[str, str] = {}
    kept, problems = [], []
    for item in listed:
        other = first.setdefault(_same_image_key(item.rgb, real_dirs), item)
        if other is item:
            kept.append(item)
            continue
        also = (f"at {other.origin}" if other.origin else "in a split folder") + (
            "" if other.rgb == item.rgb else f" as {other.rgb}")
        problems.append(Problem(f"{item.origin or item.rgb}: {item.rgb} is listed twice (also {also})",
                                drops_pair=False, kind="listed twice"))
    return kept, problems


def _stat(path: Path | str) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the path is not a file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None  # one syscall, not two


# ------------------------------------------------------------------------------------------- checks
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


def image_header_problem(path: Path) -> tuple[Header | None, str | None]:
    """``(Header, None)`` for an image every loader decodes, ``(None, why)`` otherwise.

    No pixel decode: PIL reads the header (the format from the content, whatever the name says); a JPEG must
    reach its end-of-image marker (a truncated download does not; see :func:`_jpeg_problem`), other formats go
    through ``Image.verify`` (PNG: every chunk and its CRC). A format the loaders do not read (a GIF named
    ``.png``) is a problem here, not a failed step hours later.
    """
    try:
        with Image.open(path) as im:
            size, pil_format = im.size, im.format
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
    return Header(oriented_size(*size, orientation), fmt, orientation), None


#: Columns of a label row per ``task:``. MINIMAL OBB PATH (t2x-obbcore, issue 26): oriented rows are parsed with
#: the few checks the model side's tests need; the data side (t2x-obbdata) replaces this with its full checks.
_COLUMNS = {"detect": 5, "obb": 9}


def _obb_row_problem(fields: list[str], nc: int) -> str | None:
    if len(fields) != 9:
        return f"expected 9 fields 'cls x1 y1 x2 y2 x3 y3 x4 y4', found {len(fields)}"
    try:
        values = [float(x) for x in fields]
    except ValueError:
        return f"non-numeric value in {' '.join(fields)!r}"
    if not all(math.isfinite(v) for v in values):
        return f"NaN or infinite value in {' '.join(fields)!r}"
    if not values[0].is_integer() or not 0 <= values[0] < nc:
        return f"class id {fields[0]} is not an integer in 0..{nc - 1} (data.yaml names)"
    if not all(-0.01 <= v <= 1.01 for v in values[1:]):
        return f"corners {' '.join(fields[1:])} are outside [0, 1] (coordinates must be normalised)"
    return None


def parse_label_file(path: Path, nc: int, problems: list[Problem], rgb: str | None = None,
                     task: str = "detect") -> np.ndarray:
    """Parse one YOLO label file into (n, 5) float32 rows (``task`` obb: (n, 9)); append a :class:`Problem` per bad
    row.

    A duplicate row (LLVIP's official converter appends, so a rerun duplicates every row) is reported
    but only the row is dropped: the pair keeps its one copy of the box.
    """
    columns = _COLUMNS[task]
    rows: list[tuple[float, ...]] = []
    first_seen: dict[tuple[float, ...], int] = {}
    try:
        text = _read_text(path)
    except (OSError, UnicodeError) as e:
        problems.append(Problem(f"{path}: unreadable label file ({e})", rgb, kind="unreadable label file"))
        return np.zeros((0, columns), np.float32)
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        why = _row_problem(fields, nc) if task == "detect" else _obb_row_problem(fields, nc)
        if why:
            problems.append(Problem(f"{where}: {why}", rgb, kind="bad label row"))
            continue
        row = tuple(float(x) for x in fields)
        if row in first_seen:
            problems.append(Problem(f"{where}: duplicate of line {first_seen[row]}", rgb, drops_pair=False,
                                    kind="duplicate label row"))
            continue
        first_seen[row] = lineno
        rows.append(row)
    return np.array(rows, dtype=np.float32).reshape(-1, columns)


def _row_problem(fields: list[str], nc: int) -> str | None:
    if len(fields) != 5:
        return f"expected 5 fields 'cls xc yc w h', found {len(fields)}"
    try:
        c, xc, yc, w, h = (float(x) for x in fields)
    except ValueError:
        return f"non-numeric value in {' '.join(fields)!r}"
    if not all(math.isfinite(v) for v in (c, xc, yc, w, h)):
        return f"NaN or infinite value in {' '.join(fields)!r}"
    if not c.is_integer() or not 0 <= c < nc:
        return f"class id {fields[0]} is not an integer in 0..{nc - 1} (data.yaml names)"
    eps = 1e-6
    if w <= 0 or h <= 0:
        return f"box size w={fields[3]} h={fields[4]} is zero or negative"
    if not all(-eps <= v <= 1 + eps for v in (xc, yc, w, h)):
        return f"box {' '.join(fields[1:])} is outside [0, 1] (coordinates must be normalised)"
    return None


def _check_pair(cfg: DatasetSpec, item: _Listed) -> tuple[Sample | None, list[Problem]]:
    """Pair one RGB image with its IR file and label; check both headers and every label row."""
    rgb, problems = item.rgb, []
    key = str(rgb)
    try:
        ir = ir_path_for(rgb, cfg.images_dir, cfg.ir_dir)
        label = label_path_for(rgb, cfg.images_dir)
    except DataError as e:
        return None, [Problem(f"{item.origin}: {e}" if item.origin else str(e), key, kind="unpairable path")]
    if _stat(rgb) is None:
        where = f"{item.origin}: image {rgb}" if item.origin else str(rgb)
        what = f"is a broken symbolic link (to {os.readlink(rgb)})" if os.path.islink(rgb) else "does not exist"
        return None, [Problem(f"{where} {what}", key, kind="missing image")]
    if _stat(ir) is None:
        return None, [Problem(f"{rgb}: RGB image without IR partner (expected {ir})", key, kind="no IR partner")]
    heads = []
    for p in (rgb, ir):
        head, why = image_header_problem(p)
        if why:
            problems.append(Problem(f"{p}: {why}", key, kind="unreadable image"))
        heads.append(head)
    if heads[0] and heads[1] and heads[0].size != heads[1].size:
        (w0, h0), (w1, h1) = heads[0].size, heads[1].size
        turned = [f"{name} turned by its EXIF orientation {h.orientation}"
                  for name, h in (("RGB", heads[0]), ("IR", heads[1])) if h.orientation >= 5]
        shown = f" (as displayed: {' and '.join(turned)})" if turned else ""
        problems.append(Problem(f"{rgb}: RGB is {w0}x{h0} but its IR partner {ir} is {w1}x{h1}{shown}", key,
                                kind="RGB/IR size mismatch"))
    has_label = _stat(label) is not None
    boxes = (parse_label_file(label, cfg.nc, problems, key, cfg.task) if has_label
             else np.zeros((0, _COLUMNS[cfg.task]), np.float32))
    hw = (heads[0].size[1], heads[0].size[0]) if heads[0] else None
    formats = (heads[0].fmt, heads[1].fmt) if heads[0] and heads[1] else None
    return Sample(rgb, ir, label if has_label else None, boxes, hw, formats), problems


def _orphan_ir(cfg: DatasetSpec, entry: Path, rgb_files: set[str]) -> list[Problem]:
    """IR files under a split folder's IR twin whose RGB partner was not found (folders only: a .txt
    list may name a subset on purpose)."""
    try:
        ir_root = ir_path_for(entry, cfg.images_dir, cfg.ir_dir)
    except DataError:
        return []  # the RGB side already reports the unpairable path
    out = []
    if ir_root.is_dir():
        for ir in walk_images(ir_root).files:
            rgb = _swap_component(ir, cfg.ir_dir, cfg.images_dir)
            if str(rgb) not in rgb_files:
                out.append(Problem(f"{ir}: IR image without RGB partner (expected {rgb})", kind="no RGB partner"))
    return out


# -------------------------------------------------------------------------------------------- cache
def _fingerprint(cfg: DatasetSpec, split: str, listed: list[_Listed]) -> str:
    """Hash of everything the scan's answer depends on: the checks' version, the classes, the pairing
    folders, and path + size + mtime of every RGB, IR and label file (and the IR folder listing)."""
    h = hashlib.sha256()
    h.update(json.dumps([SCAN_VERSION, cfg.nc, cfg.images_dir, cfg.ir_dir, split]
                        + ([cfg.task] if cfg.task != "detect" else [])).encode())  # a detection scan's key unchanged
    for item in listed:
        rgb = str(item.rgb)
        ir, label = _swap_str(rgb, cfg.images_dir, cfg.ir_dir), _swap_str(rgb, cfg.images_dir, "labels")
        label = None if label is None else os.path.splitext(label)[0] + ".txt"
        h.update(f"{rgb}|{item.origin}|{_stat(rgb)}|{ir and _stat(ir)}|{label and _stat(label)}\n".encode())
    for entry in cfg.split(split):
        if entry.is_dir():
            try:
                ir_root = ir_path_for(entry, cfg.images_dir, cfg.ir_dir)
            except DataError:
                continue
            if ir_root.is_dir():
                for p in walk_images(ir_root).files:
                    h.update(f"ir:{p}|{_stat(p)}\n".encode())
    return h.hexdigest()


def cache_file(cfg: DatasetSpec, split: str, folder: Path) -> Path:
    """Where the scan of ``split`` of this data.yaml is cached inside ``folder``."""
    tag = hashlib.sha1(str(cfg.yaml_path).encode()).hexdigest()[:10]
    return folder / f"{cfg.yaml_path.stem}-{split}-{tag}.scan.json"


def _to_json(scan: SplitScan, key: str) -> str:
    samples = [[str(s.rgb), str(s.ir), None if s.label is None else str(s.label), s.boxes.tolist(), s.hw,
                s.formats] for s in scan.samples]
    return json.dumps({"key": key, "samples": samples, "problems": [asdict(p) for p in scan.problems]})


def _from_json(text: str, key: str, split: str, columns: int = 5) -> SplitScan | None:
    try:
        d = json.loads(text)
        if d.get("key") != key:
            return None
        samples = [Sample(Path(r), Path(i), None if lb is None else Path(lb),
                          np.array(b, dtype=np.float32).reshape(-1, columns), None if hw is None else tuple(hw),
                          None if fm is None else tuple(fm))
                   for r, i, lb, b, hw, fm in d["samples"]]
        return SplitScan(split, samples, [Problem(**p) for p in d["problems"]], from_cache=True)
    except (ValueError, KeyError, TypeError):
        return None  # a damaged or foreign cache file is only a miss


# --------------------------------------------------------------------------------------------- scan
def scan_pairs(cfg: DatasetSpec, split: str, cache_dirs: list[Path] | tuple[Path, ...] = (),
               threads: int = 8) -> SplitScan:
    """Scan one split; read the result from the first of ``cache_dirs`` that holds a matching cache,
    else scan and write it into the first writable one. Raises :class:`DataError` only for what makes
    the split unusable as a whole (an entry that is not a folder, list or image; no images at all)."""
    listed: list[_Listed] = []
    walk = _Walk()
    for entry in cfg.split(split):
        if not entry.exists():
            raise DataError(f"{cfg.yaml_path}: split '{split}' entry {entry} does not exist")
        listed += _list_images(entry, cfg.root, walk)
    if not listed and walk.problems:
        raise DataError(format_problems(f"{cfg.yaml_path}: split '{split}'", [p.message for p in walk.problems]))
    if not listed:
        where = ", ".join(str(p) for p in cfg.split(split))
        raise DataError(f"{cfg.yaml_path}: split '{split}' has no images (looked in {where})")
    in_order = list(listed)  # data.yaml's entries, a list's lines: where an image is named first
    listed.sort(key=lambda it: str(it.rgb))  # every process, every run: the same order
    key = _fingerprint(cfg, split, listed) if cache_dirs else ""
    for folder in cache_dirs:
        path = cache_file(cfg, split, folder)
        if path.is_file():
            hit = _from_json(path.read_text(), key, split, _COLUMNS[cfg.task])
            if hit is not None:
                return _with_listing(hit, walk)
    scan = SplitScan(split)
    unique, scan.problems = _listed_twice(in_order)
    unique.sort(key=lambda it: str(it.rgb))
    seen = {str(item.rgb) for item in unique}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for sample, problems in pool.map(lambda it: _check_pair(cfg, it), unique):
            scan.problems += problems
            if sample is not None:
                scan.samples.append(sample)
    for entry in cfg.split(split):
        if entry.is_dir():
            scan.problems += _orphan_ir(cfg, entry, seen)
    for folder in cache_dirs:
        try:
            write_atomic(cache_file(cfg, split, folder), _to_json(scan, key))
            break
        except OSError:
            continue  # a read-only dataset folder: try the next place
    return _with_listing(scan, walk)


def _with_listing(scan: SplitScan, walk: _Walk) -> SplitScan:
    """Add what listing the folders found (not cached: the listing runs every time anyway)."""
    scan.problems += walk.problems
    scan.hidden, scan.repeats = walk.hidden, walk.repeats
    return scan


@dataclass
class ScanResult:
    """The outcome of scanning a run's splits under a policy, made on one process and sent to all.

    It never raises where it is built, so the process that scans can broadcast an error like any other
    result: every rank then raises the same :class:`DataError` (instead of the others waiting forever
    in the broadcast for a process that died).
    """

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    cached: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  #: one line per split: pairs, boxes, background, skipped

    def report(self) -> str:
        """What each split trains or scores on, for the start-up log (see :func:`split_summary`)."""
        return "\n".join(self.summary)

    def take(self, log=print) -> dict[str, list[Sample]]:
        """The samples per split; raise the scan's :class:`DataError`; log what skipping left out."""
        if self.error is not None:
            raise DataError(self.error)
        if self.cached:
            log(f"data scan: {', '.join(self.cached)} read from the cache (files unchanged)")
        if self.skipped:
            log(format_problems(f"--on-bad-sample skip: trained without {len(self.skipped)} problem item(s)",
                                self.skipped, limit=None))
        return self.samples


def _count(kinds: list[str]) -> str:
    counts: dict[str, int] = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _examples(paths: list[str]) -> str:
    more = f", ... ({len(paths) - NAMES_SHOWN} more)" if len(paths) > NAMES_SHOWN else ""
    return ", ".join(paths[:NAMES_SHOWN]) + more


def split_summary(cfg: DatasetSpec, scan: SplitScan, used: list[Sample]) -> str:
    """One line saying what a split holds: pairs, boxes, background pairs (empty or missing label file,
    a few of the missing ones named), pairs skipped by kind of problem, and what listing left out."""
    missing = [str(label_path_for(s.rgb, cfg.images_dir)) for s in used if s.label is None]
    empty = sum(s.label is not None and len(s.boxes) == 0 for s in used)
    line = f"data {scan.split}: {len(used)} pairs, {sum(len(s.boxes) for s in used)} boxes, "
    line += f"{len(missing) + empty} background"
    why = ([f"{empty} with an empty label file"] if empty else []) + (
        [f"{len(missing)} without a label file: {_examples(missing)}"] if missing else [])
    line += f" ({'; '.join(why)})" if why else ""
    kept = {str(s.rgb) for s in used}
    first_kind: dict[str, str] = {}
    for p in scan.problems:
        if p.drops_pair and p.rgb is not None and p.rgb not in kept:
            first_kind.setdefault(p.rgb, p.kind)
    line += f"; skipped {len(first_kind)} pair(s) ({_count(list(first_kind.values()))})" if first_kind else \
        "; nothing skipped"
    others = [p.kind for p in scan.problems if not (p.drops_pair and p.rgb is not None)]
    line += f"; also left out: {_count(others)}" if others else ""
    if scan.hidden:
        line += f"; {scan.hidden} hidden file(s)/folder(s) ignored (names starting with '.')"
    if scan.repeats:
        line += f"; symlinked folder(s) listed once, not entered again: {_examples(scan.repeats)}"
    return line


def _check_labels(cfg: DatasetSpec, split: str, samples: list[Sample], used: list[Sample],
                  evaluated: tuple[str, ...]) -> None:
    """Refuse what would train on background only or score against nothing, with no other sign."""
    if samples and all(s.label is None for s in samples):
        expected = [label_path_for(s.rgb, cfg.images_dir) for s in samples]
        folders = sorted({str(p.parent) for p in expected})
        raise DataError(
            f"{cfg.yaml_path}: split '{split}': none of its {len(samples)} pairs has a label file. Looked in "
            f"{_examples(folders)} for one .txt per image (e.g. {expected[0]}: the last '{cfg.images_dir}' folder "
            f"of the image path becomes 'labels', the suffix .txt). Is the labels folder misnamed? Images "
            f"without objects need an empty .txt each")
    if split in evaluated and used and not any(len(s.boxes) for s in used):
        raise DataError(
            f"{cfg.yaml_path}: split '{split}' has no boxes at all (its {len(used)} pairs have empty or missing "
            f"label files): its mAP would be 0 whatever the model learns; point '{split}' at labelled images")


def scan_dataset(cfg: DatasetSpec, splits: tuple[str, ...], policy: str = "error",
                 cache_dirs: list[Path] | tuple[Path, ...] = (), evaluated: tuple[str, ...] = ("val", "test")
                 ) -> ScanResult:
    """Scan ``splits`` and apply ``policy`` (``error``: any problem fails the run, with the full list;
    ``skip``: drop the pairs with problems). A split none of whose pairs has a label file, and an
    ``evaluated`` split without a box, fail under either policy. Never raises :class:`DataError`: see
    :class:`ScanResult`."""
    if policy not in POLICIES:
        raise ValueError(f"--on-bad-sample must be one of {', '.join(POLICIES)}, got {policy!r}")
    result = ScanResult()
    problems: list[str] = []
    try:
        for split in splits:
            scan = scan_pairs(cfg, split, cache_dirs)
            if scan.from_cache:
                result.cached.append(split)
            messages = [p.message for p in scan.problems]
            kept = scan.kept()
            if policy == "skip" and not kept:
                raise DataError(format_problems(f"{cfg.yaml_path}: split '{split}' has no usable pair left",
                                                messages))
            problems += messages
            result.samples[split] = used = kept if policy == "skip" else scan.samples
            _check_labels(cfg, split, scan.samples, used, evaluated)
            result.summary.append(split_summary(cfg, scan, used))
    except DataError as e:
        return ScanResult(error=str(e))
    if problems and policy == "error":
        hint = "fix them, or pass --on-bad-sample skip to train without the pairs concerned"
        return ScanResult(error=format_problems(f"{cfg.yaml_path}", problems) + f"\n({hint})")
    result.skipped = problems
    return result


def scan_split(cfg: DatasetSpec, split: str, on_bad_sample: str = "error",
               cache_dirs: list[Path] | tuple[Path, ...] = ()) -> list[Sample]:
    """The samples of one split for a single process (evaluation, tools); raises :class:`DataError`."""
    return scan_dataset(cfg, (split,), on_bad_sample, cache_dirs).take(log=lambda _msg: None)[split]
