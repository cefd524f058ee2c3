"""``--loader device``: the workers draw the recipe into plans and ship files (``worker.py``); the plans are image
trees that render themselves (``plan.py``); the training device decodes and renders whole batches (``render.py``).
``data/loaders.py`` chooses this package or ``data/dataset.py``; nothing else needs to."""

from yolofuse_scale.data.device.render import DeviceAugment, DeviceLetterbox
from yolofuse_scale.data.device.worker import EncodedPairDataset, collate_encoded

__all__ = ["DeviceAugment", "DeviceLetterbox", "EncodedPairDataset", "collate_encoded"]
