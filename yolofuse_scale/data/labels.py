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

from yolofuse_scale.data.scan import Sample
from yolofuse_scale.data.transforms import letterbox_boxes, letterbox_geometry

#: An augmented sample's ``ratio_pad``: its boxes do not map back to one original image.
IDENTITY_RATIO_PAD = ((1.0, 1.0), (0.0, 0.0))


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
    xywh = letterbox_boxes(sample.boxes[:, 1:], nw, nh, left, top, imgsz)
    return (nw, nh, left, top), xywh, sample.boxes[:, :1], ((r, r), (float(left), float(top)))


def item_targets(sample: Sample, index: int, xywh: np.ndarray, cls: np.ndarray, ori_shape: tuple,
                 ratio_pad: tuple) -> dict[str, Any]:
    """An item's targets and records, as tensors and plain values (both loaders' items carry these keys)."""
    return {
        "cls": torch.from_numpy(np.asarray(cls, dtype=np.float32).copy()),
        "bboxes": torch.from_numpy(np.asarray(xywh, dtype=np.float32).reshape(-1, 4)),
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
