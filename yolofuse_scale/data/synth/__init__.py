"""``yolofuse-scale synth``: a synthetic RGB+IR dataset in which each modality misses things, in the YOLOFuse layout.

Four generator settings (``scene``), each drawn by one module; this one picks the scene and writes the pairs:

- ``easy`` (the default; its bytes for a seed never change) and ``hard`` (a scene where fusion has to work for
  its gain): LLVIP-like night streets, people (class 0) and cars (class 1), ``night.py``;
- ``thermal16``: radiometric 16-bit IR, people among distractors told apart by temperature, ``thermal16.py``;
- ``aerial``: a different scene altogether (DroneVehicle-like: top-down vehicles of five kinds, oriented boxes,
  the RGB and IR images labelled each on its own), ``aerial.py``, which also writes its pairs and data.yaml;
  this module gives it the same seeding, layout and workers.

Everything is drawn from ``numpy.random.default_rng((seed, split, index))`` (``common.pair_rng``): a pair
depends only on those and the scene, and a seed gives the same bytes on every machine. Images are
PNG; IR is written 1-channel by default (like LLVIP's thermal camera), and ``ir_channels`` in the
written ``data.yaml`` says how the model reads it; a hard or thermal16 set's ``data.yaml`` also has
``synth: {scene: ..., seed: N}`` (a thermal16 set's states no ``ir_mapping``: the study sets it per run).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
import yaml

from yolofuse_scale.data.synth import aerial
from yolofuse_scale.data.synth.common import pair_rng
from yolofuse_scale.data.synth.night import NAMES, render_easy, render_hard
from yolofuse_scale.data.synth.thermal16 import kelvin100, render_thermal16

Scene = Literal["easy", "hard", "thermal16", "aerial"]  # aerial: aerial.py (oriented boxes, per-modality labels)
SCENES: tuple[str, ...] = get_args(Scene)


def render_pair(
    rng: np.random.Generator, h: int, w: int, scene: Scene = "easy"
) -> tuple[np.ndarray, np.ndarray, list[tuple], dict]:
    """One scene: (RGB float HxWx3, IR float HxW, boxes as (cls, x1, y1, x2, y2) in RGB pixels, meta).

    ``meta`` says what was drawn: ``scene``, ``rgb_gain`` (exposure), ``rgb_noise`` (sigma),
    ``washout`` (warm IR background), ``glare`` (blob count), ``ir_shift`` ((dx, dy) px) and
    ``ir_scale`` (IR relative to RGB), and ``objects``, one dict per box: ``cls``, ``ir_contrast``
    (temperature minus the background under it) and ``occluder`` (None, "pole", "bush" or "car").
    """
    if scene == "easy":
        return render_easy(rng, h, w)
    if scene == "hard":
        return render_hard(rng, h, w)
    if scene == "thermal16":
        return render_thermal16(rng, h, w)
    raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")


def _write_pairs(
    out: Path, split: str, indices: range, h: int, w: int, seed: int, ir_channels: int, scene: Scene = "easy"
) -> None:
    """Render and write pairs ``indices`` of ``split`` (one worker's share; each pair is independent)."""
    if scene == "aerial":
        rng = functools.partial(pair_rng, seed, split)
        return aerial.write_pairs(out, split, indices, h, w, rng, ir_channels)
    dirs = [out / d / split for d in ("images", "imagesIR", "labels")]
    for i in indices:
        rgb, ir, boxes, _meta = render_pair(pair_rng(seed, split, i), h, w, scene)
        name = f"{split}_{i:05d}"
        cv2.imwrite(str(dirs[0] / f"{name}.png"), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))
        ir_px = kelvin100(ir) if scene == "thermal16" else ir.astype(np.uint8)  # thermal16: degrees C -> 16-bit raw
        cv2.imwrite(str(dirs[1] / f"{name}.png"), ir_px if ir_channels == 1 else cv2.merge([ir_px] * 3))
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
    scene: Scene = "easy",
) -> Path:
    """Write the dataset in the YOLOFuse layout under ``out``; return the path of its ``data.yaml``.

    Frames are ``imgsz`` high and 1.25x as wide (LLVIP's landscape aspect), PNG; IR is written with
    ``ir_channels`` channels and ``data.yaml`` asks the model for the same. Pair ``i`` of a split
    depends only on ``(seed, split, i)``, so growing ``n_train`` keeps the earlier pairs, and
    ``workers`` > 1 processes write the same bytes (a 640 px pair costs ~0.06 s, mostly PNG encoding).
    ``data.yaml`` is written last: its presence means the set is complete. ``scene`` picks the
    generator setting (module docstring); a hard set's ``data.yaml`` records it under ``synth:``
    (an easy one's stays byte-identical to earlier releases, so absence means easy).
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
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
        for d in ("images", "imagesIR", "labels", *(("labelsIR",) if scene == "aerial" else ())):
            (out / d / split).mkdir(parents=True, exist_ok=True)
        chunk = max(1, -(-n // max(1, workers * 4)))  # a few chunks per worker evens out their finish
        jobs += [(out, split, range(a, min(n, a + chunk)), h, w, seed, ir_channels, scene)
                 for a in range(0, n, chunk)]
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
    if scene == "aerial":
        data_yaml.write_text(aerial.data_yaml(ir_channels, seed))
        return data_yaml
    spec = {
        "path": ".",  # relative to this file: the folder can be moved or copied as a whole
        "train": "images/train",
        "val": "images/val",
        "names": {0: NAMES[0]} if scene == "thermal16" else dict(NAMES),
        "ir_dir": "imagesIR",
        "ir_channels": ir_channels,
    }
    header = "# synthetic LLVIP-like RGB+IR set written by `yolofuse-scale synth`\n"
    if scene == "hard":  # the loaders ignore keys they do not know; Ultralytics' too
        header += f"# scene {scene}: IR is NOT registered to RGB; labels are in RGB pixels\n"
    if scene == "thermal16":
        header += ("# scene thermal16: IR is 16-bit radiometric, centi-Kelvin (raw = 100 x (T_C + 273.15)); choose "
                   "an ir_mapping (docs/data.md)\n")
    if scene == "hard":  # the misregistration augmentation's default follows (data/config.REGISTRATIONS)
        spec["registration"] = "loose"
    if scene != "easy":
        spec["synth"] = {"scene": scene, "seed": seed}
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
    parser.add_argument(
        "--scene",
        choices=SCENES,
        default="easy",
        help="easy: people always warm in IR, IR registered to RGB; hard: small/occluded people, IR washout, "
        "darker RGB with glare, IR shifted and scaled against RGB; thermal16: 16-bit radiometric IR (centi-Kelvin), "
        "people at body temperature in cold and in warm surroundings among person-shaped distractors at other "
        "temperatures; aerial: top-down roads and rotated vehicles of five kinds (task: obb), some visible only in "
        "IR at night, the RGB and IR images labelled each on its own (labels/, labelsIR/) (default: easy)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the dataset the parsed ``args`` describe; print where ``data.yaml`` went; return 0."""
    path = write_synthetic_dataset(
        args.out, args.train, args.val, args.imgsz, args.seed, args.ir_channels, workers=args.workers,
        scene=args.scene,
    )
    print(f"wrote {args.train} train + {args.val} val {args.scene} pairs: {path}")
    return 0
