"""A pair's labels as both loaders carry them: the label dict the recipe reads, an item's targets, a batch's targets.

The one place that knows the label kinds (:data:`KINDS`, one per ``task:`` of data.yaml):

- ``detect``: axis-aligned boxes, rows ``cls xc yc w h`` normalised; targets ``(N, 4)`` xywh;
- ``obb``: oriented boxes, rows ``cls x1 y1 x2 y2 x3 y3 x4 y4`` (corners in order, normalised), Ultralytics'
  OBB format; carried as its OBB dataset carries them (``YOLODataset`` with ``task='obb'``): the corners resampled
  to :data:`OBB_POINTS` points along the outline as ``Instances.segments``, the enclosing axis-aligned box as its
  ``bboxes``; so Ultralytics' own transforms move them (``RandomPerspective`` and ``Mosaic`` with ``preserve_obb``,
  ``RandomFlip``, ``MixUp``: ``augment.py``), and the targets are what its ``Format(return_obb=True)`` gives:
  ``(N, 5)`` = (cx, cy, w, h, angle), cx, cy, w, h normalised to the output image, the angle in radians from
  ``ultralytics.utils.ops.xyxyxyxy2xywhr`` (``cv2.minAreaRect`` of the points; w the longer side, the angle in
  [-pi/4, 3pi/4)).

A sample's kind is read from its rows (5 or 9 columns: the scan parses a dataset's files as its ``task:`` says,
an empty file included), so nothing downstream takes a task argument. The CPU loader and the device loader's
workers build the same label dict (only its image differs: pixels, or a shape-only stand-in with a plan leaf), run
it through the same Ultralytics transforms, and read their targets back with the same functions; so both pipelines,
the letterbox and the collate get every kind from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ultralytics.utils.instance import Instances
from ultralytics.utils.ops import resample_segments, segments2boxes, xyxyxyxy2xywhr

from yolofuse_scale.data.transforms import letterbox_boxes, letterbox_geometry

if TYPE_CHECKING:
    from yolofuse_scale.data.sample import Sample

#: An augmented sample's ``ratio_pad``: its boxes do not map back to one original image.
IDENTITY_RATIO_PAD = ((1.0, 1.0), (0.0, 0.0))
#: Points an oriented box's outline is resampled to, as Ultralytics' OBB dataset does (``update_labels_info``): the
#: clip of a box cut by the image border (``Instances.clip(preserve_obb=True)``) fits a rectangle to them.
OBB_POINTS = 100
#: The label dict's key naming its kind (Ultralytics' transforms keep the sample's own keys through a mosaic).
LABEL_KIND = "label_kind"


class DetectLabels:
    """``task: detect``: rows ``cls xc yc w h``; targets xywh normalised."""

    name, columns, target_width = "detect", 5, 4

    @staticmethod
    def instances(rows: np.ndarray) -> Instances:
        return Instances(rows[:, 1:].copy(), bbox_format="xywh", normalized=True)

    @staticmethod
    def augmented(inst: Instances, w: int, h: int) -> np.ndarray:
        inst.convert_bbox("xywh")
        inst.normalize(w, h)
        return inst.bboxes

    @staticmethod
    def letterboxed(rows: np.ndarray, nw: int, nh: int, left: int, top: int, imgsz: int) -> np.ndarray:
        return letterbox_boxes(rows[:, 1:], nw, nh, left, top, imgsz)

    @staticmethod
    def corners(rows: np.ndarray) -> np.ndarray:
        """(n, 4, 2) normalised corners, clockwise in image coordinates from the top left."""
        xc, yc, w, h = (rows[:, i] for i in range(1, 5))
        x1, y1, x2, y2 = xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
        return np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1),
                         np.stack([x1, y2], 1)], 1)

    @staticmethod
    def xywh(rows: np.ndarray) -> np.ndarray:
        return rows[:, 1:5]


class OrientedLabels:
    """``task: obb``: rows ``cls x1 y1 x2 y2 x3 y3 x4 y4``; targets (cx, cy, w, h, angle) as Ultralytics' ``Format``
    with ``return_obb=True`` computes them."""

    name, columns, target_width = "obb", 9, 5

    @staticmethod
    def instances(rows: np.ndarray) -> Instances:
        corners = OrientedLabels.corners(rows)
        if not len(corners):
            return Instances(np.zeros((0, 4), np.float32), np.zeros((0, OBB_POINTS, 2), np.float32),
                             bbox_format="xywh", normalized=True)
        outline = np.stack(resample_segments(list(corners), n=OBB_POINTS), 0)
        return Instances(segments2boxes(corners), outline, bbox_format="xywh", normalized=True)

    @staticmethod
    def augmented(inst: Instances, w: int, h: int) -> np.ndarray:
        # Format(return_obb=True)'s arithmetic, in its order and dtype: the rectangle of the pixel points, then w, h
        inst.convert_bbox("xywh")
        inst.denormalize(w, h)
        return OrientedLabels._normalised_rboxes(inst.segments, w, h)

    @staticmethod
    def letterboxed(rows: np.ndarray, nw: int, nh: int, left: int, top: int, imgsz: int) -> np.ndarray:
        corners = OrientedLabels.corners(rows).copy()
        corners[..., 0] = corners[..., 0] * nw + left
        corners[..., 1] = corners[..., 1] * nh + top
        return OrientedLabels._normalised_rboxes(corners, imgsz, imgsz)

    @staticmethod
    def _normalised_rboxes(points: np.ndarray, w: int, h: int) -> np.ndarray:
        boxes = xyxyxyxy2xywhr(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)))
        boxes[:, [0, 2]] /= w
        boxes[:, [1, 3]] /= h
        return boxes.numpy()

    @staticmethod
    def corners(rows: np.ndarray) -> np.ndarray:
        return rows[:, 1:9].reshape(-1, 4, 2)

    @staticmethod
    def xywh(rows: np.ndarray) -> np.ndarray:
        corners = OrientedLabels.corners(rows)
        lo, hi = corners.min(1), corners.max(1)
        return np.concatenate([(lo + hi) / 2, hi - lo], 1).astype(rows.dtype)


#: ``task:`` -> its label kind; a new kind is one class above and one entry here (and its row checks in
#: ``scan/label_rows.py``).
KINDS = {k.name: k for k in (DetectLabels, OrientedLabels)}
_BY_COLUMNS = {k.columns: k for k in KINDS.values()}


def kind_of(rows: np.ndarray):
    """The label kind of a sample's rows (``Sample.boxes``), from their column count."""
    try:
        return _BY_COLUMNS[rows.shape[1]]
    except (KeyError, IndexError):
        raise ValueError(f"label rows of shape {rows.shape}: expected (n, 5) boxes or (n, 9) oriented boxes") from None


