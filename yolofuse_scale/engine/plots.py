"""The training run's pictures: ``results.png`` from results.csv, ``labels.jpg`` from the scanned training labels,
``train_batch<i>.jpg`` from a training batch as the model reads it (RGB | IR side by side, the same boxes on both).

How they look, not when they are written (``engine/outputs.py`` decides that). Each function returns the encoded
file (PNG or JPEG bytes) and writes nothing: the caller writes it atomically. matplotlib through its object API
(``Figure``, the Agg canvas: no pyplot state, no display), OpenCV for the batch mosaic; no font is fetched
(``_offline.forbid_font_downloads``, installed by ``engine/evaluate.py``, covers Ultralytics' plots; ours use
matplotlib's bundled font and OpenCV's Hershey fonts).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import cv2
import numpy as np
from ultralytics.utils.ops import xywhr2xyxyxyxy

#: Box colours per class (BGR), the class id modulo 8: the colours of ``predict``'s side-by-side images.
PALETTE = [(56, 56, 255), (255, 157, 151), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (187, 212, 0), (168, 153, 44)]

#: What a batch preview shows at most: 16 pairs (a 4 x 4 grid of RGB | IR cells), 2,048 pixels wide.
PREVIEW_SAMPLES = 16
PREVIEW_MAX_WIDTH = 2048


def _figure(rows: int, cols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _encode(fig, fmt: str, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, **({"pil_kwargs": {"quality": 90}} if fmt == "jpg" else {}))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ results.png
def results_png(rows: Sequence[dict[str, str]], loss_names: Sequence[str]) -> bytes:
    """results.csv's curves over the epochs in one 2 x 5 figure: the training losses and precision, recall on top,
    the validation losses and mAP50, mAP50-95 below (Ultralytics' layout). Empty cells (an epoch not validated)
    are left out of their curve; a curve of one point is its marker."""
    top = [f"train/{n}_loss" for n in loss_names] + ["metrics/precision(B)", "metrics/recall(B)"]
    bottom = [f"val/{n}_loss" for n in loss_names] + ["metrics/mAP50(B)", "metrics/mAP50-95(B)"]
    fig, axes = _figure(2, len(top), (3.2 * len(top), 6.2))
    epochs = [int(float(r["epoch"])) for r in rows]
    for ax, column in zip([*axes[0], *axes[1]], [*top, *bottom]):
        points = [(e, float(r[column])) for e, r in zip(epochs, rows) if r.get(column, "") not in ("", None)]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, color="#1f77b4")
            if column.startswith("metrics/"):  # fractions: from 0 (drawn just above the frame), a flat 0 in [0, 1]
                top = max(ys) * 1.1 if max(ys) > 0 else 1.0
                ax.set_ylim(-0.02 * top, top)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(column, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            ax.xaxis.get_major_locator().set_params(integer=True)
    return _encode(fig, "png", 110)


# ------------------------------------------------------------------------------------------ labels.jpg
def label_statistics(boxes_per_image: Sequence[np.ndarray], names: dict[int, str]) -> dict:
    """The numbers behind labels.jpg, from each training image's (n, 5) rows of class, xc, yc, w, h (normalised):
    images, background images, boxes per class, boxes per image and the boxes' width and height (fractions of the
    image). A few array passes over the boxes: ~10 ms for LLVIP's 12k images."""
    counts = np.array([len(b) for b in boxes_per_image], dtype=np.int64)
    boxes = np.concatenate([b.reshape(-1, 5) for b in boxes_per_image]) if len(boxes_per_image) else np.zeros((0, 5))
    per_class = np.bincount(boxes[:, 0].astype(np.int64), minlength=len(names)) if len(boxes) else np.zeros(len(names))

    def spread(v: np.ndarray) -> dict[str, float] | None:
        if not len(v):
            return None
        q = np.quantile(v, [0.0, 0.05, 0.5, 0.95, 1.0])
        return dict(zip(("min", "p5", "median", "p95", "max"), (round(float(x), 6) for x in q)))

    return {
        "images": len(boxes_per_image),
        "background_images": int((counts == 0).sum()),
        "instances": int(len(boxes)),
        "instances_per_class": {names.get(c, str(c)): int(n) for c, n in enumerate(per_class)},
        "boxes_per_image": {"mean": round(float(counts.mean()), 4) if len(counts) else 0.0,
                            "max": int(counts.max()) if len(counts) else 0},
        "box_width": spread(boxes[:, 3]),
        "box_height": spread(boxes[:, 4]),
    }


