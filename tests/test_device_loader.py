"""``--loader device``: plans drawn by the CPU recipe's own composition, decoded and rendered with torch ops.

Boxes must equal the CPU pipeline's for the same (seed, epoch, index); pixels may differ by interpolation
(cv2's fixed-point bilinear vs ``grid_sample``), the HSV arithmetic and, for JPEGs, libjpeg's reduced decode.
Everything runs on CPU tensors here; ``benchmarks/gpu_session.sh`` times the CUDA path.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from ultralytics.data.augment import RandomHSV

from tests.helpers import launch
from yolofuse_scale.config import DataConfig
from yolofuse_scale.data import (
    DataError,
    PairedRGBIRDataset,
    collate_pairs,
    load_data_config,
    scan_split,
    write_synthetic_dataset,
)
from yolofuse_scale.data.augment import AugmentRecipe, _IRGain, _IRMisregister, seeded_global_rngs
from yolofuse_scale.data.decode import jpeg_reduction
from yolofuse_scale.data.device import DeviceAugment, DeviceLetterbox, EncodedPairDataset, collate_encoded
from yolofuse_scale.data.device import render as device_render
from yolofuse_scale.data.device.plan import Blend, Plan, Source, Warp, hsv_jitter
from yolofuse_scale.data.loaders import move_images, training_feed, validation_feed
from yolofuse_scale.data.transforms import letterbox_pair

S = 64
#: every transform on, the IR misregistration included (so every recipe below but the default compares it too)
FULL = AugmentRecipe(mixup=0.5, degrees=10, shear=4, ir_gain=0.3, ir_shift=0.05, ir_scale=0.05, ir_rotate=5)
RECIPES = {
    "default": AugmentRecipe(),
    "full": FULL,
    "perspective": replace(FULL, perspective=0.001, mosaic=0.5),
    "micro_batch": replace(FULL, mosaic_partners="micro_batch"),
    "dataset": replace(FULL, mosaic_partners="dataset"),
}


@pytest.fixture(scope="module")
def png_set(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("dev_png"), n_train=8, n_val=1, imgsz=128, seed=0)


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory) -> Path:
    """Odd-sized JPEG frames (130 x 162): the CPU path decodes them at 1/2, and libjpeg rounds the sides up."""
    data = write_synthetic_dataset(tmp_path_factory.mktemp("dev_jpeg"), n_train=8, n_val=1, imgsz=130, seed=0)
    for png in sorted(data.parent.glob("images*/*/*.png")):
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
        png.unlink()
    return data


def _both(data: Path, augment: bool, recipe: AugmentRecipe, epoch: int = 0, seed: int = 1, n: int = 8,
          cache: Path | None = None):
    """The CPU pipeline's batch and the device pipeline's batch (rendered on CPU tensors) of the same items, each
    from its loader's training feed (data/loaders.py) as the trainer builds it (micro-batches of 4 for the
    partner pools; 15 epochs: mosaic on, close_mosaic 10); ``cache``: both read the pair cache (``--cache disk``)
    in that folder."""
    cfg = load_data_config(data)
    samples = scan_split(cfg, "train")
    kw = {"imgsz": S, "ir_channels": cfg.ir_channels, "device": "cpu", "augment": augment, "seed": seed,
          "recipe": recipe, "epochs": 15, "batch_size": 4, "shuffle": True, "log": lambda _m: None,
          "cache": "none" if cache is None else "disk", "cache_folders": [cache]}
    cpu, dev = training_feed("cpu", samples, **kw), training_feed("device", samples, **kw)
    assert type(cpu.dataset) is PairedRGBIRDataset and isinstance(dev.dataset, EncodedPairDataset)
    out = []
    for feed in (cpu, dev):
        feed.dataset.set_epoch(epoch)
        out.append(feed.to_device(feed.collate([feed.dataset[i] for i in range(n)])))
    return *out, samples


def test_letterbox_matches_the_cpu_pipeline_and_boxes_are_equal(png_set, jpeg_set):
    for data in (png_set, jpeg_set):
        a, b, _ = _both(data, augment=False, recipe=AugmentRecipe())
        assert b["img"].dtype == torch.uint8 and b["img"].shape == a["img"].shape
        assert torch.equal(a["bboxes"], b["bboxes"]) and torch.equal(a["cls"], b["cls"])
        assert torch.equal(a["batch_idx"], b["batch_idx"]) and a["ratio_pad"] == b["ratio_pad"]
        d = (a["img"].float() - b["img"].float()).abs()
        assert d.max() <= 1 and d.mean() < 0.2, (d.max(), d.mean())  # both bilinear; cv2 rounds in fixed point


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_full_recipe_draws_and_boxes_equal_the_cpu_pipeline(png_set, jpeg_set, name):
    """Same (seed, epoch, index): the same partners, matrices and flips, so the same boxes, exactly."""
    for data, tol in ((png_set, 0.6), (jpeg_set, 2.5)):  # JPEG: libjpeg's 1/2 decode vs full decode + resize
        a, b, samples = _both(data, augment=True, recipe=RECIPES[name])
        if data is jpeg_set:
            assert jpeg_reduction(samples[0], S) == 2  # the reduced-decode geometry is what is compared
        assert len(a["bboxes"]) > 0
        assert torch.equal(a["bboxes"], b["bboxes"]) and torch.equal(a["cls"], b["cls"])
        assert torch.equal(a["batch_idx"], b["batch_idx"])
        d = (a["img"].float() - b["img"].float()).abs()
        assert d.mean() < tol, (name, data, d.mean())


def _frame(png_set: Path) -> np.ndarray:
    cfg = load_data_config(png_set)
    ds = PairedRGBIRDataset(scan_split(cfg, "train"), 128, augment=False, ir_channels=cfg.ir_channels)
    return ds.load_pair(0)[0]  # (128, 160, 4) uint8, RGB + IR


def _warp(dev: DeviceAugment, x: torch.Tensor, matrix: np.ndarray, size: tuple[int, int],
          perspective: bool) -> torch.Tensor:
    """One (C, H, W) image warped by the device renderer as a plan warps a pair (a leaf of the image's own size)."""
    return dev.render(Warp(Source(0, tuple(x.shape[1:])), matrix, size, perspective), {0: x})


def _matrix(perspective: float) -> np.ndarray:
    c = np.array([[1, 0, -80], [0, 1, -64], [0, 0, 1.0]])
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D(angle=12, center=(0, 0), scale=0.8)
    sh = np.array([[1, np.tan(np.radians(5)), 0], [0, 1, 0], [0, 0, 1.0]])
    p = np.array([[1, 0, 0], [0, 1, 0], [perspective, -perspective / 2, 1.0]])
    t = np.array([[1, 0, 70], [0, 1, 60], [0, 0, 1.0]])
    return t @ sh @ r @ p @ c


@pytest.mark.parametrize("perspective", [0.0, 0.002])
def test_warp_matches_cv2_for_the_same_matrix(png_set, perspective):
    img = _frame(png_set)
    m = _matrix(perspective)
    size = (S * 2, S * 2)
    if perspective:
        ref = cv2.warpPerspective(img, m, dsize=size, borderValue=(114, 114, 114, 114))
    else:
        ref = cv2.warpAffine(img, m[:2], dsize=size, borderValue=(114, 114, 114, 114))
    dev = DeviceAugment(S, 1, "cpu")
    out = _warp(dev, torch.from_numpy(img).permute(2, 0, 1).float(), m, size, bool(perspective))
    d = (torch.from_numpy(ref).permute(2, 0, 1).float() - out).abs()
    assert (ref == 114).mean() > 0.05  # the border is in the comparison
    assert d.mean() < 0.3 and d.max() <= 8, (d.mean(), d.max())  # cv2 quantises coordinates to 1/32 px


def test_hsv_ir_gain_and_flip_match_the_cpu_transforms(png_set):
    img = _frame(png_set)
    rgb = np.ascontiguousarray(img[..., :3])
    gains = np.array([0.012, -0.5, 0.3])
    ref = rgb.copy()
    hsv = RandomHSV(hgain=1, sgain=1, vgain=1)
    np.random.seed(0)
    draw = np.random.uniform(-1, 1, 3)
    np.random.seed(0)
    hsv.hgain, hsv.sgain, hsv.vgain = gains / draw  # make RandomHSV's draw land on exactly these gains
    hsv.apply_image({"img": ref})
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    out = hsv_jitter(x, torch.tensor(gains[None], dtype=torch.float32))
    d = (torch.from_numpy(ref).permute(2, 0, 1).float() - out[0]).abs()
    assert (ref != rgb).mean() > 0.5 and d.mean() < 1.0 and d.max() <= 6, (d.mean(), d.max())

    np.random.seed(3)
    cpu = _IRGain(0.4)({"img": img.copy()})["img"]
    np.random.seed(3)
    g = 1.0 + np.random.uniform(-0.4, 0.4)
    root = Source(0, img.shape[:2])
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
    out = DeviceAugment(S, 1, "cpu").photometric(x.clone(), [Plan(root, {"ir_gain": g, "flip": True})])
    assert torch.equal(out[0], torch.from_numpy(np.ascontiguousarray(cpu[:, ::-1])).permute(2, 0, 1).float())


def test_ir_misregistration_is_the_cpu_warp_of_ir_alone(png_set):
    """The recorded matrix is the CPU transform's own draw; on the device the IR channels are warped by it (cv2's
    bilinear with the grey border, up to its 1/32 px coordinates) and the RGB channels are left exactly as they
    were; samples without a draw in the batch are untouched."""
    img = _frame(png_set)
    op = _IRMisregister(0.08, 0.1, 10)
    with seeded_global_rngs((1, 2, 3)):
        cpu = op({"img": img.copy()})["img"]
    with seeded_global_rngs((1, 2, 3)):
        matrix = op.draw(*img.shape[:2])
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None].repeat(2, 1, 1, 1)
    root = Source(0, img.shape[:2])
    out = DeviceAugment(S, 1, "cpu").photometric(x.clone(), [Plan(root, {"ir_warp": matrix}), Plan(root, {})])
    assert torch.equal(out[0, :3], x[0, :3]) and torch.equal(out[1], x[1])
    ref = torch.from_numpy(cpu).permute(2, 0, 1).float()
    assert torch.equal(ref[:3], x[0, :3]) and (ref[3] != x[0, 3]).float().mean() > 0.5  # IR moved, RGB not
    assert (ref[3] == 114).any()  # the border is in the comparison
    d = (out[0, 3] - ref[3]).abs()
    assert d.mean() < 0.3 and d.max() <= 8, (d.mean(), d.max())


