"""``convert dronevehicle``: DroneVehicle (Sun et al., "Drone-based RGB-Infrared Cross-Modality Vehicle Detection via
Uncertainty-Aware Learning", TCSVT 2022): drone RGB + IR pairs, five vehicle classes, oriented boxes, and an
annotation of its own for each image of a pair (at night the IR image shows vehicles the RGB one does not).

Expected layout (the release's train, val and test downloads unpacked side by side; a split that is absent is not
converted)::

    SRC/train/trainimg/00001.jpg     RGB, 840 x 712: a 640 x 512 image inside a 100-px white frame
    SRC/train/trainimgr/00001.jpg    IR, the same size and frame
    SRC/train/trainlabel/00001.xml   the RGB image's annotation (VOC-style XML)
    SRC/train/trainlabelr/00001.xml  the IR image's annotation
    SRC/val/val{img,imgr,label,labelr}/, SRC/test/test{img,imgr,label,labelr}/

The release has 17,990 train, 1,469 val and 8,980 test pairs. Each ``<object>`` has a ``<name>`` and four corners
``<polygon><x1>..<y4></polygon>`` in pixels of the framed image, or for a few objects a ``<bndbox>``, written here as
its four corners (and counted in the report).

**The white frame is cropped**, from both images, as common practice does: the images are written 640 x 512 (x
100..740, y 100..612 of the framed image), every corner moved by -100 px (the dataset's own evaluation does the same,
UA-CMDet's ``eval/DroneVehicleEval.py``), a corner that lies in the frame clamped to the image's edge (counted), and
an object with nothing inside the image left out (counted). Images are decoded (the loaders' reader), cropped and
encoded again: JPEG at quality 95 by default (the public crop scripts' ``cv2.imwrite``; ~6 GB for the release), PNG
with ``--lossless`` (~4x that); IR is written single-channel (``ir_channels: 1``).

**Classes**: ``car, truck, bus, van, freight_car`` (ids 0-4). The public annotations misspell some names; those the
dataset's own evaluation maps are mapped here too, and every one found is reported with its count: ``feright car``,
``feright_car`` and ``feright`` -> freight_car, ``truvk`` -> truck (``freight car`` and ``freight_car`` are the
name itself); objects named ``*`` or nothing, and objects with neither a polygon nor a bndbox, are left out as that
evaluation leaves them out (counted). Any other name is a problem.

**Both label sets are written**: ``labels/`` from the RGB annotations, ``labelsIR/`` from the IR ones, and data.yaml
says ``task: obb``, ``labels_ir: labelsIR`` and ``label_policy: ir``: train and score on the IR annotations, as the
DroneVehicle papers do (docs/data.md); ``rgb`` or ``union`` is one data.yaml line away. A pair without either image
or either XML, an image that is not 840 x 712, a file that is not readable XML, a corner that is not a number, an
unknown class, or a file whose partner is missing is refused, every problem listed, nothing written.
"""

from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.convert.common import ConvertReport, PlannedPair, image_size, refuse, write_dataset

NAMES = ["car", "truck", "bus", "van", "freight_car"]
SPLITS = ("train", "val", "test")
FRAME = 100  #: the white frame around every image, in pixels
FRAMED = (840, 712)  #: an image's size with its frame
#: misspelt class names -> our class: those the dataset's evaluation maps (UA-CMDet's eval/DroneVehicleEval.py)
MISSPELLINGS = {"feright car": "freight_car", "feright": "freight_car", "truvk": "truck"}
#: class names as the public annotations write them (lower case, ``_`` and ``-`` read as spaces) -> our class
CLASSES = {**{n.replace("_", " "): n for n in NAMES}, **MISSPELLINGS}
DROPPED_NAMES = ("*", "")  #: left out, as the dataset's evaluation leaves them out
_CORNERS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


def _folders(split_dir: Path, split: str) -> dict[str, Path]:
    return {"rgb": split_dir / f"{split}img", "ir": split_dir / f"{split}imgr", "rgb_xml": split_dir / f"{split}label",
            "ir_xml": split_dir / f"{split}labelr"}


