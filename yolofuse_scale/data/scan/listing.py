"""Which files a split names: folders walked, ``.txt`` lists and pairs files read (the layouts' pairing rules are
``data/layouts.py``), an image listed twice, each RGB image's IR partner and label file, and IR files without an RGB
partner.

What a folder holds is what Ultralytics would list: symlinked sub-folders are followed (each real
folder once, so a link to an ancestor cannot loop), hidden files and folders (``.*``, macOS' ``._*``
resource forks) are ignored. Cost: one ``stat`` per folder and per file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from yolofuse_scale.data import layouts
from yolofuse_scale.data.config import DataError, DatasetSpec
from yolofuse_scale.data.layouts import PAIRS_SUFFIXES, Listed, swap_str
from yolofuse_scale.data.scan.records import Problem

IMG_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def _swap_component(path: Path, old: str, new: str) -> Path:
    swapped = swap_str(str(path), old, new)
    if swapped is None:
        raise DataError(f"{path}: no folder named '{old}' in the path, so its partner file cannot be found")
    return Path(swapped)


def ir_path_for(rgb_path: Path, images_dir: str = "images", ir_dir: str = "imagesIR") -> Path:
    """IR partner of an RGB image: the last path component equal to ``images_dir`` becomes ``ir_dir``.

    A directory-component swap, never a substring replace: ``/d/images_v2/images/train/images_1.jpg``
    pairs with ``/d/images_v2/imagesIR/train/images_1.jpg``.
    """
    return _swap_component(Path(rgb_path), images_dir, ir_dir)


def label_path_for(rgb_path: Path, images_dir: str = "images", labels_dir: str = "labels") -> Path:
    """YOLO label file of an image: ``images`` -> ``labels`` (``labels_dir``: the IR images' own labels, data.yaml's
    ``labels_ir``), suffix -> ``.txt``."""
    return _swap_component(Path(rgb_path), images_dir, labels_dir).with_suffix(".txt")


@dataclass
class Walk:
    """What walking one folder found: its image files and what it left out on purpose or could not read."""

    files: list[Path] = field(default_factory=list)
    hidden: int = 0
    repeats: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMG_SUFFIXES


def walk_images(folder: Path) -> Walk:
    """Every image file below ``folder``, as Ultralytics' recursive glob lists them, plus symlinked folders.

    ``os.walk(followlinks=True)`` enters a symlinked sub-folder (``Path.rglob`` does not, before Python
    3.13), and the ``(device, inode)`` of every folder entered is remembered so each real folder is
    listed once: a link to an ancestor, or a second link to one folder, is recorded, not entered. Names
    starting with ``.`` are skipped at every level (macOS ``._*`` resource forks, ``.DS_Store``,
    ``.git``), as a glob skips them. Paths keep the link's name: pairing swaps path components, and the
    IR and label twins are looked up through the same links. A link to the folder being listed or one of
    its ancestors is not entered at all (it would list other splits). Cost: one ``stat`` per folder.
    """
    out = Walk()
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


def read_text(path: Path) -> str:
    """A label or list file as text: UTF-8, with or without the byte-order mark Windows editors write."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UnicodeError("UTF-16 text (a 'Unicode' save from a Windows editor); save it as UTF-8")
    return raw.decode("utf-8-sig")


def list_images(entry: Path, cfg: DatasetSpec, walk: Walk) -> list[Listed]:
    """Images of one split entry: a folder (searched recursively, see :func:`walk_images`; what it left
    out is added to ``walk``), a ``.txt`` list, a pairs file (``.csv``/``.json``: ``layouts.read_pairs_file``; its
    bad lines are added to ``walk``), or one image."""
    root = cfg.root
    if entry.suffix.lower() in PAIRS_SUFFIXES and entry.is_file():
        pairs, bad = layouts.read_pairs_file(entry, cfg)
        walk.problems += [Problem(m, kind="bad pairs-file line") for m in bad]
        return pairs
    if entry.is_dir():
        found = walk_images(entry)
        walk.hidden += found.hidden
        walk.repeats += found.repeats
        walk.problems += found.problems
        return [Listed(p, "") for p in found.files]
    if entry.suffix == ".txt":  # an Ultralytics list file: one path a line, relative to the dataset root
        try:
            text = read_text(entry)
        except (OSError, UnicodeError) as e:
            raise DataError(f"{entry}: cannot read the image list ({e})") from e
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)  # Path() already drops "." components and doubled slashes
                out.append(Listed(_without_dotdot(p if p.is_absolute() else root / p), f"{entry}:{lineno}"))
        return out
    if entry.suffix.lower() in IMG_SUFFIXES:
        return [Listed(entry, "")]
    raise DataError(f"{entry}: expected an image folder, a .txt list of images, a .csv or .json pairs file, or an "
                    "image")


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


def listed_twice(listed: list[Listed]) -> tuple[list[Listed], list[Problem]]:
    """``listed`` without repeats (an image named twice would be trained on, or scored, twice): the first
    spelling of each image is kept, and each later one is a problem naming both places (list file and line,
    or the folder's path). Repeats are found by :func:`_same_image_key`."""
    first: dict[str, Listed] = {}
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


def file_stat(path: Path | str) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the path is not a file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None  # one syscall, not two


def orphan_ir(cfg: DatasetSpec, entry: Path, rgb_files: set[str]) -> list[Problem]:
    """IR files under a split folder's IR twin whose RGB partner was not found (folders only: a .txt
    list may name a subset on purpose; DEYOLO's layout pairs by position and counts instead)."""
    ir_root = ir_twin(cfg, entry)
    out = []
    if ir_root is not None and ir_root.is_dir():
        for ir in walk_images(ir_root).files:
            rgb = layouts.rgb_of(cfg, str(ir))
            if rgb not in rgb_files:
                out.append(Problem(f"{ir}: IR image without RGB partner (expected {rgb})", kind="no RGB partner"))
    return out


def ir_twin(cfg: DatasetSpec, entry: Path) -> Path | None:
    """The IR folder of a split folder by the layout's naming rule (None: DEYOLO's, or no such folder name; the RGB
    side reports an unpairable path)."""
    if cfg.layout == "deyolo" or not entry.is_dir():
        return None
    twin = layouts.ir_of(cfg, str(entry))
    return None if twin is None else Path(twin)
