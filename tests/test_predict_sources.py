"""``predict`` on videos, live-stream URLs and folders paired by time; ``--save-txt``; ``Detections.plot/save``;
labels kept inside the image.

The weights are an untrained tiny model written directly (no training) whose class-score biases are
raised, so that every anchor scores ~0.98 and every frame has detections: what is checked is the
reading, pairing and writing, not what a model finds. Predict runs in-process (no interpreter start).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from yolofuse_scale.model import build_model
    from yolofuse_scale.weights import write_weights

    torch.manual_seed(0)
    model = build_model("yolov8t", "mid", nc=2, ir_channels=1)
    with torch.no_grad():
        for branch in model.model[-1].cv3:  # the class logits' last conv: sigmoid(4) = 0.98 everywhere
            branch[-1].bias.fill_(4.0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3, "ir_channels": 1,
                                             "names": {0: "person", 1: "car"}, "imgsz": 64})
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[tuple[np.ndarray, np.ndarray]]:
    """Six synthetic (RGB, IR) frames as BGR arrays, 64 x 80."""
    from yolofuse_scale.data import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path_factory.mktemp("frames"), n_train=1, n_val=6, imgsz=64, seed=0).parent
    rgbs = sorted((root / "images" / "val").glob("*.png"))
    return [(cv2.imread(str(p)), cv2.imread(str(root / "imagesIR" / "val" / p.name))) for p in rgbs]


def _video(path: Path, images: list[np.ndarray], fps: float) -> Path:
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for im in images:
        writer.write(im)
    writer.release()
    return path


def _predict(*argv: str) -> int:
    from yolofuse_scale import predict
    from yolofuse_scale.errors import run_entry

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    return run_entry(predict.run, parser.parse_args([*argv, "--device", "cpu"]))


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_predict_reads_a_pair_of_videos(weights, frames, tmp_path):
    """Two videos of 6 frames -> an annotated RGB | IR video of 6 frames, 6 JSON lines, 6 label files in
    Ultralytics' format, each frame's detections those of the API on the same decoded frames."""
    from yolofuse_scale import FusionDetector

    rgb = _video(tmp_path / "rgb.avi", [f[0] for f in frames], 10.0)
    ir = _video(tmp_path / "ir.avi", [f[1] for f in frames], 10.0)
    out = tmp_path / "pred"
    assert _predict("--weights", str(weights), "--rgb", str(rgb), "--ir", str(ir), "--out", str(out),
                    "--save-txt", "--save-conf", "--max-det", "3") == 0
    drawn = _read_video(out / "rgb.mp4")
    assert len(drawn) == 6 and drawn[0].shape == (64, 160, 3)  # RGB | IR side by side
    lines = _jsonl(out / "predictions.jsonl")
    assert [(x["frame"], x["ir_frame"]) for x in lines] == [(i, i) for i in range(1, 7)]
    assert all(len(x["detections"]) == 3 for x in lines)
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"rgb_{i}.txt" for i in range(1, 7)]
    decoded = list(zip(_read_video(rgb), _read_video(ir)))
    det = FusionDetector.load(weights, device="cpu", max_det=3)
    api = det(cv2.cvtColor(decoded[2][0], cv2.COLOR_BGR2RGB), cv2.cvtColor(decoded[2][1], cv2.COLOR_BGR2GRAY))
    assert lines[2]["detections"] == api.to_list()
    assert (out / "labels" / "rgb_3.txt").read_text().splitlines() == api.txt_lines(save_conf=True)
    assert all(len(row.split()) == 6 for row in api.txt_lines(save_conf=True))
    # the IR half is the grey IR frame under the boxes: its colour channels agree away from the drawing
    left, right = drawn[0][:, :80].astype(int), drawn[0][:, 80:].astype(int)
    assert np.median(np.abs(right[..., 0] - right[..., 2])) <= 2 < np.median(np.abs(left[..., 0] - right[..., 0]))


def test_videos_of_other_rates_and_lengths_are_paired_by_time(weights, frames, tmp_path, capsys):
    """10 fps RGB with 4 fps IR: each RGB frame takes the IR frame nearest in time (0, 250, 500 ms for RGB
    0-500 ms). Same rate, IR shorter: the RGB frames past its end are skipped, and one warning says so."""
    rgb = _video(tmp_path / "rgb.avi", [f[0] for f in frames], 10.0)
    slow_ir = _video(tmp_path / "ir4.avi", [f[1] for f in frames[:3]], 4.0)
    out = tmp_path / "rates"
    assert _predict("--weights", str(weights), "--rgb", str(rgb), "--ir", str(slow_ir), "--out", str(out),
                    "--no-images") == 0
    lines = _jsonl(out / "predictions.jsonl")
    assert [x["ir_frame"] for x in lines] == [1, 1, 2, 2, 3, 3]
    assert [x["time_ms"] for x in lines] == pytest.approx([0, 100, 200, 300, 400, 500], abs=1)
    assert not list(out.glob("*.mp4")) and not (out / "labels").exists()  # --no-images, no --save-txt

    assert "warning" not in capsys.readouterr().err
    short_ir = _video(tmp_path / "ir_short.avi", [f[1] for f in frames[:4]], 10.0)
    out = tmp_path / "short"
    assert _predict("--weights", str(weights), "--rgb", str(rgb), "--ir", str(short_ir), "--out", str(out)) == 0
    assert [(x["frame"], x["ir_frame"]) for x in _jsonl(out / "predictions.jsonl")] == [(i, i) for i in range(1, 5)]
    assert len(_read_video(out / "rgb.mp4")) == 4
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "2 of 6 RGB frames had no IR frame within 50.0 ms" in err
    assert "(frames 5-6)" in err and "10 fps" in err


def test_stream_urls_take_the_live_path(weights, frames, tmp_path):
    """A URL is a live stream: a reader thread per source keeps the newest frame (files read as URLs
    arrive as fast as they decode, so how many frames the detector gets is not fixed); every pair is
    written once to the video, the JSON lines and the labels, with RGB frames in order."""
    rgb = _video(tmp_path / "rgb.avi", [f[0] for f in frames], 10.0)
    ir = _video(tmp_path / "ir.avi", [f[1] for f in frames], 10.0)
    out = tmp_path / "live"
    assert _predict("--weights", str(weights), "--rgb", f"file://{rgb}", "--ir", f"file://{ir}", "--out", str(out),
                    "--save-txt") == 0
    lines = _jsonl(out / "predictions.jsonl")
    numbers = [x["frame"] for x in lines]
    assert 1 <= len(lines) <= 6 and numbers == sorted(set(numbers)) and all("skew_ms" in x for x in lines)
    assert all(1 <= x["ir_frame"] <= 6 for x in lines)
    assert len(_read_video(out / "rgb.mp4")) == len(lines)
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(f"rgb_{n}.txt" for n in numbers)


def test_folders_paired_by_time(tmp_path):
    """Frames named by their time (different prefixes, IR 1 unit later): by name nothing pairs, and the
    message points at --pair-by time; by time each RGB frame gets the IR frame of its moment."""
    from yolofuse_scale.sources import SourceError, pair_paths

    rgb, ir = tmp_path / "rgb", tmp_path / "ir"
    rgb.mkdir()
    ir.mkdir()
    im = np.zeros((8, 8, 3), np.uint8)
    for t in (0, 40, 80, 120):
        cv2.imwrite(str(rgb / f"cam0_{t:06d}.png"), im)
    for t in (1, 21, 41, 61, 81, 101, 121):  # IR at twice the rate
        cv2.imwrite(str(ir / f"cam1_{t:06d}.png"), im)
    with pytest.raises(SourceError, match="(?s)no IR partner with the same name.*--pair-by time"):
        pair_paths(rgb, ir)
    got = [(a.name, b.name) for a, b in pair_paths(rgb, ir, "time")]
    assert got == [(f"cam0_{t:06d}.png", f"cam1_{t + 1:06d}.png") for t in (0, 40, 80, 120)]


def test_save_txt_is_ultralytics_format(tmp_path):
    """The same boxes give the same text as Ultralytics' ``Results.save_txt``, with and without conf."""
    from ultralytics.engine.results import Results

    from yolofuse_scale.inference import Detections

    h, w = 123, 457
    boxes = np.array([[0, 0, 456.9, 122.2], [13.37, 40.01, 99.5, 77.7], [200.25, 3.5, 201.0, 120.125]], np.float32)
    scores = np.array([0.912345678, 0.25, 0.0031415], np.float32)
    classes = np.array([1, 0, 7])
    names = {i: f"c{i}" for i in range(8)}
    ours = Detections(boxes, scores, classes, names, (h, w))
    theirs = Results(np.zeros((h, w, 3), np.uint8), "x.jpg", names,
                     boxes=torch.from_numpy(np.concatenate([boxes, scores[:, None], classes[:, None]], 1)))
    for conf in (False, True):
        theirs.save_txt(tmp_path / f"u{conf}.txt", save_conf=conf)
        assert ours.save_txt(tmp_path / f"o{conf}.txt", save_conf=conf) == tmp_path / f"o{conf}.txt"
        assert (tmp_path / f"o{conf}.txt").read_text() == (tmp_path / f"u{conf}.txt").read_text()
    assert len((tmp_path / "oTrue.txt").read_text().splitlines()[0].split()) == 6
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), names, (h, w))
    assert empty.save_txt(tmp_path / "none.txt") is None and not (tmp_path / "none.txt").exists()