def test_mixup_blend_truncates_as_ultralytics(png_set):
    """float32 on the device, float64 in NumPy: a product landing next to an integer may floor one lower."""
    img = _frame(png_set)
    a, b = img, img[::-1].copy()
    ref = (a * 0.47 + b * 0.53).astype(np.uint8)
    dev = DeviceAugment(S, 1, "cpu")
    pairs = {0: torch.from_numpy(a).permute(2, 0, 1).float(), 1: torch.from_numpy(b).permute(2, 0, 1).float()}
    out = dev.render(Blend(Source(0, a.shape[:2]), Source(1, a.shape[:2]), 0.47), pairs)
    d = (out - torch.from_numpy(ref).permute(2, 0, 1).float()).abs()
    assert d.max() <= 1 and (d > 0).float().mean() < 0.005, ((d > 0).float().mean(), d.max())


def test_same_seed_epoch_index_same_batch_and_another_epoch_differs(png_set):
    a, b, _ = _both(png_set, augment=True, recipe=FULL, epoch=1)
    _, b2, _ = _both(png_set, augment=True, recipe=FULL, epoch=1)
    _, b3, _ = _both(png_set, augment=True, recipe=FULL, epoch=2)
    assert torch.equal(b["img"], b2["img"]) and torch.equal(b["bboxes"], b2["bboxes"])
    assert not torch.equal(b["img"], b3["img"])


