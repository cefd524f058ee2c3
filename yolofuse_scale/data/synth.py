"""A synthetic LLVIP-like RGB+IR dataset: night street scenes in which each modality misses things.

What the generator guarantees, so that fusion has something to gain:

- visible images are dark, low-contrast and noisy; a person is only faintly visible unless a street
  lamp lights them;
- infrared images show every person warm against a cool, smoothly varying background;
- cars are clear in the visible image (body colour, headlights) but near ambient temperature in IR;
- so IR alone finds people but barely cars, RGB alone finds cars but misses unlit people, and only
  both together see everything.

Everything is drawn from ``numpy.random.default_rng((seed, split, index))``: a seed gives the same
bytes on every machine. Images are PNG; IR is written 1-channel by default (like LLVIP's thermal
camera), and ``ir_channels`` in the written ``data.yaml`` says how the model reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = {0: "person", 1: "car"}
_SPLITS = {"train": 0, "val": 1}


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, lo: float, hi: float) -> np.ndarray:
    """Low-frequency random field in [lo, hi]: a coarse grid of random values, bicubically upsampled."""
    coarse = rng.uniform(lo, hi, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def render_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """One scene: (RGB float HxWx3, IR float HxW, boxes as (cls, x1, y1, x2, y2) in pixels)."""
    # Visible: dark vertical gradient (sky -> street), a few lamps lighting round patches.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 12 + 14 * (yy / h)
    light = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(0, 3)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.7), rng.uniform(0.12, 0.3) * h
        light += 90 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    tint = np.array([1.0, 0.85, 0.55], np.float32)  # sodium-lamp orange (RGB)
    rgb = (base[..., None] + light[..., None] * tint) * np.ones(3, np.float32)
    # Infrared: cool background with smooth thermal texture (warmer road at the bottom).
    ir = _smooth_field(rng, h, w, 4, 50, 90) + 20 * (yy / h)

    boxes: list[tuple] = []
    for _ in range(rng.integers(0, 7)):
        is_car = rng.random() < 0.35
        for _attempt in range(10):
            if is_car:
                bw = rng.uniform(0.16, 0.32) * w
                bh = bw * rng.uniform(0.4, 0.55)
            else:
                bh = rng.uniform(0.14, 0.42) * h
                bw = bh / rng.uniform(2.2, 2.8)
            x1, y1 = rng.uniform(0, w - bw), rng.uniform(0.15 * h, h - bh)
            cand = (x1, y1, x1 + bw, y1 + bh)
            if all(_iou(cand, b[1:]) < 0.2 for b in boxes):
                break
        else:
            continue
        x1, y1, x2, y2 = cand
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        lit = light[int(min(cy, h - 1)), int(min(cx, w - 1))]
        if is_car:
            colour = rng.uniform(40, 160, size=3)
            pts = (int(x1), int(y1 + 0.3 * bh)), (int(x2), int(y2))
            cv2.rectangle(rgb, *pts, colour.tolist(), -1)
            cabin = (int(x1 + 0.15 * bw), int(y1)), (int(x2 - 0.15 * bw), int(y1 + 0.35 * bh))
            cv2.rectangle(rgb, *cabin, (colour * 0.7).tolist(), -1)
            r = max(1, int(0.06 * bw))
            for hx in (x1 + 0.12 * bw, x2 - 0.12 * bw):  # headlights
                cv2.circle(rgb, (int(hx), int(y1 + 0.65 * bh)), r, (255, 250, 220), -1)
            # In IR a parked car sits near ambient temperature: a barely-there outline.
            # (sampled from the IR drawn so far, so the bytes match earlier releases for a seed)
            temp = float(ir[int(cy), int(cx)] + 4)
            cv2.rectangle(ir, (int(x1), int(y1 + 0.3 * bh)), (int(x2), int(y2)), temp, -1)
        else:
            head_r = max(1, int(bw * 0.28))
            body = (int(cx), int(y1 + head_r * 2 + (bh - head_r * 2) / 2))
            axes = (max(1, int(bw / 2)), max(1, int((bh - head_r * 2) / 2)))
            # Visible: barely above the dark background unless a lamp lights the person.
            contrast = 6.0 + 0.9 * lit
            shade = (rgb[int(cy), int(cx)] + contrast * rng.uniform(0.7, 1.0, size=3)).tolist()
            cv2.ellipse(rgb, body, axes, 0, 0, 360, shade, -1)
            cv2.circle(rgb, (int(cx), int(y1 + head_r)), head_r, shade, -1)
            # Infrared: people are warm.
            warm = float(rng.uniform(185, 235))
            cv2.ellipse(ir, body, axes, 0, 0, 360, warm, -1)
            cv2.circle(ir, (int(cx), int(y1 + head_r)), head_r, warm + 10, -1)
        boxes.append((1 if is_car else 0, x1, y1, x2, y2))

    rgb += rng.normal(0, 5, size=rgb.shape).astype(np.float32)  # sensor noise, strong in the dark
    ir = cv2.GaussianBlur(ir, (3, 3), 0) + rng.normal(0, 3, size=ir.shape).astype(np.float32)
    return np.clip(rgb, 0, 255), np.clip(ir, 0, 255), boxes


def _write_pairs(out: Path, split: str, indices: range, h: int, w: int, seed: int, ir_channels: int) -> None:
    """Render and write pairs ``indices`` of ``split`` (one worker's share; each pair is independent)."""
    dirs = [out / d / split for d in ("images", "imagesIR", "labels")]
    for i in indices:
        rng = np.random.default_rng((seed, _SPLITS[split], i))
        rgb, ir, boxes = render_pair(rng, h, w)
        name = f"{split}_{i:05d}"
        cv2.imwrite(str(dirs[0] / f"{name}.png"), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))
        ir8 = ir.astype(np.uint8)
        cv2.imwrite(str(dirs[1] / f"{name}.png"), ir8 if ir_channels == 1 else cv2.merge([ir8] * 3))
        lines = [
            f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            for c, x1, y1, x2, y2 in boxes
        ]
        (dirs[2] / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def _write_pairs_star(job: tuple) -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism: OpenCV's own threads would oversubscribe
    _write_pairs(*job)


def write_synthetic_dataset(
    out: str | Path,
    n_train: int = 64,
    n_val: int = 16,
    imgsz: int = 128,
    seed: int = 0,
    ir_channels: int = 1,
    workers: int = 1,
) -> Path:
    """Write the dataset in the YOLOFuse layout under ``out``; return the path of its ``data.yaml``.

    Frames are ``imgsz`` high and 1.25x as wide (LLVIP's landscape aspect), PNG; IR is written with
    ``ir_channels`` channels and ``data.yaml`` asks the model for the same. Pair ``i`` of a split
    depends only on ``(seed, split, i)``, so growing ``n_train`` keeps the earlier pairs, and
    ``workers`` > 1 processes write the same bytes (a 640 px pair costs ~0.06 s, mostly PNG encoding).
    ``data.yaml`` is written last: its presence means the set is complete.
    """
    if ir_channels not in (1, 3):
        raise ValueError(f"ir_channels must be 1 or 3, got {ir_channels}")
    if imgsz < 32:  # below this the people are a few pixels and the head/body shapes degenerate
        raise ValueError(f"imgsz must be at least 32, got {imgsz}")
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    h, w = imgsz, int(round(imgsz * 1.25 / 2) * 2)  # LLVIP's 5:4 landscape frames
    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        for d in ("images", "imagesIR", "labels"):
            (out / d / split).mkdir(parents=True, exist_ok=True)
        chunk = max(1, -(-n // max(1, workers * 4)))  # a few chunks per worker evens out their finish
        jobs += [(out, split, range(a, min(n, a + chunk)), h, w, seed, ir_channels) for a in range(0, n, chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        # fork: the children start with this process's imports (spawn re-imports torch: ~2-4 s each);
        # nothing here has started threads yet (OpenCV's pool starts with the first encode)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            pool.map(_write_pairs_star, jobs, chunksize=1)
    else:
        for job in jobs:
            _write_pairs(*job)
    data_yaml = out / "data.yaml"
    spec = {
        "path": ".",  # relative to this file: the folder can be moved or copied as a whole
        "train": "images/train",
        "val": "images/val",
        "names": dict(NAMES),
        "ir_dir": "imagesIR",
        "ir_channels": ir_channels,
    }
    header = "# synthetic LLVIP-like RGB+IR set written by `yolofuse-scale synth`\n"
    data_yaml.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return data_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to ``parser`` (``yolofuse-scale synth``)."""
    parser.add_argument(
        "--out", required=True, help="folder to write images/, imagesIR/, labels/ and data.yaml into"
    )
    parser.add_argument("--train", type=int, default=256, help="number of training pairs (default: 256)")
    parser.add_argument("--val", type=int, default=64, help="number of validation pairs (default: 64)")
    parser.add_argument(
        "--imgsz", type=int, default=160, help="frame height in pixels; width is 1.25x (default: 160)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: 0)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes writing pairs; same bytes for any count (default: 1)"
    )
    parser.add_argument(
        "--ir-channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="write IR as 1-channel (thermal camera) or 3-channel files; data.yaml matches (default: 1)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the dataset the parsed ``args`` describe; print where ``data.yaml`` went; return 0."""
    path = write_synthetic_dataset(
        args.out, args.train, args.val, args.imgsz, args.seed, args.ir_channels, workers=args.workers
    )
    print(f"wrote {args.train} train + {args.val} val pairs: {path}")
    return 0
