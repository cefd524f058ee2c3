"""A decoded-pair cache shared by every process of a node: one memory-mapped file, written once.

Decoding is the first wall of a dual-stream YOLO loader (a mosaic sample decodes 4 pairs, 8 images).
Ultralytics' ``cache=ram`` keeps a private copy per process: YOLOFuse on LLVIP pays ~24 GB per rank.
Here the pairs are decoded once, resized so their long side is ``imgsz`` (what the training pipeline
starts from, as Ultralytics caches), and written into one flat ``uint8`` file plus a JSON index. Every
rank and every DataLoader worker maps that file read-only: the pages live once in the node's page
cache (``disk``) or in ``/dev/shm`` (``ram``, tmpfs: RAM that is not duplicated per process).

Who writes: the first process to create ``<file>.lock`` (``O_EXCL``, atomic on local and NFSv3+ file
systems; it holds ``host pid token``) decodes into a temporary file of its own (``<file>.<pid>.<random>
.tmp``), renames it into place, then the index, then drops the lock. The others poll for the index (no
collective, so a long build cannot hit the process-group timeout) and take over a stale lock: its
builder's pid is gone (same host), or its mtime, which the builder touches every ``HEARTBEAT_S``, has
not moved for ``STALE_S``. Taking over is a rename of the lock to a name of one's own, then a second
look at what was renamed: only the lock judged stale is removed; a fresh lock renamed by a process that
lost the race (another taker had already replaced the stale one) is linked back. So two takers cannot
both build, and even a builder wrongly judged dead (stalled past ``STALE_S``) only costs a second,
identical build: no two processes ever write one file. With the cache folder on node-local storage
there is one builder per node; on a shared file system, one per job.

Only the training set is cached: evaluation maps boxes back to the original image size, which the
resized copy no longer has, and it decodes each image once per validation anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from yolofuse_scale.data.sample import Sample
from yolofuse_scale.io import write_atomic

#: ``--cache``: where decoded training pairs live (none: decoded every time); the tuple is derived from it.
CacheMode = Literal["none", "ram", "disk"]
CACHE_MODES: tuple[str, ...] = get_args(CacheMode)
STALE_S = 120.0  # a lock untouched this long belongs to a dead builder
HEARTBEAT_S = 10.0  # how often a builder touches its lock (one utime call)
SHM = Path("/dev/shm")
#: Bump when the decoded pixels change, so caches built before are rebuilt, not trained on (2: JPEGs decoded
#: reduced; 3: EXIF orientation applied, the decoder chosen by content).
CACHE_VERSION = 3


def cache_key(samples: list[Sample], imgsz: int, ir_channels: int) -> str:
    """Hash of what the cached bytes depend on: every file's path, size and mtime, the size, the channels, and how
    IR is read (``Sample.ir_read``: the 16-bit mapping with its levels, the homography). The cache holds the mapped,
    registered 8-bit pairs the loaders train on (raw 16-bit would double it and map on every read): a cache built
    under one mapping is never read under another."""
    reads = sorted({s.ir_read.key() for s in samples})
    h = hashlib.sha256(f"v{CACHE_VERSION}|{imgsz}|{ir_channels}|{reads}\n".encode())
    for s in samples:
        for p in (s.rgb, s.ir):
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def resize_long_side(pair: np.ndarray, imgsz: int) -> np.ndarray:
    """Resize so the long side is ``imgsz``, bilinear, as Ultralytics' ``load_image``.

    Sides are rounded as the letterbox rounds them (Ultralytics' ``load_image`` takes the ceiling, a
    pixel more at most): the letterbox of a cached pair is then bit-identical to that of the original.
    """
    h0, w0 = pair.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        size = (min(round(w0 * r), imgsz), min(round(h0 * r), imgsz))
        pair = cv2.resize(pair, size, interpolation=cv2.INTER_LINEAR)
        pair = pair[..., None] if pair.ndim == 2 else pair
    return pair


class PairCache:
    """Read-only view of a built cache: ``get(i)`` -> (resized stacked pair, original (h, w))."""

    def __init__(self, data_path: Path):
        self.data_path = Path(data_path)
        index = json.loads(self.index_path(self.data_path).read_text())
        self.offsets, self.shapes = index["offsets"], index["shapes"]
        self.ori_shapes = [tuple(s) for s in index["ori_shapes"]]
        self.nbytes = int(index["nbytes"])
        self._mm: np.memmap | None = None  # opened lazily: in each worker, after the fork/spawn

    @staticmethod
    def index_path(data_path: Path) -> Path:
        return data_path.with_suffix(".json")

    def __getstate__(self) -> dict:  # a worker maps the file itself: never pickle the mapping
        return {**self.__dict__, "_mm": None}

    def __len__(self) -> int:
        return len(self.offsets)

    def get(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self._mm is None:
            self._mm = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(max(self.nbytes, 1),))
        h, w, c = self.shapes[index]
        start = self.offsets[index]
        # A read-only view of the mapping, no copy (~0.4 ms a pair at 640 px): the letterbox and the mosaic
        # write into new arrays, and the photometric transforms copy a read-only input (augment._writable).
        return self._mm[start : start + h * w * c].reshape(h, w, c), self.ori_shapes[index]


def _token() -> str:
    """What a lock file holds: who owns it (host and pid, for the liveness check) and a random part that
    tells two owners apart even when a pid is reused."""
    return f"{socket.gethostname()} {os.getpid()} {secrets.token_hex(8)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale(lock: Path) -> os.stat_result | None:
    """The lock's ``stat`` if its builder is dead, else None (fresh, or already gone).

    Dead: a pid of this host that no longer runs (seen at once), or no heartbeat for ``STALE_S``
    (another host, a lock without an owner line, or a hung builder). A lock just created and not yet
    written is empty: its fresh mtime keeps it alive."""
    try:
        st = lock.stat()
    except FileNotFoundError:
        return None
    try:
        owner = lock.read_text().split()
    except (OSError, UnicodeError):  # gone meanwhile, or not readable: the mtime decides
        owner = []
    if len(owner) == 3 and owner[0] == socket.gethostname() and owner[1].isdigit() and not _pid_alive(int(owner[1])):
        return st
    return st if time.time() - st.st_mtime > STALE_S else None


def _take_over(lock: Path) -> None:
    """Remove ``lock`` if it is stale, safely against other takers: rename it to a name only this process uses, look
    again at what was renamed, and link it back if another taker had replaced the stale lock with a
    live one in between (``link`` fails rather than overwrite a lock created meanwhile)."""
    if _is_stale(lock) is not None:
        _remove_stale(lock)


def _remove_stale(lock: Path) -> None:
    """The second half of :func:`_take_over`, run by a taker that judged ``lock`` stale a moment ago."""
    grave = lock.with_name(f"{lock.name}.stale.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        os.rename(lock, grave)
    except FileNotFoundError:
        return  # another process took it first
    try:
        if _is_stale(grave) is None:  # what we renamed is a live builder's lock: give it back
            with contextlib.suppress(FileExistsError):
                os.link(grave, lock)
    finally:
        grave.unlink(missing_ok=True)


def _try_lock(lock: Path, token: str) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return True


def _release(lock: Path, token: str) -> None:
    """Drop the lock if it is still this builder's (a builder taken for dead may have lost it)."""
    with contextlib.suppress(OSError, UnicodeError):
        if lock.read_text() == token:
            lock.unlink()


