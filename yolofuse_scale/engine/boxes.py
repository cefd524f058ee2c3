"""The geometry of a task's boxes: how detections are suppressed, compared with the targets and written back.

One class per box kind, each built from Ultralytics' own functions, so validation, ``val`` and prediction treat a
task's boxes the way Ultralytics' validator and predictor of that task do:

==================  ==========================================  ===============================================
                    :class:`AxisAligned` (``--task detect``)     :class:`Rotated` (``--task obb``)
==================  ==========================================  ===============================================
model output        ``(B, 4 + nc, N)``: cx, cy, w, h, scores     ``(B, 4 + nc + 1, N)``: cx, cy, w, h, scores,
                                                                 angle (radians)
NMS                 ``non_max_suppression``                      the same, ``rotated=True``: boxes compared by
                                                                 ``batch_probiou`` (Ultralytics' OBB NMS)
a detection row     x1, y1, x2, y2, conf, cls                    cx, cy, w, h, conf, cls, angle
matching IoU        ``box_iou`` of xyxy                          ``batch_probiou`` of xywhr (``OBBValidator``)
a target row        normalised cx, cy, w, h                      normalised cx, cy, w, h, angle (the contract's
                                                                 batch: Ultralytics' ``Format(return_obb=True)``)
==================  ==========================================  ===============================================

Which class a model gets is its task's (``engine/task.py``'s ``TASKS``). Imports nothing distributed.
"""

from __future__ import annotations

from typing import Any

import torch
from ultralytics.utils.metrics import DetMetrics, OBBMetrics, batch_probiou, box_iou
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes, xywh2xyxy, xywhr2xyxyxyxy


def _nms(preds: torch.Tensor, conf: float, iou: float, **kwargs: Any) -> list[torch.Tensor]:
    """Ultralytics' NMS, with torchvision imported first: Ultralytics calls torchvision's C++ kernel only when
    torchvision is already imported, and otherwise a Python loop (same boxes) that made our validation NMS 25x
    slower (1.3 s against 0.05 s over three 64-image validations of yolov8n at 128 px, profiled:
    benchmarks/results/step_profile_2core_cpu). Imported at the first suppression, not with the module: importing
    torchvision costs ~1.2 s of CPU per process on a 2-core machine (its ``ops`` import ``torch._dynamo``), which a
    process that never validates (each rank of a ``--no-val`` training, most test launches) need not pay."""
    import torchvision  # noqa: F401

    return non_max_suppression(preds, conf, iou, **kwargs)


