"""Drawing detections: the one function that puts boxes (axis-aligned, or oriented: their rotated outline) and
labels on an image, and the RGB | IR view.

``Detections.plot()`` and ``yolofuse-scale predict`` (images and videos) both draw with
:func:`draw_detections`, so what the API shows is what the command writes. Everything is drawn in RGB
order on a copy; ``cv2.imwrite``/``VideoWriter`` callers convert to BGR once per image. Text uses
OpenCV's built-in Hershey font: nothing is looked up or downloaded.

A label (class name and score on a filled box of the class colour) sits above its box where it fits
and inside the box's top edge where it would leave the image above, and is shifted left or up so that
it never leaves the image (:func:`label_rect`), as Ultralytics' annotator keeps its labels in view.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

# RGB colours, one per class id modulo 10: saturated, distinct on both a colour and a grey (IR) view.
PALETTE = [(255, 56, 56), (151, 157, 255), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
           (0, 212, 187), (44, 153, 168), (0, 194, 255), (255, 55, 199)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour(cls: int) -> tuple[int, int, int]:
    """The RGB colour of class ``cls``."""
    return PALETTE[int(cls) % len(PALETTE)]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (perceived luminance, ITU-R BT.601 weights)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def line_width(shape: tuple[int, ...]) -> int:
    """Box line width for an image of ``shape``: 1 px up to ~450 px, then growing with the image."""
    return max(1, round(min(shape[:2]) / 300))


def label_rect(box: tuple[int, int, int, int], text_w: int, text_h: int, shape: tuple[int, ...]
               ) -> tuple[int, int, int, int]:
    """Where the label of ``box`` goes: (x1, y1, x2, y2) of its filled rectangle, inside the image.

    Above the box when there is room (``y1 >= text_h``), else just inside its top edge; moved left when
    it would pass the right edge, up when it would pass the bottom, and clamped to the top-left corner
    when the image is smaller than the label.
    """
    h, w = shape[:2]
    x1, y1 = box[0], box[1]
    top = y1 - text_h if y1 >= text_h else y1
    left = min(max(x1, 0), w - text_w)
    top = min(max(top, 0), h - text_h)
    left, top = max(left, 0), max(top, 0)
    return left, top, left + text_w, top + text_h


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    names: Mapping[int, str],
    labels: bool = True,
    conf: bool = True,
    width: int | None = None,
    corners: np.ndarray | None = None,
) -> np.ndarray:
    """Draw xyxy ``boxes`` (pixels of ``image``) with their labels on a copy of ``image`` (H, W, 3) uint8.

    ``labels``: write "name score" on each box; ``conf``: include the score; ``width``: line width in
    pixels (default: :func:`line_width`); ``corners`` (n, 4, 2): oriented boxes, each drawn as its rotated
    outline (a closed polygon through its four corners, as Ultralytics' annotator draws OBB results), its label
    placed at the top of its enclosing ``boxes`` row. Returns the drawn copy, in ``image``'s colour order (RGB).
    """
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    lw = width or line_width(canvas.shape)
    scale = max(0.35, lw / 3, min(canvas.shape[:2]) / 900)  # readable on small frames, in step with lw
    thick = max(1, lw - 1)
    for k, (box, score, cls) in enumerate(zip(boxes, scores, classes)):
        c = colour(int(cls))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        # a box reaching the frame's edge (x2 == W) ends on its last pixel column, W - 1: drawn, not cut off
        x2, y2 = min(x2, canvas.shape[1] - 1), min(y2, canvas.shape[0] - 1)
        if corners is None:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), c, lw, cv2.LINE_AA)
        else:  # OpenCV clips a polygon reaching past the frame itself
            outline = np.round(np.asarray(corners[k], np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [outline], True, c, lw, cv2.LINE_AA)
        if not labels:
            continue
        text = str(names.get(int(cls), int(cls))) + (f" {float(score):.2f}" if conf else "")
        (tw, th), baseline = cv2.getTextSize(text, FONT, scale, thick)
        lx1, ly1, lx2, ly2 = label_rect((x1, y1, x2, y2), tw + 2, th + baseline + 2, canvas.shape)
        cv2.rectangle(canvas, (lx1, ly1), (lx2 - 1, ly2 - 1), c, -1)  # filled, inclusive corners
        cv2.putText(canvas, text, (lx1 + 1, ly2 - 1 - baseline), FONT, scale, text_colour(c), thick, cv2.LINE_AA)
    return canvas


def side_by_side(rgb: np.ndarray, ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RGB view, IR view): both (H, W, 3) uint8 RGB order, IR resized to RGB's size and shown grey
    when it has one channel (as the model sees the pair: ``stack_pair``)."""
    if ir.shape[:2] != rgb.shape[:2]:
        ir = cv2.resize(ir, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    if ir.ndim == 2 or ir.shape[2] == 1:
        ir = cv2.cvtColor(np.ascontiguousarray(ir.reshape(ir.shape[:2])), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(ir)