def _build(path: Path, n: int, load, imgsz: int, lock: Path, threads: int) -> None:
    """Decode every pair into a temporary file of this process's own, rename it into place, then write
    the index (the 'done' mark)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    offsets, shapes, ori_shapes, pos = [], [], [], 0
    beat = time.monotonic()

    def decode(i: int) -> tuple[np.ndarray, tuple[int, int]]:
        pair, ori = load(i)
        return resize_long_side(pair, imgsz), ori

    try:
        with open(tmp, "wb") as fh, ThreadPoolExecutor(max(1, threads)) as pool:  # cv2 decodes without the GIL
            for pair, ori in pool.map(decode, range(n)):
                fh.write(np.ascontiguousarray(pair).tobytes())
                offsets.append(pos)
                shapes.append(list(pair.shape))
                ori_shapes.append(list(ori))
                pos += pair.size
                if time.monotonic() - beat > HEARTBEAT_S:  # heartbeat: this builder is alive
                    beat = time.monotonic()
                    with contextlib.suppress(OSError):  # a lock taken over meanwhile: build on, harmlessly
                        os.utime(lock)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    index = {"offsets": offsets, "shapes": shapes, "ori_shapes": ori_shapes, "nbytes": pos}
    write_atomic(PairCache.index_path(path), json.dumps(index))


def open_pair_cache(folder: Path, key: str, n: int, load, imgsz: int, log=print, threads: int = 8,
                    poll_s: float = 0.5, build_log=None) -> PairCache:
    """Open the cache ``key`` in ``folder``, building it first if no process has (see module docstring).

    ``load(i)`` returns (stacked pair, original (h, w)), at any size (resized here so its long side is
    ``imgsz``, a no-op if it is already); it is called ``n`` times by the one process that builds.
    ``build_log`` (default ``log``): where the builder says it is decoding. The builder is whichever process
    takes the lock first, not always the one whose ``log`` prints: a training passes one every rank prints with.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pairs-{key}.u8"
    lock = path.with_name(path.name + ".lock")
    t0, token = time.perf_counter(), _token()
    while not PairCache.index_path(path).is_file():
        if not _try_lock(lock, token):
            _take_over(lock)  # removed only if its builder is dead; then the next try may get it
            time.sleep(poll_s)
            continue
        try:
            if not PairCache.index_path(path).is_file():  # another builder may have finished meanwhile
                (build_log or log)(f"pair cache: decoding {n} pairs into {path} ...")
                _build(path, n, load, imgsz, lock, threads)
        finally:
            _release(lock, token)
    cache = PairCache(path)
    log(f"pair cache: {len(cache)} pairs, {cache.nbytes / 2**30:.2f} GiB in {path}, mapped read-only and "
        f"shared by every process of this node ({time.perf_counter() - t0:.1f} s to open)")
    return cache


