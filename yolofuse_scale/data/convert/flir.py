"""``convert flir``: FLIR-aligned, the registered subset of FLIR ADAS v1 that RGB-T detection papers report on.

FLIR ADAS v1 ships thermal frames annotated and RGB frames of another field of view, unregistered. Zhang et al.
(ICIP 2020, "Multispectral fusion for object detection with cyclic fuse-and-refine blocks") released the pairs
they registered, 4,129 for training and 1,013 for validation, with VOC annotations of the thermal frame; CFT,
ICAFusion and their successors train and test on exactly those, with three classes. Expected layout (the
"FLIR_aligned" download; the same folders under ``SRC/align/`` are found too)::

    SRC/JPEGImages/FLIR_08865_RGB.jpg             visible, registered to the thermal frame
    SRC/JPEGImages/FLIR_08865_PreviewData.jpeg    thermal
    SRC/Annotations/FLIR_08865_PreviewData.xml    VOC: person, car, bicycle (dog: dropped, as those papers do)
    SRC/align_train.txt                           the training ids (or SRC/ImageSets/Main/align_train.txt)
    SRC/align_validation.txt                      the validation ids (the split papers test on)

A list line is an id, ``FLIR_08865``, with or without a ``_PreviewData`` or ``_RGB`` suffix (copies differ). Written
as ``images/{train,val}/FLIR_08865.jpg`` and the thermal file under the same name in ``imagesIR/`` (decoders go
by content). Every listed id needs its RGB, thermal and XML file, one size for both images (and the XML's, when it
gives one), and only the three classes (or dog); anything else is refused, every problem listed.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from yolofuse_scale.data.convert.common import (
    DROP,
    ConvertReport,
    PlannedPair,
    pair_size,
    read_id_list,
    refuse,
    write_dataset,
)
from yolofuse_scale.data.convert.voc import release_voc_lines

NAMES = ["person", "car", "bicycle"]
CLASS_MAP = {"dog": DROP}  # 1.3 k boxes in FLIR ADAS v1; the aligned-subset papers leave the class out
LISTS = {"train": "align_train.txt", "val": "align_validation.txt"}
_ID = re.compile(r"(FLIR_(?:video_)?\d+)(?:_PreviewData|_RGB)?")


def _root(src: Path) -> Path:
    return src / "align" if not (src / "JPEGImages").is_dir() and (src / "align" / "JPEGImages").is_dir() else src


def _parse_id(line: str) -> str | None:
    m = _ID.fullmatch(line)
    return m.group(1) if m else None


def convert_flir(src_root: str | Path, dst_root: str | Path, link: str = "hard") -> ConvertReport:
    """Convert a FLIR-aligned copy at ``src_root`` (see the module docstring); raises DataError listing every
    problem of the copy before anything is written."""
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    root = _root(src_root)
    refuse(src_root, [f"{root / sub}: no such folder (FLIR-aligned keeps its images in JPEGImages/ and its VOC "
                      "files in Annotations/)" for sub in ("JPEGImages", "Annotations") if not (root / sub).is_dir()])
    problems: list[str] = []
    listed: dict[str, tuple[str, Path]] = {}  # id -> (our split, the list that named it)
    for split, name in LISTS.items():
        path = next((p for p in (root / name, root / "ImageSets" / "Main" / name) if p.is_file()), None)
        if path is None:
            problems.append(f"{root / name}: not found (nor under ImageSets/Main/): FLIR-aligned's {split} list")
            continue
        for pair_id in read_id_list(path, problems, _parse_id):
            if pair_id in listed:
                problems.append(f"{path}: {pair_id} is in {listed[pair_id][1].name} too (a pair in both splits)")
            listed[pair_id] = (split, path)
    plan = []

    def unknown(name: str) -> str:
        return f"not one of FLIR-aligned's classes {', '.join(NAMES)} (or dog, dropped)"

    for pair_id, (split, _) in sorted(listed.items(), key=lambda kv: (kv[1][0], kv[0])):
        rgb = root / "JPEGImages" / f"{pair_id}_RGB.jpg"
        ir = root / "JPEGImages" / f"{pair_id}_PreviewData.jpeg"
        ann = root / "Annotations" / f"{pair_id}_PreviewData.xml"
        missing = [str(p) for p in (rgb, ir, ann) if not p.is_file()]
        if missing:
            problems.append(f"{pair_id} (listed for {split}): missing {', '.join(missing)}")
            continue
        lines = release_voc_lines(ann, rgb, pair_size(rgb, ir, problems), NAMES, CLASS_MAP, problems, unknown)
        plan.append(PlannedPair(split, rgb, ir, tuple(lines), f"{pair_id}.jpg"))
    refuse(src_root, problems)
    report = write_dataset(src_root, dst_root, plan, NAMES, link, {"train": "train", "val": "val"})
    report.notes.append(f"FLIR-aligned: {len(plan)} listed pairs (the full release: 4,129 train + 1,013 val)")
    return report


def add_parser(sub, common) -> None:
    p = sub.add_parser("flir", help="FLIR-aligned (JPEGImages/, Annotations/, align_train.txt, "
                       "align_validation.txt): person, car, bicycle")
    common(p)
    p.set_defaults(convert=_run)


def _run(args: argparse.Namespace) -> ConvertReport:
    return convert_flir(args.src, args.dst, args.link)
