"""Pairing RGB with IR files, the one-time scan of every label, and the paired dataset.

The scan runs once at start and reports *every* problem at once, as ``FILE:LINE: what is wrong``,
so a long run never dies at step 10,000 on a label a scan could have caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from yolofuse_scale.data.config import DataConfig, DataError
from yolofuse_scale.data.transforms import hflip_pair, letterbox_pair

IMG_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_REPORTED = 20  # problems listed in full; the rest are counted


def _swap_component(path: Path, old: str, new: str) -> Path:
    parts = list(path.parts)
    for i in range(len(parts) - 1, -1, -1):  # the LAST component named `old`: nearest the file
        if parts[i] == old:
            parts[i] = new
            return Path(*parts)
    raise DataError(f"{path}: no folder named '{old}' in the path, so its partner file cannot be found")


def ir_path_for(rgb_path: Path, images_dir: str = "images", ir_dir: str = "imagesIR") -> Path:
    """IR partner of an RGB image: the last path component equal to ``images_dir`` becomes ``ir_dir``.

    A directory-component swap, never a substring replace: ``/d/images_v2/images/train/images_1.jpg``
    pairs with ``/d/images_v2/imagesIR/train/images_1.jpg``.
    """
    return _swap_component(Path(rgb_path), images_dir, ir_dir)


def label_path_for(rgb_path: Path, images_dir: str = "images") -> Path:
    """YOLO label file of an image: ``images`` -> ``labels``, suffix -> ``.txt``."""
    return _swap_component(Path(rgb_path), images_dir, "labels").with_suffix(".txt")


@dataclass(frozen=True)
class Sample:
    """One pair and its validated boxes: float32 (n, 5) rows of class, xc, yc, w, h (normalised)."""

    rgb: Path
    ir: Path
    label: Path | None
    boxes: np.ndarray


def _list_images(entry: Path, root: Path) -> list[Path]:
    """Images of one split entry: a folder (searched recursively), a ``.txt`` list, or one image."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMG_SUFFIXES and p.is_file())
    if entry.suffix == ".txt":  # a list file, paths relative to the dataset root
        try:
            text = entry.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{entry}: cannot read the image list ({e})") from e
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                # no resolve(): a symlinked image must keep its images/ component for pairing
                out.append(p if p.is_absolute() else root / p)
        return out
    if entry.suffix.lower() in IMG_SUFFIXES:
        return [entry]
    raise DataError(f"{entry}: expected an image folder, a .txt list of images, or an image")


def parse_label_file(path: Path, nc: int, problems: list[str]) -> np.ndarray:
    """Parse one YOLO label file; append ``FILE:LINE: problem`` strings; drop duplicate rows."""
    rows: list[tuple[float, ...]] = []
    seen: set[tuple[float, ...]] = set()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: unreadable label file ({e})")
        return np.zeros((0, 5), np.float32)
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 5:
            problems.append(f"{where}: expected 5 fields 'cls xc yc w h', found {len(fields)}")
            continue
        try:
            values = [float(x) for x in fields]
        except ValueError:
            problems.append(f"{where}: non-numeric value in {line.strip()!r}")
            continue
        c, xc, yc, w, h = values
        if not c.is_integer() or not 0 <= c < nc:
            problems.append(f"{where}: class id {fields[0]} is not an integer in 0..{nc - 1}")
            continue
        eps = 1e-6
        if not all(-eps <= v <= 1 + eps for v in (xc, yc, w, h)) or w <= 0 or h <= 0:
            problems.append(f"{where}: box {' '.join(fields[1:])} is not normalised to (0, 1] (w, h > 0)")
            continue
        row = (c, xc, yc, w, h)
        if row not in seen:  # LLVIP's official converter appends: reruns duplicate rows
            seen.add(row)
            rows.append(row)
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def scan_split(cfg: DataConfig, split: str) -> list[Sample]:
    """Pair every image of ``split`` with its IR file and label; validate everything; raise once.

    Samples come sorted by RGB path, so every process of a distributed run sees the same order. All
    problems (missing or empty images, missing IR partners, bad label lines as ``FILE:LINE: ...``)
    are collected and raised as one :class:`DataError`; identical duplicate label lines are dropped.
    """
    images: list[Path] = []
    for entry in cfg.split(split):
        images += _list_images(entry, cfg.root)
    if not images:
        where = ", ".join(str(p) for p in cfg.split(split))
        raise DataError(f"{cfg.yaml_path}: split '{split}' has no images (looked in {where})")
    problems: list[str] = []
    samples: list[Sample] = []
    for rgb in sorted(images):
        try:
            ir = ir_path_for(rgb, cfg.images_dir, cfg.ir_dir)
            label = label_path_for(rgb, cfg.images_dir)
        except DataError as e:
            problems.append(str(e))
            continue
        bad = False
        for p, what in ((rgb, "RGB image"), (ir, f"IR partner of {rgb}")):
            if not p.is_file():
                problems.append(f"{p}: missing {what}")
                bad = True
            elif p.stat().st_size == 0:
                problems.append(f"{p}: empty file ({what})")
                bad = True
        boxes = parse_label_file(label, cfg.nc, problems) if label.is_file() else np.zeros((0, 5), np.float32)
        if not bad:
            samples.append(Sample(rgb, ir, label if label.is_file() else None, boxes))
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{cfg.yaml_path}: {len(problems)} problem(s) in split '{split}':\n  {shown}{more}")
    return samples


