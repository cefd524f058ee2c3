"""The loader seam (data/loaders.py), the partner pool, the buffer of decoded pairs, plan nodes that render themselves
and the one image normalisation.

Both loaders' pixels and boxes against each other: tests/test_device_loader.py; the recipe's geometry and its
(seed, epoch, index) determinism: tests/test_augment.py.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from yolofuse_scale.data import load_data_config, scan_split, write_synthetic_dataset
from yolofuse_scale.data import loaders as loaders_mod
from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.data.buffer import DecodedPairBuffer
from yolofuse_scale.data.device import DeviceAugment
from yolofuse_scale.data.device.plan import Blend, Mosaic, Node, Source, Warp
from yolofuse_scale.data.loaders import Feed, training_feed, validation_feed
from yolofuse_scale.data.sampler import MicroBatchWindows, StepShardedBatchSampler
from yolofuse_scale.data.transforms import normalize_images

S = 64
MIXUP = AugmentRecipe(mixup=1.0, degrees=5, close_mosaic=0)  # the default pool rule, mixup on every sample


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> list:
    data = write_synthetic_dataset(tmp_path_factory.mktemp("loaders"), n_train=16, n_val=2, imgsz=64, seed=0)
    return scan_split(load_data_config(data), "train")


def _feed(samples, recipe=MIXUP, batch_size=4, loader="cpu", **kw) -> Feed:
    return training_feed(loader, samples, imgsz=S, ir_channels=1, device="cpu", recipe=recipe, seed=3, epochs=3,
                         batch_size=batch_size, log=lambda _m: None, **kw)


def _counting(ds) -> list[int]:
    """Record every decode of ``ds`` (instrumentation around its real decoder; the buffer calls it on a miss)."""
    decoded: list[int] = []
    real = ds._decode_resized
    ds._decode_resized = lambda i: decoded.append(i) or real(i)
    return decoded


# ------------------------------------------------------------------------------------------ the pool
@pytest.mark.parametrize("batch_size", [1, 4])
def test_the_pool_is_the_micro_batch_and_as_many_others_a_function_of_seed_epoch_and_batch(batch_size):
    windows = MicroBatchWindows(40, batch_size, seed=5)
    assert windows.pool_size == batch_size + max(batch_size, 3)
    pools = {}
    for epoch in (0, 1):
        for i in range(40):
            batch, pool = windows(epoch, i), windows.pool(epoch, i)
            assert list(pool[: len(batch)]) == list(batch) and i in batch
            assert len(pool) == windows.pool_size and len(set(pool.tolist())) == len(pool), pool
            pools[epoch, i] = pool.tolist()
    fresh = MicroBatchWindows(40, batch_size, seed=5)  # another process, asked in another order
    assert all(fresh.pool(e, i).tolist() == pools[e, i] for e, i in reversed(sorted(pools)))
    assert any(pools[0, i] != pools[1, i] for i in range(40)), "another epoch, other pools"
    assert MicroBatchWindows(3, 2).pool(0, 0).tolist() == MicroBatchWindows(3, 2).pool(0, 0).tolist()
    assert len(MicroBatchWindows(3, 2).pool(0, 0)) == 3, "a set smaller than the pool: all of it"


def test_pool_partners_are_decoded_once_per_micro_batch_even_when_the_set_outgrows_the_buffer(pairs):
    """The buffer reduced to its floor (the pool), as on a set far larger than its budget: every read of a
    micro-batch (samples, mosaic and mixup partners) is in its pool, each pair decoded at most once per
    micro-batch, so at most 2 decodes per sample; a mosaic still shows 4 distinct pairs. With the budget, a set
    that fits is decoded once: the next epoch decodes nothing."""
    for batch_size in (1, 4):
        ds = _feed(pairs, batch_size=batch_size).dataset
        ds.buffer.budget = 0
        decoded = _counting(ds)
        windows = ds.draw.windows
        sampler = StepShardedBatchSampler(len(pairs), batch_size, seed=3)
        for batch in sampler:
            decoded.clear()
            pool = set(windows.pool(0, batch[0]).tolist())
            for i in batch:
                ds[i]
                fetched = ds.pipeline.partners.fetched
                assert set(fetched) <= pool and len(set(fetched[:3])) == 3 and i not in fetched[:3], (i, fetched)
            assert set(decoded) <= pool and len(decoded) == len(set(decoded)), (batch, decoded)
            assert len(decoded) <= 2 * max(batch_size, 2), decoded  # B=1: the pool is 1 + 3
    ds = _feed(pairs).dataset  # the default budget: these 16 small pairs fit
    decoded = _counting(ds)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(pairs)):
            ds[i]
        assert len(decoded) == len(pairs), (epoch, len(decoded))  # epoch 1 added none
    assert ds.buffer.hits > 0 and ds.buffer.misses == len(pairs)


def test_buffered_items_equal_decoded_items_at_any_worker_count_and_rank(pairs):
    """Exactness: a sample is the same with the buffer as decoded afresh, built by 0 or 2 workers (persistent,
    across epochs), by either rank of two, in any order: the buffer only saves decodes."""
    ref_ds = _feed(pairs).dataset
    ref_ds.buffer = DecodedPairBuffer(budget=0)  # keeps nothing: every read decodes
    ref = {}
    for epoch in (0, 1):
        ref_ds.set_epoch(epoch)
        for i in reversed(range(len(pairs))):
            ref[epoch, i] = ref_ds[i]
    seen = set()
    for workers, world in ((0, 1), (2, 2)):
        feed = _feed(pairs)
        for rank in range(world):
            sampler = StepShardedBatchSampler(len(pairs), 4, world_size=world, rank=rank, seed=3)
            loader = DataLoader(feed.dataset, batch_sampler=sampler, num_workers=workers, collate_fn=feed.collate,
                                persistent_workers=workers > 0)
            for epoch in (0, 1):
                feed.dataset.set_epoch(epoch)
                sampler.set_epoch(epoch)
                for batch in loader:
                    for k, i in enumerate(batch["index"].tolist()):
                        assert torch.equal(batch["img"][k], ref[epoch, i]["img"]), (workers, rank, epoch, i)
                        seen.add((epoch, i))
    assert len(seen) == 2 * len(pairs)
    assert any(not torch.equal(ref[0, i]["img"], ref[1, i]["img"]) for i in range(len(pairs)))


def test_the_device_loader_draws_the_same_pool_partners(pairs):
    """--loader device's workers draw the CPU loader's partners: a batch ships only its pools' files."""
    cpu, dev = _feed(pairs), _feed(pairs, loader="device")
    for batch in StepShardedBatchSampler(len(pairs), 4, seed=3):
        items = [dev.dataset[i] for i in batch]
        pool = set(dev.dataset.draw.windows.pool(0, batch[0]).tolist())
        assert set(dev.collate(items)["files"]) <= pool
        for i, item in zip(batch, items):
            cpu.dataset[i]
            assert item["plan"].sources == sorted(set(cpu.dataset.pipeline.partners.fetched) | {i})


