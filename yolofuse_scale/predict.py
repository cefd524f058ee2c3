"""``yolofuse-scale predict``: detections for RGB+IR pairs from images, folders, videos or live streams.

What is read and how pairs are formed (by name, by time, live) is ``sources.py``'s concern; this module
runs the detector on each pair and writes, under ``--out``:

- ``predictions.jsonl``: one line per pair (where it came from, its size, its detections);
- unless ``--no-images``: for image pairs ``<stem>.jpg``, for videos and streams one annotated video
  ``<name>.mp4`` (MPEG-4 Part 2, ``mp4v``; ``<name>.avi`` with Motion-JPEG where this OpenCV cannot write
  that), each showing RGB | IR side by side with the same boxes on both (``Detections.plot``: the API
  and this command draw with the same function);
- with ``--save-txt``: ``labels/<stem>.txt`` (videos: ``labels/<name>_<frame>.txt``, frames from 1) in
  Ultralytics' format, ``class xc yc w h`` normalised (an oriented-box model, ``--task obb``: its OBB format,
  ``class x1 y1 x2 y2 x3 y3 x4 y4``, the corners normalised), ``conf`` appended with ``--save-conf``; a pair
  without detections gets no file, as in Ultralytics.

An oriented-box model's detections are drawn as rotated outlines and carry ``xywhr`` and ``corners`` in
predictions.jsonl (``Detections.to_list``).

An ``--out`` that would write over an input (the input folders themselves, or any output that is an
input file) is refused before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from yolofuse_scale.sources import PAIR_BY, PairSource, open_pairs

#: (suffix, fourcc) of the annotated video, in order of preference; both are in OpenCV's pip wheels.
VIDEO_CODECS = ((".mp4", "mp4v"), (".avi", "MJPG"))


def outputs(source: PairSource, out: Path, images: bool, save_txt: bool) -> list[Path]:
    """The files ``predict`` writes that can be named before it runs (a video's label files cannot)."""
    paths = [out / "predictions.jsonl"]
    if images:
        paths += ([out / f"{n}.jpg" for n in source.names] if source.kind == "images"
                  else [out / f"{source.name}{suffix}" for suffix, _ in VIDEO_CODECS])
    if save_txt:
        paths += [out / "labels" / f"{n}.txt" for n in source.names]
    return paths


def check_out(source: PairSource, rgb: Path, ir: Path, out: Path, images: bool, save_txt: bool = False) -> None:
    """Refuse an ``--out`` that would write over an input, before any work (``ValueError`` naming it).

    ``--out`` may not be the ``--rgb`` or ``--ir`` folder (the drawings would land among the inputs, over
    those that are JPEGs of the same stem, and a second run would pair them), and no output file may be
    an input file, however the path reaches it (``..``, symbolic or hard links: files are compared by
    device and inode): an annotated video may not be its input video. Costs one ``stat`` per input and
    per existing output.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: a file, not a folder (predictions.jsonl and the drawings go into a folder)")
    for folder, flag in ((rgb, "--rgb"), (ir, "--ir")):
        if folder.is_dir() and out.is_dir() and os.path.samefile(folder, out):
            raise ValueError(f"--out {out} is the {flag} folder {folder}: the drawings would be written among the "
                             "input images (over those of the same name); choose another --out")
    inputs = {}
    for p in source.inputs:
        st = p.stat()
        inputs[(st.st_dev, st.st_ino)] = p
    for path in outputs(source, out, images, save_txt):
        try:
            st = path.stat()
        except OSError:
            continue  # not there yet: not an input
        hit = inputs.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise ValueError(f"--out {out}: writing {path} would overwrite the input {hit}; choose another --out")


class VideoOut:
    """The annotated video of a video or stream source, opened at its first frame (the size is known then)."""

    def __init__(self, out: Path, name: str, fps: float):
        self.out, self.name, self.fps = out, name, fps
        self.writer: cv2.VideoWriter | None = None
        self.path: Path | None = None
        self.size: tuple[int, int] = (0, 0)
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        if self.writer is None:
            self.size = (bgr.shape[1], bgr.shape[0])
            for suffix, fourcc in VIDEO_CODECS:
                path = self.out / f"{self.name}{suffix}"
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
                if writer.isOpened():
                    self.writer, self.path = writer, path
                    break
                writer.release()
                path.unlink(missing_ok=True)
            else:
                raise RuntimeError(f"OpenCV {cv2.__version__} can write none of "
                                   f"{', '.join(f'{s} ({c})' for s, c in VIDEO_CODECS)} here")
        if (bgr.shape[1], bgr.shape[0]) != self.size:  # a stream that changed resolution: one video size
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options to ``parser``."""
    parser.add_argument("--weights", required=True, help="weights file written by training (weights/best.pt)")
    parser.add_argument("--rgb", required=True,
                        help="visible image, folder of frames, video file, camera index (0) or stream URL")
    parser.add_argument("--ir", required=True,
                        help="the infrared counterpart, of the same kind as --rgb (folders: matched by --pair-by)")
    parser.add_argument("--pair-by", choices=PAIR_BY, default=None,
                        help="two folders: pair files by name (default; visible/0001.jpg with infrared/0001.png) or "
                             "by time (the last number in each name, the nearest within half the IR step); videos "
                             "are always paired by time, streams live")
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the size trained at)")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default: 0.25)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default: 0.7)")
    parser.add_argument("--max-det", type=int, default=300, help="detections kept per pair (default: 300)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", default="runs/predict",
                        help="output folder (default: runs/predict); refused if it would write over an input (the "
                        "--rgb or --ir folder, or a file that is an input)")
    parser.add_argument("--no-images", action="store_true",
                        help="write predictions.jsonl (and labels) only, no drawings or video")
    parser.add_argument("--save-txt", action="store_true",
                        help="labels/<name>.txt per pair with detections, Ultralytics' format: class xc yc w h, "
                             "normalised to the RGB frame (an obb model: class x1 y1 x2 y2 x3 y3 x4 y4, its corners)")
    parser.add_argument("--save-conf", action="store_true", help="with --save-txt: append each box's confidence")
    parser.add_argument("--line-width", type=int, default=None, help="box line width in pixels (default: by size)")
    parser.add_argument("--nms-free", action="store_true",
                        help="end-to-end models (yolo26): answer from the one-to-one head, no NMS (--iou unused)")