def oriented(rows: np.ndarray) -> bool:
    """Whether a sample's label rows are oriented boxes (``cls x1 y1 ... x4 y4``: 9 columns) rather than 5 (one scan
    gives every sample of a dataset the same kind)."""
    return rows.ndim == 2 and rows.shape[1] == OrientedLabels.columns


def axis_aligned(rows: np.ndarray) -> np.ndarray:
    """(n, 5) rows ``cls xc yc w h`` of any kind's rows (an oriented box's enclosing box): label statistics."""
    return np.concatenate([rows[:, :1], kind_of(rows).xywh(rows)], 1)


def label_dict(sample: Sample, img: np.ndarray, ori_shape: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """Ultralytics' label dict of a pair whose (resized) image is ``img`` (pixels, or a shape-only stand-in: the
    transforms read ``img.shape``); ``extra``: keys a pipeline carries along (the device loader's plan leaf)."""
    boxes = sample.boxes
    kind = kind_of(boxes)
    return {"img": img, "cls": boxes[:, :1].copy(), "ori_shape": ori_shape, "resized_shape": img.shape[:2],
            "instances": kind.instances(boxes), "im_file": str(sample.rgb), LABEL_KIND: kind.name, **extra}


def augmented_targets(labels: dict) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """(boxes normalised to the output image: the kind's targets, cls (N, 1), ori_shape, ratio_pad) of an augmented
    sample's labels."""
    img = labels["img"]
    kind = KINDS[labels[LABEL_KIND]]
    return kind.augmented(labels["instances"], img.shape[1], img.shape[0]), labels["cls"].reshape(-1, 1), \
        labels["ori_shape"], IDENTITY_RATIO_PAD


def letterbox_targets(sample: Sample, hw: tuple[int, int], imgsz: int) -> tuple[tuple, np.ndarray, np.ndarray, tuple]:
    """Where the letterbox of an ``hw`` image puts it (``(nw, nh, left, top)``), and the sample's (boxes on that
    canvas: the kind's targets, cls (N, 1), ratio_pad ``((r, r), (padw, padh))``) for ``scale_boxes``."""
    nw, nh, left, top, r = letterbox_geometry(*hw, imgsz)
    boxes = kind_of(sample.boxes).letterboxed(sample.boxes, nw, nh, left, top, imgsz)
    return (nw, nh, left, top), boxes, sample.boxes[:, :1], ((r, r), (float(left), float(top)))


def item_targets(sample: Sample, index: int, boxes: np.ndarray, cls: np.ndarray, ori_shape: tuple,
                 ratio_pad: tuple) -> dict[str, Any]:
    """An item's targets and records, as tensors and plain values (both loaders' items carry these keys)."""
    width = kind_of(sample.boxes).target_width
    return {
        "cls": torch.from_numpy(np.asarray(cls, dtype=np.float32).copy()),
        "bboxes": torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, width)),
        "im_file": str(sample.rgb),
        "ir_file": str(sample.ir),
        "ori_shape": ori_shape,
        "ratio_pad": ratio_pad,
        "index": index,
    }


def collate_targets(batch: list[dict]) -> dict:
    """A batch's targets and sample records (``batch_idx``: the format ``v8DetectionLoss`` and ``v8OBBLoss`` read), as
    both loaders hand them to the loop."""
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
