"""The letterbox of a *stacked* RGB+IR pair and its boxes (validation, ``--no-augment``), HWC -> CHW, and the
pixel scale the model reads.

RGB and IR travel as one ``(H, W, 3 + C_ir)`` array through every geometric transform, so the two
modalities cannot drift apart: identical geometry is a property of the data structure, not of two
code paths kept in step. Boxes are normalised ``xc, yc, w, h``. The training recipe is in ``augment.py``.

Written by hand although Ultralytics' ``LetterBox`` now pads any channel count with the same rounding:
this one also returns the normalised boxes and the ``ratio_pad`` that evaluation maps predictions back
with, without a detour through ``Instances``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PAD_VALUE = 114  # Ultralytics' letterbox grey


def letterbox_geometry(h: int, w: int, imgsz: int) -> tuple[int, int, int, int, float]:
    """Where the letterbox puts an ``h x w`` image on the ``imgsz`` canvas: ``(nw, nh, left, top, r)``."""
    r = min(imgsz / h, imgsz / w)
    nw, nh = round(w * r), round(h * r)
    padw, padh = (imgsz - nw) / 2, (imgsz - nh) / 2
    return nw, nh, round(padw - 0.1), round(padh - 0.1), r


def letterbox_boxes(boxes: np.ndarray, nw: int, nh: int, left: int, top: int, imgsz: int) -> np.ndarray:
    """Normalised xywh boxes of the original image, normalised to the letterbox canvas (a new array)."""
    boxes = boxes.copy()
    if len(boxes):
        boxes[:, 0] = (boxes[:, 0] * nw + left) / imgsz
        boxes[:, 1] = (boxes[:, 1] * nh + top) / imgsz
        boxes[:, 2] = boxes[:, 2] * nw / imgsz
        boxes[:, 3] = boxes[:, 3] * nh / imgsz
    return boxes


def letterbox_pair(
    img: np.ndarray, boxes: np.ndarray, imgsz: int
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[float, float], tuple[float, float]]]:
    """Resize keeping the aspect ratio and pad to ``imgsz x imgsz`` (centred).

    Returns the new array, the boxes normalised to the new canvas, and Ultralytics' ``ratio_pad``
    (``((r, r), (padw, padh))``) for mapping boxes back to the original image.
    """
    nw, nh, left, top, r = letterbox_geometry(*img.shape[:2], imgsz)
    out = letterbox_image(img, nw, nh, left, top, imgsz)
    return out, letterbox_boxes(boxes, nw, nh, left, top, imgsz), ((r, r), (float(left), float(top)))


def letterbox_image(img: np.ndarray, nw: int, nh: int, left: int, top: int, imgsz: int) -> np.ndarray:
    """``img`` resized to ``nw x nh`` and pasted at (``left``, ``top``) on a grey ``imgsz`` square
    (:func:`letterbox_geometry`'s placement)."""
    h, w = img.shape[:2]
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if img.ndim == 2:  # cv2 drops a singleton channel axis
            img = img[..., None]
    # numpy padding: cv2.copyMakeBorder takes at most 4 channels, a 3+3 pair has 6
    out = np.full((imgsz, imgsz, img.shape[2]), PAD_VALUE, dtype=img.dtype)
    out[top : top + nh, left : left + nw] = img
    return out


def normalize_images(img: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape, on any device) as float in [0, 1]: what every model here reads. The one place
    training (``engine/task.py``), validation (``engine/evaluate.py``) and inference (``inference.py``) scale
    pixels, so the three cannot drift apart. A new tensor (``float()`` of uint8 copies), scaled in place."""
    return img.float().div_(255.0)


def chw_tensor(img: np.ndarray) -> torch.Tensor:
    """An ``(H, W, C)`` uint8 array as a new contiguous ``(C, H, W)`` tensor. ``cv2.split`` into the
    tensor's planes is ~2x faster than numpy's transposed copy for up to 4 contiguous channels
    (0.25 vs 0.53 ms at 640 px), and ~2x slower beyond, where the copy is kept."""
    if img.shape[2] <= 4 and img.flags.c_contiguous:
        out = torch.empty((img.shape[2], *img.shape[:2]), dtype=torch.uint8)
        planes = out.numpy()
        cv2.split(img, list(planes))
        return out
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
