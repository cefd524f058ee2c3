"""Per-modality labels: when the IR image has labels of its own, which boxes a split trains on or is scored against.

A dataset whose IR images are labelled separately (DroneVehicle: at night the infrared camera sees vehicles the
visible one does not, and each image was annotated on its own) names the IR labels' folder in data.yaml
(``labels_ir: labelsIR``: the same file names, the folder in place of ``labels``) and a policy per split
(``label_policy``, ``config.LABEL_POLICIES``):

- ``rgb``: the RGB image's labels (``labels/``);
- ``ir``: the IR image's labels (the default when there are IR labels: what the DroneVehicle papers train and
  score on, docs/data.md);
- ``union``: both sets, matched by rotated IoU (:func:`match`; at least ``label_union_iou``, 0.5 by default), one
  box kept per match (the IR one, with its class: the set the papers score against), and every unmatched box of
  either side kept.

The matching is by the exact IoU of the boxes' polygons (``cv2.intersectConvexConvex`` on their convex hulls, in
normalised coordinates: a scaling of x and y multiplies every area by the same factor, so the IoU is the pixels'),
not by Ultralytics' ``probiou``: a Gaussian's overlap, which gives a square the same overlap whatever its rotation
and is not an area ratio. Cost: it runs in the start-up scan, once (its result is cached with the scan); only pairs
whose enclosing boxes overlap are intersected, a few per box. The same code serves axis-aligned boxes (their four
corners), so the policies work for ``task: detect`` too.

The scan (``scan/pair_checks.py``) parses both files of every pair, applies the split's policy here and keeps the counts
(:class:`LabelCounts`); :func:`summary_line` is what the run prints at start, per split.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from yolofuse_scale.data.config import DatasetSpec


@dataclass(frozen=True)
class LabelCounts:
    """One pair's (or a split's) boxes on each side: RGB, IR, the matched pairs, and what the policy kept."""

    rgb: int = 0
    ir: int = 0
    matched: int = 0
    kept: int = 0

    def __add__(self, other: LabelCounts) -> LabelCounts:
        return LabelCounts(self.rgb + other.rgb, self.ir + other.ir, self.matched + other.matched,
                           self.kept + other.kept)


def _hulls(corners: np.ndarray) -> list[np.ndarray]:
    return [cv2.convexHull(np.ascontiguousarray(c, dtype=np.float32)) for c in corners]


def polygon_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of quadrilaterals ``a`` (n, 4, 2) and ``b`` (m, 4, 2), exact for convex ones (each is taken as its
    convex hull); 0 where the enclosing boxes do not overlap, without intersecting them."""
    out = np.zeros((len(a), len(b)), np.float64)
    if not len(a) or not len(b):
        return out
    lo_a, hi_a, lo_b, hi_b = a.min(1), a.max(1), b.min(1), b.max(1)
    near = ((lo_a[:, None] < hi_b[None]) & (lo_b[None] < hi_a[:, None])).all(-1)
    if not near.any():
        return out
    ha, hb = _hulls(a), _hulls(b)
    area_a = [cv2.contourArea(h) for h in ha]
    area_b = [cv2.contourArea(h) for h in hb]
    for i, j in zip(*np.nonzero(near)):
        inter, _ = cv2.intersectConvexConvex(ha[i], hb[j])
        union = area_a[i] + area_b[j] - inter
        out[i, j] = inter / union if union > 0 else 0.0
    return out


def match(rgb: np.ndarray, ir: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (RGB index, IR index) of one object in both sets: greedily by IoU, highest first, each box in one pair
    at most, at IoU >= ``threshold``; classes are not compared (the same vehicle labelled ``van`` in one image and
    ``car`` in the other is one object: two boxes there would teach two classes at one place)."""
    iou = polygon_iou(rgb, ir)
    i, j = np.nonzero(iou >= threshold)
    order = np.lexsort((j, i, -iou[i, j]))  # highest IoU first; ties by index, so the result never varies
    used_r, used_i, out = set(), set(), []
    for k in order:
        r, c = int(i[k]), int(j[k])
        if r not in used_r and c not in used_i:
            used_r.add(r)
            used_i.add(c)
            out.append((r, c))
    return out


def apply_policy(policy: str, rgb: np.ndarray, ir: np.ndarray, corners, threshold: float
                 ) -> tuple[np.ndarray, LabelCounts]:
    """The rows a pair trains on or is scored against under ``policy`` (``rgb``, ``ir`` or ``union``), and its
    counts. ``rgb``, ``ir``: validated label rows of one kind; ``corners(rows) -> (n, 4, 2)``: that kind's
    corners (``labels.py``). The union keeps the IR rows (matched or not) in their order, then the RGB rows no IR
    box matched, in theirs."""
    pairs = match(corners(rgb), corners(ir), threshold)
    if policy == "rgb":
        rows = rgb
    elif policy == "ir":
        rows = ir
    elif policy == "union":
        matched_rgb = {r for r, _ in pairs}
        rows = np.concatenate([ir, rgb[[k for k in range(len(rgb)) if k not in matched_rgb]]])
    else:
        raise ValueError(f"label policy must be rgb, ir or union, got {policy!r}")
    return rows, LabelCounts(len(rgb), len(ir), len(pairs), len(rows))


_SOURCE = {"rgb": "the RGB labels", "ir": "the IR labels", "union": "the union of the RGB and IR labels"}


def ground_truth(spec: DatasetSpec, split: str) -> str:
    """Which labels ``split`` uses, in words with their folders (the start-up log, ``val``'s output and metrics)."""
    policy = spec.policy(split)
    if spec.labels_ir is None:
        return "labels/ (one label set for both images)"
    folders = {"rgb": "labels/", "ir": f"{spec.labels_ir}/", "union": f"labels/ + {spec.labels_ir}/"}[policy]
    return f"{_SOURCE[policy]} ({folders})"


def summary_line(spec: DatasetSpec, split: str, counts: LabelCounts, missing_ir: int) -> str:
    """One start-up line: what the split trains on (``train``) or is scored against, and what each side adds."""
    policy = spec.policy(split)
    verb = "trains on" if split == "train" else "scored against"
    line = f"labels {split}: label_policy {policy}: {verb} {ground_truth(spec, split)}, {counts.kept} boxes"
    line += (f"; RGB {counts.rgb}, IR {counts.ir}, {counts.matched} matched (rotated IoU >= {spec.union_iou:g}): "
             f"IR adds {counts.ir - counts.matched} the RGB labels lack, RGB adds {counts.rgb - counts.matched} the "
             "IR labels lack")
    if policy == "union":
        line += " (a match keeps the IR box)"
    if missing_ir:
        line += f"; {missing_ir} pair(s) without an IR label file (no IR boxes)"
    return line
