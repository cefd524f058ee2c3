"""The scan's cache: a split's scan as a JSON file keyed by a hash of everything its answer depends on (every
path, size and mtime), so an unchanged dataset re-scans in the time of the ``stat`` calls alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from yolofuse_scale.data import layouts
from yolofuse_scale.data.config import DatasetSpec
from yolofuse_scale.data.layouts import Listed, swap_str
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.scan.listing import file_stat, ir_twin, walk_images
from yolofuse_scale.data.scan.records import Problem, SplitScan

# bump when the checks change: old caches then miss (5: list-file repeats; 6: displayed sizes, formats by content;
# 7: oriented boxes, the IR images' own labels; 8: IR bit depth, layouts, pairs files, the homography's sizes)
SCAN_VERSION = 8


def fingerprint(cfg: DatasetSpec, split: str, listed: list[Listed]) -> str:
    """Hash of everything the scan's answer depends on: the checks' version, the classes, the pairing
    folders, and path + size + mtime of every RGB, IR and label file (and the IR folder listing)."""
    h = hashlib.sha256()
    pairs_dirs = {k: str(v) for k, v in (cfg.pairs_dirs or {}).items()}
    h.update(json.dumps([SCAN_VERSION, cfg.nc, cfg.images_dir, cfg.ir_dir, split, cfg.task, cfg.labels_ir,
                         cfg.policy(split), cfg.union_iou, cfg.layout, pairs_dirs, cfg.ir_read.homography]).encode())
    for item in listed:
        rgb = str(item.rgb)
        ir = str(item.ir) if item.ir is not None else layouts.ir_of(cfg, rgb)
        label = str(item.label) if item.label is not None else layouts.label_of(cfg, rgb)
        line = f"{rgb}|{item.origin}|{file_stat(rgb)}|{ir}|{ir and file_stat(ir)}|{label}|{file_stat(label)}"
        if cfg.labels_ir is not None:
            label_ir = swap_str(rgb, cfg.images_dir, cfg.labels_ir)
            label_ir = None if label_ir is None else os.path.splitext(label_ir)[0] + ".txt"
            line += f"|{label_ir and file_stat(label_ir)}"
        h.update(f"{line}\n".encode())
    for entry in cfg.split(split):
        ir_root = ir_twin(cfg, entry)
        if ir_root is not None and ir_root.is_dir():
            for p in walk_images(ir_root).files:
                h.update(f"ir:{p}|{file_stat(p)}\n".encode())
    return h.hexdigest()


def cache_file(cfg: DatasetSpec, split: str, folder: Path) -> Path:
    """Where the scan of ``split`` of this data.yaml is cached inside ``folder``."""
    tag = hashlib.sha1(str(cfg.yaml_path).encode()).hexdigest()[:10]
    return folder / f"{cfg.yaml_path.stem}-{split}-{tag}.scan.json"


def to_json(scan: SplitScan, key: str) -> str:
    samples = [[str(s.rgb), str(s.ir), None if s.label is None else str(s.label), s.boxes.tolist(), s.hw,
                s.formats, None if s.label_ir is None else str(s.label_ir), s.label_counts, s.ir_bits, s.ir_hw]
               for s in scan.samples]
    return json.dumps({"key": key, "samples": samples, "problems": [asdict(p) for p in scan.problems]})


def from_json(text: str, key: str, split: str, columns: int) -> SplitScan | None:
    try:
        d = json.loads(text)
        if d.get("key") != key:
            return None
        samples = [Sample(Path(r), Path(i), None if lb is None else Path(lb),
                          np.array(b, dtype=np.float32).reshape(-1, columns), None if hw is None else tuple(hw),
                          None if fm is None else tuple(fm), None if li is None else Path(li),
                          None if lc is None else tuple(lc), bits, None if ihw is None else tuple(ihw))
                   for r, i, lb, b, hw, fm, li, lc, bits, ihw in d["samples"]]
        return SplitScan(split, samples, [Problem(**p) for p in d["problems"]], from_cache=True)
    except (ValueError, KeyError, TypeError):
        return None  # a damaged or foreign cache file is only a miss
