"""What ``predict`` reads: RGB + IR pairs from two images, two folders, two video files or two live streams.

``--rgb`` and ``--ir`` must be the same kind of source (:func:`open_pairs` decides, before the model loads):

- **images**: two image files (one pair), or two folders of frames paired by name (``visible/0001.jpg``
  with ``infrared/0001.png``, the LLVIP and YOLOFuse convention) or by time (``--pair-by time``: the
  last number in each file name, a frame number or a timestamp, as in ``rgb_001234.jpg`` and
  ``ir_001236.png``);
- **video**: two files with a video suffix (:data:`VIDEO_SUFFIXES`), read with OpenCV (FFmpeg);
- **stream**: two live sources, camera indices (``0``, ``1``) or URLs (``rtsp://``, ``http://``, ...).

Pairing by time (videos, folders by time) uses one rule, :func:`pair_by_time`: the RGB sequence is the
clock; each RGB frame is paired with the IR frame nearest in time, if that one is within half an IR
frame interval; an RGB frame without one is skipped and counted. IR frames may serve twice (IR slower
than RGB) or go unused (IR faster). Two videos of the same frame rate thus pair frame i with frame i;
if one is longer, its extra frames are skipped and the summary says how many. Video times are the
frames' timestamps (``CAP_PROP_POS_MSEC``, so variable frame rates pair correctly), counted from each
file's start: files that start at different moments must be trimmed first. In folders, the interval
is the median step between consecutive IR numbers.

Live streams cannot be paired by looking ahead: a reader thread per camera keeps only its newest
frame (a model slower than the cameras drops frames instead of falling further and further behind),
and each step pairs a new RGB frame with the newest IR frame; the skew of the pair (difference of the
two arrival times, ms) is recorded with it. Cameras that must agree within a frame need a hardware
trigger; this pairing is as good as two free-running cameras allow.

One file of ~450 lines on purpose: the three kinds share one decision (:func:`open_pairs`), one record
(:class:`Pair`, :class:`PairSource`) and one pairing rule (:func:`pair_by_time`), and each kind is a
section of 80-120 lines that reads the same way (open, pair, count what was skipped). Split, each kind
would be a file importing those shared parts from a fourth: more files to open, no concern separated.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from yolofuse_scale.data.decode import conform_channels, read_image
from yolofuse_scale.data.scan import IMG_SUFFIXES
from yolofuse_scale.errors import UserError, debug_enabled

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".webm",
                            ".asf"})
PAIR_BY = ("name", "time")

A = TypeVar("A")
B = TypeVar("B")


class SourceError(UserError, ValueError):
    """An input of ``predict`` that cannot be read or paired; the message names it."""


@dataclass
class Pair:
    """One RGB + IR pair to detect on.

    ``rgb``: (H, W, 3) uint8 RGB order; ``ir``: (h, w, C_ir) uint8; ``name``: the base name of its
    outputs (``<stem>`` for an image pair, ``<video>_<frame>`` for a frame, frame numbers from 1, as
    Ultralytics names a video's label files); ``record``: where it came from, for predictions.jsonl.
    """

    rgb: np.ndarray
    ir: np.ndarray
    name: str
    record: dict[str, Any]


@dataclass
class PairSource:
    """An opened pair of sources: iterate :meth:`pairs` once, then read :attr:`notes`.

    ``kind``: "images", "video" or "stream"; ``name``: base name of the annotated video (video and
    stream); ``fps``: the output video's frame rate; ``inputs``: the local files it reads (what
    ``predict`` must never write over); ``names``: the output base names known in advance (images);
    ``notes``: what the pairing skipped, filled while iterating.
    """

    kind: str
    name: str
    fps: float
    inputs: list[Path]
    names: list[str]
    _pairs: Callable[[int, Any], Iterator[Pair]]
    _close: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)

    def pairs(self, ir_channels: int, ir_mapping: Any = None) -> Iterator[Pair]:
        """The pairs, IR converted to ``ir_channels`` (the model's); a 16-bit IR image file mapped to 8 bits by
        ``ir_mapping`` (the weights': ``data/decode.IRMapping``; video frames are 8-bit already)."""
        return self._pairs(ir_channels, ir_mapping)

    def close(self) -> None:
        self._close()


# ------------------------------------------------------------------------------------------ which kind
def source_kind(spec: str) -> str:
    """"folder", "image", "video" or "stream" for one ``--rgb``/``--ir`` value; "missing" if it is none."""
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image"
    if spec.isdigit() or "://" in spec:
        return "stream"
    return "missing"


def open_pairs(rgb: str, ir: str, pair_by: str | None = None) -> PairSource:
    """Open ``--rgb`` and ``--ir`` as one :class:`PairSource`; everything checkable is checked here.

    Raises ``FileNotFoundError`` or :class:`SourceError` naming the flag, the path and what is wrong.
    """
    kinds = {}
    for spec, flag in ((rgb, "--rgb"), (ir, "--ir")):
        kinds[flag] = source_kind(spec)
        if kinds[flag] == "missing":
            raise FileNotFoundError(f"{flag} {spec}: no such file or folder (nor a camera index or a URL)")
    a, b = kinds["--rgb"], kinds["--ir"]
    if pair_by is not None and pair_by not in PAIR_BY:
        raise SourceError(f"--pair-by must be one of {', '.join(PAIR_BY)}, got {pair_by!r}")
    if a != b:
        raise SourceError(f"--rgb {rgb} is {_kind_words[a]} but --ir {ir} is {_kind_words[b]}: both must be image "
                          "files, folders of frames, video files or live streams")
    if pair_by is not None and a != "folder":
        raise SourceError(f"--pair-by applies to two folders of frames; {_kind_words[a]}s are paired "
                          + ("as given" if a == "image" else "by time"))
    if a in ("folder", "image"):
        return _image_pairs(Path(rgb), Path(ir), pair_by or "name")
    if a == "video":
        return _video_pairs(Path(rgb), Path(ir))
    return _stream_pairs(rgb, ir)


_kind_words = {"folder": "a folder", "image": "an image file", "video": "a video file", "stream": "a live stream"}


# ------------------------------------------------------------------------------------------ pairing by time
def pair_by_time(rgb: Iterable[tuple[float, A]], ir: Iterable[tuple[float, B]], tolerance: float
                 ) -> Iterator[tuple[A, B | None, float]]:
    """(rgb item, nearest IR item or None, |time difference|) for each RGB item, in RGB order.

    Both sequences in increasing time. The IR item nearest in time is taken (on a tie the earlier one);
    it is None when farther than ``tolerance``. Reads IR one item ahead of the RGB time, no further.
    """
    ir_it = iter(ir)
    cur, nxt = next(ir_it, None), next(ir_it, None)
    for t, item in rgb:
        if cur is None:  # no IR at all
            yield item, None, math.inf
            continue
        while nxt is not None and abs(nxt[0] - t) < abs(cur[0] - t):
            cur, nxt = nxt, next(ir_it, None)
        gap = abs(cur[0] - t)
        yield item, (cur[1] if gap <= tolerance else None), gap


# ------------------------------------------------------------------------------------------ images
def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` (by suffix), sorted by name."""
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMG_SUFFIXES]


def pair_paths(rgb: Path, ir: Path, pair_by: str = "name") -> list[tuple[Path, Path]]:
    """(RGB, IR) pairs: two files, or two folders matched by stem (``pair_by="name"``) or by the number in
    the name (``"time"``, see the module docstring). Raises ``ValueError`` naming the path and the problem."""
    if rgb.is_file() and ir.is_file():
        return [(rgb, ir)]

    def by_stem(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in image_files(folder):
            if p.stem in found:
                raise SourceError(f"{folder}: {found[p.stem].name} and {p.name} share the stem {p.stem!r}")
            found[p.stem] = p
        return found

    rgbs = by_stem(rgb)
    if not rgbs:
        raise SourceError(f"--rgb {rgb}: no images ({', '.join(sorted(IMG_SUFFIXES))})")
    if pair_by == "time":
        return _pair_folders_by_time(list(rgbs.values()), list(by_stem(ir).values()), rgb, ir)
    irs = by_stem(ir)
    missing = [str(rgbs[s]) for s in rgbs if s not in irs]
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise SourceError(f"{len(missing)} RGB image(s) have no IR partner with the same name in {ir}:\n  {shown}"
                          "\n(frames named by frame number or timestamp: --pair-by time)")
    return [(rgbs[s], irs[s]) for s in rgbs]


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)(?=\D*$)")  # the last number of a stem, decimals allowed


def name_time(path: Path) -> float:
    """The last number in ``path``'s stem (``ir_001236`` -> 1236, ``1699999999.040`` -> 1699999999.04)."""
    m = _NUMBER.search(path.stem)
    if m is None:
        raise SourceError(f"{path}: --pair-by time needs a frame number or timestamp in the file name, found none")
    return float(m.group(1))


def _timed(paths: list[Path], folder: Path) -> list[tuple[float, Path]]:
    timed = sorted((name_time(p), p) for p in paths)
    for (t0, p0), (t1, p1) in zip(timed, timed[1:]):
        if t0 == t1:
            raise SourceError(f"{folder}: {p0.name} and {p1.name} carry the same number {t0:g} (--pair-by time)")
    return timed


def _pair_folders_by_time(rgbs: list[Path], irs: list[Path], rgb: Path, ir: Path) -> list[tuple[Path, Path]]:
    if not irs:
        raise SourceError(f"--ir {ir}: no images ({', '.join(sorted(IMG_SUFFIXES))})")
    rgb_t, ir_t = _timed(rgbs, rgb), _timed(irs, ir)
    # half the usual IR step: a frame is paired only with the IR frame of its own moment
    steps = np.diff([t for t, _ in ir_t])
    tolerance = float(np.median(steps)) / 2 if len(steps) else 0.0
    pairs, unpaired = [], []
    for rgb_path, ir_path, _ in pair_by_time(rgb_t, ir_t, tolerance):
        (pairs if ir_path is not None else unpaired).append((rgb_path, ir_path))
    if unpaired:
        shown = "\n  ".join(str(p) for p, _ in unpaired[:20]) + (
            f"\n  ... and {len(unpaired) - 20} more" if len(unpaired) > 20 else "")
        raise SourceError(f"{len(unpaired)} RGB image(s) have no IR frame within {tolerance:g} (half the median "
                          f"step of the numbers in {ir}'s names):\n  {shown}")
    return pairs


def _image_pairs(rgb: Path, ir: Path, pair_by: str) -> PairSource:
    pairs = pair_paths(rgb, ir, pair_by)

    def read(ir_channels: int, ir_mapping: Any = None) -> Iterator[Pair]:
        for rgb_path, ir_path in pairs:
            yield Pair(read_image(rgb_path, 3), read_image(ir_path, ir_channels, mapping=ir_mapping), rgb_path.stem,
                       {"rgb": str(rgb_path), "ir": str(ir_path)})

    return PairSource("images", rgb.stem, 0.0, [p for pair in pairs for p in pair], [r.stem for r, _ in pairs],
                      read)


# ------------------------------------------------------------------------------------------ videos
@contextlib.contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """Silence what OpenCV and FFmpeg print on the process's stderr (fd 2) while a source is opened.

    A file that is no video or a camera that is not there makes them print several lines ("moov atom
    not found", "can't open camera by index", an OpenCV exception text) before our one message says
    the same; FFmpeg reads its log level once per process, so the file descriptor is what can be
    quieted. ``YOLOFUSE_DEBUG=1`` keeps them.
    """
    if debug_enabled():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_capture(spec: str | int, flag: str, what: str) -> tuple[cv2.VideoCapture, np.ndarray]:
    """An opened capture and its first frame (BGR), or a :class:`SourceError` naming the source."""
    with _native_stderr_quiet():
        cap = cv2.VideoCapture(spec)
        opened = cap.isOpened()
        ok, frame = cap.read() if opened else (False, None)
    if not opened:
        cap.release()
        raise SourceError(f"{flag} {spec}: cannot be opened as {what} (OpenCV {cv2.__version__})")
    if not ok or frame is None:
        cap.release()
        raise SourceError(f"{flag} {spec}: opened as {what}, but no frame could be read from it")
    return cap, frame


def _fps(cap: cv2.VideoCapture) -> float:
    """The capture's frame rate, or 0 where the backend does not know it (0, NaN, a 90 kHz RTP clock)."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if 0 < fps < 1000 else 0.0


def _video_frames(cap: cv2.VideoCapture, first: np.ndarray, fps: float) -> Iterator[tuple[float, int, np.ndarray]]:
    """(time in ms from the first frame, frame number from 1, BGR frame) to the end, ``first`` already read.

    Times are the frames' timestamps (``CAP_PROP_POS_MSEC``, read after each frame); a backend without
    them (times that do not increase) gets the previous time + 1 / fps instead."""
    step, origin = 1000.0 / fps, cap.get(cv2.CAP_PROP_POS_MSEC)
    t, n, frame = 0.0, 1, first
    while True:
        yield t, n, frame
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        pos = cap.get(cv2.CAP_PROP_POS_MSEC) - origin
        t, n = (pos if pos > t else t + step), n + 1


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    return conform_channels(frame, 3, bgr=True)


def _video_pairs(rgb: Path, ir: Path) -> PairSource:
    caps, firsts, fps = {}, {}, {}
    try:
        for path, flag in ((rgb, "--rgb"), (ir, "--ir")):
            caps[flag], firsts[flag] = _open_capture(str(path), flag, "a video")
            fps[flag] = _fps(caps[flag])
            if not fps[flag]:
                raise SourceError(f"{flag} {path}: its frame rate is unknown (CAP_PROP_FPS "
                                  f"{caps[flag].get(cv2.CAP_PROP_FPS)}); pairing by time needs it")
    except SourceError:
        for cap in caps.values():
            cap.release()
        raise
    tolerance = 500.0 / fps["--ir"]  # half an IR frame, ms
    counts = {flag: int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) for flag, cap in caps.items()}  # the container's claim

    def read(ir_channels: int, ir_mapping: Any = None) -> Iterator[Pair]:
        rgb_frames = ((t, (t, n, f)) for t, n, f in _video_frames(caps["--rgb"], firsts["--rgb"], fps["--rgb"]))
        ir_frames = ((t, (t, n, f)) for t, n, f in _video_frames(caps["--ir"], firsts["--ir"], fps["--ir"]))
        skipped, total = [], 0
        for (t, n, frame), ir_item, _ in pair_by_time(rgb_frames, ir_frames, tolerance):
            total += 1
            if ir_item is None:
                skipped.append(n)
                continue
            ir_t, ir_n, ir_frame = ir_item
            yield Pair(_to_rgb(frame), conform_channels(_to_rgb(ir_frame), ir_channels), f"{rgb.stem}_{n}",
                       {"rgb": str(rgb), "ir": str(ir), "frame": n, "ir_frame": ir_n, "time_ms": round(t, 3),
                        "ir_time_ms": round(ir_t, 3)})
        if skipped:
            note = (f"{len(skipped)} of {total} RGB frames had no IR frame within {tolerance:.1f} ms (half an IR "
                    f"frame) and were skipped (frames {_ranges(skipped)}); --rgb {rgb}: {counts['--rgb']} frames at "
                    f"{fps['--rgb']:g} fps, --ir {ir}: {counts['--ir']} frames at {fps['--ir']:g} fps")
            source.notes.append(note)  # never all: both files' first frames are at time 0

    source = PairSource("video", rgb.stem, fps["--rgb"], [rgb, ir], [], read,
                        lambda: [cap.release() for cap in caps.values()])
    return source


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 7 -> "1-3, 7" (the first 10 runs)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:10])
    return text + (", ..." if len(runs) > 10 else "")


# ------------------------------------------------------------------------------------------ live streams
class LatestFrame:
    """A reader thread that keeps only the newest frame of a capture, with its number and arrival time.

    ``cap.read()`` blocks until the camera delivers; the thread absorbs that wait, so the detector
    always gets the newest frame and never a queue of old ones. Ends when the capture stops delivering.
    """

    def __init__(self, cap: cv2.VideoCapture, first: np.ndarray):
        self.cap = cap
        self._cond = threading.Condition()
        self.frame, self.number, self.time, self.ended = first, 1, time.monotonic(), False
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            ok, frame = self.cap.read()
            now = time.monotonic()
            with self._cond:
                if not ok or frame is None:
                    self.ended = True
                    self._cond.notify_all()
                    return
                self.frame, self.number, self.time = frame, self.number + 1, now
                self._cond.notify_all()

    def newer_than(self, number: int) -> tuple[int, float, np.ndarray] | None:
        """Wait for a frame numbered above ``number``; (number, arrival time, BGR frame), None at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self.number > number or self.ended)
            if self.number > number:
                return self.number, self.time, self.frame
            return None

    def newest(self) -> tuple[int, float, np.ndarray]:
        with self._cond:
            return self.number, self.time, self.frame

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)  # a blocked read returns at the camera's next frame or its timeout
        if not self._thread.is_alive():  # never release a capture under a read in progress (a crash in C++)
            self.cap.release()


def _stream_pairs(rgb: str, ir: str) -> PairSource:
    caps, firsts = {}, {}
    try:
        for spec, flag in ((rgb, "--rgb"), (ir, "--ir")):
            what = f"camera {spec}" if spec.isdigit() else "a stream"
            caps[flag], firsts[flag] = _open_capture(int(spec) if spec.isdigit() else spec, flag, what)
    except SourceError:
        for cap in caps.values():
            cap.release()
        raise
    fps = _fps(caps["--rgb"]) or 30.0  # the output video's rate; a camera that does not say: 30
    readers: list[LatestFrame] = []

    def read(ir_channels: int, ir_mapping: Any = None) -> Iterator[Pair]:
        readers.extend([LatestFrame(caps["--rgb"], firsts["--rgb"]), LatestFrame(caps["--ir"], firsts["--ir"])])
        rgb_reader, ir_reader = readers
        last = 0
        while (got := rgb_reader.newer_than(last)) is not None:
            last, t, frame = got
            ir_n, ir_t, ir_frame = ir_reader.newest()
            yield Pair(_to_rgb(frame), conform_channels(_to_rgb(ir_frame), ir_channels), f"{stream_name(rgb)}_{last}",
                       {"rgb": rgb, "ir": ir, "frame": last, "ir_frame": ir_n, "skew_ms": round((t - ir_t) * 1e3, 3)})
            if ir_reader.ended:
                source.notes.append(f"--ir {ir} ended after {ir_reader.number} frames; stopped")
                return
        source.notes.append(f"--rgb {rgb} ended after {rgb_reader.number} frames")

    def close() -> None:
        for r in readers:
            r.stop()
        if not readers:
            for cap in caps.values():
                cap.release()

    source = PairSource("stream", stream_name(rgb), fps, [], [], read, close)
    return source


def stream_name(spec: str) -> str:
    """A file-name-safe base name for a live source: ``camera0``, or the URL's last part (``rtsp://h/cam1``:
    ``cam1``)."""
    if spec.isdigit():
        return f"camera{spec}"
    tail = spec.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(tail).stem) or "stream"
