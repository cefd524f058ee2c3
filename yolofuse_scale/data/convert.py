"""Convert VOC-annotated RGB-T releases (LLVIP, FLIR-aligned, M3FD) into the YOLOFuse layout + data.yaml.

Source layout (LLVIP's, folder names configurable)::

    SRC/visible/{train,test}/010001.jpg     # or SRC/visible/*.jpg (one split, e.g. M3FD's Vis/)
    SRC/infrared/{train,test}/010001.jpg    # same file names
    SRC/Annotations/010001.xml              # or SRC/Annotations/<split>/010001.xml

Releases whose RGB, IR and annotation files are named differently (FLIR-aligned:
``FLIR_08865_RGB.jpg``, ``FLIR_08865_PreviewData.jpeg``, ``FLIR_08865_PreviewData.xml``) name them
with patterns around ``{id}`` (``--rgb-name '{id}_RGB.jpg' --ir-name '{id}_PreviewData.jpeg'
--ann-name '{id}_PreviewData.xml'``); the pair is then written as ``<id><RGB suffix>`` in both image
folders (the YOLOFuse layout pairs by identical file names; decoders go by content, not suffix).

Written::

    DST/images/<split>/010001.jpg   DST/imagesIR/<split>/010001.jpg   DST/labels/<split>/010001.txt
    DST/data.yaml

Idempotent: every annotation is parsed and checked before anything is written (a bad XML leaves DST
untouched); a file whose content is already right is not touched (same link, same bytes), the others
are written to a temporary name and renamed, so a rerun changes nothing, an interrupted run leaves no
half file, and a label is always written whole (LLVIP's official script appends, so its reruns
duplicate every box).
"""

from __future__ import annotations

import argparse
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.scan import IMG_SUFFIXES, format_problems
from yolofuse_scale.io import write_atomic

LINK_MODES = ("hard", "symlink", "copy")
DROP = "-"  # a class-map target meaning "ignore boxes of this class"


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


@dataclass
class ConvertReport:
    """What a conversion did, per kind of file."""

    pairs: int = 0
    boxes: int = 0
    written: int = 0
    unchanged: int = 0
    splits: dict[str, int] = field(default_factory=dict)


