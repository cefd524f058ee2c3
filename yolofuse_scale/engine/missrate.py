"""KAIST's own metric: the log-average miss rate (MR-2) of the "reasonable" setting, with ignore regions.

Implemented as the KAIST benchmark's evaluation computes it: the MATLAB toolbox (Dollár's ``bbGt`` ``evalRes``
and ``compRoc`` with KAIST's filters, ``kaist_eval_full``/``bbGt2`` as the KAIST devkit wrapper runs them) and
its Python port (MLPD's ``evaluation_script.py``, the eval.ai leaderboard's), which agree on every step below:

1. **Ground truth** (:meth:`Protocol.ground_truth`): objects labelled ``person`` are pedestrians; ``people``,
   ``person?`` and ``cyclist`` are *ignore regions*; other labels are dropped. A pedestrian also becomes an ignore
   region when it is under 55 px tall, heavily occluded (occlusion 2; none and partial are kept), outside the
   frame's [5, 635] x [5, 507] pixels (either edge, as bbGt tests ``x``, ``x + w``, ``y``, ``y + h``), or flagged
   ignore in its annotation. Boxes are the annotation's ``[x, y, w, h]``, not reshaped (no aspect-ratio
   "squarify": that is Caltech's ``dbEval``, which KAIST's evaluation does not use).
2. **Matching** per image (:func:`match_image`, bbGt's ``evalRes``): detections by descending score (ties in
   their given order), pedestrians before ignore regions; each detection takes the best still-unmatched
   pedestrian with IoU >= 0.5, else the best ignore region with *intersection over the detection's own area*
   >= 0.5 (an ignore region may absorb any number of detections). Matched pedestrians are true positives,
   detections on ignore regions are removed, the rest are false positives. No height filter is applied to the
   detections (Caltech's ``dbEval`` drops detections outside [h/1.25, h*1.25]; KAIST's evaluation does not).
3. **Curve** (:func:`log_average_miss_rate`, bbGt's ``compRoc``): all images' remaining detections by descending
   score; FPPI = false positives / images (every evaluated image counts, with or without boxes); recall = true
   positives / pedestrians. At each of the 9 FPPI points 10^-2, 10^-1.75, ..., 10^0 the miss rate is 1 - the
   recall of the last curve point whose FPPI is <= it (0 recall before the first point), and
   MR-2 = exp(mean(log(max(1e-10, miss rate)))).

Coordinates: detections are compared in the original image's pixels (the letterbox undone, not clipped), the
annotation's boxes as written. The MATLAB wrapper adds 1 to each detection's x and y (MATLAB's 1-based pixels);
the Python port does not, and neither do we. Where the Python port departs from ``compRoc`` we follow
``compRoc``: the port drops the pedestrians of an image without any detection from the count, and reads the
*last* recall where no point lies below an FPPI; both only matter for a detector that is silent on an image,
or wrong with its first, most confident detection on a set of under 100 images.

Distributed: ``evaluate`` gathers every image's detections in dataset order on every rank, and this module
computes on that full list, so 1 and N processes give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolofuse_scale.data import kaist_gt
from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.scan.records import format_problems

#: FPPI points of MR-2: 9 log-spaced from 10^-2 to 10^0 (MATLAB's ``10.^(-2:.25:0)``).
FPPI_POINTS = tuple(float(v) for v in 10.0 ** (np.arange(9) / 4 - 2))


@dataclass(frozen=True)
class Protocol:
    """Which annotated objects count, and how a detection matches one (see the module docstring)."""

    name: str = "KAIST reasonable"
    labels: tuple[str, ...] = ("person",)
    ignore_labels: tuple[str, ...] = ("people", "person?", "cyclist")
    min_height: float = 55.0
    occlusions: tuple[int, ...] = (0, 1)  # none, partial
    bounds: tuple[float, float, float, float] = (5.0, 5.0, 635.0, 507.0)  # x_min, y_min, x_max, y_max
    iou: float = 0.5

    def ground_truth(self, objects: tuple[kaist_gt.KaistObject, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(xywh (n, 4), ignore (n,))`` of an image's objects under this protocol (other labels dropped)."""
        kept = [o for o in objects if o.label in self.labels or o.label in self.ignore_labels]
        xywh = np.array([[o.x, o.y, o.w, o.h] for o in kept], np.float64).reshape(-1, 4)
        x0, y0, x1, y1 = self.bounds
        ignore = np.array([
            o.ignore or o.label in self.ignore_labels or o.h < self.min_height or o.occlusion not in self.occlusions
            or not (x0 <= o.x <= x1 and x0 <= o.x + o.w <= x1 and y0 <= o.y <= y1 and y0 <= o.y + o.h <= y1)
            for o in kept], bool)
        return xywh, ignore


REASONABLE = Protocol()


