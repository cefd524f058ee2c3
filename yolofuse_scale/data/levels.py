"""``ir_mapping: {percentile: [p_lo, p_hi]}``: the raw IR levels at two percentiles of the training set, resolved once.

Which values: up to ``MAX_FRAMES`` IR frames deeper than 8 bits, evenly spaced over the training split in its sorted
order (every frame of a smaller split), and of each frame at most ``MAX_VALUES`` pixels on a regular stride; the
levels are numpy's percentiles (linear interpolation) of all those raw values. So they depend on the files alone:
the same on every machine, rank and resume. They are resolved on the process that scans (its result is broadcast),
written into the start-up log, the run's ``run_meta.json`` and its weights files, and ``val`` and ``predict`` apply
the weights' levels (a test copy without the training split evaluates as the model was trained).

Cost: one decode of each chosen frame (256 frames of 640x512 16-bit PNG: ~1 s on one core), once: the levels are
cached beside the scan's cache, keyed by the chosen frames' paths, sizes and mtimes and the percentiles.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from yolofuse_scale.data.config import DataError, IRMapping
from yolofuse_scale.data.decode import decode_raw
from yolofuse_scale.data.imagefile import read_bytes
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.io import write_atomic

MAX_FRAMES = 256  #: frames read for the levels (evenly spaced over the training split)
MAX_VALUES = 65536  #: values taken from one frame (a regular stride over its pixels)
LEVELS_VERSION = 1  #: bump when the rule changes: cached levels then miss


def chosen_frames(samples: list[Sample]) -> list[Path]:
    """The IR files the levels are read from: deeper than 8 bits, at most ``MAX_FRAMES``, evenly spaced."""
    deep = sorted((s for s in samples if (s.ir_bits or 8) > 8), key=lambda s: str(s.rgb))
    if len(deep) <= MAX_FRAMES:
        return [s.ir for s in deep]
    return [deep[round(i * (len(deep) - 1) / (MAX_FRAMES - 1))].ir for i in range(MAX_FRAMES)]


def _values(path: Path) -> np.ndarray:
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    flat = decode_raw(data, path).reshape(-1)
    step = max(1, -(-flat.size // MAX_VALUES))
    return flat[::step].astype(np.float64)


def _key(mapping: IRMapping, frames: list[Path]) -> str:
    h = hashlib.sha256(json.dumps([LEVELS_VERSION, MAX_FRAMES, MAX_VALUES, mapping.percentiles]).encode())
    for p in frames:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_levels(mapping: IRMapping, train: list[Sample], cache_dirs: list[Path] | tuple[Path, ...] = (),
                   where: str = "data.yaml") -> IRMapping:
    """``mapping`` with ``lo``/``hi`` at its percentiles of the training samples' IR values (module docstring).
    Raises :class:`DataError` when the training set holds no IR frame deeper than 8 bits (``where`` names the
    data.yaml): a percentile mapping applies to radiometric frames only."""
    frames = chosen_frames(train)
    if not frames:
        raise DataError(f"{where}: ir_mapping {mapping.stated}: the training split has no IR frame deeper than 8 bits "
                        "(8-bit IR is used as it is); remove ir_mapping, or point 'train' at the radiometric frames")
    key = _key(mapping, frames)
    name = f"irlevels-{key[:20]}.json"
    for folder in cache_dirs:
        try:
            d = json.loads((folder / name).read_text())
            if d.get("key") == key:
                return replace(mapping, lo=float(d["lo"]), hi=float(d["hi"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # absent, damaged or foreign: compute
    values = np.concatenate([_values(p) for p in frames])
    lo, hi = (float(v) for v in np.percentile(values, list(mapping.percentiles)))
    if hi <= lo:  # a flat training set: any frame maps to one grey level anyway
        hi = lo + 1.0
    for folder in cache_dirs:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / name, json.dumps({"key": key, "lo": lo, "hi": hi, "frames": len(frames)}))
            break
        except OSError:
            continue
    return replace(mapping, lo=lo, hi=hi)
