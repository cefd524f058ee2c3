"""``convert kaist``: the KAIST multispectral pedestrian benchmark (Hwang et al., CVPR 2015) as papers use it.

Images: the release's video-set layout (the ``kaist-cvpr15`` download), 640x512 registered pairs::

    SRC/images/set00/V000/visible/I00000.jpg    SRC/images/set00/V000/lwir/I00000.jpg

Annotations, one file per frame, in either of KAIST's two formats (both read with every field the metric needs):

- Piotr Dollár's bbGt text, first line ``% bbGt version=3``, then one object per line:
  ``label x y w h occlusion vx vy vw vh ignore angle`` (versions 0-2 have fewer trailing fields, as bbGt reads
  them); KAIST's ``annotations/``, the sanitized training annotations (Li et al., BMVC 2018) and the improved test
  annotations (Liu et al., BMVC 2016) are in it;
- the XML of ``annotations-xml-new/``: ``<object><name>person</name><bndbox><x/><y/><w/><h/></bndbox>``
  ``<occlusion>0</occlusion></object>`` (a ``bndbox`` of ``xmin/ymin/xmax/ymax`` is read too).

A frame's file is ``DIR/set06/V000/I00019.txt`` (or ``.xml``) in a per-video tree, or ``DIR/set06_V000_I00019.txt``
in a flat folder (how the sanitized and improved sets are passed around). Labels are KAIST's four: ``person``,
``people``, ``person?``, ``cyclist``; occlusion 0 (none), 1 (partial), 2 (heavy).

Which frames (the usual recipe: train on set00-05, test on every 20th frame of set06-11):

- ``--train-list`` / ``--test-list``: image-set files, one frame a line (``set00/V000/I00001``; KAIST's
  ``imageSets/train-all-02.txt``, ``test-all-20.txt`` and their day/night parts are such files);
- else a flat annotation folder's frames (the sanitized set: 7,601 training frames; the improved test set:
  2,252 frames);
- else the rule those lists follow: train ``train-all-02``, every 2nd frame of set00-05 (odd frame numbers);
  test ``test-all-20``, every 20th frame of set06-11 from I00019 (I00019, I00039, ...).

``--train-ann`` / ``--test-ann`` name each split's annotation folder (default: ``SRC/annotations-xml-new`` or
``SRC/annotations``, whichever exists). Written: ``images/{train,test}/set06_V000_I00019.jpg`` etc.; YOLO labels of
the ``person`` boxes not flagged ignore (one class; the ignore labels are no training target, as KAIST's own
training recipes leave them out); and ``kaist_annotations.json`` (``data/kaist_gt.py``) with every object, its
occlusion and ignore flag, which ``val`` reads for the log-average miss rate (``data.yaml``: ``missrate:``;
``val`` evaluates the test split). A frame without both images or its annotation, an unreadable annotation, an
unknown label, a non-numeric or empty box, an occlusion outside 0-2, an oriented box, or a frame in both splits is
refused, every problem listed, nothing written.
"""

from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from yolofuse_scale.data import kaist_gt
from yolofuse_scale.data.convert.common import (
    ConvertReport,
    PlannedPair,
    pair_size,
    read_id_list,
    refuse,
    write_dataset,
    yolo_line,
)
from yolofuse_scale.data.kaist_gt import KaistImage, KaistObject

NAMES = ["person"]
SIDE_FILE = "kaist_annotations.json"  # in DST; data.yaml's ``missrate:`` names it
SPLITS = ("train", "test")
TRAIN_SETS = tuple(f"set{i:02d}" for i in range(6))
TEST_SETS = tuple(f"set{i:02d}" for i in range(6, 12))
_FRAME = re.compile(r"(set\d{2})[/_](V\d{3})[/_](I\d{5})(?:\.[A-Za-z]+)?")
_IMAGE = re.compile(r"I\d{5}\.(?:jpg|jpeg|png)", re.IGNORECASE)
_FIELDS = {0: 10, 1: 10, 2: 11, 3: 12}  # bbGt version -> fields per object line (label included)


def parse_frame(text: str) -> str | None:
    """``set06/V000/I00019`` from a list line or file name (``set06_V000_I00019.txt`` too); None if not a frame."""
    m = _FRAME.fullmatch(text)
    return "/".join(m.groups()) if m else None


def by_rule(split: str, frame: str) -> bool:
    """Whether ``frame`` is in ``train-all-02`` (odd frames of set00-05) or ``test-all-20`` (set06-11, n % 20 = 19)."""
    s, _, i = frame.split("/")
    n = int(i[1:])
    return s in TRAIN_SETS and n % 2 == 1 if split == "train" else s in TEST_SETS and n % 20 == 19