def overlaps(dt: np.ndarray, gt: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """(n_dt, n_gt) overlap of xywh boxes: IoU, or intersection over the detection's area for ignore regions."""
    x1 = np.maximum(dt[:, None, 0], gt[None, :, 0])
    x2 = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2])
    y1 = np.maximum(dt[:, None, 1], gt[None, :, 1])
    y2 = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    dt_area = (dt[:, 2] * dt[:, 3])[:, None]
    union = np.where(ignore[None, :], dt_area, dt_area + (gt[:, 2] * gt[:, 3])[None, :] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def match_image(gt: np.ndarray, gt_ignore: np.ndarray, dt: np.ndarray, thr: float = 0.5
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's matching (bbGt ``evalRes``): ``gt`` (n, 4) xywh, ``dt`` (m, 5) xywh + score.

    Returns (gt flags, detection scores, detection flags), detections by descending score; a flag is 1 matched,
    0 unmatched (a miss / a false positive), -1 ignore (an ignore region / a detection on one).
    """
    dt = dt[np.argsort(-dt[:, 4], kind="stable")]
    order = np.argsort(gt_ignore, kind="stable")  # pedestrians first
    gt, gt_ignore = gt[order], gt_ignore[order]
    gt_flag = np.where(gt_ignore, -1, 0).astype(np.int8)
    dt_flag = np.zeros(len(dt), np.int8)
    if len(gt) and len(dt):
        oa = overlaps(dt[:, :4], gt, gt_ignore)
        for d in np.flatnonzero(oa.max(axis=1) >= thr):
            best, best_g, best_m = thr, -1, 0
            for g in range(len(gt)):
                if gt_flag[g] == 1:  # a pedestrian matched already
                    continue
                if best_m != 0 and gt_flag[g] == -1:  # matched a pedestrian: ignore regions come after them
                    break
                if oa[d, g] < best:
                    continue
                best, best_g, best_m = oa[d, g], g, (1 if gt_flag[g] == 0 else -1)
            if best_m == 1:
                gt_flag[best_g] = 1
            dt_flag[d] = best_m
    return gt_flag, dt[:, 4], dt_flag


def log_average_miss_rate(results: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_images: int,
                          points: tuple[float, ...] = FPPI_POINTS) -> dict:
    """MR-2 from per-image :func:`match_image` results (bbGt ``compRoc``, then the geometric mean).

    Returns ``MR-2`` (None when no pedestrian counts), the miss rate at each FPPI point, and the counts.
    """
    gt = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.int8)
    scores = np.concatenate([r[1] for r in results]) if results else np.zeros(0)
    flags = np.concatenate([r[2] for r in results]) if results else np.zeros(0, np.int8)
    pedestrians = int((gt != -1).sum())
    keep = flags != -1
    scores, flags = scores[keep], flags[keep]
    out = {"fppi": list(points), "images": n_images, "pedestrians": pedestrians,
           "ignore_regions": int((gt == -1).sum()), "detections": int(len(flags))}
    if pedestrians == 0:
        return {**out, "MR-2": None, "miss_rate": None}
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(flags[order] == 1)
    fp = np.cumsum(flags[order] != 1)
    fppi = fp / n_images
    recall = np.concatenate([[0.0], tp / pedestrians])  # the curve, after a point at (-inf, 0)
    at = recall[np.searchsorted(fppi, np.asarray(points), side="right")]  # last point with FPPI <= each
    miss = 1.0 - at
    mr = float(np.exp(np.mean(np.log(np.maximum(1e-10, miss)))))
    return {**out, "MR-2": mr, "miss_rate": [float(m) for m in miss]}


def unletterbox(det, cls: int, ratio_pad) -> np.ndarray:
    """``(n, 5)`` [x1, y1, x2, y2, score] in original-image pixels of one image's detections of class ``cls``
    (``det``: (n, 6) xyxy, conf, cls on the letterboxed canvas; ``ratio_pad``: the item's ``((r, r), (pw, ph))``).
    Not clipped to the image: the evaluation compares what the detector said."""
    det = det[det[:, 5] == cls].double().cpu().numpy()
    (r, _), (pw, ph) = ratio_pad
    boxes = (det[:, :4] - np.array([pw, ph, pw, ph])) / r
    return np.concatenate([boxes, det[:, 4:5]], axis=1)


class MissRate:
    """KAIST's MR-2 for a dataset whose ``data.yaml`` names a ``missrate:`` annotation file (``data/kaist_gt.py``)."""

    def __init__(self, images: dict[str, kaist_gt.KaistImage], source: Path | str,
                 protocol: Protocol = REASONABLE):
        self.images, self.source, self.protocol = images, Path(source), protocol

    @classmethod
    def from_file(cls, path: Path | str) -> MissRate:
        return cls(kaist_gt.load(path), path)

    def class_id(self, names: dict[int, str]) -> int:
        """The model's class that is scored against the pedestrians: the one named ``person``."""
        found = [i for i, n in names.items() if n == self.protocol.labels[0]]
        if not found:
            raise DataError(f"{self.source}: the KAIST miss rate scores a class named "
                            f"{self.protocol.labels[0]!r}; the model's classes are {', '.join(names.values())}")
        return found[0]

    def check_covers(self, files: list[str | Path]) -> None:
        """Every image to evaluate has its annotation (keyed by file stem); raises DataError listing those without."""
        missing = [str(f) for f in files if Path(f).stem not in self.images]
        if missing:
            raise DataError(format_problems(f"{self.source}: no KAIST annotation for image(s) of this split (the "
                                            "file covers the images `convert kaist` wrote)", missing))

    def __call__(self, per_image: list[tuple[str, np.ndarray]]) -> dict:
        """The metric over ``(image stem, (n, 5) xyxy + score)`` of every evaluated image."""
        results = []
        for stem, det in per_image:
            gt, ignore = self.protocol.ground_truth(self.images[stem].objects)
            dt = np.concatenate([det[:, :2], det[:, 2:4] - det[:, :2], det[:, 4:5]], axis=1)
            results.append(match_image(gt, ignore, dt, self.protocol.iou))
        return {"protocol": self.protocol.name, **log_average_miss_rate(results, len(per_image))}
