"""An unaligned rig: the IR frame brought into RGB's frame by a fixed homography (``ir_homography:`` in data.yaml).

The matrix ``H`` maps an IR pixel to its RGB pixel: ``(x_rgb, y_rgb, 1) ~ H (x_ir, y_ir, 1)``, in the images as
displayed (EXIF orientation applied), pixel centres at integer coordinates (OpenCV's and every image viewer's
convention: the top-left pixel is (0, 0)). When a pair is read (``decode.py``, every loader, the pair cache), the IR
frame is warped into RGB's frame at RGB's size (bilinear; what lies outside the IR camera's field of view reads 0,
the coldest value), before anything else: labels stay in RGB's frame, and the augmentation recipe then treats the
pair as a registered one. So RGB and IR may differ in size and field of view.

This module: the warp (:func:`register_ir`), the scan's check that ``H`` puts the IR frame over RGB's
(:func:`coverage`), and ``yolofuse-scale register``, which estimates ``H`` from point pairs (:func:`estimate`).

Cost: one ``warpPerspective`` of the IR frame per read (~1 ms for a 640x512 frame on one core); with the pair
cache, once. ``--loader device`` decodes such IR files in its workers with this code (it ships the registered
frame), so both loaders read the same pixels.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import cv2
import numpy as np

from yolofuse_scale.data.config import DataError

Matrix = tuple[tuple[float, float, float], ...]


def scaled(h: Matrix | np.ndarray, full_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """``h`` (IR -> RGB at RGB's displayed size ``full_hw``) followed by the resize of RGB's frame to ``out_hw``
    (a JPEG decoded at a fraction of its size): pixel centres map as ``(x + 0.5) * s - 0.5``, as cv2.resize maps."""
    sy, sx = out_hw[0] / full_hw[0], out_hw[1] / full_hw[1]
    s = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)
    return s @ np.asarray(h, np.float64)


def register_ir(ir: np.ndarray, h: Matrix, full_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """The (h, w, C) uint8 IR frame warped into RGB's frame, at ``out_hw`` (RGB as decoded; ``full_hw``: RGB's
    displayed size, what ``h`` refers to). Bilinear; outside the IR frame: 0."""
    m = scaled(h, full_hw, out_hw)
    out = cv2.warpPerspective(ir, m, (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    return out[..., None] if out.ndim == 2 else out


def coverage(h: Matrix, ir_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> tuple[float, str | None]:
    """(share of RGB's frame the IR frame covers under ``h``, why ``h`` cannot be right for these sizes or None).

    Wrong: part of the IR frame maps through the horizon (its corners land on both sides of the line at
    infinity: the matrix is for another pair of sizes, or inverted), or the IR frame misses RGB's frame."""
    (w, hh), (rw, rh) = ir_wh, rgb_wh
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, hh - 0.5, 1], [-0.5, hh - 0.5, 1]])
    p = corners @ np.asarray(h, np.float64).T
    if not np.all(p[:, 2] > 0):
        return 0.0, (f"ir_homography maps part of the {w}x{hh} IR frame through infinity (is it inverted, RGB -> IR? "
                     "it maps IR pixels to RGB pixels)")
    poly = (p[:, :2] / p[:, 2:]).astype(np.float32)
    frame = np.array([[-0.5, -0.5], [rw - 0.5, -0.5], [rw - 0.5, rh - 0.5], [-0.5, rh - 0.5]], np.float32)
    area, _ = cv2.intersectConvexConvex(cv2.convexHull(poly), frame)
    share = max(0.0, float(area)) / (rw * rh)
    if share < 1e-3:
        box = " ".join(f"({x:.1f}, {y:.1f})" for x, y in poly)
        return share, (f"ir_homography puts the {w}x{hh} IR frame at {box}, outside the {rw}x{rh} RGB frame (is it "
                       "inverted, RGB -> IR? it maps IR pixels to RGB pixels)")
    return share, None