def labels_jpg(boxes_per_image: Sequence[np.ndarray], names: dict[int, str]) -> bytes:
    """The training set's labels in four panels: boxes per class, where the box centres lie, the boxes' width and
    height, and boxes per image. Coordinates are fractions of each image (the labels as written, before
    augmentation); centres are drawn as the image shows them (y down)."""
    stats = label_statistics(boxes_per_image, names)
    boxes = np.concatenate([b.reshape(-1, 5) for b in boxes_per_image]) if len(boxes_per_image) else np.zeros((0, 5))
    fig, axes = _figure(2, 2, (9.0, 8.0))
    (bars, centres), (sizes, per_image) = axes
    classes = list(stats["instances_per_class"].items())
    colours = [tuple(c / 255 for c in reversed(PALETTE[i % len(PALETTE)])) for i in range(len(classes))]
    bars.bar(range(len(classes)), [n for _, n in classes], color=colours)
    bars.set_xticks(range(len(classes)), [name for name, _ in classes], rotation=90 if len(classes) > 8 else 0,
                    fontsize=8 if len(classes) > 8 else 9)
    for i, (_, n) in enumerate(classes):
        if len(classes) <= 20:
            bars.annotate(str(n), (i, n), ha="center", va="bottom", fontsize=8)
    bars.set_ylabel("boxes")
    bars.set_title("boxes per class")
    bars.margins(y=0.12)
    # Sizes are drawn up to the largest box (a square, so that width and height compare), centres over the image.
    largest = min(1.0, float(boxes[:, 3:5].max()) * 1.05) if len(boxes) else 1.0
    for ax, (x, y), extent, title, labels in (
        (centres, boxes[:, 1:3].T, 1.0, "box centres", ("x (fraction of width)", "y (fraction of height)")),
        (sizes, boxes[:, 3:5].T, largest, "box sizes", ("width (fraction of image)", "height (fraction of image)")),
    ):
        if len(boxes):
            _density(fig, ax, x, y, extent)
        ax.set(xlim=(0, extent), ylim=(extent, 0) if ax is centres else (0, extent), xlabel=labels[0],
               ylabel=labels[1], title=title)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    counts = [len(b) for b in boxes_per_image]
    top = max(counts, default=0)
    per_image.hist(counts, bins=np.arange(top + 2) - 0.5 if top <= 50 else 50, color="#4c72b0")
    per_image.set(xlabel="boxes in the image", ylabel="images", title="boxes per image")
    per_image.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"training labels: {stats['images']} images, {stats['instances']} boxes, "
                 f"{stats['background_images']} without any", fontsize=11)
    return _encode(fig, "jpg", 100)


def _density(fig, ax, x: np.ndarray, y: np.ndarray, extent: float) -> None:
    """A 50 x 50 count histogram of (x, y) over [0, extent]^2, empty cells blank; counts on a log scale once some
    cell holds more than 20 boxes (one box then stays visible beside a thousand), whole numbers on the colour bar."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    counts, *_ = np.histogram2d(x, y, bins=50, range=[[0, extent], [0, extent]])
    log = counts.max() > 20
    *_, cells = ax.hist2d(x, y, bins=50, range=[[0, extent], [0, extent]], cmap="viridis", cmin=1,
                          norm=LogNorm() if log else None)
    bar = fig.colorbar(cells, ax=ax, shrink=0.8, label="boxes")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if log:
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        bar.ax.yaxis.get_major_locator().set_params(integer=True)


# ------------------------------------------------------------------------------------------ train_batch<i>.jpg
def _pane(img: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) uint8 (RGB, or 1-channel IR) as a (size, size, 3) BGR image; 1 channel is shown gray."""
    hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
    bgr = cv2.cvtColor(hwc, cv2.COLOR_GRAY2BGR) if hwc.shape[2] == 1 else cv2.cvtColor(hwc, cv2.COLOR_RGB2BGR)
    if bgr.shape[0] != size or bgr.shape[1] != size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return bgr


