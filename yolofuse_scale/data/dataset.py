"""``--loader cpu``'s dataset: a scanned pair decoded, augmented (or letterboxed) and stacked, in a DataLoader worker.

Which pairs exist and whether they are sound is decided beforehand by ``scan/``; how files become pixels is
``decode.py``; the label dict and the targets are ``labels.py`` (shared with ``--loader device``, whose workers
draw the same recipe, ``device/worker.py``); which loader a run uses is chosen in ``loaders.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, default_collate

from yolofuse_scale.data.augment import AugmentRecipe, PairAugment, SampleDraw
from yolofuse_scale.data.buffer import BUFFER_BYTES, DecodedPairBuffer
from yolofuse_scale.data.cache import PairCache, open_training_cache
from yolofuse_scale.data.decode import check_pair_args, decode_pair, decode_resized
from yolofuse_scale.data.labels import (
    augmented_targets,
    collate_targets,
    item_targets,
    label_dict,
    letterbox_targets,
    oriented,
)
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.sampler import MicroBatchWindows
from yolofuse_scale.data.transforms import chw_tensor, letterbox_image


class PairedRGBIRDataset(Dataset):
    """RGB + IR pairs as one stacked uint8 tensor ``(3 + ir_channels, imgsz, imgsz)``, RGB first.

    ``augment=False`` (validation, ``--no-augment``): letterbox only. ``augment=True``: the YOLOv8
    recipe of ``augment.py`` (mosaic, random perspective, mixup, HSV on RGB, IR gain, flip), with
    mosaic off in the last ``recipe.close_mosaic`` of ``epochs``. Its randomness is a function of
    ``(seed, epoch, index)`` only (``augment.SampleDraw``), so a sample looks the same whatever the worker
    count, world size or resume point. ``partner_windows``: the sampler's micro-batches, where the recipe's
    ``mosaic_partners`` pools are cut from (None: partners from the whole set).

    Training reads pairs through a per-process buffer of decoded pairs (``buffer.py``): the same arrays a
    decode gives, decoded once while they are in it.
    """

    def __init__(
        self,
        samples: list[Sample],
        imgsz: int,
        augment: bool,
        ir_channels: int = 3,
        seed: int = 0,
        recipe: AugmentRecipe | None = None,
        epochs: int | None = None,
        partner_windows: MicroBatchWindows | None = None,
    ):
        check_pair_args(imgsz, ir_channels)
        self.samples, self.imgsz, self.augment, self.ir_channels = samples, imgsz, augment, ir_channels
        self.draw = SampleDraw(seed, recipe, epochs, partner_windows)
        self.recipe = self.draw.recipe
        obb = bool(samples) and oriented(samples[0].boxes)
        self.pipeline = PairAugment(self.resized_labels, len(samples), imgsz, self.recipe, obb=obb) if augment else None
        self.cache: PairCache | None = None
        pool = partner_windows.pool_size if partner_windows is not None else 0
        self.buffer = DecodedPairBuffer(BUFFER_BYTES, min_items=pool) if augment else None

    @property
    def epoch(self) -> int:
        return self.draw.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws ``__getitem__`` makes (no effect without augment).

        Call it before iterating the epoch's loader: workers read it when they build each sample.
        """
        self.draw.set_epoch(epoch)

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.samples)

    def load_pair(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The stacked (H, W, 3 + C_ir) pair at its original size."""
        return decode_pair(self.samples[index], self.ir_channels)

    def use_cache(self, mode: str, folders: list[Path] | tuple[Path, ...], log=print, build_log=None) -> None:
        """Read pairs from the node's shared decoded-pair cache (``ram`` or ``disk``; see ``cache.py``),
        building it first if no process has. Training sets only: cached pairs are resized, so the
        ``ratio_pad`` of a letterboxed item no longer maps to the original image."""
        self.cache = None  # build from the decoder itself
        self.cache = open_training_cache(mode, folders, self.samples, self.imgsz, self.ir_channels,
                                         self._decode_resized, log, build_log)

    def resized_pair(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The stacked pair resized so its long side is ``imgsz``, and its original (h, w)."""
        if self.buffer is None or self.cache is not None:
            return self._decode_resized(index)
        return self.buffer.get(index, self._decode_resized)

    def _decode_resized(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self.cache is not None:
            return self.cache.get(index)
        return decode_resized(self.samples[index], self.imgsz, self.ir_channels)

    def resized_labels(self, index: int) -> dict:
        """Ultralytics' label dict of a pair, resized so its long side is ``imgsz`` (as its ``load_image``)."""
        pair, ori = self.resized_pair(index)
        return label_dict(self.samples[index], pair, ori)

    def __getitem__(self, index: int) -> dict:
        """The pair (letterboxed, or augmented) with its targets.

        ``img`` is uint8 ``(3 + ir_channels, imgsz, imgsz)``, R, G, B then IR; ``bboxes`` are xywh
        normalised to that canvas (oriented boxes: xywh and the angle, ``labels.py``); ``ratio_pad`` is
        ``((r, r), (padw, padh))`` for ``scale_boxes`` (identity for an augmented sample, whose boxes do not map back
        to one original).
        """
        sample = self.samples[index]
        if self.pipeline is None:
            pair, ori_shape = self.load_pair(index) if self.cache is None else self.cache.get(index)
            place, xywh, cls, ratio_pad = letterbox_targets(sample, pair.shape[:2], self.imgsz)
            img = letterbox_image(pair, *place, self.imgsz)
        else:
            labels = self.pipeline(self.resized_labels(index), *self.draw(index))
            img = labels["img"]
            xywh, cls, ori_shape, ratio_pad = augmented_targets(labels)
        return {"img": chw_tensor(img), **item_targets(sample, index, xywh, cls, ori_shape, ratio_pad)}


def collate_pairs(batch: list[dict]) -> dict:
    """Stack images; concatenate targets with ``batch_idx`` (the format ``v8DetectionLoss`` reads)."""
    # torch's default collate of a tensor list: in a worker it stacks straight into shared memory,
    # saving a second copy of the batch (26 MB at 640 px, batch 16) on its way to the main process
    return {"img": default_collate([b["img"] for b in batch]), **collate_targets(batch)}
