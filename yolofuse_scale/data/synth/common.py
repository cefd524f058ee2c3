"""What every synthetic scene shares: the one seeding rule (:func:`pair_rng`: a pair depends on ``(seed, split,
index)`` and nothing else), a smooth random field, the overlap of two boxes, and a standing person's shape.
"""

from __future__ import annotations

import cv2
import numpy as np

_SPLITS = {"train": 0, "val": 1}


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, lo: float, hi: float) -> np.ndarray:
    """Low-frequency random field in [lo, hi]: a coarse grid of random values, bicubically upsampled."""
    coarse = rng.uniform(lo, hi, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def pair_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator pair ``index`` of ``split`` is drawn from: nothing else decides its bytes (and the scene)."""
    return np.random.default_rng((seed, _SPLITS[split], index))


def person_shape(x1: float, y1: float, bw: float, bh: float) -> tuple:
    """Head centre and radius, body centre and half-axes of a person standing in a box."""
    cx = (x1 + x1 + bw) / 2
    head_r = max(1, int(bw * 0.28))
    body = (int(cx), int(y1 + head_r * 2 + (bh - head_r * 2) / 2))
    axes = (max(1, int(bw / 2)), max(1, int((bh - head_r * 2) / 2)))
    return (int(cx), int(y1 + head_r)), head_r, body, axes


def draw_person(img: np.ndarray, shape: tuple, body_value, head_value) -> None:
    head, head_r, body, axes = shape
    cv2.ellipse(img, body, axes, 0, 0, 360, body_value, -1)
    cv2.circle(img, head, head_r, head_value, -1)
