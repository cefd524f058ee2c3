"""The decoded-pair cache: same items as decoding, built once by one process, shared read-only."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
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


@pytest.mark.slow
def test_training_with_a_disk_cache(tiny_data, tmp_path):
    from tests.helpers import BASE_ARGS, launch

    out = tmp_path / "run"
    args = ["train.py", "--data", str(tiny_data), *BASE_ARGS, "--max-steps", "2", "--no-val", "--cache", "disk",
            "--output-dir", str(out)]
    run = launch("python", 1, args, out)
    assert "pair cache: 128 pairs" in run.output and [r["step"] for r in run.log] == [1, 2]
    again = launch("python", 1, args[:-1] + [str(tmp_path / "run2")], tmp_path / "run2")
    assert "decoding" not in again.output, "the second run maps the cache the first one wrote"
    assert [r["loss"] for r in again.log] == [r["loss"] for r in run.log]


def _builder(folder: str, key: str, marks: str, delay: float, stale_s: float, out: mp.Queue) -> None:
    """A builder process: decodes 6 pairs one at a time, ``delay`` s each, with ``STALE_S`` = ``stale_s``."""
    from yolofuse_scale.data import cache

    cache.STALE_S = stale_s

    def load(i: int):
        Path(marks, f"{os.getpid()}_{i}").touch()
        time.sleep(delay)
        return np.full((8, 10, 4), i, np.uint8), (8, 10)

    try:
        c = open_pair_cache(Path(folder), key, 6, load, imgsz=10, log=lambda _m: None, threads=1, poll_s=0.02)
        out.put([int(c.get(i)[0][0, 0, 0]) for i in range(len(c))])
    except BaseException as e:  # reported, not lost in the child's stderr
        out.put(f"{type(e).__name__}: {e}")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".u8", ".json")))


def test_builders_racing_on_a_dead_builders_lock_build_once(tmp_path):
    """A lock left by a process of this host that is gone (its mtime fresh: no waiting STALE_S for it),
    raced on by three processes started together: one takes over and builds, the others read."""
    ctx = mp.get_context("fork")
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    folder, marks, out = tmp_path / "c", tmp_path / "marks", ctx.Queue()
    folder.mkdir()
    marks.mkdir()
    (folder / "pairs-k3.u8.lock").write_text(f"{socket.gethostname()} {dead.pid} 0123456789abcdef")
    procs = [ctx.Process(target=_builder, args=(str(folder), "k3", str(marks), 0.02, 60.0, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == [[0, 1, 2, 3, 4, 5]] * 3
    decoders = {m.name.split("_")[0] for m in marks.iterdir()}
    assert len(decoders) == 1 and len(list(marks.iterdir())) == 6, "one process took over and decoded"
    assert _leftovers(folder) == [], "no lock, temporary or renamed-away lock left"


def test_a_builder_taken_for_dead_and_its_successor_do_not_share_a_file(tmp_path):
    """A builder that stalls past STALE_S (no heartbeat) is taken over while it still writes: the two
    must not write one temporary file (one of them used to crash renaming it), and both end with the
    same cache."""
    ctx = mp.get_context("fork")
    folder, marks, out = tmp_path / "c", tmp_path / "marks", ctx.Queue()
    marks.mkdir()
    first = ctx.Process(target=_builder, args=(str(folder), "k4", str(marks), 0.25, 0.3, out))
    first.start()
    time.sleep(0.6)  # the first builder holds the lock, its mtime already older than STALE_S
    second = ctx.Process(target=_builder, args=(str(folder), "k4", str(marks), 0.0, 0.3, out))
    second.start()
    results = [out.get(timeout=30) for _ in range(2)]
    for p in (first, second):
        p.join(timeout=30)
    assert results == [[0, 1, 2, 3, 4, 5]] * 2, results
    assert len({m.name.split("_")[0] for m in marks.iterdir()}) == 2, "the second builder did take over"
    assert _leftovers(folder) == []


def test_a_taker_with_an_outdated_view_gives_a_live_lock_back(tmp_path):
    """The interleaving a takeover must survive: a taker judged the lock stale, but before its rename
    another taker replaced it with a live builder's lock. The rename-then-look-again puts it back."""
    from yolofuse_scale.data.cache import _remove_stale

    lock = tmp_path / "pairs-k5.u8.lock"
    live = f"{socket.gethostname()} {os.getpid()} feedfacefeedface"  # this process: alive
    lock.write_text(live)
    _remove_stale(lock)
    assert lock.read_text() == live, "a live builder's lock is not removed"
    assert [p.name for p in tmp_path.iterdir()] == [lock.name]
    os.utime(lock, (time.time() - 3600,) * 2)  # the same owner, silent for an hour: stale after all
    _remove_stale(lock)
    assert list(tmp_path.iterdir()) == []


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


def test_the_builder_says_it_is_decoding_where_it_is_told(tmp_path):
    """Whichever process takes the lock builds, not always the one whose log prints (a training's main process):
    the builder's line goes to ``build_log``, which a training prints on every rank, the summary to ``log``."""
    said, built = [], []
    open_pair_cache(tmp_path, "k", 2, lambda i: (np.full((4, 4, 4), i, np.uint8), (4, 4)), imgsz=4,
                    log=said.append, build_log=built.append, poll_s=0.02)
    assert len(built) == 1 and built[0].startswith("pair cache: decoding 2 pairs")
    assert len(said) == 1 and said[0].startswith("pair cache: 2 pairs")
