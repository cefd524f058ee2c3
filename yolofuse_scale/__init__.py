"""yolofuse-scale: RGB + infrared fusion YOLO detectors trained at any scale."""

from __future__ import annotations

from yolofuse_scale import _offline  # noqa: F401  (must run before Ultralytics is imported)

__version__ = "0.1.0"
