"""Bad input, outputs: where a command would write. ``predict --out`` that would write over an input
(the input folders, or a file that is an input, however the path reaches it), ``--out`` or
``--output-dir`` naming a file. Each: one ``error:`` message naming the path, exit code 1, nothing
written. (A second training into a folder in use: tests/test_run_lock.py.)"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.bad_input_helpers import _train_config, assert_user_error


# ------------------------------------------------------------------------------------------ --output-dir
@pytest.mark.parametrize("where, needle", [
    ("file", "is a file, not a folder"),
    ("under-a-file", "lies under {tmp}/taken, which is a file, not a folder"),
    ("broken-link", "is a broken symbolic link, not a folder"),
], ids=["output-dir-is-a-file", "output-dir-under-a-file", "output-dir-broken-link"])
def test_output_dir_that_cannot_be_a_folder_is_one_message(tmp_path, where, needle, capsys):
    """Checked with the flags, before any process group (it used to end in a traceback from mkdir)."""
    (tmp_path / "taken").write_text("not a folder")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    out = {"file": tmp_path / "taken", "under-a-file": tmp_path / "taken" / "run",
           "broken-link": tmp_path / "dangling"}[where]
    assert_user_error(_train_config("--output-dir", str(out)), f"--output-dir {out}: ",
                      needle.format(tmp=tmp_path), capsys=capsys)
    assert (tmp_path / "taken").read_text() == "not a folder"


# ------------------------------------------------------------------------------------------ predict --out
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An untrained tiny model's weights file (what predict loads; detections do not matter here)."""
    from yolofuse_scale.model import build_model
    from yolofuse_scale.weights import write_weights

    model = build_model("yolov8t", "mid", nc=1, ir_channels=1, names={0: "person"})
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    write_weights(path, model.state_dict(), {"model_yaml": model.yaml, "rgb_channels": 3, "ir_channels": 1,
                                             "names": {0: "person"}, "imgsz": 64})
    return path


@pytest.fixture
def pairs(tmp_path) -> tuple[Path, Path]:
    """visible/ and infrared/ with two JPEG pairs of the same names (a drawing would take such a name)."""
    rng = np.random.default_rng(0)
    rgb, ir = tmp_path / "visible", tmp_path / "infrared"
    for folder, channels in ((rgb, 3), (ir, 1)):
        folder.mkdir()
        for stem in ("0001", "0002"):
            cv2.imwrite(str(folder / f"{stem}.jpg"), rng.integers(0, 255, (48, 64, channels), dtype=np.uint8))
    return rgb, ir


def _predict(weights: Path, rgb: Path, ir: Path, out: Path, *extra: str):
    from yolofuse_scale import predict

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    args = parser.parse_args(["--weights", str(weights), "--rgb", str(rgb), "--ir", str(ir), "--out", str(out),
                              "--device", "cpu", *extra])
    return lambda: predict.run(args)


def _inputs(rgb: Path, ir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in (rgb, ir) for p in sorted(folder.iterdir())}


def _case(kind: str, rgb: Path, ir: Path, tmp: Path) -> tuple[Path, Path, Path, str]:
    """(--rgb, --ir, --out, what the message must say) for one way of pointing --out at an input."""
    if kind == "rgb-folder":
        return rgb, ir, rgb, f"--out {rgb} is the --rgb folder {rgb}"
    if kind == "ir-folder":
        return rgb, ir, ir, f"--out {ir} is the --ir folder {ir}"
    if kind == "dotdot-folder":
        out = ir / ".." / "visible"
        return rgb, ir, out, f"--out {out} is the --rgb folder {rgb}"
    if kind == "linked-folder":
        os.symlink(ir, tmp / "ir-link")
        return rgb, ir, tmp / "ir-link", f"--out {tmp / 'ir-link'} is the --ir folder {ir}"
    if kind == "pair-beside-input":  # one pair: its drawing, <stem>.jpg in --out, is the RGB file itself
        return rgb / "0001.jpg", ir / "0001.jpg", rgb, f"the input {rgb / '0001.jpg'}"
    if kind == "linked-output-file":  # --out holds a link with the drawing's name, pointing at an input
        (tmp / "pred").mkdir()
        os.symlink(ir / "0001.jpg", tmp / "pred" / "0001.jpg")
        return rgb, ir, tmp / "pred", f"writing {tmp / 'pred' / '0001.jpg'} would overwrite the input {ir / '0001.jpg'}"
    if kind == "hard-linked-output-file":
        (tmp / "pred").mkdir()
        os.link(rgb / "0002.jpg", tmp / "pred" / "0002.jpg")
        return rgb, ir, tmp / "pred", f"would overwrite the input {rgb / '0002.jpg'}"
    assert kind == "out-is-a-file"
    return rgb, ir, rgb / "0001.jpg", f"--out {rgb / '0001.jpg'}: a file, not a folder"


KINDS = ["rgb-folder", "ir-folder", "dotdot-folder", "linked-folder", "pair-beside-input", "linked-output-file",
         "hard-linked-output-file", "out-is-a-file"]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_never_writes_over_an_input(weights, pairs, tmp_path, kind, capsys):
    """It used to draw over the inputs (<stem>.jpg into --out) and exit 0."""
    rgb, ir = pairs
    before = _inputs(rgb, ir)
    args = _case(kind, rgb, ir, tmp_path)
    assert_user_error(_predict(weights, *args[:3]), *args[3:], capsys=capsys)
    assert _inputs(rgb, ir) == before  # nothing written among or over the inputs


def test_predict_beside_the_inputs_still_works(weights, pairs, tmp_path, capsys):
    """--out next to the inputs (or their parent folder, in single-pair mode with a PNG input) is fine."""
    rgb, ir = pairs
    before = _inputs(rgb, ir)
    assert _predict(weights, rgb, ir, tmp_path / "pred")() == 0
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["0001.jpg", "0002.jpg", "predictions.jsonl"]
    cv2.imwrite(str(rgb / "0003.png"), cv2.imread(str(rgb / "0001.jpg")))
    assert _predict(weights, rgb / "0003.png", ir / "0001.jpg", rgb, "--no-images")() == 0
    assert (rgb / "predictions.jsonl").is_file()
    assert {k: v for k, v in _inputs(rgb, ir).items() if k in before} == before
