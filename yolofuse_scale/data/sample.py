"""One scanned pair: its files, its validated boxes and what the scan read of its headers.

Its own module, on the floor below the scan: the readers of a pair (``decode.py``, ``cache.py``, ``levels.py``, the
loaders) need the record, not the scan that makes it (``scan/`` imports them back for the percentile levels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolofuse_scale.data.config import IRRead


@dataclass(frozen=True)
class Sample:
    """One pair and its validated boxes: float32 (n, 5) rows of class, xc, yc, w, h (normalised); with ``task:
    obb``, (n, 9) rows of class and four corners (``labels.py`` reads either). With labels of the IR image's own
    (``labels_ir``), ``boxes`` are those the split's ``label_policy`` chose (``modality.py``)."""

    rgb: Path
    ir: Path
    label: Path | None
    boxes: np.ndarray
    hw: tuple[int, int] | None = None  #: (height, width) as displayed (EXIF orientation applied), from the header
    formats: tuple[str, str] | None = None  #: (RGB, IR) format by content (``imagefile.PIL_FORMATS``' names)
    label_ir: Path | None = None  #: the IR image's own label file (``labels_ir``), when it has one
    #: (RGB boxes, IR boxes, matched, kept) with ``labels_ir`` (``modality.LabelCounts``), else None
    label_counts: tuple[int, int, int, int] | None = None
    ir_bits: int | None = None  #: bits per IR sample from the header: 8, 16, or 32 (float or 32-bit integer)
    ir_hw: tuple[int, int] | None = None  #: the IR frame's (height, width) as displayed (``hw`` unless registered)
    #: how the IR file is read beyond decoding (data.yaml's ``ir_mapping``, ``ir_homography``), attached by
    #: :func:`scan_dataset` (a percentile mapping with its levels resolved): every reader of a sample applies it
    ir_read: IRRead = field(default_factory=IRRead)