@dataclass
class Tally:
    """What the conversion changed or left out, for the report (every count over both label sets)."""

    spellings: Counter = field(default_factory=Counter)  #: (as written, our class) of names mapped
    dropped_names: int = 0
    no_geometry: int = 0
    bndbox: int = 0
    clamped: int = 0  #: objects with a corner in the white frame, clamped to the image's edge
    outside: int = 0  #: objects wholly in the white frame (left out)

    def notes(self) -> list[str]:
        out = []
        if self.spellings:
            mapped = ", ".join(f"{raw!r} -> {ours} ({n})" for (raw, ours), n in sorted(self.spellings.items()))
            out.append(f"class names mapped (misspellings in the public annotations): {mapped}")
        if self.dropped_names or self.no_geometry:
            out.append(f"left out as the dataset's evaluation leaves them out: {self.dropped_names} object(s) named "
                       f"'*' or nothing, {self.no_geometry} without a polygon or bndbox")
        if self.bndbox:
            out.append(f"{self.bndbox} object(s) with a <bndbox> instead of a <polygon>: written as its four corners")
        if self.clamped or self.outside:
            out.append(f"white frame cropped: {self.clamped} object(s) reaching into it clamped to the image's edge, "
                       f"{self.outside} lying wholly in it left out")
        return out


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value == value and abs(value) != float("inf") else None


