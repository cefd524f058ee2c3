"""``convert llvip`` and ``convert voc``: VOC-annotated RGB-T releases into the YOLOFuse layout + data.yaml.

Source layout (LLVIP's, folder names configurable)::

    SRC/visible/{train,test}/010001.jpg     # or SRC/visible/*.jpg (one split)
    SRC/infrared/{train,test}/010001.jpg    # same file names
    SRC/Annotations/010001.xml              # or SRC/Annotations/<split>/010001.xml

Releases whose RGB, IR and annotation files are named differently name them with patterns around ``{id}``
(``--rgb-name '{id}_RGB.jpg' --ir-name '{id}_PreviewData.jpeg' --ann-name '{id}_PreviewData.xml'``); the pair is
then written as ``<id><RGB suffix>`` in both image folders (the YOLOFuse layout pairs by identical file names;
decoders go by content, not suffix). FLIR-aligned and M3FD have converters of their own (``flir.py``, ``m3fd.py``)
that also apply their benchmark splits; ``convert voc`` is for any other VOC release.

Written::

    DST/images/<split>/010001.jpg   DST/imagesIR/<split>/010001.jpg   DST/labels/<split>/010001.txt
    DST/data.yaml

Every annotation is parsed and checked before anything is written (a bad XML leaves DST untouched); writing is
``common.write_dataset``'s (idempotent, atomic; LLVIP's official script appends, so its reruns duplicate every box).
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.convert.common import (
    DROP,
    LINK_MODES,
    ConvertReport,
    PlannedPair,
    image_size,
    refuse,
    write_dataset,
    yolo_line,
)
from yolofuse_scale.data.scan.listing import IMG_SUFFIXES

__all__ = ["DROP", "LINK_MODES", "LLVIP", "ConvertReport", "VocSource", "convert_voc", "read_voc", "voc_lines"]


@dataclass(frozen=True)
class VocSource:
    """Where a VOC RGB-T release keeps its parts, and how its classes and splits map to ours."""

    names: list[str]  #: target class names, in id order
    class_map: dict[str, str] = field(default_factory=dict)  #: source name -> target name (or "-": drop)
    rgb_dir: str = "visible"
    ir_dir: str = "infrared"
    ann_dir: str = "Annotations"
    split_map: dict[str, str] = field(default_factory=dict)  #: source split -> our split (e.g. test -> val)
    #: File-name patterns around ``{id}``; empty: IR has the RGB file's name, XML is ``<RGB stem>.xml``
    rgb_name: str = ""
    ir_name: str = ""
    ann_name: str = ""

    def __post_init__(self) -> None:
        given = [n for n in (self.rgb_name, self.ir_name) if n]
        if given and (len(given) != 2 or not all(n.count("{id}") == 1 for n in given)):
            raise ValueError("--rgb-name and --ir-name go together, each with exactly one {id}, "
                             f"got {self.rgb_name!r} and {self.ir_name!r}")
        if self.ann_name and self.ann_name.count("{id}") != 1:
            raise ValueError(f"--ann-name needs exactly one {{id}}, got {self.ann_name!r}")

    def pair_id(self, rgb_name: str) -> str | None:
        """The ``{id}`` of an RGB file name (its stem without patterns; None: not an RGB file)."""
        if not self.rgb_name:
            return Path(rgb_name).stem
        head, tail = self.rgb_name.split("{id}")
        ok = rgb_name.startswith(head) and rgb_name.endswith(tail) and len(rgb_name) > len(head) + len(tail)
        return rgb_name[len(head): len(rgb_name) - len(tail)] if ok else None


LLVIP = VocSource(names=["person"], split_map={"train": "train", "test": "val"})


@dataclass(frozen=True)
class VocObject:
    """One ``<object>`` of a VOC file: its 1-based position, name and ``bndbox`` (None: not four numbers)."""

    index: int
    name: str
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class VocFile:
    """A parsed VOC annotation: its ``size`` (0 where absent or zero: some releases omit it) and objects."""

    path: Path
    width: int
    height: int
    objects: tuple[VocObject, ...]


def read_voc(path: Path, problems: list[str]) -> VocFile | None:
    """Parse a VOC XML file (``xml.etree``: no entity expansion of external resources); None, with the reason
    in ``problems``, when it is not readable XML."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(f"{path}: not a readable VOC XML file ({e})")
        return None
    objects = []
    for k, obj in enumerate(root.iter("object"), 1):
        try:
            box = tuple(float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            box = None
        objects.append(VocObject(k, (obj.findtext("name") or "").strip(), box))
    return VocFile(path, _int(root.findtext("size/width")), _int(root.findtext("size/height")), tuple(objects))


def voc_lines(voc: VocFile, w: int, h: int, names: list[str], class_map: dict[str, str], problems: list[str],
              unknown: Callable[[str], str]) -> list[str]:
    """YOLO label lines of a parsed VOC file on a ``w`` x ``h`` image (boxes clipped to it; a box annotated twice is
    one box). ``class_map``: source name -> target name or ``DROP``; ``unknown(name)``: what a problem says about a
    class that is neither mapped nor in ``names``."""
    index = {n: i for i, n in enumerate(names)}
    lines = []
    for obj in voc.objects:
        target = class_map.get(obj.name, obj.name)
        if target == DROP:
            continue
        if target not in index:
            problems.append(f"{voc.path}: object {obj.index} has class {obj.name!r}, {unknown(obj.name)}")
            continue
        if obj.box is None:
            problems.append(f"{voc.path}: object {obj.index} ({obj.name}) has no numeric bndbox xmin/ymin/xmax/ymax")
            continue
        # VOC pixel coordinates taken as continuous edges, clipped: LLVIP's boxes reach xmax = width,
        # so the darknet-style "-1" shift would move every box a pixel left for no gain.
        line = yolo_line(index[target], *obj.box, w, h)
        if line is None:
            problems.append(f"{voc.path}: object {obj.index} ({obj.name}) has an empty box after clipping to {w}x{h}")
            continue
        lines.append(line)
    return list(dict.fromkeys(lines))


def release_voc_lines(ann: Path, image: Path, size: tuple[int, int] | None, names: list[str],
                      class_map: dict[str, str], problems: list[str], unknown: Callable[[str], str]) -> list[str]:
    """The label lines of a benchmark release's annotation ``ann`` of ``image`` (``size``: as displayed; None: its
    problem is already listed). An XML whose ``size`` disagrees with the image is refused, not guessed at: which
    of the two sizes its boxes were drawn on cannot be told (an absent or zero size is read from the image)."""
    voc = read_voc(ann, problems)
    if voc is None or size is None:
        return []
    if voc.width and voc.height and (voc.width, voc.height) != size:
        problems.append(f"{ann}: says its image is {voc.width}x{voc.height}, but {image} is {size[0]}x{size[1]} "
                        "as displayed")
        return []
    return voc_lines(voc, *size, names, class_map, problems, unknown)


def _int(text: str | None) -> int:
    try:
        return int(float(text)) if text else 0
    except ValueError:
        return 0


def _splits(src_root: Path, src: VocSource) -> dict[str, Path]:
    """Source split name -> folder of its RGB images (the whole folder as 'train' when it is flat)."""
    rgb_root = src_root / src.rgb_dir
    if not rgb_root.is_dir():
        raise DataError(f"{rgb_root}: no such folder (the visible images; --rgb-dir names it)")
    subs = {p.name: p for p in sorted(rgb_root.iterdir()) if p.is_dir()}
    return subs or {"train": rgb_root}


def convert_voc(src_root: str | Path, dst_root: str | Path, src: VocSource, link: str = "hard") -> ConvertReport:
    """Convert a VOC RGB-T release at ``src_root`` into the YOLOFuse layout at ``dst_root``.

    Raises :class:`DataError` with every problem (file named) before writing anything.
    """
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    problems: list[str] = []
    plan: list[PlannedPair] = []

    def unknown(name: str) -> str:
        return (f"not in --classes {','.join(src.names)} (map it with --class-map {name}=NAME, or {name}={DROP} "
                "to drop it)")

    for name, folder in _splits(src_root, src).items():
        split = src.split_map.get(name, name)
        for rgb in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_SUFFIXES):
            pair_id = src.pair_id(rgb.name)
            if pair_id is None:
                continue  # with name patterns, RGB and IR may share a folder: this is not an RGB file
            ir = src_root / src.ir_dir / rgb.relative_to(src_root / src.rgb_dir)
            if src.ir_name:
                ir = ir.with_name(src.ir_name.format(id=pair_id))
            if not ir.is_file():
                problems.append(f"{rgb}: no infrared partner {ir}")
                continue
            xml = (src.ann_name or "{id}.xml").format(id=pair_id)
            ann = next((a for a in (src_root / src.ann_dir / name / xml, src_root / src.ann_dir / xml)
                        if a.is_file()), None)
            lines: list[str] = []  # no annotation: a background pair
            voc = read_voc(ann, problems) if ann else None
            if voc is not None:
                size = (voc.width, voc.height) if voc.width and voc.height else image_size(rgb, problems)
                # some releases write 0 or omit the size: the image header (as the loaders read it) knows it
                lines = voc_lines(voc, *size, src.names, src.class_map, problems, unknown) if size else []
            plan.append(PlannedPair(split, rgb, ir, tuple(lines), pair_id + rgb.suffix))
    refuse(src_root, problems)
    if not plan:
        raise DataError(f"{src_root}: no images under {src_root / src.rgb_dir}")
    return write_dataset(src_root, dst_root, plan, src.names, link)