# ------------------------------------------------------------------------------------------ the buffer
def test_the_buffer_keeps_the_most_recent_within_its_budget_read_only():
    def decode(i):
        return np.full((10, 10, 4), i, np.uint8), (20, 20)

    buf = DecodedPairBuffer(budget=3 * 400, min_items=0)
    for i in (0, 1, 2, 0, 3):  # 0 read again: 1 is now the least recently used
        pair, ori = buf.get(i, decode)
        assert pair[0, 0, 0] == i and ori == (20, 20) and not pair.flags.writeable
    assert len(buf) == 3 and buf.nbytes == 1200 and (buf.hits, buf.misses) == (1, 4)
    buf.get(1, decode)
    assert buf.misses == 5, "1 was evicted"
    floor = DecodedPairBuffer(budget=0, min_items=2)
    for i in range(4):
        floor.get(i, decode)
    assert len(floor) == 2, "min_items are kept whatever the budget"
    clone = pickle.loads(pickle.dumps(buf))  # what a spawned worker receives
    assert len(clone) == 0 and clone.nbytes == 0 and clone.budget == buf.budget


def test_the_cache_replaces_the_buffer(pairs, tmp_path):
    ds = _feed(pairs, cache="disk", cache_folders=[tmp_path]).dataset
    ds[0]
    assert ds.cache is not None and len(ds.buffer) == 0, "cached pairs are mapped, not copied into the buffer"


# ------------------------------------------------------------------------------------------ the seam
def test_a_loader_is_one_entry_of_the_seam(pairs, monkeypatch):
    """Both splits come from LOADERS: a new kind there is what the trainer and `val` get for its name; an unknown
    name is refused with the choices."""
    calls = []

    class Recording:
        @staticmethod
        def train(samples, imgsz, ir_channels, device, **draw):
            calls.append(("train", draw["partner_windows"].batch_size))
            return loaders_mod.CpuLoader.train(samples, imgsz, ir_channels, device, **draw)

        @staticmethod
        def val(samples, imgsz, ir_channels, device):
            calls.append(("val", imgsz))
            return loaders_mod.CpuLoader.val(samples, imgsz, ir_channels, device)

    monkeypatch.setitem(loaders_mod.LOADERS, "recording", Recording)
    train = _feed(pairs, loader="recording")
    val = validation_feed("recording", pairs, S, 1, "cpu")
    assert calls == [("train", 4), ("val", S)]
    for feed in (train, val):
        batch = feed.to_device(feed.collate([feed.dataset[i] for i in range(4)]))
        assert batch["img"].shape == (4, 4, S, S) and batch["img"].dtype == torch.uint8
    with pytest.raises(ValueError, match="loader must be one of cpu, device, recording, got 'gpu'"):
        validation_feed("gpu", pairs, S, 1, "cpu")