def _corners(obj: ET.Element, where: str, problems: list[str], tally: Tally) -> list[float] | None:
    """The 8 corner coordinates (x1 y1 ... x4 y4, framed pixels) of an object; None: no geometry (counted) or a
    problem (listed)."""
    polygon, box = obj.find("polygon"), obj.find("bndbox")
    if polygon is not None:
        values = [_number(polygon.findtext(k)) for k in _CORNERS]
        if None in values:
            problems.append(f"{where}: <polygon> needs numbers x1 y1 ... x4 y4, got "
                            f"{[polygon.findtext(k) for k in _CORNERS]}")
            return None
        return values
    if box is not None:
        x1, y1, x2, y2 = (_number(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if None in (x1, y1, x2, y2):
            problems.append(f"{where}: <bndbox> needs numbers xmin ymin xmax ymax")
            return None
        tally.bndbox += 1
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    tally.no_geometry += 1
    return None


def _line(cls: int, corners: list[float], tally: Tally) -> str | None:
    """The OBB row of an object in the cropped image (normalised), or None when nothing of it is inside."""
    w, h = FRAMED[0] - 2 * FRAME, FRAMED[1] - 2 * FRAME
    xs, ys = [c - FRAME for c in corners[0::2]], [c - FRAME for c in corners[1::2]]
    if max(xs) <= 0 or min(xs) >= w or max(ys) <= 0 or min(ys) >= h:
        tally.outside += 1
        return None
    cx, cy = [min(max(x, 0.0), w) for x in xs], [min(max(y, 0.0), h) for y in ys]
    if (cx, cy) != (xs, ys):
        tally.clamped += 1
    area = 0.5 * abs(sum(cx[k] * cy[k - 3] - cx[k - 3] * cy[k] for k in range(4)))
    if area <= 0:  # what the clamp left of it is a line along the edge
        tally.outside += 1
        return None
    return f"{cls} " + " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in zip(cx, cy))


def read_annotation(path: Path, problems: list[str], tally: Tally) -> list[str]:
    """The OBB rows of one image's XML (``xml.etree``: no entity expansion of external resources); a box annotated
    twice is one box."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(f"{path}: not a readable XML annotation ({e})")
        return []
    index = {n: i for i, n in enumerate(NAMES)}
    lines = []
    for k, obj in enumerate(root.iter("object"), 1):
        raw = (obj.findtext("name") or "").strip()
        key = re.sub(r"[\s_\-]+", " ", raw.lower()).strip()
        if raw in DROPPED_NAMES:
            tally.dropped_names += 1
            continue
        if key not in CLASSES:
            problems.append(f"{path}: object {k} has class {raw!r}, not one of DroneVehicle's {', '.join(NAMES)} or "
                            f"their known misspellings ({', '.join(sorted(MISSPELLINGS))})")
            continue
        ours = CLASSES[key]
        if raw != ours:
            tally.spellings[raw, ours] += 1
        corners = _corners(obj, f"{path}: object {k} ({raw})", problems, tally)
        if corners is not None:
            line = _line(index[ours], corners, tally)
            if line is not None:
                lines.append(line)
    return list(dict.fromkeys(lines))


def _stems(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() in suffixes}


def convert_dronevehicle(src_root: str | Path, dst_root: str | Path, lossless: bool = False) -> ConvertReport:
    """Convert a DroneVehicle copy at ``src_root`` (see the module docstring); raises :class:`DataError` listing every
    problem of the copy before anything is written."""
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    present = [s for s in SPLITS if (src_root / s).is_dir()]
    if not present:
        raise DataError(f"{src_root}: none of DroneVehicle's split folders ({', '.join(SPLITS)}) is here")
    problems: list[str] = []
    tally = Tally()
    plan: list[PlannedPair] = []
    ir_boxes = 0
    suffix = ".png" if lossless else ".jpg"
    images = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
    for split in present:
        folders = _folders(src_root / split, split)
        missing = [str(p) for p in folders.values() if not p.is_dir()]
        if missing:
            problems.append(f"{src_root / split}: missing folder(s) {', '.join(missing)} (each split has "
                            f"{split}img, {split}imgr, {split}label and {split}labelr)")
            continue
        files = {k: _stems(p, images if k in ("rgb", "ir") else (".xml",)) for k, p in folders.items()}
        for stem in sorted(set().union(*map(set, files.values()))):
            lacking = [folders[k].name for k in files if stem not in files[k]]
            if lacking:
                have = next(files[k][stem] for k in files if stem in files[k])
                problems.append(f"{have}: no partner in {', '.join(lacking)} (each pair has both images and both "
                                "annotations, under one name)")
                continue
            rgb, ir = files["rgb"][stem], files["ir"][stem]
            sizes_ok = True
            for p in (rgb, ir):
                size = image_size(p, problems)
                if size is not None and size != FRAMED:
                    problems.append(f"{p}: is {size[0]}x{size[1]}, expected {FRAMED[0]}x{FRAMED[1]} (a 640x512 image "
                                    f"inside DroneVehicle's {FRAME}-px white frame): an already cropped copy?")
                sizes_ok = sizes_ok and size == FRAMED
            rgb_lines = read_annotation(files["rgb_xml"][stem], problems, tally)
            ir_lines = read_annotation(files["ir_xml"][stem], problems, tally)
            if sizes_ok:
                ir_boxes += len(ir_lines)
                plan.append(PlannedPair(split, rgb, ir, tuple(rgb_lines), stem + suffix, ir_lines=tuple(ir_lines),
                                        crop=(FRAME, FRAME, FRAME, FRAME)))
    refuse(src_root, problems)
    splits = {p.split for p in plan}
    yaml_splits = {"train": "train" if "train" in splits else sorted(splits)[0],
                   "val": next((s for s in ("val", "test", "train") if s in splits), None),
                   **({"test": "test"} if "test" in splits else {})}
    extra = {"task": "obb", "labels_ir": "labelsIR", "label_policy": "ir"}
    report = write_dataset(src_root, dst_root, plan, NAMES, "copy", yaml_splits, extra)
    report.notes.append(f"DroneVehicle: the {FRAME}-px white frame cropped (images {FRAMED[0] - 2 * FRAME}x"
                        f"{FRAMED[1] - 2 * FRAME}, {suffix[1:].upper()}); labels/ from the RGB annotations "
                        f"({report.boxes} boxes), labelsIR/ from the IR ones ({ir_boxes} boxes); label_policy: ir")
    report.notes += tally.notes()
    return report


def add_parser(sub, common) -> None:
    p = sub.add_parser("dronevehicle", help="DroneVehicle (train/trainimg, trainimgr, trainlabel, trainlabelr, ...): "
                       "white frame cropped, 5 classes, oriented boxes, RGB and IR labels each")
    common(p)
    p.add_argument("--lossless", action="store_true",
                   help="write the cropped images as PNG (about 4x the space) instead of JPEG at quality 95")
    p.set_defaults(convert=_run)


def _run(args: argparse.Namespace) -> ConvertReport:
    if args.link != "hard":
        print("note: --link does not apply to dronevehicle: its images are cropped, so they are written anew")
    return convert_dronevehicle(args.src, args.dst, args.lossless)
