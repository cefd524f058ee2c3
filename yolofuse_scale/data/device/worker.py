"""``--loader device``, the workers: per sample a plan (``plan.py``), its targets and the files it reads; no pixel work.

Why: on a GPU box the CPU recipe (JPEG decodes, a 1280x1280 mosaic, one warp and an HSV round trip per sample,
~20 ms a sample on one core) needs many workers to keep a fast model fed. Here a worker only draws: the plan and
the targets are those ``dataset.PairedRGBIRDataset`` (same arguments) gives for the same ``(seed, epoch,
index)``, drawn by the same pipeline from the same label dict (``labels.py``) with the recording transforms; so
the boxes of a sample are equal in both pipelines, and its pixels differ only by interpolation (cv2's
fixed-point bilinear vs ``grid_sample``; JPEGs are decoded at full size here, where the CPU path lets libjpeg
decode at 1/2-1/8) and the HSV arithmetic (cv2's uint8 HSV vs float).

For every pair the plan reads (the sample and its partners) a worker ships, without ``--cache``: the encoded
bytes of its RGB and IR files (uint8 tensors) when they are 8-bit gray or RGB(A) JPEGs or PNGs by content, which
torchvision decodes to OpenCV's pixels, with their EXIF orientation (``imagefile.py``: read from the bytes the
worker holds anyway); every other file (palette or 16-bit PNG, CMYK JPEG, WebP, TIFF, BMP) is decoded by the
worker with the CPU loader's own ``decode.decode_bytes``, so rare layouts cost worker time, never a difference
(a 16-bit IR frame is mapped there by data.yaml's ``ir_mapping``, as the CPU loader maps it; an IR frame of a rig
with an ``ir_homography`` is decoded and registered there, ``decode.read_ir``, and shipped at RGB's size);
with ``--cache ram|disk``: the cached pair itself, decoded and resized so its long side is imgsz (``cache.py``:
the same file, key and builder as ``--loader cpu --cache``, so either loader reuses the other's cache), copied out
of the mapping as one ``(H, W, 3 + C_ir)`` uint8 tensor. It costs bandwidth, not compute: a 640x512 RGB+IR pair
is 2 MB of uint8, several times its JPEGs, on the way to the main process and to the device (never floats).

Validation ships each sample's two encoded files and a ``Letterbox`` plan (the CPU path's geometry, from the
scan's header size) with the CPU val batch's targets; the val set is never cached, with either loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from yolofuse_scale.data.augment import PairAugment, SampleDraw
from yolofuse_scale.data.cache import PairCache, open_training_cache
from yolofuse_scale.data.config import DataError, IRMapping
from yolofuse_scale.data.decode import check_pair_args, decode_bytes, decode_resized, header_hw, read_ir, resized_hw
from yolofuse_scale.data.device.plan import RECORDING, Letterbox, Plan, Source, shape_only
from yolofuse_scale.data.imagefile import layout, read_bytes
from yolofuse_scale.data.labels import (
    augmented_targets,
    collate_targets,
    item_targets,
    label_dict,
    letterbox_targets,
    oriented,
)
from yolofuse_scale.data.sample import Sample


def encoded_file(path: Path, channels: int, mapping: IRMapping | None = None) -> tuple[str, torch.Tensor, str, int]:
    """``("jpeg" | "encoded", file bytes, path, EXIF orientation)`` for a plain JPEG or PNG by content (see
    ``imagefile.Layout``), else ``("raw", HWC uint8 upright, path, 1)`` decoded here by the CPU loader's code
    (``mapping``: an IR file's ``ir_mapping``, for frames deeper than 8 bits, which are never plain)."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    head = layout(data)  # a few segment or chunk headers of the bytes just read
    if head.plain:
        kind = "jpeg" if head.fmt == "jpeg" else "encoded"
        return kind, torch.frombuffer(data, dtype=torch.uint8), str(path), head.orientation
    return "raw", torch.from_numpy(decode_bytes(data, channels, path, mapping=mapping)), str(path), 1


class EncodedPairDataset(Dataset):
    """The dataset of ``--loader device``: items are plans, targets and encoded files (see the module doc).

    Takes ``dataset.PairedRGBIRDataset``'s arguments and gives, for the same ``(seed, epoch, index)``, its draws
    and targets; ``set_epoch``, the partner windows and ``use_cache`` work as there.
    """

    def __init__(self, samples: list[Sample], imgsz: int, augment: bool, ir_channels: int = 3, **draw):
        """``draw``: ``seed``, ``recipe``, ``epochs``, ``partner_windows``, as ``PairedRGBIRDataset``'s."""
        check_pair_args(imgsz, ir_channels)
        self.samples, self.imgsz, self.augment, self.ir_channels = samples, imgsz, augment, ir_channels
        self.draw = SampleDraw(**draw)
        self.recipe = self.draw.recipe
        self.pipeline = (PairAugment(self.planned_labels, len(samples), imgsz, self.recipe, RECORDING,
                                     obb=bool(samples) and oriented(samples[0].boxes))
                         if augment else None)
        self.cache: PairCache | None = None

    def set_epoch(self, epoch: int) -> None:
        """As ``PairedRGBIRDataset.set_epoch``."""
        self.draw.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def use_cache(self, mode: str, folders: list[Path] | tuple[Path, ...], log=print, build_log=None) -> None:
        """As ``PairedRGBIRDataset.use_cache``: the same key, file and builder (OpenCV), so a cache written by
        either loader serves both, and a sample's source pixels are the CPU pipeline's bit for bit."""
        self.cache = open_training_cache(mode, folders, self.samples, self.imgsz, self.ir_channels,
                                         lambda i: decode_resized(self.samples[i], self.imgsz, self.ir_channels), log,
                                         build_log)

    def source_shapes(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((h, w) of the pair the recipe starts from, its original (h, w)): the cached pair's when there is a
        cache, else what ``decode.decode_resized`` would give, from the header size alone."""
        if self.cache is not None:
            h, w = self.cache.shapes[index][:2]
            return (h, w), tuple(self.cache.ori_shapes[index])
        s = self.samples[index]
        hw = resized_hw(s, self.imgsz)
        return hw, s.hw or hw

    def planned_labels(self, index: int) -> dict:
        """The CPU path's ``resized_labels`` without the pixels: a shape-only image and the plan leaf of the pair."""
        (h, w), ori = self.source_shapes(index)
        img = shape_only(h, w, 3 + self.ir_channels)
        return label_dict(self.samples[index], img, ori, plan=Source(index, (h, w)))

    def plan(self, index: int) -> tuple[Plan, np.ndarray, np.ndarray, tuple, tuple]:
        """(plan, xywh, cls, ori_shape, ratio_pad) of a sample, as ``PairedRGBIRDataset[index]`` has them."""
        s = self.samples[index]
        if self.pipeline is None:  # with a cache, the CPU path letterboxes the cached (resized) pair too
            hw, ori = self.source_shapes(index) if self.cache is not None else (s.hw or header_hw(s.rgb),) * 2
            place, xywh, cls, ratio_pad = letterbox_targets(s, hw, self.imgsz)
            return Plan(Letterbox(index, hw, *place, self.imgsz)), xywh, cls, ori, ratio_pad
        labels = self.pipeline(self.planned_labels(index), *self.draw(index))
        xywh, cls, ori_shape, ratio_pad = augmented_targets(labels)
        return Plan(labels["plan"], labels.get("photometric", {})), xywh, cls, ori_shape, ratio_pad

    def __getitem__(self, index: int) -> dict:
        plan, xywh, cls, ori_shape, ratio_pad = self.plan(index)
        plan.sources = sorted(set(plan.root.sources()))
        files = {i: self.payload(i) for i in plan.sources}
        return {"plan": plan, "files": files, **item_targets(self.samples[index], index, xywh, cls, ori_shape,
                                                             ratio_pad)}

    def payload(self, i: int) -> tuple:
        """What a worker ships for pair ``i``: ``("frame", (H, W, 3 + C_ir) uint8, path)``, the cached decoded
        pair (already resized: the device neither decodes nor resizes it), or the two encoded files."""
        s = self.samples[i]
        if self.cache is not None:  # a copy out of the read-only mapping: it travels to the main process
            return "frame", torch.from_numpy(np.array(self.cache.get(i)[0])), str(s.rgb)
        if s.ir_read.homography is not None:  # registered here, by the CPU code, at RGB's displayed size
            return encoded_file(s.rgb, 3), ("raw", torch.from_numpy(read_ir(s, self.ir_channels)), str(s.ir), 1)
        return encoded_file(s.rgb, 3), encoded_file(s.ir, self.ir_channels, s.ir_read.mapping)


def collate_encoded(batch: list[dict]) -> dict:
    """``collate_pairs``' targets; plans as a list; the files of every pair the batch reads, once each."""
    files: dict[int, tuple] = {}
    for b in batch:
        files.update(b["files"])
    return {"plans": [b["plan"] for b in batch], "files": files, **collate_targets(batch)}
