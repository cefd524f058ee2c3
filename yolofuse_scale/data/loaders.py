"""The loader seam: for the chosen ``--loader``, what a loop needs of a split, decided here and nowhere else.

A :class:`Feed` is the dataset, the DataLoader's ``collate_fn`` and ``to_device``, the step that turns a collated
batch into the one the model reads (``img`` uint8 ``(B, 3 + C_ir, imgsz, imgsz)`` on the device). The trainer and
``val`` build their loaders from it and call ``to_device`` on every batch; neither knows which pipeline runs:

==========  ==============================================  ==================================================
``loader``  training                                        validation
==========  ==============================================  ==================================================
``cpu``     workers decode (buffered) and augment with       workers decode and letterbox with OpenCV;
            OpenCV (``dataset.py``); ``to_device`` moves     ``to_device`` moves ``img`` (targets stay on the
            the batch                                        host, where ``evaluate`` indexes them)
``device``  workers draw plans and ship files                workers ship files and letterbox plans;
            (``device/worker.py``); ``to_device`` decodes    ``to_device`` decodes and letterboxes on the device
            and renders on the device (``device/render.py``)  (targets stay on the host)
==========  ==============================================  ==================================================

A new loader is one entry of ``LOADERS``: a class with ``train`` and ``val`` giving a :class:`Feed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset

from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.data.dataset import PairedRGBIRDataset, collate_pairs
from yolofuse_scale.data.device import DeviceAugment, DeviceLetterbox, EncodedPairDataset, collate_encoded
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.data.sampler import MicroBatchWindows


@dataclass(frozen=True)
class Feed:
    """What a loop needs of one split under one loader (see the module docstring)."""

    dataset: Dataset
    collate: Callable[[list[dict]], dict]
    to_device: Callable[[dict], dict]


def move_batch(batch: dict, device: torch.device) -> dict:
    """Every tensor of a batch to ``device`` (training: the loss reads the targets there)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def move_images(batch: dict, device: torch.device) -> dict:
    """``img`` to ``device``, the targets left on the host (validation: ``evaluate`` indexes them there)."""
    return {**batch, "img": batch["img"].to(device, non_blocking=True)}


class CpuLoader:
    """``--loader cpu``: DataLoader workers decode and augment (``dataset.py``)."""

    @staticmethod
    def train(samples: list[Sample], imgsz: int, ir_channels: int, device: torch.device | str, **draw) -> Feed:
        return Feed(PairedRGBIRDataset(samples, imgsz, ir_channels=ir_channels, **draw), collate_pairs,
                    partial(move_batch, device=torch.device(device)))

    @staticmethod
    def val(samples: list[Sample], imgsz: int, ir_channels: int, device: torch.device | str) -> Feed:
        return Feed(PairedRGBIRDataset(samples, imgsz, augment=False, ir_channels=ir_channels), collate_pairs,
                    partial(move_images, device=torch.device(device)))


class DeviceLoader:
    """``--loader device``: workers draw and ship files, the training device decodes and renders (``device/``)."""

    @staticmethod
    def train(samples: list[Sample], imgsz: int, ir_channels: int, device: torch.device | str, **draw) -> Feed:
        return Feed(EncodedPairDataset(samples, imgsz, ir_channels=ir_channels, **draw), collate_encoded,
                    DeviceAugment(imgsz, ir_channels, device))

    @staticmethod
    def val(samples: list[Sample], imgsz: int, ir_channels: int, device: torch.device | str) -> Feed:
        return Feed(EncodedPairDataset(samples, imgsz, augment=False, ir_channels=ir_channels), collate_encoded,
                    DeviceLetterbox(imgsz, ir_channels, device))


#: ``--loader``'s choices (``config.DataConfig.loader`` lists the same names).
LOADERS = {"cpu": CpuLoader, "device": DeviceLoader}


def _kind(loader: str):
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {', '.join(LOADERS)}, got {loader!r}")
    return LOADERS[loader]


def training_feed(loader: str, samples: list[Sample], *, imgsz: int, ir_channels: int, device: torch.device | str,
                  augment: bool = True, recipe: AugmentRecipe | None = None, seed: int = 0, epochs: int | None = None,
                  batch_size: int = 16, shuffle: bool = True, cache: str = "none",
                  cache_folders: list[Path] | tuple[Path, ...] = (), log=print, build_log=None) -> Feed:
    """The training split's :class:`Feed`. ``batch_size`` and ``shuffle`` must be the training sampler's: mosaic
    partners are drawn from pools cut from its micro-batches (``sampler.MicroBatchWindows``). ``cache``
    (``--cache``): the pair cache, opened or built (every process: the first to take its lock builds it, the
    others wait; no collective), in the first writable of ``cache_folders`` (``ram``: /dev/shm); ``build_log``: the
    builder's line (``cache.open_pair_cache``)."""
    windows = MicroBatchWindows(len(samples), batch_size, seed, shuffle)
    feed = _kind(loader).train(samples, imgsz, ir_channels, device, augment=augment, seed=seed, recipe=recipe,
                               epochs=epochs, partner_windows=windows)
    feed.dataset.use_cache(cache, cache_folders, log, build_log)
    return feed


def validation_feed(loader: str, samples: list[Sample], imgsz: int, ir_channels: int,
                    device: torch.device | str) -> Feed:
    """A validation split's :class:`Feed` (letterbox only; never cached, with either loader: ``cache.py``)."""
    return _kind(loader).val(samples, imgsz, ir_channels, device)