def open_training_cache(mode: str, folders: list[Path] | tuple[Path, ...], samples: list[Sample], imgsz: int,
                        ir_channels: int, decode, log=print, build_log=None) -> PairCache | None:
    """``--cache``: the training set's cache (None for ``none``), opened or built from ``decode(i)`` (the CPU
    loader's decoder, whichever loader asks: the same key, file and pixels serve both)."""
    if mode == "none":
        return None
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    key = cache_key(samples, imgsz, ir_channels)
    return open_pair_cache(cache_folder(mode, folders), key, len(samples), decode, imgsz, log, build_log=build_log)


def cache_folder(mode: str, candidates: list[Path] | tuple[Path, ...]) -> Path:
    """``ram``: tmpfs (``/dev/shm/yolofuse_scale-<uid>``) when the machine has it; ``disk`` (or no tmpfs):
    the first of ``candidates`` that can be written (the dataset's folder, so the next run finds it; else
    the run's).

    ``/dev/shm`` is shared by every user of the node, so the ram folder is per user, created mode 0o700,
    and refused if it exists but is not ours, is group/other-writable or is not a plain folder: anyone who
    can write there could plant a ready-made cache (an index and pixels) that this run would train on.
    """
    if mode == "ram" and SHM.is_dir() and os.access(SHM, os.W_OK):
        import stat

        folder = SHM / f"yolofuse_scale-{os.getuid()}"
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)  # exactly 0o700 whatever the umask (we just created it)
        except FileExistsError:
            pass
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"
            raise PermissionError(
                f"--cache ram: {folder} is {kind} owned by uid {st.st_uid} with mode {stat.filemode(st.st_mode)}; "
                f"refusing to use it (it must be a folder of uid {os.getuid()} that only its owner can write); "
                "remove it, or use --cache disk"
            )
        return folder
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError(f"no writable folder for the pair cache among {', '.join(map(str, candidates))}")
