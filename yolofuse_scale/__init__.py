"""yolofuse-scale: RGB + infrared fusion YOLO detectors trained at any scale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yolofuse_scale import _offline  # noqa: F401  (must run before Ultralytics is imported)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from yolofuse_scale.api import FusionYOLO
    from yolofuse_scale.inference import Detections, FusionDetector

# Lazy: `import yolofuse_scale` stays a few milliseconds (no torch, no Ultralytics) until the API is used.
_LAZY = {"FusionDetector": "yolofuse_scale.inference", "Detections": "yolofuse_scale.inference",
         "FusionYOLO": "yolofuse_scale.api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolofuse_scale' has no attribute {name!r}")


__all__ = ["Detections", "FusionDetector", "FusionYOLO", "__version__"]