def _edge_detections(h: int = 96, w: int = 160):
    from yolofuse_scale.inference import Detections

    rng = np.random.default_rng(0)
    rgb = (rng.random((h, w, 3)) * 40).astype(np.uint8)
    ir = (rng.random((h // 2, w // 2, 1)) * 40 + 100).astype(np.uint8)  # other size, one channel
    boxes = np.array([[w - 6, 0, w, 6], [0, h - 5, 5, h], [w - 8, h - 8, w, h]], np.float32)  # three corners
    return Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 0]),
                      {0: "a_long_class_name", 1: "car"}, (h, w), rgb, ir)


def test_labels_stay_inside_the_image():
    """Boxes in the top-right, bottom-left and bottom-right corners: each label's filled rectangle is
    inside the image, whole (every pixel of it drawn), and the text is written on it."""
    from yolofuse_scale.annotate import FONT, colour, label_rect

    d = _edge_detections()
    plain = d.plot(show="rgb", labels=False)
    drawn = d.plot(show="rgb")
    h, w = drawn.shape[:2]
    texts = [f"{d.names[int(c)]} {s:.2f}" for c, s in zip(d.classes, d.scores)]
    widest = max(cv2.getTextSize(t, FONT, 0.35, 1)[0][0] for t in texts)
    assert widest > w / 2  # the labels are long for this frame: the edge case is real
    for box, text in zip(d.boxes.astype(int), texts):
        (tw, th), base = cv2.getTextSize(text, FONT, 0.35, 1)
        x1, y1, x2, y2 = label_rect(tuple(box), tw + 2, th + base + 2, drawn.shape)
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1, y2 - y1) == (tw + 2, th + base + 2)
    # last label drawn (bottom-right) is complete: its rectangle is its colour or its (black) text
    x1, y1, x2, y2 = label_rect(tuple(d.boxes[2].astype(int)), *_size(texts[2]), drawn.shape)
    patch = drawn[y1:y2, x1:x2].reshape(-1, 3)
    fill = np.all(patch == colour(0), axis=1)
    assert fill.mean() > 0.5 and (~fill).sum() > 10  # mostly fill, with text written on it
    assert not np.array_equal(plain[y1:y2, x1:x2], drawn[y1:y2, x1:x2])


