"""A pair's labels as both loaders carry them: the label dict the recipe reads, an item's targets, a batch's targets.

The one place that knows the label kind (today: axis-aligned boxes, ``cls xc yc w h`` normalised). The CPU
loader and the device loader's workers build the same label dict (only its image differs: pixels, or a
shape-only stand-in with a plan leaf), run it through the same Ultralytics transforms, and read their
targets back with the same functions; so a new label kind (oriented boxes) is written here once and reaches
both pipelines, the letterbox and the collate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ultralytics.utils.instance import Instances
from ultralytics.utils.ops import xyxyxyxy2xywhr

from yolofuse_scale.data.scan import Sample
from yolofuse_scale.data.transforms import letterbox_boxes, letterbox_geometry

#: An augmented sample's ``ratio_pad``: its boxes do not map back to one original image.
IDENTITY_RATIO_PAD = ((1.0, 1.0), (0.0, 0.0))


# MINIMAL OBB PATH (t2x-obbcore, issue 26): oriented boxes through the letterbox only (no augmentation), so that the
# model side trains and validates end to end; the data side (t2x-obbdata) replaces this with its label kinds.
def oriented(rows: np.ndarray) -> bool:
    """Whether a sample's label rows are oriented boxes (``cls x1 y1 ... x4 y4``: 9 columns) rather than 5."""
    return rows.ndim == 2 and rows.shape[1] == 9


def target_width(rows: np.ndarray) -> int:
    """The width of a sample's target rows: 4 (xywh), or 5 (xywh and the angle) for oriented boxes."""
    return 5 if oriented(rows) else 4


def letterboxed_rboxes(rows: np.ndarray, nw: int, nh: int, left: int, top: int, imgsz: int) -> np.ndarray:
    """Oriented rows on the letterbox canvas as the contract's targets, Ultralytics' ``Format(return_obb=True)``:
    (cx, cy, w, h, angle) from ``xyxyxyxy2xywhr`` of the corners in canvas pixels, cx, w / width, cy, h / height."""
    corners = rows[:, 1:9].reshape(-1, 4, 2).astype(np.float32).copy()
    corners[..., 0] = corners[..., 0] * nw + left
    corners[..., 1] = corners[..., 1] * nh + top
    boxes = xyxyxyxy2xywhr(torch.from_numpy(corners.reshape(-1, 8)))
    boxes[:, [0, 2]] /= imgsz
    boxes[:, [1, 3]] /= imgsz
    return boxes.numpy()


def axis_aligned(rows: np.ndarray) -> np.ndarray:
    """(n, 5) rows ``cls xc yc w h`` of either kind's rows (an oriented box's enclosing box): label statistics."""
    if not oriented(rows):
        return rows
    corners = rows[:, 1:9].reshape(-1, 4, 2)
    lo, hi = corners.min(1), corners.max(1)
    return np.concatenate([rows[:, :1], (lo + hi) / 2, hi - lo], 1).astype(rows.dtype)


def label_dict(sample: Sample, img: np.ndarray, ori_shape: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """Ultralytics' label dict of a pair whose (resized) image is ``img`` (pixels, or a shape-only stand-in: the
    transforms read ``img.shape``); ``extra``: keys a pipeline carries along (the device loader's plan leaf)."""
    boxes = sample.boxes
    return {"img": img, "cls": boxes[:, :1].copy(), "ori_shape": ori_shape, "resized_shape": img.shape[:2],
            "instances": Instances(boxes[:, 1:].copy(), bbox_format="xywh", normalized=True),
            "im_file": str(sample.rgb), **extra}


def augmented_targets(labels: dict) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """(xywh normalised to the output image, cls (N, 1), ori_shape, ratio_pad) of an augmented sample's labels."""
    img = labels["img"]
    inst = labels["instances"]
    inst.convert_bbox("xywh")
    inst.normalize(img.shape[1], img.shape[0])
    return inst.bboxes, labels["cls"].reshape(-1, 1), labels["ori_shape"], IDENTITY_RATIO_PAD


def letterbox_targets(sample: Sample, hw: tuple[int, int], imgsz: int) -> tuple[tuple, np.ndarray, np.ndarray, tuple]:
    """Where the letterbox of an ``hw`` image puts it (``(nw, nh, left, top)``), and the sample's (xywh on that
    canvas, cls (N, 1), ratio_pad ``((r, r), (padw, padh))``) for ``scale_boxes``."""
    nw, nh, left, top, r = letterbox_geometry(*hw, imgsz)
    if oriented(sample.boxes):  # MINIMAL OBB PATH (see above)
        xywh = letterboxed_rboxes(sample.boxes, nw, nh, left, top, imgsz)
    else:
        xywh = letterbox_boxes(sample.boxes[:, 1:], nw, nh, left, top, imgsz)
    return (nw, nh, left, top), xywh, sample.boxes[:, :1], ((r, r), (float(left), float(top)))


def item_targets(sample: Sample, index: int, xywh: np.ndarray, cls: np.ndarray, ori_shape: tuple,
                 ratio_pad: tuple) -> dict[str, Any]:
    """An item's targets and records, as tensors and plain values (both loaders' items carry these keys)."""
    return {
        "cls": torch.from_numpy(np.asarray(cls, dtype=np.float32).copy()),
        "bboxes": torch.from_numpy(np.asarray(xywh, dtype=np.float32).reshape(-1, target_width(sample.boxes))),
        "im_file": str(sample.rgb),
        "ir_file": str(sample.ir),
        "ori_shape": ori_shape,
        "ratio_pad": ratio_pad,
        "index": index,
    }


def collate_targets(batch: list[dict]) -> dict:
    """A batch's targets and sample records (``batch_idx``: the format ``v8DetectionLoss`` reads), as both loaders
    hand them to the loop."""
    return {
        "cls": torch.cat([b["cls"] for b in batch]),
        "bboxes": torch.cat([b["bboxes"] for b in batch]),
        "batch_idx": torch.cat([torch.full((len(b["cls"]),), float(i)) for i, b in enumerate(batch)]),
        "im_file": [b["im_file"] for b in batch],
        "ir_file": [b["ir_file"] for b in batch],
        "ori_shape": [b["ori_shape"] for b in batch],
        "ratio_pad": [b["ratio_pad"] for b in batch],
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
    }
