"""``convert vedai``: VEDAI (Razakarivony & Jurie, JVCIR 2016), aerial vehicles in co-registered colour + near-IR.

Expected layout (the release's ``Vehicules512`` / ``Annotations512`` downloads; 1024 the same with 1024)::

    SRC/Vehicules512/00000000_co.png     colour
    SRC/Vehicules512/00000000_ir.png     near infrared, registered to it
    SRC/Annotations512/annotation512.txt one object a line, 15 fields (the devkit's order):
        image_id x_center y_center orientation x1 x2 x3 x4 y1 y2 y3 y4 class fully_contained occluded
    SRC/Annotations512/fold01.txt ... fold10.txt            training ids of each of the ten folds
    SRC/Annotations512/fold01test.txt ... fold10test.txt    their test ids

``--size 512|1024`` picks the resolution (default 512, what RGB-T papers report), ``--fold N`` the fold (default 1:
SuperYOLO and the RGB-T detectors after it report fold 1; the protocol of the release averages all ten, one
conversion each, into separate folders). Ids are the 8-digit image numbers (fewer digits are zero-padded).

Classes: the release's sparse class numbers, mapped to the eight classes SuperYOLO (Zhang et al., TGRS 2023)
kept, in its order: 1 car, 11 pickup, 5 camping (camping car), 2 truck, 10 other, 4 tractor, 23 boat, 9 van; the
three with fewer than 50 instances, 7 motorcycle, 8 bus and 31 plane, are dropped as it drops them. Any other
number is refused.

**Boxes are axis-aligned for now**: each object's four corners become their enclosing box, clipped to the image
(oriented boxes are a label kind of their own, added by another issue; until then VEDAI trains and scores as a
horizontal-box set, as the RGB-T papers that report mAP on it do). A listed image without both files, images of
two sizes, a line that is not 15 numbers, an unknown class, a box with nothing inside the image, or an id in both
lists of the fold is refused, every problem listed, nothing written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolofuse_scale.data.convert.common import (
    ConvertReport,
    PlannedPair,
    pair_size,
    read_id_list,
    refuse,
    write_dataset,
    yolo_line,
)

NAMES = ["car", "pickup", "camping", "truck", "other", "tractor", "boat", "van"]
#: release class number -> our class id; None: dropped (under 50 instances)
CLASSES = {1: 0, 11: 1, 5: 2, 2: 3, 10: 4, 4: 5, 23: 6, 9: 7, 7: None, 8: None, 31: None}
SIZES = (512, 1024)
FOLDS = range(1, 11)
_FIELDS = 15


def _parse_id(text: str) -> str | None:
    return f"{int(text):08d}" if text.isdigit() and len(text) <= 8 else None


def read_annotations(path: Path, problems: list[str]) -> dict[str, list[tuple[int, list[float], str]]]:
    """id -> [(our class id, 4 x then 4 y corner coordinates, "FILE:LINE")] of the kept objects."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot be read as text ({e})")
        return {}
    out: dict[str, list] = {}
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{n}"
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            nums = None
        pid = _parse_id(parts[0])
        if len(parts) != _FIELDS or nums is None or pid is None:
            problems.append(f"{where}: expected {_FIELDS} numbers (image_id xc yc orientation x1..x4 y1..y4 class "
                            f"fully_contained occluded), got {line.strip()[:120]!r}")
            continue
        raw = nums[11]
        if not raw.is_integer() or int(raw) not in CLASSES:
            problems.append(f"{where}: class {raw:g} is not one of VEDAI's {', '.join(map(str, sorted(CLASSES)))}")
            continue
        cls = CLASSES[int(raw)]
        if cls is not None:
            out.setdefault(pid, []).append((cls, nums[3:11], where))
    return out


def convert_vedai(src_root: str | Path, dst_root: str | Path, link: str = "hard", size: int = 512,
                  fold: int = 1) -> ConvertReport:
    """Convert a VEDAI copy's ``fold`` at ``size`` px (see the module docstring); raises DataError listing every
    problem before anything is written."""
    if size not in SIZES or fold not in FOLDS:
        raise ValueError(f"size must be one of {SIZES} and fold 1-10, got {size} and {fold}")
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    images, anns = src_root / f"Vehicules{size}", src_root / f"Annotations{size}"
    refuse(src_root, [f"{d}: no such folder (VEDAI's {what} at {size} px)" for d, what in
                      ((images, "images"), (anns, "annotations and folds")) if not d.is_dir()])
    problems: list[str] = []
    objects = read_annotations(anns / f"annotation{size}.txt", problems)
    split_of: dict[str, str] = {}
    for split, name in (("train", f"fold{fold:02d}.txt"), ("val", f"fold{fold:02d}test.txt")):
        if not (anns / name).is_file():
            problems.append(f"{anns / name}: not found (fold {fold}'s {'training' if split == 'train' else 'test'} "
                            "ids)")
            continue
        for pid in read_id_list(anns / name, problems, _parse_id):
            if pid in split_of:
                problems.append(f"{anns / name}: {pid} is in the fold's training list too")
            split_of[pid] = split
    plan = []
    for pid, split in sorted(split_of.items(), key=lambda kv: (kv[1], kv[0])):
        co, ir = images / f"{pid}_co.png", images / f"{pid}_ir.png"
        missing = [str(p) for p in (co, ir) if not p.is_file()]
        if missing:
            problems.append(f"{pid} (fold {fold} {split}): missing {', '.join(missing)}")
            continue
        wh = pair_size(co, ir, problems)
        if wh is None:
            continue
        lines = []
        for cls, corners, where in objects.get(pid, []):
            xs, ys = corners[:4], corners[4:]
            line = yolo_line(cls, min(xs), min(ys), max(xs), max(ys), *wh)
            if line is None:
                problems.append(f"{where}: the box of {pid} lies outside its {wh[0]}x{wh[1]} image")
            else:
                lines.append(line)
        plan.append(PlannedPair(split, co, ir, tuple(dict.fromkeys(lines)), f"{pid}.png"))
    refuse(src_root, problems)
    report = write_dataset(src_root, dst_root, plan, NAMES, link, {"train": "train", "val": "val"})
    report.notes.append(f"VEDAI {size} px, fold {fold}: oriented boxes written axis-aligned (their enclosing "
                        "boxes); motorcycle, bus and plane dropped")
    return report


def add_parser(sub, common) -> None:
    p = sub.add_parser("vedai", help="VEDAI (Vehicules512/*_co.png, *_ir.png, Annotations512/): one fold, "
                       "8 classes, boxes axis-aligned")
    common(p)
    p.add_argument("--size", type=int, choices=SIZES, default=512, help="image resolution (default: 512)")
    p.add_argument("--fold", type=int, choices=list(FOLDS), default=1,
                   help="which of the ten folds: foldNN.txt trains, foldNNtest.txt validates (default: 1)")
    p.set_defaults(convert=_run)


def _run(args: argparse.Namespace) -> ConvertReport:
    return convert_vedai(args.src, args.dst, args.link, args.size, args.fold)