def run(args: argparse.Namespace) -> int:
    """Detect on every pair; write predictions.jsonl, the drawings or video and the labels; print a summary."""
    from yolofuse_scale.data.config import DataError
    from yolofuse_scale.errors import CheckpointError
    from yolofuse_scale.inference import FusionDetector

    out = Path(args.out)
    images = not args.no_images
    try:  # everything checkable is checked before the model is loaded
        if args.save_conf and not args.save_txt:
            raise ValueError("--save-conf adds the confidence to --save-txt's labels: give --save-txt too")
        source = open_pairs(args.rgb, args.ir, args.pair_by)
        try:
            check_out(source, Path(args.rgb), Path(args.ir), out, images, args.save_txt)
            det = FusionDetector.load(args.weights, device=args.device, imgsz=args.imgsz, conf=args.conf,
                                      iou=args.iou, max_det=args.max_det, nms_free=args.nms_free)
        except BaseException:
            source.close()
            raise
    except (FileNotFoundError, ValueError, DataError, CheckpointError) as e:  # bad input: the message names it
        raise SystemExit(f"error: {e}") from e
    out.mkdir(parents=True, exist_ok=True)
    video = VideoOut(out, source.name, source.fps) if images and source.kind != "images" else None
    pairs = total = labels = 0
    stopped = False
    try:
        with open(out / "predictions.jsonl", "w") as fh:
            for pair in source.pairs(det.ir_channels, det.ir_mapping):
                result = det(pair.rgb, pair.ir)
                pairs, total = pairs + 1, total + len(result)
                fh.write(json.dumps({**pair.record, "height": result.shape[0], "width": result.shape[1],
                                     "detections": result.to_list()}) + "\n")
                if images:
                    drawn = cv2.cvtColor(result.plot(line_width=args.line_width), cv2.COLOR_RGB2BGR)
                    if video is None:
                        cv2.imwrite(str(out / f"{pair.name}.jpg"), drawn)
                    else:
                        video.write(drawn)
                if args.save_txt:
                    txt = out / "labels" / f"{pair.name}.txt"
                    txt.unlink(missing_ok=True)  # a previous run's labels of this pair must not survive
                    labels += result.save_txt(txt, args.save_conf) is not None
    except KeyboardInterrupt:  # how a live stream is ended: keep what was written, close the video
        stopped = True
    finally:
        if video is not None:
            video.close()
        source.close()
    for note in source.notes:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    wrote = [str(out / "predictions.jsonl")]
    if video is not None and video.path is not None:
        wrote.append(f"{video.path} ({video.frames} frames)")
    elif images and video is None:
        wrote.append(f"{pairs} image(s) in {out}")
    if args.save_txt:
        wrote.append(f"{labels} label file(s) in {out / 'labels'}")
    print(f"{pairs} pair(s), {total} detection(s){' (stopped by Ctrl-C)' if stopped else ''}: {', '.join(wrote)}")
    return 130 if stopped and source.kind != "stream" else 0
