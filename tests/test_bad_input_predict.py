"""Bad input, predict's sources: videos, live streams and folders paired by time (predict --out that would
write over an input: tests/test_bad_input_outputs.py). Each: one ``error:`` message naming the flag, the
path and what is wrong, exit code 1, nothing written, and no lines of OpenCV's or FFmpeg's own on the
process's stderr (checked at the file-descriptor level). ``KINDS`` counts them."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.bad_input_helpers import assert_user_error
from tests.test_bad_input_outputs import weights  # noqa: F401  (a module fixture: an untrained tiny model)


def _predict(weights_file: Path, rgb: str, ir: str, out: Path, *extra: str):
    from yolofuse_scale import predict

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    args = parser.parse_args(["--weights", str(weights_file), "--rgb", rgb, "--ir", ir, "--out", str(out),
                              "--device", "cpu", *extra])
    return lambda: predict.run(args)


def _video(path: Path, n: int = 3, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (32, 24))
    for i in range(n):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _frames(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    return folder


def _case(kind: str, tmp: Path) -> tuple[str, str, Path, list[str], list[str]]:
    """(--rgb, --ir, --out, extra flags, what the message must say) for one kind."""
    out = tmp / "pred"
    if kind == "video-and-folder":
        rgb, ir = _video(tmp / "rgb.avi"), _frames(tmp / "ir", ["0001.png"])
        return str(rgb), str(ir), out, [], [f"--rgb {rgb} is a video file but --ir {ir} is a folder"]
    if kind == "not-a-video":
        (tmp / "clip.mp4").write_text("not a video")
        rgb, ir = tmp / "clip.mp4", _video(tmp / "ir.avi")
        return str(rgb), str(ir), out, [], [f"--rgb {rgb}: cannot be opened as a video"]
    if kind == "video-output-is-the-input":  # the annotated video <out>/<rgb stem>.mp4 is the input itself
        out.mkdir()
        rgb, ir = _video(out / "rgb.mp4", fourcc="mp4v"), _video(tmp / "ir.avi")
        return str(rgb), str(ir), out, [], [f"writing {out / 'rgb.mp4'} would overwrite the input {rgb}"]
    if kind == "missing-camera":
        return "97", "98", out, [], ["--rgb 97: cannot be opened as camera 97"]
    if kind == "unreachable-stream":
        url = "rtsp://127.0.0.1:9/cam"  # the discard port: refused at once, offline
        return url, url, out, [], [f"--rgb {url}: cannot be opened as a stream"]
    if kind == "pair-by-for-videos":
        rgb, ir = _video(tmp / "rgb.avi"), _video(tmp / "ir.avi")
        return str(rgb), str(ir), out, ["--pair-by", "name"], ["--pair-by applies to two folders of frames",
                                                              "video files are paired by time"]
    if kind == "save-conf-without-save-txt":
        rgb, ir = _video(tmp / "rgb.avi"), _video(tmp / "ir.avi")
        return str(rgb), str(ir), out, ["--save-conf"], ["--save-conf adds the confidence to --save-txt's labels"]
    rgb = _frames(tmp / "rgb", ["rgb_0000.png", "rgb_0010.png", "rgb_0020.png"])
    if kind == "time-without-number":
        ir = _frames(tmp / "ir", ["ir_0000.png", "ir_last.png"])
        return str(rgb), str(ir), out, ["--pair-by", "time"], [
            f"{ir / 'ir_last.png'}: --pair-by time needs a frame number or timestamp in the file name"]
    if kind == "time-same-number":
        ir = _frames(tmp / "ir", ["ir_0010.png", "ir-0010.jpg", "ir_0020.png"])
        return str(rgb), str(ir), out, ["--pair-by", "time"], [f"{ir}: ir-0010.jpg and ir_0010.png carry the same "
                                                               "number 10"]
    assert kind == "time-too-far"
    ir = _frames(tmp / "ir", ["ir_0000.png", "ir_0002.png", "ir_0004.png", "ir_0010.png"])  # step 2: within 1
    return str(rgb), str(ir), out, ["--pair-by", "time"], [
        "1 RGB image(s) have no IR frame within 1", str(rgb / "rgb_0020.png")]


KINDS = ["video-and-folder", "not-a-video", "video-output-is-the-input", "missing-camera", "unreachable-stream",
         "pair-by-for-videos", "save-conf-without-save-txt", "time-without-number", "time-same-number",
         "time-too-far"]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_source_problems_are_one_message(weights, tmp_path, kind, capfd):  # noqa: F811
    rgb, ir, out, extra, needles = _case(kind, tmp_path)
    existed = out.exists() and sorted(out.iterdir())
    err = assert_user_error(_predict(weights, rgb, ir, out, *extra), *needles, capsys=capfd)
    # OpenCV's ("[ WARN:0@0.03] ...", "OpenCV(5.1.0) ...") and FFmpeg's ("[tcp @ 0x...] ...") own lines
    assert not any(line.startswith(("[", "OpenCV(", ">")) for line in err.splitlines()), err
    assert (out.exists() and sorted(out.iterdir())) == existed  # nothing written
