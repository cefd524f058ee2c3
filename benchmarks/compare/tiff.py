"""The comparison's data: a paired set as the 4-channel TIFFs Ultralytics' own trainer reads, and a copy
of the paired data.yaml with absolute paths and the IR channel count a comparison needs."""

from __future__ import annotations

import shutil
from pathlib import Path


def write_tiff_dataset(data_yaml: str | Path, out: str | Path) -> Path:
    """Convert a paired dataset (our/YOLOFuse layout) into 4-channel TIFFs Ultralytics trains on.

    Writes ``out/images/{train,val}/<stem>.tiff`` holding R, G, B, IR (IR as one grayscale channel,
    decoded exactly as our loader decodes it for ``ir_channels: 1``), ``out/labels/{train,val}/<stem>.txt``
    (the pair's label file, copied byte for byte; none for a pair without one, as in the source) and
    ``out/data.yaml`` with ``channels: 4``. Returns the path of that YAML.

    The array is written with ``cv2.imwrite``, which stores a 4-channel array as BGRA -> RGBA on disk and
    hands back the same array order on ``IMREAD_UNCHANGED``, the flag Ultralytics reads multi-channel
    images with; its ``Format`` reverses channels only for 3-channel images, so its model gets R, G, B, IR.
    """
    import cv2
    import numpy as np
    import yaml

    from yolofuse_scale.data import load_data_config, scan_split
    from yolofuse_scale.data.decode import read_image

    cfg = load_data_config(data_yaml)
    out = Path(out)
    for split in ("train", "val"):
        images, labels = out / "images" / split, out / "labels" / split
        for d in (images, labels):
            if d.exists():
                shutil.rmtree(d)  # a rerun on another source must not keep stale files
            d.mkdir(parents=True)
        seen: dict[str, Path] = {}
        for s in scan_split(cfg, split):
            stem = s.rgb.stem
            if stem in seen:  # one flat folder per split: two sources with one stem would overwrite
                raise ValueError(f"{s.rgb} and {seen[stem]} share the file stem {stem!r}; rename one")
            seen[stem] = s.rgb
            rgb, ir = read_image(s.rgb, 3), read_image(s.ir, 1)
            if ir.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"{s.rgb}: RGB {rgb.shape[:2]} and IR {ir.shape[:2]} differ in size")
            if not cv2.imwrite(str(images / f"{stem}.tiff"), np.concatenate([rgb, ir], axis=2)):
                raise OSError(f"cannot write {images / f'{stem}.tiff'}")
            if s.label is not None and s.label.is_file():
                shutil.copyfile(s.label, labels / f"{stem}.txt")
    spec = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "nc": cfg.nc,
            "names": dict(cfg.names), "channels": 4}
    path = out / "data.yaml"
    path.write_text("# 4-channel (R, G, B, IR) TIFF copy for Ultralytics' own trainer\n"
                    + yaml.safe_dump(spec, sort_keys=False))
    return path


def paired_yaml(data_yaml: Path, out: Path, ir_channels: int) -> Path:
    """A copy of the paired data.yaml with absolute paths and the IR channel count the comparison needs."""
    import yaml

    from yolofuse_scale.data import load_data_config

    cfg = load_data_config(data_yaml)
    spec = {"path": str(cfg.root), "train": [str(p) for p in cfg.train], "val": [str(p) for p in cfg.val],
            "names": dict(cfg.names), "ir_dir": cfg.ir_dir, "ir_channels": ir_channels}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out