def _frames(images: Path) -> dict[str, Path]:
    """frame -> its visible image, for every frame under ``SRC/images``."""
    out = {}
    for s in sorted(images.glob("set[0-9][0-9]")):
        for v in sorted(s.glob("V[0-9][0-9][0-9]")):
            for f in sorted((v / "visible").iterdir()) if (v / "visible").is_dir() else []:
                if _IMAGE.fullmatch(f.name):
                    out[f"{s.name}/{v.name}/{f.stem}"] = f
    return out


def _flat_frames(ann_dir: Path) -> list[str] | None:
    """The frames of a flat annotation folder (``set06_V000_I00019.txt``), or None for a per-video tree."""
    if any(p.is_dir() for p in ann_dir.glob("set[0-9][0-9]")):
        return None
    return sorted({f for p in ann_dir.iterdir() if p.suffix in (".txt", ".xml") and (f := parse_frame(p.name))})


def _annotation(ann_dir: Path, frame: str) -> Path | None:
    flat = frame.replace("/", "_")
    return next((p for p in (ann_dir / f"{frame}.txt", ann_dir / f"{frame}.xml", ann_dir / f"{flat}.txt",
                             ann_dir / f"{flat}.xml") if p.is_file()), None)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _object(where: str, label: str, box: list[float | None], occ: float | None, ign: float | None,
            problems: list[str]) -> KaistObject | None:
    if label not in kaist_gt.LABELS:
        problems.append(f"{where}: label {label!r} is not one of KAIST's {', '.join(kaist_gt.LABELS)}")
        return None
    if any(v is None for v in box) or occ is None or ign is None:
        problems.append(f"{where}: {label} needs numeric x, y, w, h and an occlusion level")
        return None
    if box[2] <= 0 or box[3] <= 0:
        problems.append(f"{where}: {label} has an empty box (w {box[2]:g}, h {box[3]:g})")
        return None
    if occ not in (0, 1, 2) or ign not in (0, 1):
        problems.append(f"{where}: {label} has occlusion {occ:g} (0 none, 1 partial, 2 heavy) or ignore flag "
                        f"{ign:g} (0/1)")
        return None
    return KaistObject(label, *box, int(occ), bool(ign))