def _pairs_arg(text: str, what: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE[,NAME=VALUE...], got {item!r}")
        out[key.strip()] = value.strip()
    return out


def add_parsers(sub, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``convert llvip SRC DST`` and ``convert voc SRC DST --classes ...``; ``common`` adds SRC, DST, --link."""
    llvip = sub.add_parser("llvip", help="LLVIP release: visible/, infrared/ {train,test}, Annotations/*.xml")
    voc = sub.add_parser("voc", help="any other VOC-annotated RGB-T set, with a class map")
    for p in (llvip, voc):
        common(p)
    llvip.set_defaults(convert=lambda a: convert_voc(a.src, a.dst, LLVIP, a.link))
    voc.set_defaults(convert=_run_voc)
    voc.add_argument("--classes", required=True, help="target class names in id order, comma-separated")
    voc.add_argument("--class-map", default="", type=lambda t: _pairs_arg(t, "--class-map"),
                     help=f"source=target renames/merges, comma-separated; target {DROP} drops the class")
    voc.add_argument("--rgb-dir", default="visible", help="folder of visible images under SRC (default: visible)")
    voc.add_argument("--ir-dir", default="infrared", help="folder of infrared images under SRC (default: infrared)")
    voc.add_argument("--ann-dir", default="Annotations", help="folder of VOC XML files (default: Annotations)")
    voc.add_argument("--split-map", default="test=val", type=lambda t: _pairs_arg(t, "--split-map"),
                     help="source split folder=our split name, comma-separated (default: test=val)")
    voc.add_argument("--rgb-name", default="", help="RGB file name pattern around {id}, e.g. '{id}_RGB.jpg'; "
                     "default: every image in --rgb-dir, id = its stem")
    voc.add_argument("--ir-name", default="", help="IR file name pattern, e.g. '{id}_PreviewData.jpeg'; "
                     "default: the RGB file's name in --ir-dir")
    voc.add_argument("--ann-name", default="", help="annotation file name pattern (default: '{id}.xml')")


def _run_voc(args: argparse.Namespace) -> ConvertReport:
    src = VocSource(names=[n.strip() for n in args.classes.split(",") if n.strip()], class_map=args.class_map,
                    rgb_dir=args.rgb_dir, ir_dir=args.ir_dir, ann_dir=args.ann_dir, split_map=args.split_map,
                    rgb_name=args.rgb_name, ir_name=args.ir_name, ann_name=args.ann_name)
    return convert_voc(args.src, args.dst, src, args.link)
