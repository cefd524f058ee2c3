"""The YOLOv8 recipe on a stacked pair: geometry shared by RGB and IR, photometry split, boxes follow,
and randomness a function of (seed, epoch, index) only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from ultralytics.data.augment import RandomFlip
from ultralytics.utils.instance import Instances

from yolofuse_scale.data import PairedRGBIRDataset, Sample, collate_pairs
from yolofuse_scale.data.augment import (
    _RGBHSV,
    AugmentRecipe,
    _IRGain,
    _IRMisregister,
    _PairFlip,
    seeded_global_rngs,
)
from yolofuse_scale.data.sampler import MicroBatchWindows, StepShardedBatchSampler
from yolofuse_scale.data.transforms import chw_tensor

H, W, S = 60, 80, 96  # a landscape source frame, letterboxed/mosaicked into S x S
NONE = AugmentRecipe(mosaic=0, mixup=0, translate=0, scale=0, fliplr=0, hsv_h=0, hsv_s=0, hsv_v=0, ir_shift=0,
                     ir_scale=0, ir_rotate=0)
ALIGNED = {"ir_shift": 0, "ir_scale": 0, "ir_rotate": 0}  # the IR misregistration off: RGB and IR move together
HOT = 180


def _pair_files(root: Path, n: int = 8) -> list[Sample]:
    """Pairs with one L-shaped pattern each (no symmetry a flip or a rotation could hide), identical
    in the red and the IR channel, so a transform applied identically to both keeps them bit-equal."""
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    rng = np.random.default_rng(0)
    for i in range(n):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 1] = rng.integers(0, 60, (H, W))  # texture in G, none in R: R stays the pattern only
        ir = np.full((H, W), 20, np.uint8)
        rgb[..., 0] = 20
        x1, y1 = int(rng.integers(2, W - 30)), int(rng.integers(2, H - 30))
        for im in (rgb[..., 0], ir):
            im[y1 : y1 + 24, x1 : x1 + 6] = 240  # the L: a vertical bar ...
            im[y1 + 18 : y1 + 24, x1 : x1 + 20] = 240  # ... and its foot to the right
        cv2.imwrite(str(root / f"{i}_rgb.png"), rgb[..., ::-1])
        cv2.imwrite(str(root / f"{i}_ir.png"), ir)
        box = np.array([[0, (x1 + 10) / W, (y1 + 12) / H, 20 / W, 24 / H]], np.float32)
        samples.append(Sample(root / f"{i}_rgb.png", root / f"{i}_ir.png", None, box))
    return samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    return _pair_files(tmp_path_factory.mktemp("pairs"))


def _items(samples, recipe, epoch=0, epochs=None, n=8):
    ds = PairedRGBIRDataset(samples, S, augment=True, ir_channels=1, seed=7, recipe=recipe, epochs=epochs)
    ds.set_epoch(epoch)
    return [ds[i] for i in range(n)]


RECIPES = {
    "letterbox": NONE,
    "flip": replace(NONE, fliplr=1.0),
    "zoom_shift": replace(NONE, translate=0.2, scale=0.4),
    "affine": replace(NONE, degrees=25, translate=0.2, scale=0.4, shear=8),
    "perspective": replace(NONE, perspective=0.0005, scale=0.2),
    "mosaic": replace(NONE, mosaic=1.0),
    "mixup": replace(NONE, mosaic=1.0, mixup=1.0),
    "full": replace(AugmentRecipe(degrees=10, shear=2), hsv_h=0, hsv_s=0, hsv_v=0, **ALIGNED),  # mixup: see "mixup"
}
AXIS_ALIGNED = {"letterbox", "flip", "zoom_shift", "mosaic"}  # boxes stay tight around the pattern


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_rgb_and_ir_stay_aligned_and_boxes_follow(samples, name):
    moved, hot_total, hot_covered = 0, 0, 0
    plain = _items(samples, NONE)
    for i, item in enumerate(_items(samples, RECIPES[name])):
        img = item["img"].numpy()
        assert img.shape == (4, S, S)
        assert np.array_equal(img[0], img[3]), f"{name}, sample {i}: the red and IR channels were moved apart"
        hot = img[3] > HOT
        moved += int(not np.array_equal(hot, plain[i]["img"].numpy()[3] > HOT))
        if name == "mixup":  # a blend halves the pattern: alignment is what this case checks
            continue
        covered = np.zeros_like(hot)
        for xc, yc, bw, bh in item["bboxes"].numpy() * S:
            x1, y1 = max(int(np.floor(xc - bw / 2)) - 1, 0), max(int(np.floor(yc - bh / 2)) - 1, 0)
            x2, y2 = int(np.ceil(xc + bw / 2)) + 1, int(np.ceil(yc + bh / 2)) + 1
            covered[y1:y2, x1:x2] = True
            ys, xs = np.nonzero(hot[y1:y2, x1:x2])
            want = np.array([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2])
            inside = want.min() > 0.5 and want.max() < S - 0.5  # a box cut by the edge holds part of an L ...
            assert len(xs) or not inside, f"{name}, sample {i}: a box over nothing"  # ... maybe only its empty corner
            if name in AXIS_ALIGNED and inside:  # the box is the pattern's bounding rectangle, to 1.5 px
                got = np.array([xs.min() + x1, ys.min() + y1, xs.max() + x1 + 1, ys.max() + y1 + 1])
                assert np.abs(got - want).max() <= 1.5, f"{name}, sample {i}: box {want} vs pattern {got}"
        hot_total, hot_covered = hot_total + hot.sum(), hot_covered + (hot & covered).sum()
    assert (moved > 0) == (name != "letterbox"), "the transform did something (and letterbox nothing more)"
    if name != "mixup":  # Ultralytics drops a box cut to < 10 % of its area by the canvas edge, by design
        assert hot_covered / hot_total > 0.9, f"{name}: {hot_total - hot_covered} pattern pixels outside every box"


def test_flip_mirrors_the_l(samples):
    plain, flipped = _items(samples, NONE, n=1)[0], _items(samples, RECIPES["flip"], n=1)[0]
    assert torch.equal(flipped["img"], plain["img"].flip(-1))
    assert torch.allclose(flipped["bboxes"][:, 0], 1 - plain["bboxes"][:, 0])


def test_hsv_changes_rgb_only_and_ir_gain_changes_ir_only(samples):
    base = replace(AugmentRecipe(), hsv_h=0, hsv_s=0, hsv_v=0, **ALIGNED)
    a = _items(samples, base, n=4)
    hsv = _items(samples, replace(base, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4), n=4)
    gain = _items(samples, replace(base, ir_gain=0.5), n=4)
    for x, h, g in zip(a, hsv, gain):
        assert torch.equal(x["img"][3:], h["img"][3:]) and torch.equal(x["bboxes"], h["bboxes"])
        assert torch.equal(x["img"][:3], g["img"][:3]) and torch.equal(x["bboxes"], g["bboxes"])
    assert any(not torch.equal(x["img"][:3], h["img"][:3]) for x, h in zip(a, hsv))
    assert any(not torch.equal(x["img"][3:], g["img"][3:]) for x, g in zip(a, gain))


def _centre(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("recipe", [
    replace(NONE, ir_shift=0.1),
    replace(AugmentRecipe(degrees=10), hsv_h=0, hsv_s=0, hsv_v=0, ir_shift=0.1, ir_scale=0.2, ir_rotate=15),
], ids=["shift", "full-recipe-shift-zoom-rotate"])
def test_ir_misregistration_moves_ir_only_and_leaves_the_boxes_in_rgbs_frame(samples, recipe):
    """The IR warp comes last and draws last: RGB and the boxes are those of the same recipe without it, bit for
    bit; IR is moved (the L, identical in red and IR before, now apart), by no more than the bounds allow."""
    off = replace(recipe, ir_shift=0, ir_scale=0, ir_rotate=0)
    moved = 0
    for a, b in zip(_items(samples, recipe), _items(samples, off)):
        assert torch.equal(a["img"][:3], b["img"][:3]) and torch.equal(a["bboxes"], b["bboxes"])
        assert torch.equal(b["img"][0], b["img"][3])  # without it, the red and IR Ls coincide
        if recipe.mosaic or (b["img"][3] > HOT).sum() < 20:
            moved += not torch.equal(a["img"][3], b["img"][3])
            continue
        d = _centre(a["img"][3].numpy() > HOT) - _centre(b["img"][0].numpy() > HOT)
        assert np.abs(d).max() <= recipe.ir_shift * S + 1, d  # a pure shift: at most the bound (+ resampling)
        moved += np.abs(d).max() > 0.5
    assert moved >= 6, moved


def _data(registration: str, train_labels: str = "rgb"):
    """A parsed data.yaml that says ``registration`` and trains on ``train_labels`` (rgb: one label set)."""
    from yolofuse_scale.data.config import DatasetSpec

    ir = {} if train_labels == "rgb" else {"labels_ir": "labelsIR", "label_policy": {"train": train_labels}}
    return DatasetSpec(yaml_path=Path("data.yaml"), root=Path("."), train=[], val=[], names={0: "person"},
                       registration=registration, **ir)


def test_misregistration_default_follows_the_datas_registration_and_the_fusion():
    """Unset bounds: on (MISREGISTRATION's) for a ``registration: loose`` set and a variant that declares it, off on
    an aligned set, for the other variants and for a model YAML; bounds the user sets, 0 included, are kept for
    every model that reads both modalities; --fusion rgb|ir train without it; nothing else of a recipe changes."""
    from yolofuse_scale.config import ModelConfig, RunConfig
    from yolofuse_scale.data.augment import MISREGISTRATION
    from yolofuse_scale.model.variants import FUSIONS, VARIANTS, reads_both_modalities

    assert not AugmentRecipe().misregisters  # the recipe alone (no data, no fusion yet): off, as unit tests use it
    assert [f for f in FUSIONS if not reads_both_modalities("yolo11n", f)] == ["rgb", "ir"]
    assert reads_both_modalities("my_model.yaml", "mid")
    on = {f for f in FUSIONS if VARIANTS[f].misregistration}
    assert on == {"data", "early", "mid"}, on  # where the study measured it helps (docs/data.md)
    off = dict.fromkeys(MISREGISTRATION, 0.0)
    for model in ("yolo11n", "my_model.yaml"):
        for fusion in FUSIONS if model == "yolo11n" else ["mid"]:
            cfg = RunConfig(model=ModelConfig(model=model, fusion=fusion))
            both = reads_both_modalities(model, fusion)
            for registration in ("aligned", "loose"):
                got = cfg.training_recipe(_data(registration))
                moves = model == "yolo11n" and fusion in on and registration == "loose"
                assert {k: getattr(got, k) for k in MISREGISTRATION} == (MISREGISTRATION if moves else off)
                assert replace(got, **dict.fromkeys(MISREGISTRATION)) == cfg.data.recipe  # nothing else changes
                line = cfg.misregistration_line(_data(registration))
                assert ("reads one modality" in line) == (not both) and ("IR moved" in line) == moves, line
            for bounds in ({"ir_shift": 0.015, "ir_scale": 0.015, "ir_rotate": 0.5}, off, {"ir_shift": 0.02}):
                cfg.data.recipe = recipe = replace(AugmentRecipe(), **bounds)
                got = cfg.training_recipe(_data("loose"))
                if not both:
                    assert not got.misregisters, fusion
                    assert replace(got, **{k: getattr(recipe, k) for k in MISREGISTRATION}) == recipe
                    continue
                assert {k: getattr(got, k) for k in bounds} == bounds, (fusion, bounds)  # the user's bounds kept
                assert cfg.training_recipe(_data("aligned")) == got or len(bounds) == 1  # set bounds ignore the data
                if len(bounds) == 1:  # the others unset: the default
                    assert got.ir_scale == (MISREGISTRATION["ir_scale"] if fusion in on and model == "yolo11n" else 0)
                    assert cfg.training_recipe(_data("aligned")).ir_scale == 0


def test_misregistration_default_is_off_when_the_training_boxes_are_the_ir_images_own():
    """The transform moves IR and keeps the boxes where RGB has them: a loose set trained on its IR labels
    (label_policy ir, DroneVehicle's) or their union with RGB's gets no default misregistration; bounds the user
    sets still apply; the log line says why."""
    from yolofuse_scale.config import ModelConfig, RunConfig
    from yolofuse_scale.data.augment import MISREGISTRATION

    cfg = RunConfig(model=ModelConfig(model="yolo11n", fusion="mid"))
    assert cfg.training_recipe(_data("loose", "rgb")).misregisters  # boxes in RGB's frame: the default applies
    for labels in ("ir", "union"):
        got = cfg.training_recipe(_data("loose", labels))
        assert {k: getattr(got, k) for k in MISREGISTRATION} == dict.fromkeys(MISREGISTRATION, 0.0), labels
        line = cfg.misregistration_line(_data("loose", labels))
        assert line.startswith("IR misregistration off (the default for a set whose training boxes include the IR "
                               f"image's own (label_policy: {labels})"), line
        assert not cfg.training_recipe(_data("aligned", labels)).misregisters
    cfg.data.recipe = replace(AugmentRecipe(), ir_shift=0.02, ir_scale=0.0, ir_rotate=0.0)
    ir_labels = _data("loose", "ir")
    assert cfg.training_recipe(ir_labels).ir_shift == 0.02 and "(as set)" in cfg.misregistration_line(ir_labels)


def test_close_mosaic_turns_mosaic_off_for_the_last_epochs(samples):
    recipe = replace(NONE, mosaic=1.0, close_mosaic=1)
    assert recipe.mosaic_on(1, 3) and not recipe.mosaic_on(2, 3)
    early, last = _items(samples, recipe, epoch=0, epochs=3), _items(samples, recipe, epoch=2, epochs=3)
    assert max(len(it["bboxes"]) for it in early) > 1, "a mosaic shows its partners' patterns"
    plain = _items(samples, NONE, epoch=2)
    assert all(torch.equal(a["img"], b["img"]) for a, b in zip(last, plain)), "last epoch: no mosaic"


@pytest.mark.parametrize("windows", [False, True])
def test_randomness_depends_only_on_seed_epoch_index(samples, windows):
    """Same items with 0 or 2 workers (persistent, across set_epoch), in any order; another epoch differs.
    With micro-batch windows the per-process cache of decoded pairs must not change a thing either."""
    recipe = replace(AugmentRecipe(mixup=0.5, degrees=5, ir_shift=0.05, ir_rotate=3), close_mosaic=0,
                     mosaic_partners="micro_batch" if windows else "dataset")
    win = MicroBatchWindows(len(samples), 4, seed=3)  # read only with micro_batch partners
    ds = PairedRGBIRDataset(samples, S, augment=True, ir_channels=1, seed=3, recipe=recipe, epochs=2,
                            partner_windows=win)
    ref = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in reversed(range(len(ds))):
            ref[epoch, i] = ds[i]
    sampler = StepShardedBatchSampler(len(ds), 3, seed=11)  # other batches than the windows: still the same
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, persistent_workers=True, collate_fn=collate_pairs)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            for k, i in enumerate(batch["index"].tolist()):
                assert torch.equal(batch["img"][k], ref[epoch, i]["img"]), f"epoch {epoch}, sample {i}"
    assert any(not torch.equal(ref[0, i]["img"], ref[1, i]["img"]) for i in range(len(ds)))
    untouched = np.random.get_state()[1][:4].copy(), __import__("random").getstate()[1][:4]
    ds[0]
    assert np.array_equal(np.random.get_state()[1][:4], untouched[0]), "global NumPy RNG restored"
    assert __import__("random").getstate()[1][:4] == untouched[1], "global random restored"


def test_windows_are_the_samplers_micro_batches():
    windows = MicroBatchWindows(22, 4, seed=5)
    sampler = StepShardedBatchSampler(22, 4, world_size=1, seed=5)
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert all(sorted(windows(epoch, i).tolist()) == sorted(batch) for i in batch)


class _CountingDataset(PairedRGBIRDataset):
    """Records which pairs are decoded (instrumentation around the real decoder)."""

    decoded: list[int]

    def _decode_resized(self, index):
        self.decoded.append(index)
        return super()._decode_resized(index)


def test_mosaic_partners_come_from_the_micro_batch_each_decoded_once(samples):
    recipe = replace(AugmentRecipe(mixup=1.0), close_mosaic=0, mosaic_partners="micro_batch")
    windows = MicroBatchWindows(len(samples), 4, seed=1)
    ds = _CountingDataset(samples, S, augment=True, ir_channels=1, seed=1, recipe=recipe, epochs=1,
                          partner_windows=windows)
    sampler = StepShardedBatchSampler(len(samples), 4, seed=1)
    for batch in sampler:
        ds.decoded = []
        items = [ds[i] for i in batch]
        assert set(ds.decoded) <= set(batch), "partners from the sample's own micro-batch"
        assert len(ds.decoded) == len(set(ds.decoded)), "each pair decoded once, then reused"
        assert sum(len(it["bboxes"]) for it in items) > len(batch), "mosaic + mixup bring the partners' boxes"


def _sources(samples, batch_size, recipe, epoch=0, seed=4):
    """Per sample of one epoch, in the training sampler's order: the dataset indices its augmented item was
    built from (itself first, then what ``_Partners.fetched`` recorded), with the dataset and windows made
    as the trainer makes them."""
    windows = MicroBatchWindows(len(samples), batch_size, seed)
    ds = PairedRGBIRDataset(samples, S, augment=True, ir_channels=1, seed=seed, recipe=recipe, epochs=3,
                            partner_windows=windows)
    ds.set_epoch(epoch)
    sampler = StepShardedBatchSampler(len(samples), batch_size, seed=seed)
    sampler.set_epoch(epoch)
    out = []
    for batch in sampler:
        out.append([])
        for i in batch:
            ds[i]
            out[-1].append((i, [i, *ds.pipeline.partners.fetched]))
    return ds, out


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory) -> list[Sample]:
    return _pair_files(tmp_path_factory.mktemp("pairs16"), n=16)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_mosaic_partners_are_diverse_at_any_batch_size(sixteen, batch_size):
    """Each mosaic shows 4 distinct pairs, a micro-batch draws on more pairs than it holds, an epoch on
    nearly the whole set (Ultralytics: ~4 distinct per mosaic from its buffer); the old micro-batch
    partners gave 1 distinct pair per mosaic at batch size 1. The draw is a function of (seed, epoch, index):
    recomputed in another order, by a fresh dataset, it is the same."""
    recipe = replace(AugmentRecipe(), close_mosaic=0)
    ds, batches = _sources(sixteen, batch_size, recipe)
    for batch in batches:
        assert all(len(set(src)) == 4 for _, src in batch), f"a mosaic of 4 distinct pairs: {batch}"
        assert len({j for _, src in batch for j in src}) > batch_size, "partners from outside the micro-batch"
    used = {j for batch in batches for _, src in batch for j in src}
    assert len(used) >= 0.75 * len(sixteen), f"an epoch's mosaics draw on {len(used)} of 16 pairs"
    drawn = {i: src for batch in batches for i, src in batch}
    for i in reversed(sorted(drawn)):
        ds[i]
        assert [i, *ds.pipeline.partners.fetched] == drawn[i], f"sample {i}: the same draw, recomputed"
    assert {i: s for b in _sources(sixteen, batch_size, recipe)[1] for i, s in b} == drawn, "a fresh dataset"
    other = {i: s for b in _sources(sixteen, batch_size, recipe, epoch=1)[1] for i, s in b}
    assert other != drawn, "another epoch, another draw"
    with_mixup = _sources(sixteen, batch_size, replace(recipe, mixup=1.0))[1]
    assert all(len(src) == 8 and src[4] != i for batch in with_mixup for i, src in batch), \
        "mixup: a partner other than the sample, itself a mosaic of 4"
    old = _sources(sixteen, batch_size, replace(recipe, mosaic_partners="micro_batch"))[1]
    assert all({j for _, src in batch for j in src} == {i for i, _ in batch} for batch in old), \
        "micro_batch (opt-in): the partners are the micro-batch itself"


@pytest.mark.parametrize("channels", [1, 3, 4, 6])
def test_chw_tensor_equals_a_transposed_copy(channels):
    img = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    for src in (img, img[:, ::-1], img[::2]):  # contiguous (cv2.split path), a flip view, strided rows
        out = chw_tensor(src)
        assert out.is_contiguous()
        assert torch.equal(out, torch.from_numpy(np.ascontiguousarray(src.transpose(2, 0, 1))))


@pytest.mark.parametrize("channels", [4, 6])
def test_pair_flip_is_ultralytics_random_flip(channels):
    img = np.random.default_rng(0).integers(0, 256, (30, 40, channels), dtype=np.uint8)
    boxes = np.array([[0.2, 0.3, 0.1, 0.2], [0.7, 0.5, 0.3, 0.4]], np.float32)
    out = []
    for flip in (_PairFlip(p=1.0), RandomFlip(p=1.0)):
        labels = {"img": img, "instances": Instances(boxes.copy(), bbox_format="xywh", normalized=True)}
        out.append(flip(labels))
    assert np.array_equal(out[0]["img"], out[1]["img"]) and np.array_equal(out[0]["img"], img[:, ::-1])
    assert np.array_equal(out[0]["instances"].bboxes, out[1]["instances"].bboxes)


def test_photometric_transforms_copy_a_read_only_pair_and_do_nothing_when_off():
    """A pair no geometric transform touched is the shared read-only decoded (or cached) array: HSV and
    IR gain work on a copy of it. With their gains at 0 they return the input itself, copying nothing."""
    img = np.random.default_rng(1).integers(30, 220, (24, 32, 4), dtype=np.uint8)
    img.flags.writeable = False
    before = img.copy()
    with seeded_global_rngs((0, 0, 0)):
        hsv = _RGBHSV(AugmentRecipe())({"img": img})["img"]
        gain = _IRGain(0.5)({"img": img})["img"]
    assert np.array_equal(img, before)
    assert not np.array_equal(hsv[..., :3], img[..., :3]) and np.array_equal(hsv[..., 3], img[..., 3])
    assert not np.array_equal(gain[..., 3], img[..., 3]) and np.array_equal(gain[..., :3], img[..., :3])
    off = replace(AugmentRecipe(), hsv_h=0, hsv_s=0, hsv_v=0, **ALIGNED)
    assert _RGBHSV(off)({"img": img})["img"] is img and _IRGain(0.0)({"img": img})["img"] is img
    assert _IRMisregister.from_recipe(off)({"img": img})["img"] is img  # off: no copy, no draw
    with seeded_global_rngs((0, 0, 0)):
        warped = _IRMisregister(0.1, 0.0, 0.0)({"img": img})["img"]
    assert np.array_equal(img, before) and np.array_equal(warped[..., :3], img[..., :3])
    assert not np.array_equal(warped[..., 3], img[..., 3])