def test_undecodable_file_is_named(png_set, tmp_path):
    cfg = load_data_config(png_set)
    samples = scan_split(cfg, "train")
    bad = tmp_path / "bad.png"
    bad.write_bytes(samples[0].rgb.read_bytes()[:60])  # header only: the scan would pass it
    samples[0] = replace(samples[0], rgb=bad)
    feed = validation_feed("device", samples, S, cfg.ir_channels, "cpu")
    with pytest.raises(DataError, match="bad.png: cannot be decoded"):
        feed.to_device(feed.collate([feed.dataset[0]]))


# ------------------------------------------------------------------------------------ the batched warp
def _warp_one_by_one(x: torch.Tensor, matrix: np.ndarray, size: tuple[int, int], perspective: bool) -> torch.Tensor:
    """The per-sample warp the device path had before it was batched: one grid_sample on the unpadded image."""
    w, h = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    src = torch.from_numpy(np.linalg.inv(matrix)).float() @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(h * w)])
    xy = src[:2] / src[2:] if perspective else src[:2]
    scale = torch.tensor([2.0 / x.shape[2], 2.0 / x.shape[1]]).view(2, 1)
    grid = ((xy + 0.5) * scale - 1).T.reshape(1, h, w, 2)
    out = torch.nn.functional.grid_sample((x - 114)[None], grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return (out[0] + 114).round().clamp(0, 255)


def test_the_warps_of_a_batch_run_in_one_grid_sample_and_equal_each_sample_alone(png_set, monkeypatch):
    """Mosaic and non-mosaic samples (two canvas sides) with mixups: one grid_sample per side whatever the
    batch size; each sample's pixels equal those it gets rendered alone (so they do not depend on its batch),
    and the previous one-call-per-warp version's up to a rounding flip of a few pixels."""
    cfg = load_data_config(png_set)
    samples = scan_split(cfg, "train")
    recipe = replace(FULL, mosaic=0.5, perspective=0.001)
    enc = EncodedPairDataset(samples, S, augment=True, ir_channels=cfg.ir_channels, seed=1, recipe=recipe, epochs=15)
    batch = collate_encoded([enc[i] for i in range(8)])
    roots = [p.root for p in batch["plans"]]
    kinds = {type(w.src).__name__ for r in roots for w in r.warps()}
    assert kinds == {"Mosaic", "Source"} and any(isinstance(r, Blend) for r in roots)  # both sides, and mixups
    dev = DeviceAugment(S, cfg.ir_channels, "cpu")
    pairs = dev.decode(batch["files"])
    calls = []
    real = device_render.F.grid_sample
    monkeypatch.setattr(device_render.F, "grid_sample", lambda x, *a, **k: calls.append(len(x)) or real(x, *a, **k))
    together = dev.render_batch(roots, pairs)
    assert len(calls) == 2, calls  # one per canvas side (2 x imgsz: mosaics; imgsz: single pairs)
    assert sum(calls) == sum(len(list(r.warps())) for r in roots)
    calls.clear()
    dev.render_batch(roots[:2], pairs)
    assert len(calls) <= 2
    alone = torch.cat([dev.render_batch([r], pairs) for r in roots])
    assert torch.equal(together, alone)

    # against the former per-warp calls, on the warps' own inputs
    monkeypatch.setattr(device_render.F, "grid_sample", real)
    for r in roots:
        for w in r.warps():
            x = dev.render(w.src, pairs)
            d = (_warp(dev, x, w.matrix, w.size, w.perspective) - _warp_one_by_one(x, w.matrix, w.size, w.perspective))
            d = d.abs()
            assert d.max() <= 1 and (d > 0).float().mean() < 1e-3, (d.max(), (d > 0).float().mean())


# ------------------------------------------------------------------------------- with the pair cache
@pytest.mark.parametrize("name", ["full", "perspective"])
def test_with_the_pair_cache_draws_boxes_and_pixels_match_the_cpu_pipeline(png_set, jpeg_set, name, tmp_path):
    """--cache: the workers ship the cached pairs; the same boxes as --loader cpu --cache, and, the sources being
    the same bytes, pixels that differ by the warp's interpolation and HSV only (JPEG as close as PNG now)."""
    assert DataConfig(loader="device", cache="ram").cache == "ram"  # no longer refused
    for data in (png_set, jpeg_set):
        a, b, _ = _both(data, augment=True, recipe=RECIPES[name], cache=tmp_path / data.parent.name)
        assert len(a["bboxes"]) > 0
        assert torch.equal(a["bboxes"], b["bboxes"]) and torch.equal(a["cls"], b["cls"])
        assert torch.equal(a["batch_idx"], b["batch_idx"]) and a["ori_shape"] == b["ori_shape"]
        d = (a["img"].float() - b["img"].float()).abs()
        assert d.mean() < 0.6, (name, data, d.mean())


def test_with_the_pair_cache_the_letterbox_is_the_cpu_pipelines_exactly(png_set, jpeg_set, tmp_path):
    """--no-augment --cache: a cached pair has its long side at imgsz, so the letterbox only pastes: equal bytes."""
    for data in (png_set, jpeg_set):
        a, b, _ = _both(data, augment=False, recipe=AugmentRecipe(), cache=tmp_path / data.parent.name)
        assert torch.equal(a["img"], b["img"]) and torch.equal(a["bboxes"], b["bboxes"])
        assert a["ori_shape"] == b["ori_shape"] and a["ratio_pad"] == b["ratio_pad"]


class _Uploads(DeviceAugment):
    """Records what crosses to the device (the real path: ``upload`` is the one host -> device copy of pixels)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.seen: list[torch.Tensor] = []

    def upload(self, t):
        self.seen.append(t)
        return super().upload(t)


def test_with_the_pair_cache_the_payload_is_uint8_frames_only(jpeg_set, tmp_path):
    """The workers ship decoded uint8 frames, once per pair a batch reads, and nothing float reaches the device."""
    cfg = load_data_config(jpeg_set)
    samples = scan_split(cfg, "train")
    enc = EncodedPairDataset(samples, S, augment=True, ir_channels=cfg.ir_channels, seed=1, recipe=FULL, epochs=15)
    enc.use_cache("disk", [tmp_path], log=lambda _m: None)
    batch = collate_encoded([enc[i] for i in range(4)])
    assert batch["files"] and all(f[0] == "frame" and f[1].dtype == torch.uint8 for f in batch["files"].values())
    for i, f in batch["files"].items():
        assert tuple(f[1].shape) == tuple(enc.cache.shapes[i])  # long side imgsz: no decode, no resize left
    dev = _Uploads(S, cfg.ir_channels, "cpu")
    out = dev(batch)
    assert out["img"].dtype == torch.uint8 and out["img"].shape == (4, 3 + cfg.ir_channels, S, S)
    assert dev.seen and all(t.dtype == torch.uint8 for t in dev.seen)
    assert sum(t.numel() for t in dev.seen) == sum(f[1].numel() for f in batch["files"].values())


# ------------------------------------------------------------------------------------- real trainings
RUN = ["--model", "yolov8t", "--fusion", "mid", "--imgsz", "64", "--batch-size", "4", "--epochs", "3", "--no-val",
       "--no-plots", "--warmup-epochs", "0", "--seed", "2", "--loader", "device", "--close-mosaic", "1", "--mixup",
       "0.5", "--degrees", "5", "--ir-gain", "0.2", "--ir-shift", "0.05", "--ir-rotate", "2"]


@pytest.fixture(scope="module")
def run_data(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("dev_run"), n_train=16, n_val=2, imgsz=64, seed=0)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_training_with_the_device_loader_resumes_exactly(run_data, tmp_path):
    """2 workers uninterrupted vs 0 workers stopped at step 3 and resumed: the same losses, bit for bit
    (4 steps an epoch: the resumed part crosses an epoch boundary and close-mosaic's switch)."""
    full, part = tmp_path / "full", tmp_path / "part"
    launch("python", 1, ["train.py", "--data", str(run_data), *RUN, "--workers", "2", "--max-steps", "9",
                         "--output-dir", str(full)], full)
    launch("python", 1, ["train.py", "--data", str(run_data), *RUN, "--workers", "0", "--max-steps", "3",
                         "--output-dir", str(part)], part)
    resumed = launch("python", 1, ["train.py", "--data", str(run_data), *RUN, "--workers", "0", "--max-steps", "9",
                                   "--resume", "auto", "--output-dir", str(part)], part)
    assert "resumed from" in resumed.output
    assert "loader: device" in (full / "config.yaml").read_text()
    ref = _losses(full)
    assert sorted(ref) == list(range(1, 10)) and all(v > 0 for v in ref.values())
    assert _losses(part) == ref


@pytest.mark.slow
def test_ddp_with_the_device_loader(run_data, tmp_path):
    out = tmp_path / "ddp"
    run = launch("torchrun", 2, ["train.py", "--data", str(run_data), *RUN, "--workers", "1", "--max-steps", "2",
                                 "--output-dir", str(out)], out)
    log = run.log
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)
    assert "2 process(es)" in run.output
    # --max-steps ends epoch 1: validated, each rank letterboxing its shard on its device, the stats gathered
    assert "val epoch 1:" in run.output
    assert json.loads((out / "metrics.json").read_text())["metrics"]["images"] == 2


def _drop_ram_cache(output: str) -> re.Match | None:
    """The /dev/shm cache file a run logged (None: it logged none), removed with its index: /dev/shm is RAM."""
    made = re.search(r"pair cache: \d+ pairs, [\d.]+ GiB in (\S+),", output)
    if made:
        Path(made.group(1)).unlink(missing_ok=True)
        Path(made.group(1)).with_suffix(".json").unlink(missing_ok=True)
    return made


@pytest.mark.slow
@pytest.mark.parametrize("launcher, nproc", [("python", 1), ("torchrun", 2)])
def test_training_with_the_device_loader_and_the_ram_cache(run_data, tmp_path, launcher, nproc):
    """--loader device --cache ram: one process builds the cache in /dev/shm (the other rank waits for it) and
    the workers ship its frames."""
    out = tmp_path / "cached"
    run = launch(launcher, nproc, ["train.py", "--data", str(run_data), *RUN, "--workers", "1", "--max-steps", "2",
                                   "--cache", "ram", "--output-dir", str(out)], out)
    made = _drop_ram_cache(run.output)
    assert made and made.group(1).startswith("/dev/shm/"), run.output[-2000:]
    assert run.output.count("decoding 16 pairs") == 1
    assert [r["step"] for r in run.log] == [1, 2] and all(r["loss"] > 0 for r in run.log)
    assert "cache: ram" in (out / "config.yaml").read_text()


# ------------------------------------------------------------------------------------------ validation
def _val_batches(data: Path, device: str = "cpu"):
    """The CPU val batch and the --loader device val batch of the same 8 pairs, each after its feed's to_device."""
    cfg = load_data_config(data)
    samples = scan_split(cfg, "train")  # 8 pairs (the val split has 1): any split validates the same way
    cpu = validation_feed("cpu", samples, S, cfg.ir_channels, device)
    dev = validation_feed("device", samples, S, cfg.ir_channels, device)
    # --loader cpu: the set and collate it always had; its to_device moves img only (what evaluate() did itself)
    assert type(cpu.dataset) is PairedRGBIRDataset and cpu.collate is collate_pairs
    assert cpu.to_device.func is move_images
    assert isinstance(dev.dataset, EncodedPairDataset) and isinstance(dev.to_device, DeviceLetterbox)
    a = cpu.to_device(cpu.collate([cpu.dataset[i] for i in range(len(samples))]))
    enc = dev.collate([dev.dataset[i] for i in range(len(samples))])
    assert all(f[0][0] == ("jpeg" if data.parent.name.startswith("dev_jpeg") else "encoded")
               for f in enc["files"].values())  # encoded files, never decoded pixels
    return a, dev.to_device(enc), samples


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_device_val_batch_is_the_cpu_val_batch(png_set, jpeg_set, kind):
    """Same keys, the same targets exactly (same boxes, same order), pixels within the letterbox test's 1 level."""
    data = png_set if kind == "png" else jpeg_set
    a, b, samples = _val_batches(data)
    assert set(b) == set(a)
    for k in ("bboxes", "cls", "batch_idx", "index"):
        assert torch.equal(a[k], b[k]), k
    for k in ("im_file", "ir_file", "ori_shape", "ratio_pad"):
        assert a[k] == b[k], k
    assert len(a["bboxes"]) > 0 and a["ori_shape"][0] == samples[0].hw  # original size: decoded at full size
    assert b["img"].dtype == torch.uint8 and b["img"].shape == a["img"].shape
    d = (a["img"].float() - b["img"].float()).abs()
    assert (d > 0).any() or kind == "png"  # JPEG: two decoders and two bilinears, not one code path
    assert d.max() <= 1 and d.mean() < 0.2, (d.max(), d.mean())
    raw = PairedRGBIRDataset(samples, S, augment=False, ir_channels=load_data_config(data).ir_channels)
    ref = np.stack([letterbox_pair(raw.load_pair(i)[0], samples[i].boxes[:, 1:], S)[0] for i in range(len(samples))])
    assert torch.equal(a["img"], torch.from_numpy(ref).permute(0, 3, 1, 2))  # --loader cpu: OpenCV's bytes, as before


def test_device_val_leaves_the_targets_on_the_host(png_set):
    """img on the device, the targets where evaluate() indexes them (the host): on CUDA, boxes on the device
    would meet evaluate's host-side scale tensor. The meta device stands in for an accelerator here."""
    for b in _val_batches(png_set, device="meta")[:2]:  # both loaders' validation feeds
        assert b["img"].device.type == "meta" and b["img"].dtype == torch.uint8
        assert all(b[k].device.type == "cpu" for k in ("bboxes", "cls", "batch_idx", "index"))


def _val_cli(weights: Path, data: Path, out: Path, *extra: str) -> dict:
    launch("python", 1, ["-m", "yolofuse_scale", "val", "--weights", str(weights), "--data", str(data),
                           "--batch-size", "8", "--workers", "0", "--no-plots", "--out", str(out), *extra], out)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_training_with_the_device_loader_validates_on_the_device(train_run, tiny_data, tmp_path):
    """A real --loader device --cache ram run (its val pass: DeviceLetterbox; the val set is not cached): its
    reported metrics are exactly those of its last.pt through `val --loader device` (same batches, same ops, one
    process), and close to the CPU letterbox's `val` (pixels 1 level apart at most change a few confidences)."""
    run = train_run("python", 1, 1, "--loader", "device", "--cache", "ram", "--no-val")
    made = _drop_ram_cache(run.output)
    assert made or "pair cache" not in run.output  # a session-cached run already dropped it
    reported = json.loads((run.out / "metrics.json").read_text())["metrics"]
    weights = run.out / "weights" / "last.pt"
    dev = _val_cli(weights, tiny_data, tmp_path / "dev", "--loader", "device")
    cpu = _val_cli(weights, tiny_data, tmp_path / "cpu")
    keys = ("mAP50", "mAP50-95", "precision", "recall", "confusion_matrix", "images", "instances")
    assert {k: dev[k] for k in keys} == {k: reported[k] for k in keys}
    assert reported["mAP50"] > 0.05, reported  # trained enough that the comparison below means something
    # measured: mAP50 0.8211 (cpu) vs 0.8211 (device), mAP50-95 0.4790 vs 0.4810: the pixels (at most 1 level
    # apart) move a few confidences and box edges, which on 32 images moves mAP50-95 by ~2e-3; 0.01 leaves 5x
    # that, while a geometry one pixel off does not pass (measured: image pasted 1 px lower, 0.426; 1 px
    # shorter, 0.458)
    for k in ("mAP50", "mAP50-95"):
        assert abs(cpu[k] - dev[k]) < 0.01, (k, cpu[k], dev[k])
