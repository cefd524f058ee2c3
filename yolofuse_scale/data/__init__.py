"""Paired RGB+IR data: data.yaml, pairing and label scan, the loaders (chosen in loaders.py), transforms, sampler,
synthetic set."""

from yolofuse_scale.data.config import DataError, DatasetSpec
from yolofuse_scale.data.data_yaml import load_data_config
from yolofuse_scale.data.dataset import PairedRGBIRDataset, collate_pairs
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.scan import ScanResult, scan_dataset, scan_split
from yolofuse_scale.data.scan.listing import ir_path_for, label_path_for
from yolofuse_scale.data.synth import write_synthetic_dataset

__all__ = [
    "DatasetSpec",
    "DataError",
    "PairedRGBIRDataset",
    "Sample",
    "ScanResult",
    "collate_pairs",
    "ir_path_for",
    "label_path_for",
    "load_data_config",
    "scan_dataset",
    "scan_split",
    "write_synthetic_dataset",
]