# ------------------------------------------------------------------------------------------ yolofuse-scale register
COLUMNS = ("x_rgb", "y_rgb", "x_ir", "y_ir")


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(RGB points (n, 2), IR points (n, 2), their line numbers) from a CSV with a header naming ``COLUMNS`` (in any
    order; more columns are ignored); :class:`DataError` naming the file and line of what is wrong."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeError) as e:
        raise DataError(f"{path}: cannot read the point pairs ({e})") from None
    reader = csv.reader(io.StringIO(text))
    header, rows, lines = None, [], []
    for fields in reader:
        if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}:{reader.line_num}: the first line must name the columns "
                                f"{','.join(COLUMNS)} (missing {', '.join(missing)})")
            continue
        if len(fields) != len(header):
            raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields, found {len(fields)}")
        try:
            vals = [float(fields[header.index(c)]) for c in COLUMNS]
        except ValueError:
            raise DataError(f"{path}:{reader.line_num}: non-numeric coordinate in {','.join(fields)!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise DataError(f"{path}:{reader.line_num}: NaN or infinite coordinate in {','.join(fields)!r}")
        rows.append(vals)
        lines.append(reader.line_num)
    if header is None:
        raise DataError(f"{path}: no point pairs (expected a header {','.join(COLUMNS)} and one pair a line)")
    if len(rows) < 4:
        raise DataError(f"{path}: {len(rows)} point pair(s); a homography needs at least 4 (better 8-12, spread over "
                        "the frame and over the depth range you detect at)")
    a = np.array(rows, np.float64)
    return a[:, :2], a[:, 2:], lines


def estimate(rgb: np.ndarray, ir: np.ndarray, threshold: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(H mapping IR to RGB, inlier mask) by ``cv2.findHomography`` with RANSAC (``threshold``: the largest
    reprojection error in RGB pixels an inlier may have). :class:`DataError` if the points fix no homography."""
    h, mask = cv2.findHomography(ir, rgb, cv2.RANSAC, threshold)
    if h is None or not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-12:
        raise DataError(f"{where}: the point pairs determine no homography (are 3 or more of them on one line, or "
                        "some repeated?)")
    return h / h[2, 2], mask.ravel().astype(bool)


def reprojection_errors(h: np.ndarray, rgb: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Distance in RGB pixels between each RGB point and its IR point mapped by ``h``."""
    p = np.c_[ir, np.ones(len(ir))] @ h.T
    return np.linalg.norm(p[:, :2] / p[:, 2:] - rgb, axis=1)


def snippet(h: np.ndarray) -> str:
    """The data.yaml lines for ``h``."""
    rows = ",\n  ".join("[" + ", ".join(f"{v:.10g}" for v in row) + "]" for row in h)
    return f"# IR pixel (x, y, 1) -> RGB pixel: estimated by yolofuse-scale register\nir_homography: [\n  {rows}]\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``yolofuse-scale register``'s options."""
    parser.add_argument("points", help="CSV of point pairs: a header x_rgb,y_rgb,x_ir,y_ir, then one pair a line, in "
                                       "pixels of the images as displayed (at least 4; docs/data.md says how to click "
                                       "them)")
    parser.add_argument("--out", default=None, help="write the data.yaml snippet (ir_homography: ...) to this file "
                                                    "(default: print it only)")
    parser.add_argument("--threshold", type=float, default=3.0,
                        help="RANSAC: the largest reprojection error, in RGB pixels, of a pair that counts (default 3)")


def run(args: argparse.Namespace) -> int:
    """Estimate, print the matrix and every pair's reprojection error, write the snippet; 0."""
    path = Path(args.points)
    if not args.threshold > 0:
        raise DataError(f"--threshold must be a positive number of pixels, got {args.threshold}")
    rgb, ir, lines = read_points(path)
    h, inlier = estimate(rgb, ir, args.threshold, str(path))
    err = reprojection_errors(h, rgb, ir)
    print(f"{len(rgb)} point pairs, {int(inlier.sum())} inliers (RANSAC, {args.threshold:g} px)")
    print("line  x_rgb    y_rgb    x_ir     y_ir     error px")
    for n, (xr, yr), (xi, yi), e, ok in zip(lines, rgb, ir, err, inlier):
        print(f"{n:>4}  {xr:<8.1f} {yr:<8.1f} {xi:<8.1f} {yi:<8.1f} {e:6.2f}{'' if ok else '  outlier: left out'}")
    print(f"reprojection error over the inliers: mean {err[inlier].mean():.2f} px, max {err[inlier].max():.2f} px")
    text = snippet(h)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: paste it into data.yaml")
    return 0