def _size(text: str) -> tuple[int, int]:
    from yolofuse_scale.annotate import FONT

    (tw, th), base = cv2.getTextSize(text, FONT, 0.35, 1)
    return tw + 2, th + base + 2


def test_label_rect_geometry():
    from yolofuse_scale.annotate import label_rect

    assert label_rect((10, 30, 40, 60), 20, 12, (100, 100)) == (10, 18, 30, 30)  # room above: above the box
    assert label_rect((10, 5, 40, 60), 20, 12, (100, 100)) == (10, 5, 30, 17)  # no room above: inside, below top
    assert label_rect((90, 5, 99, 60), 20, 12, (100, 100)) == (80, 5, 100, 17)  # right edge: moved left
    assert label_rect((0, 95, 5, 100), 20, 12, (100, 100)) == (0, 83, 20, 95)  # bottom: above the box
    assert label_rect((0, 0, 5, 5), 20, 12, (8, 10)) == (0, 0, 20, 12)  # image smaller than the label: top-left


def test_detections_plot_and_save(tmp_path):
    d = _edge_detections()
    pair, rgb, ir = d.plot(), d.plot(show="rgb"), d.plot(show="ir")
    assert pair.shape == (96, 320, 3) and rgb.shape == ir.shape == (96, 160, 3) and pair.dtype == np.uint8
    np.testing.assert_array_equal(pair, np.hstack([rgb, ir]))
    bare_ir = d.plot(show="ir", labels=False)
    grey = (bare_ir[..., 0] == bare_ir[..., 1]) & (bare_ir[..., 1] == bare_ir[..., 2])
    assert grey.mean() > 0.9  # the one-channel IR shown grey, resized to the RGB frame, boxes on it
    assert not np.array_equal(d.plot(show="rgb", labels=False), rgb)
    path = d.save(tmp_path / "sub" / "pair.png")
    assert path == tmp_path / "sub" / "pair.png"
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], pair)  # PNG: exact, RGB order on disk
    with pytest.raises(ValueError, match="show must be 'pair', 'rgb' or 'ir'"):
        d.plot(show="both")
    with pytest.raises(ValueError, match=r"nope\.xyz: cannot be written as an image"):
        d.save(tmp_path / "nope.xyz")
    from yolofuse_scale.inference import Detections

    bare = Detections(d.boxes, d.scores, d.classes, d.names, d.shape)
    with pytest.raises(ValueError, match="carry no images"):
        bare.plot()
