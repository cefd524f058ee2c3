"""``yolofuse-scale convert FORMAT SRC DST``: a benchmark release, as papers use it, into the YOLOFuse layout.

One module per release, each with its layout, classes and split in its docstring (and in docs/data.md):

================  ====================================================================================
``llvip``         LLVIP (``voc.py``): visible/, infrared/ {train,test}, Annotations/*.xml
``voc``           any other VOC-annotated RGB-T release, with a class and split map (``voc.py``)
``flir``          FLIR-aligned (``flir.py``): the 5,142-pair aligned subset, person/car/bicycle, its own split
``m3fd``          M3FD (``m3fd.py``): six classes, the fixed seeded split shipped in ``splits/``
``kaist``         KAIST multispectral pedestrians (``kaist.py``): video-set layout, bbGt text or XML
                  annotations, occlusion and ignore labels kept for the miss-rate metric
``vedai``         VEDAI (``vedai.py``): co-registered ``_co``/``_ir`` PNGs, one of its ten folds, oriented boxes
                  written axis-aligned
``dronevehicle``  DroneVehicle (``dronevehicle.py``): train/val/test, RGB and IR images in a 100-px white
                  frame (cropped), one XML per image and modality, five classes, oriented boxes (``task: obb``),
                  both label sets (``labels/``, ``labelsIR/``)
================  ====================================================================================

Each one checks the whole copy first and refuses a broken one with every problem listed, nothing written; the
writing (``common.py``) is idempotent: a rerun changes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolofuse_scale.data.convert import dronevehicle, flir, kaist, m3fd, vedai, voc
from yolofuse_scale.data.convert.common import DROP, LINK_MODES, ConvertReport
from yolofuse_scale.data.convert.voc import LLVIP, VocSource, convert_voc

__all__ = ["DROP", "LINK_MODES", "LLVIP", "ConvertReport", "VocSource", "add_arguments", "convert_voc", "run"]


def _io_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the release's root folder")
    p.add_argument("dst", help="output root: images/, imagesIR/, labels/ and data.yaml are written there")
    p.add_argument("--link", choices=LINK_MODES, default="hard",
                   help="how images reach DST: hard links (no extra space; copies across file systems), "
                   "symlinks or copies (default: hard)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convert FORMAT SRC DST [options]`` under ``parser``, one sub-command per release."""
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    voc.add_parsers(sub, _io_arguments)
    for module in (flir, m3fd, kaist, vedai, dronevehicle):
        module.add_parser(sub, _io_arguments)


def run(args: argparse.Namespace) -> int:
    """Run the conversion the parsed ``args`` describe; print a summary; return 0."""
    r: ConvertReport = args.convert(args)
    per_split = ", ".join(f"{k} {v}" for k, v in sorted(r.splits.items()))
    print(f"{r.pairs} pairs ({per_split}), {r.boxes} boxes: {r.written} file(s) written, {r.unchanged} unchanged; "
          f"{Path(args.dst) / 'data.yaml'}")
    for note in r.notes:
        print(note)
    return 0