class AxisAligned:
    """Axis-aligned boxes (Ultralytics' ``Detect`` head): detections are ``(n, 6)`` x1, y1, x2, y2, conf, cls."""

    #: the ``ConfusionMatrix`` task whose plots these boxes follow
    matrix_task = "detect"
    #: Ultralytics' metrics class of its validator for these boxes
    metrics = DetMetrics
    #: the width of a target's box row (and of :meth:`boxes`' rows)
    width = 4

    def suppress(self, out: Any, conf: float, iou: float, max_det: int, multi_label: bool,
                 end2end: bool = False) -> list[torch.Tensor]:
        """Ultralytics' NMS on a model's eval-mode output (its first element: decoded boxes and scores); an
        end-to-end output (``(B, max_det, 6 + extra)``, a one-to-one head's top-k) is only filtered by ``conf``."""
        preds = out[0] if isinstance(out, (list, tuple)) else out
        return _nms(preds.float(), conf, iou, multi_label=multi_label, max_det=max_det, end2end=end2end)

    def boxes(self, det: torch.Tensor) -> torch.Tensor:
        """The box of each detection row, in the form :meth:`iou` compares (here xyxy)."""
        return det[:, :4]

    def targets(self, bboxes: torch.Tensor, w: int, h: int) -> torch.Tensor:
        """A batch's normalised target rows as boxes in the image's pixels, in :meth:`boxes`' form."""
        return xywh2xyxy(bboxes.float() * torch.tensor([w, h, w, h], dtype=torch.float32))

    def iou(self, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """(n_gt, n_pred) IoU of boxes in :meth:`boxes`' form."""
        return box_iou(gt, pred)

    def to_original(self, det: torch.Tensor, shape: tuple[int, int], original: tuple[int, int],
                    ratio_pad: Any) -> torch.Tensor:
        """Detection rows of a letterboxed ``shape`` image in the ``original`` image's pixels (a new tensor),
        as Ultralytics' predictor maps them (``scale_boxes``, clipped to the image)."""
        det = det.clone()
        det[:, :4] = scale_boxes(shape, det[:, :4], original, ratio_pad=ratio_pad)
        return det

    def corners(self, det: torch.Tensor) -> torch.Tensor:
        """(n, 4, 2) corners of each detection's box, clockwise from the top left in image axes."""
        x1, y1, x2, y2 = det[:, :4].unbind(1)
        return torch.stack([torch.stack(p, 1) for p in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 1)


class Rotated(AxisAligned):
    """Oriented boxes (Ultralytics' ``OBB``/``OBB26`` heads): detections are ``(n, 7)`` cx, cy, w, h, conf, cls,
    angle, as Ultralytics' rotated NMS returns them; their boxes (:meth:`boxes`) are xywhr."""

    matrix_task = "obb"
    metrics = OBBMetrics  # DetMetrics' mAP50 and mAP50-95, as OBBValidator reports them
    width = 5

    def suppress(self, out: Any, conf: float, iou: float, max_det: int, multi_label: bool,
                 end2end: bool = False) -> list[torch.Tensor]:
        """Ultralytics' rotated NMS (probabilistic IoU between the Gaussians of two boxes, its ``OBBValidator``'s and
        ``OBBPredictor``'s) on a model's eval-mode output; the class count is what the rows hold besides the box and
        the angle. An end-to-end output is only filtered by ``conf``.

        Cost: Ultralytics' rotated NMS is Fast-NMS over an n x n probabilistic-IoU matrix of the candidates above
        ``conf`` (n up to 30,000): at validation's conf 0.001 an untrained model at 640 px can fill it (GBs and
        seconds); a trained one leaves a few hundred candidates."""
        preds = out[0] if isinstance(out, (list, tuple)) else out
        nc = 0 if end2end else preds.shape[1] - 5  # end-to-end rows need no class count (only filtered)
        return _nms(preds.float(), conf, iou, nc=nc, multi_label=multi_label, max_det=max_det, end2end=end2end,
                    rotated=True)

    def boxes(self, det: torch.Tensor) -> torch.Tensor:
        return torch.cat([det[:, :4], det[:, 6:7]], 1)

    def targets(self, bboxes: torch.Tensor, w: int, h: int) -> torch.Tensor:
        # cx, w scale with the width and cy, h with the height: exact for the square letterboxed images both
        # loaders give (Ultralytics normalises an oriented box's w and h the same way)
        return bboxes.float() * torch.tensor([w, h, w, h, 1.0], dtype=torch.float32)

    def iou(self, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return batch_probiou(gt, pred)

    def to_original(self, det: torch.Tensor, shape: tuple[int, int], original: tuple[int, int],
                    ratio_pad: Any) -> torch.Tensor:
        """As Ultralytics' OBB predictor: centre and size mapped back (``scale_boxes(xywh=True)``: the letterbox
        is a uniform scale, so the angle stays), not clipped (a rotated box may reach past the image)."""
        det = det.clone()
        det[:, :4] = scale_boxes(shape, det[:, :4], original, ratio_pad=ratio_pad, xywh=True)
        return det

    def corners(self, det: torch.Tensor) -> torch.Tensor:
        return xywhr2xyxyxyxy(self.boxes(det))


AXIS_ALIGNED, ROTATED = AxisAligned(), Rotated()