def _draw_boxes(pane: np.ndarray, boxes: np.ndarray, names: dict[int, str], tag: str) -> None:
    """Boxes (n, 5: class, xc, yc, w, h normalised; oriented boxes (n, 6) with the angle in radians, drawn as their
    rotated outline) with their class names, and ``tag`` (RGB / IR) in a corner."""
    s = pane.shape[0]
    thick = max(1, round(s / 320))
    scale = max(0.3, s / 640)
    for c, xc, yc, w, h, *angle in boxes:
        colour = PALETTE[int(c) % len(PALETTE)]
        x1, y1, x2, y2 = (int(round(v * s)) for v in (xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2))
        if angle:  # Ultralytics' corners of (cx, cy, w, h, angle), in the pane's pixels
            outline = xywhr2xyxyxyxy(np.array([[xc * s, yc * s, w * s, h * s, angle[0]]], np.float64))[0]
            cv2.polylines(pane, [np.round(outline).astype(np.int32).reshape(-1, 1, 2)], True, colour, thick,
                          cv2.LINE_AA)
            x1, y1 = (int(round(v)) for v in outline.min(0))  # the name above the outline's top
        else:
            cv2.rectangle(pane, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        if s >= 96:  # below, a name covers the box it names
            cv2.putText(pane, names.get(int(c), str(int(c))), (x1 + 1, max(y1 - 3, 9)), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, colour, thick, cv2.LINE_AA)
    (tw, th), _ = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(pane, (0, s - th - 6), (tw + 6, s), (0, 0, 0), -1)
    cv2.putText(pane, tag, (3, s - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)


def preview_layout(samples: int, imgsz: int) -> tuple[int, int, int]:
    """(rows, columns of pairs, pane size in pixels) of a batch preview: a near-square grid of RGB | IR cells of at
    most :data:`PREVIEW_SAMPLES` pairs, panes shrunk so that the picture is at most :data:`PREVIEW_MAX_WIDTH` wide."""
    n = min(samples, PREVIEW_SAMPLES)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return rows, cols, min(imgsz, PREVIEW_MAX_WIDTH // (2 * cols))


def batch_jpg(img: np.ndarray, batch_idx: np.ndarray, targets: np.ndarray, names: dict[int, str]) -> bytes:
    """A training batch as the model reads it: per sample its RGB pane (left) and IR pane (right, 1 channel in gray)
    with the same boxes drawn on both, the first :data:`PREVIEW_SAMPLES` samples in a grid.

    ``img``: (B, 3 + C_ir, S, S) uint8; ``batch_idx`` (n,) the sample of each box; ``targets`` (n, 5) class, xc,
    yc, w, h normalised (the collated batch's ``cls`` and ``bboxes``; oriented boxes: (n, 6) with the angle). Cells
    are separated by a white line."""
    rows, cols, size = preview_layout(len(img), img.shape[-1])
    canvas = np.full((rows * size, cols * 2 * size, 3), 255, np.uint8)
    for i in range(min(len(img), rows * cols)):
        boxes = targets[batch_idx == i]
        r, c = divmod(i, cols)
        y, x = r * size, c * 2 * size
        for k, (part, tag) in enumerate(((img[i, :3], "RGB"), (img[i, 3:], "IR"))):
            pane = _pane(part, size)
            _draw_boxes(pane, boxes, names, tag)
            canvas[y: y + size, x + k * size: x + (k + 1) * size] = pane
    for r in range(1, rows):  # the grid's lines: between cells, not between a sample's two panes
        canvas[r * size - 1: r * size + 1] = 255
    for c in range(1, cols):
        canvas[:, c * 2 * size - 1: c * 2 * size + 1] = 255
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode the batch preview as JPEG")
    return encoded.tobytes()
