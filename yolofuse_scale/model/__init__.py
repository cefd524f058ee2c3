"""Fusion detectors built from Ultralytics modules. Imports nothing distributed."""

from yolofuse_scale.model.detector import (
    FusionDetectionModel,
    build_model,
    load_model_dict,
    model_from_config,
    model_summary,
    use_one_to_one_head,
)
from yolofuse_scale.model.safe_config.limits import ModelConfigError
from yolofuse_scale.model.variants import FAMILIES, FUSIONS, SCALES, fusion_yaml

__all__ = [
    "FAMILIES",
    "FUSIONS",
    "SCALES",
    "FusionDetectionModel",
    "ModelConfigError",
    "build_model",
    "fusion_yaml",
    "load_model_dict",
    "model_from_config",
    "model_summary",
    "use_one_to_one_head",
]
