"""``yolofuse-scale predict``: detections for one RGB+IR pair or two folders of pairs.

Folders are paired by file stem (``visible/0001.jpg`` with ``infrared/0001.png``), the LLVIP and
YOLOFuse convention; an RGB file without an IR partner is an error that names it, before any work.
Outputs under ``--out``: ``predictions.jsonl`` (one line per pair) and, unless ``--no-images``,
``<stem>.jpg`` showing RGB | IR side by side with the same boxes on both. Drawing uses OpenCV's
built-in Hershey fonts, so nothing is looked up or downloaded. An ``--out`` that would write over an
input (the input folders themselves, or any output that is an input file) is refused before any work.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np

from yolofuse_scale.data.decode import read_image, stack_pair
from yolofuse_scale.data.scan import IMG_SUFFIXES

# BGR colours, one per class id modulo 8 (OpenCV draws in BGR).
PALETTE = [(56, 56, 255), (255, 157, 151), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (187, 212, 0), (168, 153, 44)]


def pair_paths(rgb: Path, ir: Path) -> list[tuple[Path, Path]]:
    """(RGB, IR) pairs: two files, or two folders whose images are matched by stem.

    Raises ``FileNotFoundError``/``ValueError`` naming the path and what is wrong.
    """
    for p, what in ((rgb, "--rgb"), (ir, "--ir")):
        if not p.exists():
            raise FileNotFoundError(f"{what} {p}: no such file or folder")
    if rgb.is_file() and ir.is_file():
        return [(rgb, ir)]
    if not (rgb.is_dir() and ir.is_dir()):
        raise ValueError(f"--rgb {rgb} and --ir {ir} must both be files or both be folders")

    def images(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in IMG_SUFFIXES:
                if p.stem in found:
                    raise ValueError(f"{folder}: {found[p.stem].name} and {p.name} share the stem {p.stem!r}")
                found[p.stem] = p
        return found

    rgbs, irs = images(rgb), images(ir)
    if not rgbs:
        raise ValueError(f"--rgb {rgb}: no images ({', '.join(sorted(IMG_SUFFIXES))})")
    missing = [str(rgbs[s]) for s in rgbs if s not in irs]
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise ValueError(f"{len(missing)} RGB image(s) have no IR partner with the same name in {ir}:\n  {shown}")
    return [(rgbs[s], irs[s]) for s in rgbs]


def outputs(pairs: list[tuple[Path, Path]], out: Path, images: bool) -> list[Path]:
    """The files ``predict`` writes: ``predictions.jsonl`` and, with ``images``, one ``<RGB stem>.jpg`` a pair."""
    return [out / "predictions.jsonl", *((out / f"{rgb.stem}.jpg" for rgb, _ in pairs) if images else ())]


def check_out(rgb: Path, ir: Path, pairs: list[tuple[Path, Path]], out: Path, images: bool) -> None:
    """Refuse an ``--out`` that would write over an input, before any work (``ValueError`` naming it).

    ``--out`` may not be the ``--rgb`` or ``--ir`` folder (the drawings would land among the inputs, over
    those that are JPEGs of the same stem, and a second run would pair them), and no output file may be
    an input file, however the path reaches it (``..``, symbolic or hard links: files are compared by
    device and inode). Costs one ``stat`` per input and per existing output.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: a file, not a folder (predictions.jsonl and the drawings go into a folder)")
    for folder, flag in ((rgb, "--rgb"), (ir, "--ir")):
        if folder.is_dir() and out.is_dir() and os.path.samefile(folder, out):
            raise ValueError(f"--out {out} is the {flag} folder {folder}: the drawings would be written among the "
                             "input images (over those of the same name); choose another --out")
    inputs = {}
    for pair in pairs:
        for p in pair:
            st = p.stat()
            inputs[(st.st_dev, st.st_ino)] = p
    for path in outputs(pairs, out, images):
        try:
            st = path.stat()
        except OSError:
            continue  # not there yet: not an input
        hit = inputs.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise ValueError(f"--out {out}: writing {path} would overwrite the input {hit}; choose another --out")


