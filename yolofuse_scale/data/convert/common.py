"""What every converter shares: the plan of pairs, its idempotent writing, image sizes, and the refusal.

A converter reads a release and builds a *plan* (:class:`PlannedPair` per pair: split, RGB and IR source files,
YOLO label lines, output name) while collecting every problem it finds; :func:`refuse` raises them all at once
before anything is written, so a broken copy leaves DST untouched. :func:`write_dataset` then writes the plan:

- images are hard-linked (or symlinked, or copied) into ``images/<split>/`` and ``imagesIR/<split>/`` under one
  output name (or, for a release whose images need a crop, decoded, cropped and encoded: ``write_cropped``), labels
  written to ``labels/<split>/`` (and the IR image's own to ``labelsIR/<split>/``), then side files and
  ``data.yaml``;
- a file whose content is already right is not touched (same link, same bytes); the others are written to a
  temporary name and renamed, so a rerun changes nothing and an interrupted run leaves no half file;
- a DST that holds images or labels this plan would not write (another fold, another release, files left from an
  earlier conversion) is refused before anything is written: they would be trained on silently.

Images are read by the training scan's own reader (``pair_checks.image_header_problem``: the format by content, the EXIF
orientation applied as both loaders apply it, a truncated JPEG or a PNG failing its CRC refused), so a converted
box is normalised by the size the loaders will see, and a copy the scan would refuse is refused here already.
Cost: every image's header and its end (a JPEG's end marker, a PNG's chunks) are read once.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.scan.pair_checks import image_header_problem
from yolofuse_scale.data.scan.records import format_problems
from yolofuse_scale.io import write_atomic

LINK_MODES = ("hard", "symlink", "copy")
DROP = "-"  # a class-map target meaning "ignore boxes of this class"
#: The folders of the YOLOFuse layout a conversion owns under DST (labelsIR: the IR images' own labels, data.yaml's
#: ``labels_ir``, written by releases that label each image on its own).
OUTPUT_DIRS = ("images", "imagesIR", "labels", "labelsIR")
JPEG_QUALITY = 95  #: a cropped image written as JPEG (cv2's default quality, what the public crop scripts write)


@dataclass
class ConvertReport:
    """What a conversion did, per kind of file; ``notes``: lines the command prints after its summary."""

    pairs: int = 0
    boxes: int = 0
    written: int = 0
    unchanged: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedPair:
    """One pair to write: our split, the RGB and IR source files, its YOLO label lines, the output file name.

    ``ir_lines``: the IR image's own label lines (written to ``labelsIR/``), for a release that labels each image on
    its own. ``crop``: (left, top, right, bottom) pixels cut off both images, which are then decoded and encoded
    again (by the output name's suffix) instead of linked: RGB as 3 channels, IR as 1 (``ir_channels: 1``)."""

    split: str
    rgb: Path
    ir: Path
    lines: tuple[str, ...]
    name: str
    ir_lines: tuple[str, ...] | None = None
    crop: tuple[int, int, int, int] | None = None


def refuse(src_root: Path, problems: list[str]) -> None:
    """Raise every problem as one :class:`DataError` (nothing is written), or return when there is none."""
    if problems:
        raise DataError(format_problems(f"{src_root}: nothing written", problems))


def image_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) of an image as the loaders display it; None, with the reason in ``problems``, when the
    loaders could not read it (the scan's check)."""
    header, why = image_header_problem(path)
    if header is None:
        problems.append(f"{path}: {why}")
        return None
    return header.size


def pair_size(rgb: Path, ir: Path, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) of a pair whose RGB and IR agree as displayed; None (reason in ``problems``) otherwise."""
    a, b = image_size(rgb, problems), image_size(ir, problems)
    if a is None or b is None:
        return None
    if a != b:
        problems.append(f"{rgb}: RGB is {a[0]}x{a[1]} but its infrared partner {ir} is {b[0]}x{b[1]} "
                        "(co-registered pairs have one size)")
        return None
    return a


def yolo_line(cls: int, x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> str | None:
    """``cls xc yc w h`` normalised, of a pixel box clipped to the ``w`` x ``h`` image; None if nothing is left.

    Pixel coordinates are taken as continuous edges (a box may reach ``x2 = w``), as ``convert voc`` reads them."""
    x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
    y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
    if x2 <= x1 or y2 <= y1:
        return None
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def read_id_list(path: Path, problems: list[str], parse) -> list[str]:
    """The ids of a list file, one per non-empty line, each through ``parse(text) -> id | None`` (None: the line
    is named in ``problems``); an id listed twice is a problem too (both lines named)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot be read as a text list ({e})")
        return []
    ids: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        got = parse(line)
        if got is None:
            problems.append(f"{path}:{n}: {line!r} is not an id this list may hold")
        elif got in ids:
            problems.append(f"{path}:{n}: {got} is listed twice (also line {ids[got]})")
        else:
            ids[got] = n
    return list(ids)


def write_text(path: Path, text: str, report: ConvertReport) -> None:
    if path.is_file() and path.read_text() == text:
        report.unchanged += 1
        return
    write_atomic(path, text)
    report.written += 1


def place_image(src: Path, dst: Path, link: str, report: ConvertReport) -> None:
    """Hard-link (or symlink, or copy) ``src`` to ``dst`` unless it is already there."""
    if dst.is_symlink():
        same = os.readlink(dst) == str(src)
    elif dst.exists():  # the same inode, or a copy2 of it (same size and mtime)
        a, b = src.stat(), dst.stat()
        same = (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)
    else:
        same = False
    if same and (link == "symlink") == dst.is_symlink():
        report.unchanged += 1
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    if link == "symlink":
        os.symlink(src, tmp)
    elif link == "hard":
        try:
            os.link(src, tmp)
        except OSError:  # another file system: hard links cannot cross it, copy instead
            shutil.copy2(src, tmp)
    else:
        shutil.copy2(src, tmp)  # copy2 keeps the mtime, which is what makes the next run see "unchanged"
    os.replace(tmp, dst)
    report.written += 1


def write_bytes(path: Path, data: bytes, report: ConvertReport) -> None:
    """``data`` into ``path`` (a temporary file renamed) unless it already holds exactly these bytes."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        report.unchanged += 1
        return
    write_atomic(path, data)
    report.written += 1


def write_cropped(src: Path, dst: Path, crop: tuple[int, int, int, int], channels: int, report: ConvertReport) -> None:
    """``src`` decoded upright by the loaders' reader, ``crop`` (left, top, right, bottom) pixels cut off, encoded by
    ``dst``'s suffix (JPEG at :data:`JPEG_QUALITY`, or PNG: lossless). The encoder is deterministic, so a rerun
    compares bytes and writes nothing (cost: a decode and an encode per image, each run)."""
    import cv2

    from yolofuse_scale.data.decode import read_image  # decode.py reads scan.py: imported here, not at the top

    img = read_image(src, channels)
    left, top, right, bottom = crop
    img = img[top: img.shape[0] - bottom, left: img.shape[1] - right]
    if channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # read_image gives RGB; the encoder takes BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if dst.suffix.lower() in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(dst.suffix, img, params)
    if not ok:
        raise DataError(f"{dst}: OpenCV could not encode the cropped image as {dst.suffix}")
    write_bytes(dst, data.tobytes(), report)


def _targets(pair: PlannedPair, dst_root: Path) -> tuple[Path, ...]:
    label = f"{Path(pair.name).stem}.txt"
    ir_label = () if pair.ir_lines is None else (dst_root / "labelsIR" / pair.split / label,)
    return (dst_root / "images" / pair.split / pair.name, dst_root / "imagesIR" / pair.split / pair.name,
            dst_root / "labels" / pair.split / label, *ir_label)


def _plan_problems(pairs: list[PlannedPair], dst_root: Path) -> tuple[list[str], list[str]]:
    """(two pairs that would write one output file, files under DST's layout folders the plan would not write)."""
    owner: dict[Path, Path] = {}
    clashes = []
    for p in pairs:
        for target in _targets(p, dst_root):
            if target in owner:
                clashes.append(f"{p.rgb} and {owner[target]} would both be written to {target}")
                break
            owner[target] = p.rgb
    stale = []
    for sub in OUTPUT_DIRS:
        for path in sorted((dst_root / sub).rglob("*")) if (dst_root / sub).is_dir() else []:
            if (path.is_file() or path.is_symlink()) and not path.name.startswith(".") and path not in owner:
                stale.append(str(path))
    return clashes, stale


def write_dataset(src_root: Path, dst_root: Path, pairs: list[PlannedPair], names: list[str], link: str,
                  yaml_splits: dict[str, str] | None = None, extra_yaml: dict | None = None,
                  side_files: dict[str, str] | None = None) -> ConvertReport:
    """Write a checked plan as the YOLOFuse layout + ``data.yaml`` (see the module docstring).

    ``yaml_splits``: data.yaml key (train, val, test) -> our split; default: ``train`` (else the first split)
    for train and ``val`` (else the first split: a one-split release validates on its training set) for val.
    ``extra_yaml``: keys appended to data.yaml; ``side_files``: DST-relative name -> text, written before it.
    """
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    if not pairs:
        raise DataError(f"{src_root}: no image pairs found to convert")
    clashes, stale = _plan_problems(pairs, dst_root)
    refuse(src_root, clashes)
    if stale:
        raise DataError(format_problems(
            f"{dst_root}: nothing written: it holds file(s) this conversion would not write (another release, "
            "fold or split choice converted there before?); they would be trained on: convert into an empty "
            "folder, or remove them", stale))
    report = ConvertReport()
    for p in pairs:
        rgb_out, ir_out, label_out, *ir_label = _targets(p, dst_root)
        if p.crop is None:
            place_image(p.rgb, rgb_out, link, report)
            place_image(p.ir, ir_out, link, report)
        else:
            write_cropped(p.rgb, rgb_out, p.crop, 3, report)
            write_cropped(p.ir, ir_out, p.crop, 1, report)
        write_text(label_out, "".join(f"{x}\n" for x in p.lines), report)
        if ir_label:
            write_text(ir_label[0], "".join(f"{x}\n" for x in p.ir_lines), report)
        report.pairs += 1
        report.boxes += len(p.lines)
        report.splits[p.split] = report.splits.get(p.split, 0) + 1
    for name, text in (side_files or {}).items():
        write_text(dst_root / name, text, report)
    splits = sorted(report.splits)
    if yaml_splits is None:
        yaml_splits = {"train": "train" if "train" in report.splits else splits[0],
                       "val": "val" if "val" in report.splits else splits[0]}
    spec = {"path": ".", **{k: f"images/{v}" for k, v in yaml_splits.items()}, "names": dict(enumerate(names)),
            "ir_dir": "imagesIR", "ir_channels": 1, **(extra_yaml or {})}
    header = f"# converted from {src_root} by `yolofuse-scale convert`\n"
    write_text(dst_root / "data.yaml", header + yaml.safe_dump(spec, sort_keys=False), report)
    return report
