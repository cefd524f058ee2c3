"""The decoded-pair cache: same items as decoding, built once by one process, shared read-only."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from yolofuse_scale.data import PairedRGBIRDataset, collate_pairs, load_data_config, scan_split, write_synthetic_dataset
from yolofuse_scale.data.cache import PairCache, open_pair_cache


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    data = write_synthetic_dataset(tmp_path_factory.mktemp("d"), n_train=10, n_val=1, imgsz=96, seed=4)
    return scan_split(load_data_config(data), "train")


@pytest.mark.parametrize("augment", [True, False])
def test_cached_items_equal_decoded_items(samples, tmp_path, augment):
    plain = PairedRGBIRDataset(samples, 64, augment=augment, ir_channels=1, seed=1)
    cached = PairedRGBIRDataset(samples, 64, augment=augment, ir_channels=1, seed=1)
    cached.use_cache("disk", [tmp_path / "c"], log=lambda _m: None)
    assert len(list((tmp_path / "c").glob("pairs-*.u8"))) == 1
    for i in range(len(samples)):
        a, b = plain[i], cached[i]
        assert torch.equal(a["img"], b["img"]) and torch.equal(a["bboxes"], b["bboxes"]), f"sample {i}"
    # workers map the file themselves (the mapping is not pickled) and read the same bytes
    loader = DataLoader(cached, batch_size=4, num_workers=2, collate_fn=collate_pairs)
    for batch in loader:
        for k, i in enumerate(batch["index"].tolist()):
            assert torch.equal(batch["img"][k], plain[i]["img"])


def _race(folder: str, key: str, marks: str, delay: float, out: mp.Queue) -> None:
    def load(i: int):
        Path(marks, f"{os.getpid()}_{i}").touch()  # one mark per decode: counts the decodes of every process
        time.sleep(delay)
        return np.full((8, 10, 4), i, np.uint8), (8, 10)

    cache = open_pair_cache(Path(folder), key, 6, load, imgsz=10, log=lambda _m: None, poll_s=0.05)
    out.put([int(cache.get(i)[0][0, 0, 0]) for i in range(len(cache))])


def test_concurrent_processes_build_once_and_read_the_same(tmp_path):
    ctx = mp.get_context("fork")
    out, marks = ctx.Queue(), tmp_path / "marks"
    marks.mkdir()
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "c"), "k1", str(marks), 0.05, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == [[0, 1, 2, 3, 4, 5]] * 3
    decoders = {m.name.split("_")[0] for m in marks.iterdir()}
    assert len(list(marks.iterdir())) == 6 and len(decoders) == 1, "one process decoded, each pair once"
    assert not list((tmp_path / "c").glob("*.lock")) and not list((tmp_path / "c").glob("*.tmp"))


def test_a_dead_builders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    lock = folder / "pairs-k2.u8.lock"
    lock.touch()
    os.utime(lock, (time.time() - 3600, time.time() - 3600))  # its builder stopped an hour ago
    cache = open_pair_cache(folder, "k2", 2, lambda i: (np.full((4, 4, 4), 7, np.uint8), (4, 4)), imgsz=4,
                            log=lambda _m: None, poll_s=0.01)
    assert len(cache) == 2 and cache.get(1)[0].max() == 7
    assert isinstance(PairCache(folder / "pairs-k2.u8"), PairCache), "reopens from the files alone"


def test_training_with_a_disk_cache(tiny_data, tmp_path):
    from tests.conftest import BASE_ARGS, launch

    out = tmp_path / "run"
    args = ["train.py", "--data", str(tiny_data), *BASE_ARGS, "--max-steps", "2", "--no-val", "--cache", "disk",
            "--output-dir", str(out)]
    run = launch("python", 1, args, out)
    assert "pair cache: 128 pairs" in run.output and [r["step"] for r in run.log] == [1, 2]
    again = launch("python", 1, args[:-1] + [str(tmp_path / "run2")], tmp_path / "run2")
    assert "decoding" not in again.output, "the second run maps the cache the first one wrote"
    assert [r["loss"] for r in again.log] == [r["loss"] for r in run.log]


def test_ram_cache_folder_is_private_to_its_user(tmp_path, monkeypatch):
    """/dev/shm is shared by every user of a node: the folder is per uid, 0o700, and an existing one that is
    not ours, is writable by others or is a symlink is refused (it could hold a planted cache)."""
    import stat

    from yolofuse_scale.data import cache

    shm = tmp_path / "shm"
    shm.mkdir(mode=0o777)
    shm.chmod(0o1777)  # like /dev/shm: world-writable, sticky
    monkeypatch.setattr(cache, "SHM", shm)
    folder = cache.cache_folder("ram", [])
    assert folder == shm / f"yolofuse_scale-{os.getuid()}"
    st = folder.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert cache.cache_folder("ram", []) == folder  # our own folder is used again
    folder.chmod(0o777)
    with pytest.raises(PermissionError, match=rf"{folder} is a folder .* mode drwxrwxrwx; refusing to use it"):
        cache.cache_folder("ram", [])
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="is a symlink"):
        cache.cache_folder("ram", [])
    folder.unlink()
    if os.getuid() == 0:  # only root can make a folder that belongs to someone else
        folder.mkdir(mode=0o700)
        os.chown(folder, 12345, 12345)
        with pytest.raises(PermissionError, match="owned by uid 12345"):
            cache.cache_folder("ram", [])