def read_bbgt(path: Path, problems: list[str]) -> list[KaistObject] | None:
    """A bbGt text annotation's objects; None (problems listed, with their line) when any line is wrong."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot be read as text ({e})")
        return None
    m = re.fullmatch(r"%\s*bbGt\s+version\s*=\s*(\d+)\s*", lines[0]) if lines else None
    if m is None or int(m.group(1)) not in _FIELDS:
        problems.append(f"{path}:1: expected the header '% bbGt version=N' (N 0-3) of Dollar's bbGt format")
        return None
    fields, before, objects = _FIELDS[int(m.group(1))], len(problems), []
    for n, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != fields:
            problems.append(f"{path}:{n}: {len(parts)} fields, bbGt version {m.group(1)} has {fields}")
            continue
        nums = [_number(p) for p in parts[1:]]
        if fields >= 12 and nums[10] is not None and nums[10] % 360 != 0:
            problems.append(f"{path}:{n}: an oriented box (angle {nums[10]:g}); KAIST's boxes are upright")
            continue
        ign = nums[9] if fields >= 11 else 0.0
        objects.append(_object(f"{path}:{n}", parts[0], nums[0:4], nums[4], ign, problems))
    return objects if len(problems) == before else None


def read_kaist_xml(path: Path, problems: list[str]) -> list[KaistObject] | None:
    """An ``annotations-xml-new`` file's objects; None (problems listed) when any object is wrong."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(f"{path}: not a readable XML annotation ({e})")
        return None
    before, objects = len(problems), []
    for k, obj in enumerate(root.iter("object"), 1):
        b = obj.find("bndbox")
        if b is not None and b.find("x") is None and b.find("xmin") is not None:  # the VOC-style variant
            x1, y1, x2, y2 = (_number(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            box = [x1, y1, x2 - x1, y2 - y1] if None not in (x1, y1, x2, y2) else [None] * 4
        else:
            box = [_number(b.findtext(t)) if b is not None else None for t in ("x", "y", "w", "h")]
        objects.append(_object(f"{path}: object {k}", (obj.findtext("name") or "").strip(), box,
                               _number(obj.findtext("occlusion")), 0.0, problems))
    return objects if len(problems) == before else None


def _read(path: Path, problems: list[str]) -> list[KaistObject] | None:
    return read_kaist_xml(path, problems) if path.suffix == ".xml" else read_bbgt(path, problems)


def _default_ann(src: Path) -> Path | None:
    return next((p for p in (src / "annotations-xml-new", src / "annotations") if p.is_dir()), None)


def convert_kaist(src_root: str | Path, dst_root: str | Path, link: str = "hard",
                  ann: dict[str, str | Path | None] | None = None,
                  lists: dict[str, str | Path | None] | None = None) -> ConvertReport:
    """Convert a KAIST copy (see the module docstring). ``ann`` / ``lists``: per split (train, test) an annotation
    folder / image-set file, or None for the default. Raises DataError listing every problem before writing."""
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    ann, lists = ann or {}, lists or {}
    structural = []
    if not (src_root / "images").is_dir():
        structural.append(f"{src_root / 'images'}: no such folder (KAIST's images/setNN/VNNN/{{visible,lwir}}/)")
    ann_dirs: dict[str, Path] = {}
    for split in SPLITS:
        d = Path(ann[split]).resolve() if ann.get(split) else _default_ann(src_root)
        if d is None or not d.is_dir():
            structural.append(f"{d or src_root / 'annotations'}: no {split} annotation folder (the default is "
                              f"SRC/annotations-xml-new or SRC/annotations; --{split}-ann names another)")
        else:
            ann_dirs[split] = d
    refuse(src_root, structural)
    problems: list[str] = []
    frames = _frames(src_root / "images")
    chosen: dict[str, list[str]] = {}
    notes = []
    for split in SPLITS:
        if lists.get(split):
            chosen[split] = read_id_list(Path(lists[split]), problems, parse_frame)
            how = f"listed in {lists[split]}"
        elif (flat := _flat_frames(ann_dirs[split])) is not None:
            chosen[split], how = flat, f"annotated in {ann_dirs[split]}"
        else:
            chosen[split] = [f for f in frames if by_rule(split, f)]
            how = "train-all-02: every 2nd frame of set00-05" if split == "train" else \
                "test-all-20: every 20th frame of set06-11"
        notes.append(f"KAIST {split}: {len(chosen[split])} frames, {how}; annotations {ann_dirs[split]}")
    for frame in sorted(set(chosen["train"]) & set(chosen["test"])):
        problems.append(f"{frame}: chosen for both train and test")
    plan, side = [], {}
    for split in SPLITS:
        for frame in chosen[split]:
            s, v, i = frame.split("/")
            rgb = frames.get(frame)
            ir = rgb.parent.parent / "lwir" / rgb.name if rgb else None
            ann_file = _annotation(ann_dirs[split], frame)
            missing = [what for what, p in (("visible image", rgb), ("lwir image", ir), ("annotation", ann_file))
                       if p is None or not p.is_file()]
            if missing:
                problems.append(f"{frame} ({split}): no {', no '.join(missing)} (images under "
                                f"{src_root / 'images' / s / v}, annotations under {ann_dirs[split]})")
                continue
            objects = _read(ann_file, problems)
            size = pair_size(rgb, ir, problems)
            if objects is None or size is None:
                continue
            lines = []
            for o in objects:
                if o.label == "person" and not o.ignore:
                    line = yolo_line(0, o.x, o.y, o.x + o.w, o.y + o.h, *size)
                    if line is None:
                        problems.append(f"{ann_file}: a person box ({o.x:g}, {o.y:g}, {o.w:g}, {o.h:g}) lies outside "
                                        f"the {size[0]}x{size[1]} image")
                    else:
                        lines.append(line)
            stem = f"{s}_{v}_{i}"
            plan.append(PlannedPair(split, rgb, ir, tuple(dict.fromkeys(lines)), stem + rgb.suffix))
            side[stem] = KaistImage(size, tuple(objects))
    refuse(src_root, problems)
    report = write_dataset(src_root, dst_root, plan, NAMES, link,
                           {"train": "train", "val": "test", "test": "test"},
                           {"missrate": SIDE_FILE}, {SIDE_FILE: kaist_gt.dumps(side)})
    report.notes += notes
    return report


def add_parser(sub, common) -> None:
    p = sub.add_parser("kaist", help="KAIST pedestrians (images/setNN/VNNN/{visible,lwir}/, bbGt text or XML "
                       "annotations): person + ignore regions for the miss rate")
    common(p)
    for split, example in (("train", "the sanitized training set"), ("test", "the improved test set")):
        p.add_argument(f"--{split}-ann", default=None,
                       help=f"{split} annotation folder, per-video tree or flat (e.g. {example}); default: "
                       "SRC/annotations-xml-new or SRC/annotations")
        p.add_argument(f"--{split}-list", default=None,
                       help=f"{split} image-set file, one frame a line (setNN/VNNN/INNNNN); default: the flat "
                       f"annotation folder's frames, else {'train-all-02' if split == 'train' else 'test-all-20'}")
    p.set_defaults(convert=_run)


def _run(args: argparse.Namespace) -> ConvertReport:
    return convert_kaist(args.src, args.dst, args.link, ann={"train": args.train_ann, "test": args.test_ann},
                         lists={"train": args.train_list, "test": args.test_list})