def read_image(path: Path, channels: int) -> np.ndarray:
    """Read an image as (H, W, channels) uint8: RGB order for 3 channels, grayscale for 1.

    Any layout on disk is accepted (gray, gray + alpha, BGR, BGRA; 8 or 16 bit), so 1-channel
    thermal files can feed a 3-channel IR stem and vice versa. Raises :class:`DataError` if the file
    cannot be decoded.
    """
    try:
        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # some truncated files make the decoder raise instead of return None
        raise DataError(f"{path}: cannot be decoded as an image ({e})") from e
    if im is None or im.size == 0:
        raise DataError(f"{path}: cannot be decoded as an image")
    try:
        return conform_channels(im, channels, bgr=True)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from e


def stack_pair(rgb: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Stack (H, W, 3) RGB and (h, w, C_ir) IR into (H, W, 3 + C_ir); IR is resized to RGB's size if needed."""
    if ir.shape[:2] != rgb.shape[:2]:
        ir = cv2.resize(ir, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        ir = ir[..., None] if ir.ndim == 2 else ir
    return np.concatenate([rgb, ir], axis=2)


def conform_channels(im: np.ndarray, channels: int, bgr: bool = False) -> np.ndarray:
    """Bring a decoded image (gray, gray + alpha, 3- or 4-channel; 8 or 16 bit) to (H, W, channels) uint8.

    ``bgr`` says the colour order of a 3/4-channel input (OpenCV's decoders give BGR; arrays handed to
    the Python API are RGB). The output is RGB for 3 channels and grayscale for 1.
    """
    if im.dtype != np.uint8:  # 16-bit thermal TIFFs: stretch each frame's range to 8 bits
        im = cv2.normalize(im, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if im.ndim == 3 and im.shape[2] in (1, 2):  # gray or gray + alpha
        im = im[..., 0]
    elif im.ndim == 3 and im.shape[2] == 4:  # BGRA: alpha carries no scene content
        im = im[..., :3]
    if im.ndim != 2 and not (im.ndim == 3 and im.shape[2] == 3):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {im.shape}")
    if channels == 1:
        if im.ndim == 3:
            im = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(im[..., None])
    if im.ndim == 2:
        return np.repeat(im[..., None], 3, axis=2)
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(im)


class PairedRGBIRDataset(Dataset):
    """RGB + IR pairs as one stacked uint8 tensor ``(3 + ir_channels, imgsz, imgsz)``, RGB first.

    Augmentation (``augment=True``: horizontal flip with probability ``hflip``) draws from
    ``np.random.default_rng((seed, epoch, index))`` only, never from a global or per-worker RNG, so
    the same sample looks the same whatever the worker count, world size or resume point.
    """

    def __init__(
        self,
        samples: list[Sample],
        imgsz: int,
        augment: bool,
        ir_channels: int = 3,
        hflip: float = 0.5,
        seed: int = 0,
    ):
        if ir_channels not in (1, 3):
            raise ValueError(f"ir_channels must be 1 or 3, got {ir_channels}")
        if imgsz <= 0:
            raise ValueError(f"imgsz must be positive, got {imgsz}")
        self.samples, self.imgsz, self.augment = samples, imgsz, augment
        self.ir_channels, self.hflip, self.seed = ir_channels, hflip, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws ``__getitem__`` makes (no effect without augment)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.samples)

    def load_pair(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The stacked (H, W, 3 + C_ir) pair at its original size (IR resized to RGB's if they differ)."""
        s = self.samples[index]
        rgb = read_image(s.rgb, 3)
        return stack_pair(rgb, read_image(s.ir, self.ir_channels)), rgb.shape[:2]

    def __getitem__(self, index: int) -> dict:
        """The letterboxed (and, when augmenting, maybe flipped) pair with its targets.

        ``img`` is uint8 ``(3 + ir_channels, imgsz, imgsz)``, R, G, B then IR; ``bboxes`` are xywh
        normalised to that canvas; ``ratio_pad`` is ``((r, r), (padw, padh))`` for ``scale_boxes``.
        """
        pair, ori_shape = self.load_pair(index)
        boxes = self.samples[index].boxes
        img, xywh, ratio_pad = letterbox_pair(pair, boxes[:, 1:], self.imgsz)
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            if rng.random() < self.hflip:
                img, xywh = hflip_pair(img, xywh)
        return {
            "img": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "cls": torch.from_numpy(boxes[:, :1].copy()),
            "bboxes": torch.from_numpy(xywh.astype(np.float32)),
            "im_file": str(self.samples[index].rgb),
            "ir_file": str(self.samples[index].ir),
            "ori_shape": ori_shape,
            "ratio_pad": ratio_pad,
            "index": index,
        }


def collate_pairs(batch: list[dict]) -> dict:
    """Stack images; concatenate targets with ``batch_idx`` (the format ``v8DetectionLoss`` reads)."""
    return {
        "img": torch.stack([b["img"] for b in batch]),
        "cls": torch.cat([b["cls"] for b in batch]),
        "bboxes": torch.cat([b["bboxes"] for b in batch]),
        "batch_idx": torch.cat([torch.full((len(b["cls"]),), float(i)) for i, b in enumerate(batch)]),
        "im_file": [b["im_file"] for b in batch],
        "ir_file": [b["ir_file"] for b in batch],
        "ori_shape": [b["ori_shape"] for b in batch],
        "ratio_pad": [b["ratio_pad"] for b in batch],
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
    }