def test_train_feeds_move_the_targets_val_feeds_leave_them_on_the_host(pairs):
    """The loss reads a training batch's targets on the device; evaluate() indexes a val batch's on the host.
    The meta device stands in for an accelerator (the CPU loader's feeds; the device loader's val: see
    tests/test_device_loader.py)."""
    train = training_feed("cpu", pairs, imgsz=S, ir_channels=1, device="meta", augment=False, batch_size=4)
    val = validation_feed("cpu", pairs, S, 1, "meta")
    for feed, targets in ((train, "meta"), (val, "cpu")):
        b = feed.to_device(feed.collate([feed.dataset[i] for i in range(4)]))
        assert b["img"].device.type == "meta"
        assert all(b[k].device.type == targets for k in ("bboxes", "cls", "batch_idx", "index"))


# ------------------------------------------------------------------------------------ plan nodes
@dataclass
class _Invert(Node):
    """A node kind the package does not know: 255 - its input."""

    src: Node

    def sources(self):
        return self.src.sources()

    def out_hw(self):
        return self.src.out_hw()

    def warps(self):
        return self.src.warps()

    def render(self, frames):
        return 255 - self.src.render(frames)


def test_a_new_plan_node_is_one_class_the_renderer_needs_no_change():
    """Nodes say where their pixels come from, their size and how they render: a new kind (here in a test)
    renders inside a mosaic, a warp and a mixup blend of a batch, batched warps included."""
    g = torch.Generator().manual_seed(0)
    pairs = {i: torch.randint(0, 256, (4, 32, 40), generator=g).float() for i in range(2)}
    a, b = Source(0, (32, 40)), Source(1, (32, 40))
    tiles = [(_Invert(a), (0, 32, 0, 40), (0, 32, 0, 40)), (b, (32, 64, 24, 64), (0, 32, 0, 40))]
    mosaic = Mosaic(64, tiles)
    shift = np.array([[1, 0, 3], [0, 1, -2], [0, 0, 1.0]])
    roots = [Blend(_Invert(b), a, 0.25), Warp(mosaic, shift, (64, 64), False), _Invert(Warp(a, shift, (S, S), False))]
    assert sorted(set(roots[1].sources())) == [0, 1] and [w.out_hw() for r in roots for w in r.warps()] == [
        (64, 64), (S, S)]
    dev = DeviceAugment(S, 1, "cpu")
    blend = dev.render(roots[0], pairs)
    assert torch.equal(blend, ((255 - pairs[1]) * 0.25 + pairs[0] * 0.75).floor())
    plain = dev.render(Mosaic(64, [(a, *tiles[0][1:]), tiles[1]]), pairs)
    inverted = dev.render(mosaic, pairs)
    assert torch.equal(inverted[:, :32, :40], 255 - plain[:, :32, :40])
    assert torch.equal(inverted[:, 32:, 24:], plain[:, 32:, 24:])
    out = dev.render_batch([roots[1], roots[2]], pairs)  # the two warps in one batch, each as rendered alone
    assert torch.equal(out[0], dev.render(roots[1], pairs)) and torch.equal(out[1], dev.render(roots[2], pairs))


# ------------------------------------------------------------------------------------ normalisation
def test_training_validation_and_inference_scale_pixels_alike():
    """One normalisation (data/transforms.py) behind the task's images, evaluate() and FusionDetector (their own
    methods, on instances holding only the attributes those methods read: no model needs building)."""
    from yolofuse_scale.engine.evaluate import evaluate  # noqa: F401  (imports it: evaluate() calls it)
    from yolofuse_scale.engine.task import DetectionTask
    from yolofuse_scale.inference import FusionDetector

    img = torch.randint(0, 256, (2, 4, S, S), dtype=torch.uint8)
    before = img.clone()
    task = object.__new__(DetectionTask)
    task.memory_format = torch.channels_last
    x = task.images({"img": img})
    assert torch.equal(x, normalize_images(img)) and x.is_contiguous(memory_format=torch.channels_last)
    assert x.dtype == torch.float32 and x.max() <= 1 and torch.equal(img, before), "the batch is not scaled"
    det = object.__new__(FusionDetector)
    det.ir_channels, det.imgsz, det.device = 1, S, torch.device("cpu")
    rgb = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
    ir = np.random.default_rng(1).integers(0, 256, (S, S), dtype=np.uint8)
    t, _, _ = det.preprocess(rgb, ir)
    raw = torch.from_numpy(np.concatenate([rgb, ir[..., None]], 2)).permute(2, 0, 1)[None]
    assert torch.equal(t, normalize_images(raw))


def test_the_default_recipe_draws_from_the_pool_and_keeps_the_others():
    assert AugmentRecipe().mosaic_partners == "pool"
    assert {replace(AugmentRecipe(), mosaic_partners=p).mosaic_partners for p in ("dataset", "micro_batch")} == {
        "dataset", "micro_batch"}
    from yolofuse_scale.config import DataConfig

    assert DataConfig().recipe.mosaic_partners == "pool"
