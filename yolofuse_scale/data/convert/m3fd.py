"""``convert m3fd``: M3FD's detection set (Liu et al., CVPR 2022, TarDAL) with a fixed split shipped here.

M3FD ships 4,200 registered pairs (mostly 1024x768, some 480x360) with VOC annotations of six classes and no
official train/test split, so every paper's numbers come from a split of its own and do not compare. This
converter applies one fixed split, the same for every user: the list files ``splits/m3fd_train.txt`` (3,360 ids)
and ``splits/m3fd_val.txt`` (840 ids) shipped in the package. They are :func:`seeded_split` of the release's
ids 00000..04199 with :data:`SPLIT_SEED` and :data:`VAL_SHARE` (tests/test_convert_benchmarks.py checks the
shipped files against it): each id is ranked by the SHA-256 of ``"m3fd-split:<seed>:<id>"`` and the first 20 % are
validation, which depends on neither a library's random generator nor the copy's file order. Expected layout (the
"M3FD_Detection" download)::

    SRC/Vis/00000.png           visible
    SRC/Ir/00000.png            infrared, same name
    SRC/Annotation/00000.xml    VOC: People, Car, Bus, Motorcycle, Lamp, Truck (SRC/Annotations/ is found too)

Written as ``images/{train,val}/00000.png`` etc., class ids in the order above (the order mmdetection's M3FD
dataset and the CFT-style configs use). A pair's id must be one of the shipped ids, have its IR partner and its
XML, one size for both images (and the XML's, when it gives one), and only the six classes; an IR file without a
visible partner is a problem too. A copy holding part of the release converts (the summary says how many of the
4,200 it has), but only the whole one gives numbers that compare.
"""

from __future__ import annotations

import argparse
import hashlib
from functools import cache
from pathlib import Path

from yolofuse_scale.data.convert.common import ConvertReport, PlannedPair, pair_size, refuse, write_dataset
from yolofuse_scale.data.convert.voc import release_voc_lines
from yolofuse_scale.data.scan.listing import IMG_SUFFIXES

NAMES = ["People", "Car", "Bus", "Motorcycle", "Lamp", "Truck"]
SPLIT_SEED = 0
VAL_SHARE = 0.2
#: The detection release's pair ids.
RELEASE_IDS = tuple(f"{i:05d}" for i in range(4200))
SPLIT_DIR = Path(__file__).parent / "splits"


def seeded_split(ids: list[str] | tuple[str, ...], seed: int = SPLIT_SEED,
                 val_share: float = VAL_SHARE) -> dict[str, list[str]]:
    """``{"train": ids, "val": ids}`` (each sorted): the ids ranked by ``sha256("m3fd-split:<seed>:<id>")``, the
    first ``round(len(ids) * val_share)`` for validation. A pure function of the ids and the seed."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"m3fd-split:{seed}:{i}".encode()).hexdigest())
    n_val = round(len(ranked) * val_share)
    return {"train": sorted(ranked[n_val:]), "val": sorted(ranked[:n_val])}


@cache
def shipped_split() -> dict[str, str]:
    """id -> split, from the list files shipped in the package."""
    return {i: split for split in ("train", "val")
            for i in (SPLIT_DIR / f"m3fd_{split}.txt").read_text().split()}


def _folder(src: Path, names: tuple[str, ...], what: str, problems: list[str]) -> Path | None:
    found = next((src / n for n in names if (src / n).is_dir()), None)
    if found is None:
        problems.append(f"{src / names[0]}: no such folder ({what})")
    return found


def convert_m3fd(src_root: str | Path, dst_root: str | Path, link: str = "hard") -> ConvertReport:
    """Convert an M3FD detection copy at ``src_root`` with the shipped split (see the module docstring); raises
    DataError listing every problem of the copy before anything is written."""
    src_root, dst_root = Path(src_root).resolve(), Path(dst_root).resolve()
    problems: list[str] = []
    vis = _folder(src_root, ("Vis",), "M3FD's visible images", problems)
    ir_dir = _folder(src_root, ("Ir",), "M3FD's infrared images", problems)
    ann_dir = _folder(src_root, ("Annotation", "Annotations"), "M3FD's VOC files", problems)
    refuse(src_root, problems)
    split_of = shipped_split()
    plan = []

    def unknown(name: str) -> str:
        return f"not one of M3FD's classes {', '.join(NAMES)}"

    images = sorted(p for p in vis.iterdir() if p.suffix.lower() in IMG_SUFFIXES and not p.name.startswith("."))
    stems = {p.stem for p in images}
    for ir in sorted(ir_dir.iterdir()):
        if ir.suffix.lower() in IMG_SUFFIXES and not ir.name.startswith(".") and ir.stem not in stems:
            problems.append(f"{ir}: no visible partner in {vis}")
    for rgb in images:
        split = split_of.get(rgb.stem)
        if split is None:
            problems.append(f"{rgb}: {rgb.stem!r} is not one of M3FD's 4,200 pair ids (00000-04199); "
                            "`convert voc` converts other VOC releases")
            continue
        ir, ann = ir_dir / rgb.name, ann_dir / f"{rgb.stem}.xml"
        missing = [str(p) for p in (ir, ann) if not p.is_file()]
        if missing:
            problems.append(f"{rgb}: missing {', '.join(missing)}")
            continue
        lines = release_voc_lines(ann, rgb, pair_size(rgb, ir, problems), NAMES, {}, problems, unknown)
        plan.append(PlannedPair(split, rgb, ir, tuple(lines), rgb.name))
    refuse(src_root, problems)
    report = write_dataset(src_root, dst_root, plan, NAMES, link, {"train": "train", "val": "val"})
    report.notes.append(f"M3FD: {len(plan)} of the release's {len(RELEASE_IDS)} pairs, split by the shipped lists "
                        f"(seed {SPLIT_SEED}; numbers compare with the whole release only)")
    return report


def add_parser(sub, common) -> None:
    p = sub.add_parser("m3fd", help="M3FD detection (Vis/, Ir/, Annotation/): six classes, the fixed split "
                       "shipped with yolofuse-scale")
    common(p)
    p.set_defaults(convert=_run)


def _run(args: argparse.Namespace) -> ConvertReport:
    return convert_m3fd(args.src, args.dst, args.link)