def _voc_boxes(xml_path: Path, image: Path, src: VocSource, problems: list[str]) -> list[str]:
    """YOLO label lines of one VOC file (boxes clipped to the image); problems appended, not raised."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(f"{xml_path}: not a readable VOC XML file ({e})")
        return []
    w = _int(root.findtext("size/width"))
    h = _int(root.findtext("size/height"))
    if not w or not h:  # some releases write 0 or omit the size: the image header knows it
        with Image.open(image) as im:
            w, h = im.size
    index = {n: i for i, n in enumerate(src.names)}
    lines = []
    for k, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        target = src.class_map.get(name, name)
        if target == DROP:
            continue
        if target not in index:
            problems.append(f"{xml_path}: object {k} has class {name!r}, not in --classes {','.join(src.names)} "
                            f"(map it with --class-map {name}=NAME, or {name}={DROP} to drop it)")
            continue
        try:
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            problems.append(f"{xml_path}: object {k} ({name}) has no numeric bndbox xmin/ymin/xmax/ymax")
            continue
        # VOC pixel coordinates taken as continuous edges, clipped: LLVIP's boxes reach xmax = width,
        # so the darknet-style "-1" shift would move every box a pixel left for no gain.
        x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
        y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
        if x2 <= x1 or y2 <= y1:
            problems.append(f"{xml_path}: object {k} ({name}) has an empty box after clipping to {w}x{h}")
            continue
        lines.append(f"{index[target]} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return list(dict.fromkeys(lines))  # a box annotated twice is one box


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


def _write_text(path: Path, text: str, report: ConvertReport) -> None:
    if path.is_file() and path.read_text() == text:
        report.unchanged += 1
        return
    write_atomic(path, text)
    report.written += 1


def _place_image(src: Path, dst: Path, link: str, report: ConvertReport) -> None:
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


def convert_voc(src_root: str | Path, dst_root: str | Path, src: VocSource, link: str = "hard") -> ConvertReport:
    """Convert a VOC RGB-T release at ``src_root`` into the YOLOFuse layout at ``dst_root``.

    Raises :class:`DataError` with every problem (file named) before writing anything.
    """
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    problems: list[str] = []
    plan: list[tuple[str, Path, Path, list[str], str]] = []  # (our split, rgb, ir, label lines, output name)
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
            lines = _voc_boxes(ann, rgb, src, problems) if ann else []  # no annotation: a background pair
            plan.append((split, rgb, ir, lines, pair_id + rgb.suffix))
    if problems:
        raise DataError(format_problems(f"{src_root}: nothing written", problems))
    if not plan:
        raise DataError(f"{src_root}: no images under {src_root / src.rgb_dir}")
    report = ConvertReport()
    for split, rgb, ir, lines, out_name in plan:
        _place_image(rgb, dst_root / "images" / split / out_name, link, report)
        _place_image(ir, dst_root / "imagesIR" / split / out_name, link, report)
        _write_text(dst_root / "labels" / split / f"{Path(out_name).stem}.txt", "".join(f"{x}\n" for x in lines),
                    report)
        report.pairs += 1
        report.boxes += len(lines)
        report.splits[split] = report.splits.get(split, 0) + 1
    splits = sorted(report.splits)
    val = "val" if "val" in report.splits else splits[0]  # a one-split release validates on its training set
    spec = {"path": ".", "train": f"images/{'train' if 'train' in report.splits else splits[0]}",
            "val": f"images/{val}", "names": dict(enumerate(src.names)), "ir_dir": "imagesIR",
            "ir_channels": 1}
    header = f"# converted from {src_root} by `yolofuse-scale convert`\n"
    _write_text(dst_root / "data.yaml", header + yaml.safe_dump(spec, sort_keys=False), report)
    return report


def _pairs_arg(text: str, what: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE[,NAME=VALUE...], got {item!r}")
        out[key.strip()] = value.strip()
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convert llvip SRC DST`` and ``convert voc SRC DST --classes ...`` under ``parser``."""
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    llvip = sub.add_parser("llvip", help="LLVIP release: visible/, infrared/ {train,test}, Annotations/*.xml")
    voc = sub.add_parser("voc", help="any VOC-annotated RGB-T set (FLIR-aligned, M3FD) with a class map")
    for p in (llvip, voc):
        p.add_argument("src", help="the release's root folder")
        p.add_argument("dst", help="output root: images/, imagesIR/, labels/ and data.yaml are written there")
        p.add_argument("--link", choices=LINK_MODES, default="hard",
                       help="how images reach DST: hard links (no extra space; copies across file systems), "
                       "symlinks or copies (default: hard)")
    voc.add_argument("--classes", required=True, help="target class names in id order, comma-separated")
    voc.add_argument("--class-map", default="", type=lambda t: _pairs_arg(t, "--class-map"),
                     help=f"source=target renames/merges, comma-separated; target {DROP} drops the class")
    voc.add_argument("--rgb-dir", default="visible", help="folder of visible images under SRC (default: visible)")
    voc.add_argument("--ir-dir", default="infrared", help="folder of infrared images under SRC (default: infrared)")
    voc.add_argument("--ann-dir", default="Annotations", help="folder of VOC XML files (default: Annotations)")
    voc.add_argument("--split-map", default="test=val", type=lambda t: _pairs_arg(t, "--split-map"),
                     help="source split folder=our split name, comma-separated (default: test=val)")
    voc.add_argument("--rgb-name", default="", help="RGB file name pattern around {id}, e.g. '{id}_RGB.jpg' "
                     "(FLIR-aligned); default: every image in --rgb-dir, id = its stem")
    voc.add_argument("--ir-name", default="", help="IR file name pattern, e.g. '{id}_PreviewData.jpeg'; "
                     "default: the RGB file's name in --ir-dir")
    voc.add_argument("--ann-name", default="", help="annotation file name pattern (default: '{id}.xml')")


def run(args: argparse.Namespace) -> int:
    """Run the conversion the parsed ``args`` describe; print a summary; return 0."""
    if args.format == "llvip":
        src = LLVIP
    else:
        src = VocSource(names=[n.strip() for n in args.classes.split(",") if n.strip()], class_map=args.class_map,
                        rgb_dir=args.rgb_dir, ir_dir=args.ir_dir, ann_dir=args.ann_dir, split_map=args.split_map,
                        rgb_name=args.rgb_name, ir_name=args.ir_name, ann_name=args.ann_name)
    r = convert_voc(args.src, args.dst, src, args.link)
    per_split = ", ".join(f"{k} {v}" for k, v in sorted(r.splits.items()))
    print(f"{r.pairs} pairs ({per_split}), {r.boxes} boxes: {r.written} file(s) written, {r.unchanged} unchanged; "
          f"{Path(args.dst) / 'data.yaml'}")
    return 0