def draw_side_by_side(rgb: np.ndarray, ir: np.ndarray, dets) -> np.ndarray:
    """RGB | IR (IR resized to RGB's size, shown gray) with the same boxes on both; BGR for cv2.imwrite."""
    pair = stack_pair(rgb, ir)
    left = cv2.cvtColor(np.ascontiguousarray(pair[..., :3]), cv2.COLOR_RGB2BGR)
    ir_view = pair[..., 3:]
    right = cv2.cvtColor(np.ascontiguousarray(ir_view[..., :1]), cv2.COLOR_GRAY2BGR) if ir_view.shape[2] == 1 \
        else cv2.cvtColor(np.ascontiguousarray(ir_view), cv2.COLOR_RGB2BGR)
    thick = max(1, round(min(rgb.shape[:2]) / 300))
    scale = max(0.35, min(rgb.shape[:2]) / 900)
    for canvas in (left, right):
        for box, score, cls in zip(dets.boxes, dets.scores, dets.classes):
            colour = PALETTE[int(cls) % len(PALETTE)]
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
            label = f"{dets.names.get(int(cls), int(cls))} {score:.2f}"
            cv2.putText(canvas, label, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick,
                        cv2.LINE_AA)
    return np.hstack([left, right])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options to ``parser``."""
    parser.add_argument("--weights", required=True, help="weights file written by training (weights/best.pt)")
    parser.add_argument("--rgb", required=True, help="visible image, or a folder of them")
    parser.add_argument("--ir", required=True, help="infrared image, or a folder matched to --rgb by file name")
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the size trained at)")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default: 0.25)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default: 0.7)")
    parser.add_argument("--max-det", type=int, default=300, help="detections kept per pair (default: 300)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", default="runs/predict",
                        help="output folder (default: runs/predict); refused if it would write over an input (the "
                        "--rgb or --ir folder, or a file that is an input)")
    parser.add_argument("--no-images", action="store_true", help="write predictions.jsonl only, no drawings")
    parser.add_argument("--nms-free", action="store_true",
                        help="end-to-end models (yolo26): answer from the one-to-one head, no NMS (--iou unused)")


def run(args: argparse.Namespace) -> int:
    """Detect on every pair; write predictions.jsonl and the side-by-side images; print a summary."""
    from yolofuse_scale.data.config import DataError
    from yolofuse_scale.errors import CheckpointError
    from yolofuse_scale.inference import FusionDetector

    try:
        pairs = pair_paths(Path(args.rgb), Path(args.ir))  # checked before the model is loaded
        check_out(Path(args.rgb), Path(args.ir), pairs, Path(args.out), not args.no_images)
        det = FusionDetector.load(args.weights, device=args.device, imgsz=args.imgsz, conf=args.conf,
                                  iou=args.iou, max_det=args.max_det, nms_free=args.nms_free)
    except (FileNotFoundError, ValueError, DataError, CheckpointError) as e:  # bad input: the message names it
        raise SystemExit(f"error: {e}") from e
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    with open(out / "predictions.jsonl", "w") as fh:
        for rgb_path, ir_path in pairs:
            rgb, ir = read_image(rgb_path, 3), read_image(ir_path, det.ir_channels, mapping=det.ir_mapping)
            result = det(rgb, ir)
            total += len(result)
            fh.write(json.dumps({"rgb": str(rgb_path), "ir": str(ir_path), "height": result.shape[0],
                                 "width": result.shape[1], "detections": result.to_list()}) + "\n")
            if not args.no_images:
                cv2.imwrite(str(out / f"{rgb_path.stem}.jpg"), draw_side_by_side(rgb, ir, result))
    print(f"{len(pairs)} pair(s), {total} detection(s): {out / 'predictions.jsonl'}"
          + ("" if args.no_images else f" and {len(pairs)} image(s) in {out}"))
    return 0
