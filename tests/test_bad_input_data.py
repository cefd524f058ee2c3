"""Bad data the start-up scan meets (images, labels, list files, data.yaml): plant one kind in a fresh copy
of a small dataset and check the scan's one message names the file, the line (where there is one) and what is
wrong; what the scan accepts (``DATA_ACCEPTED``) trains and is said in the start-up summary; through train.py
the run stops before its first step with that message, a non-zero exit and no traceback. ``DATA_KINDS`` at the
end counts what this file plants (the README's total counts it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import TINY_TRAIN, _data_error, _scan_data, _tr, assert_clean_error, run_cli

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures


def _yaml(text: str):
    def plant(d: Path) -> list[str]:
        (d / "data.yaml").write_text(text.format(d=d))
        return [str(d / "data.yaml")]
    return plant


def _label(i: int, text: str, line: int, what: str):
    def plant(d: Path) -> list[str]:
        _tr(d, "labels", i, "txt").write_text(text)
        return [f"{_tr(d, 'labels', i, 'txt')}:{line}: {what}", "1 problem(s)"]
    return plant


def _damage(data: bytes | None, folder: str = "imagesIR", what: str = "unreadable or truncated image"):
    def plant(d: Path) -> list[str]:
        f = _tr(d, folder, 3)
        f.write_bytes(data if data is not None else f.read_bytes()[: f.stat().st_size // 2])
        return [f"{f}: {what}", "1 problem(s)"]
    return plant


def _as_jpeg(d: Path, i: int) -> tuple[Path, Path]:
    """Re-encode pair ``i`` of the copy as JPEG (the template is PNG); returns (rgb, ir)."""
    import cv2

    out = []
    for folder in ("images", "imagesIR"):
        png = _tr(d, folder, i)
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
        png.unlink()
        out.append(png.with_suffix(".jpg"))
    return out[0], out[1]


def _plant_label_bytes(data: bytes, what: str):
    def plant(d: Path) -> list[str]:
        f = _tr(d, "labels", 1, "txt")
        f.write_bytes(data)
        return [f"{f}: unreadable label file ({what}", "1 problem(s)"]
    return plant


def _plant_no_ir(d):
    _tr(d, "imagesIR", 1).unlink()
    return [f"{_tr(d, 'images', 1)}: RGB image without IR partner (expected {_tr(d, 'imagesIR', 1)})"]


def _plant_no_rgb(d):
    _tr(d, "images", 2).unlink()
    return [f"{_tr(d, 'imagesIR', 2)}: IR image without RGB partner (expected {_tr(d, 'images', 2)})"]


def _plant_size(d):
    import cv2
    import numpy as np

    cv2.imwrite(str(_tr(d, "imagesIR", 4)), np.zeros((10, 12), np.uint8))
    return [f"{_tr(d, 'images', 4)}: RGB is 80x64 but its IR partner {_tr(d, 'imagesIR', 4)} is 12x10"]


def _plant_jpeg_cut(d):
    _, ir = _as_jpeg(d, 5)
    ir.write_bytes(ir.read_bytes()[:-40])
    return [f"{ir}: truncated JPEG (the data stops before the end-of-image marker)", "1 problem(s)"]


def _plant_broken_link(d):
    f = _tr(d, "images", 6)
    f.unlink()
    f.symlink_to(d / "gone.png")
    return [f"{f} is a broken symbolic link (to {d / 'gone.png'})"]


def _plant_list_missing(d):
    (d / "train.txt").write_text("images/train/train_00000.png\n# a comment\nimages/train/nothere.png\n")
    (d / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return [f"{d / 'train.txt'}:3: image {d / 'images/train/nothere.png'} does not exist"]


def _plant_list_twice(d):
    (d / "train.txt").write_text("images/train/train_00000.png\n./images/train/train_00000.png\n")
    (d / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return [f"{d / 'train.txt'}:2: {d / 'images/train/train_00000.png'} is listed twice"]


def _plant_list_unpairable(d):
    (d / "pics").mkdir()
    shutil.copy(_tr(d, "images", 0), d / "pics" / "a.png")
    (d / "train.txt").write_text("pics/a.png\n")
    (d / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return [f"{d / 'train.txt'}:1: {d / 'pics/a.png'}: no folder named 'images' in the path"]


def _plant_list_utf16(d):
    (d / "train.txt").write_bytes("images/train/train_00000.png\n".encode("utf-16"))
    (d / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return [f"{d / 'train.txt'}: cannot read the image list (UTF-16 text"]


def _plant_entry_type(d):
    (d / "train.xml").write_text("images/train/train_00000.png\n")  # (.csv and .json are pairs files)
    (d / "data.yaml").write_text("train: train.xml\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return [f"{d / 'train.xml'}: expected an image folder, a .txt list of images, a .csv or .json pairs file, or an "
            "image"]


def _plant_no_labels(d):
    (d / "labels").rename(d / "Labels")
    return [f"{d / 'data.yaml'}: split 'train': none of its 8 pairs has a label file",
            f"Looked in {d / 'labels' / 'train'} for one .txt per image"]


def _plant_val_no_boxes(d):
    for f in (d / "labels" / "val").iterdir():
        f.write_text("")
    return [f"{d / 'data.yaml'}: split 'val' has no boxes at all (its 4 pairs have empty or missing label files)"]


def _plant_empty_split(d):
    (d / "images" / "empty").mkdir()
    (d / "data.yaml").write_text("train: images/train\nval: images/empty\nnames: [person, car]\nir_channels: 1\n")
    return [f"split 'val' has no images (looked in {d / 'images' / 'empty'})"]


DATA_ERRORS = {  # kind: plant(copy) -> the needles the one error message must contain
    "missing IR partner": _plant_no_ir,
    "IR without RGB partner": _plant_no_rgb,
    "RGB/IR size mismatch": _plant_size,
    "image not an image": _damage(b"not a png at all"),
    "empty image file": _damage(b""),
    "truncated PNG": _damage(None, "images"),
    "truncated JPEG": _plant_jpeg_cut,
    "broken symlinked image": _plant_broken_link,
    "label: wrong column count": _label(1, "0 0.5 0.5 0.1\n", 1, "expected 5 fields 'cls xc yc w h', found 4"),
    "label: non-numeric": _label(1, "0 0.5 0.5 0.1 0.1\nperson 0.5 0.5 0.1 0.1\n", 2, "non-numeric value"),
    "label: NaN": _label(1, "0 nan 0.5 0.1 0.1\n", 1, "NaN or infinite value"),
    "label: coordinate out of range": _label(1, "0 1.5 0.5 0.1 0.1\n", 1, "box 1.5 0.5 0.1 0.1 is outside [0, 1]"),
    "label: pixel coordinates": _label(1, "0 320 240 50 80\n", 1, "box 320 240 50 80 is outside [0, 1] (coordinates"),
    "label: zero-size box": _label(1, "1 0.5 0.5 0 0.2\n", 1, "box size w=0 h=0.2 is zero or negative"),
    "label: class id >= nc": _label(1, "2 0.5 0.5 0.1 0.1\n", 1, "class id 2 is not an integer in 0..1"),
    "label: negative class id": _label(1, "-1 0.5 0.5 0.1 0.1\n", 1, "class id -1 is not an integer in 0..1"),
    "label: duplicate row": _label(1, "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n", 2, "duplicate of line 1"),
    "label: UTF-16 file": _plant_label_bytes("0 0.5 0.5 0.1 0.1\n".encode("utf-16"), "UTF-16 text"),
    "label: not UTF-8": _plant_label_bytes(b"0 0.5 0.5 0.1 0.1 # \xe9t\xe9\n", "'utf-8' codec"),
    "data.yaml empty": _yaml(""),
    "data.yaml not YAML": _yaml("train: [images/train\nval: images/val\n"),
    "data.yaml missing key": _yaml("train: images/train\nval: images/val\n"),
    "data.yaml names with gaps": _yaml("train: images/train\nval: images/val\nnames: {{0: person, 2: car}}\n"),
    "data.yaml ir_channels": _yaml("train: images/train\nval: images/val\nnames: [a, b]\nir_channels: 2\n"),
    "data.yaml path not a folder": _yaml("path: {d}/nowhere\ntrain: images/train\nval: images/val\nnames: [a, b]\n"),
    "data.yaml missing split folder": _yaml("train: images/train\nval: images/vall\nnames: [a, b]\n"),
    "split folder without images": _plant_empty_split,
    "list file: missing image": _plant_list_missing,
    "list file: image listed twice": _plant_list_twice,
    "list file: path without images/": _plant_list_unpairable,
    "list file: UTF-16": _plant_list_utf16,
    "split entry of another type": _plant_entry_type,
    "no label files (misnamed labels/)": _plant_no_labels,
    "validation split without boxes": _plant_val_no_boxes,
}
YAML_NEEDLES = {
    "data.yaml empty": "expected a mapping with keys path, train, val, names",
    "data.yaml not YAML": "not valid YAML",
    "data.yaml missing key": "missing key(s) names",
    "data.yaml names with gaps": "'names' must number the classes 0..n-1 without gaps, got ids [0, 2]",
    "data.yaml ir_channels": "'ir_channels' must be 1 or 3, got 2",
    "data.yaml path not a folder": "is not a folder",
    "data.yaml missing split folder": "'val' entry 'images/vall' ->",
}



@pytest.mark.parametrize("kind", list(DATA_ERRORS))
def test_bad_data_is_named_by_the_scan(fresh_data, kind):
    needles = DATA_ERRORS[kind](fresh_data)
    if kind in YAML_NEEDLES:
        needles = [*needles, YAML_NEEDLES[kind]]
    msg = _data_error(fresh_data)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in:\n{msg}"
    assert "Traceback" not in msg


def _accept_symlinked_folder(d):
    extra = d.parent / "extra"
    for folder in ("images", "imagesIR", "labels"):
        (extra / folder).mkdir(parents=True)
        for f in sorted((d / folder / "train").iterdir())[5:]:
            f.rename(extra / folder / f.name)
        (d / folder / "train" / "cam2").symlink_to(extra / folder, target_is_directory=True)
    return 8, ["data train: 8 pairs"]


def _accept_link_loop(d):
    (d / "images" / "train" / "up").symlink_to(d / "images", target_is_directory=True)
    return 8, [f"{d / 'images/train/up'} -> {d / 'images'} (a loop)"]


def _accept_bom(d):
    f = _tr(d, "labels", 0, "txt")
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    return 8, ["data train: 8 pairs"]


def _accept_bom_list(d):
    (d / "train.txt").write_bytes(b"\xef\xbb\xbf" + "".join(f"images/train/train_{i:05d}.png\n" for i in range(8))
                                  .encode())
    (d / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return 8, ["data train: 8 pairs"]


def _accept_crlf(d):
    f = _tr(d, "labels", 0, "txt")
    f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    return 8, ["data train: 8 pairs"]


def _accept_resource_forks(d):
    for folder in ("images", "imagesIR"):
        for i in range(8):
            (d / folder / "train" / f"._train_{i:05d}.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (d / "images" / "train" / ".ipynb_checkpoints").mkdir()
    return 8, ["9 hidden file(s)/folder(s) ignored"]  # counted in the RGB folders (the IR twins are too)


def _accept_jpeg_trailer(d):
    rgb, ir = _as_jpeg(d, 2)
    for f in (rgb, ir):
        f.write_bytes(f.read_bytes() + b"\x00" * 512 + b"camera trailer")
    return 8, ["data train: 8 pairs"]


def _accept_missing_labels(d):
    for i in (3, 4):
        _tr(d, "labels", i, "txt").unlink()
    return 8, [f"2 without a label file: {_tr(d, 'labels', 3, 'txt')}, {_tr(d, 'labels', 4, 'txt')}"]


def _accept_empty_labels(d):
    for i in range(8):  # a training split may be all background (a validation split may not)
        _tr(d, "labels", i, "txt").write_text("")
    return 8, ["data train: 8 pairs, 0 boxes, 8 background (8 with an empty label file)"]


DATA_ACCEPTED = {  # kind: plant(copy) -> (training pairs kept, what the start-up summary says)
    "symlinked sub-folder": _accept_symlinked_folder,
    "symlink to an ancestor": _accept_link_loop,
    "UTF-8 BOM in a label file": _accept_bom,
    "UTF-8 BOM in a list file": _accept_bom_list,
    "CRLF and blank lines in a label file": _accept_crlf,
    "macOS ._ files and hidden folders": _accept_resource_forks,
    "JPEG with bytes after its end marker": _accept_jpeg_trailer,
    "pairs without a label file": _accept_missing_labels,
    "empty label files (background)": _accept_empty_labels,
}


@pytest.mark.parametrize("kind", list(DATA_ACCEPTED))
def test_data_the_scan_accepts_and_reports(fresh_data, kind):
    n, needles = DATA_ACCEPTED[kind](fresh_data)
    result = _scan_data(fresh_data)
    samples = result.take(log=lambda _m: None)
    assert len(samples["train"]) == n and len(samples["val"]) == 4
    report = result.report()
    for needle in needles:
        assert needle in report, f"{needle!r} not in:\n{report}"


@pytest.mark.parametrize("kind", ["no label files (misnamed labels/)", "label: class id >= nc", "truncated JPEG",
                                  "data.yaml missing key"])
def test_bad_data_stops_training_with_one_clean_message(fresh_data, tmp_path, kind):
    """End to end through train.py: the scan's message, a non-zero exit, no traceback, no step taken."""
    needles = DATA_ERRORS[kind](fresh_data)
    out = tmp_path / "run"
    proc = run_cli("train.py", "--data", str(fresh_data / "data.yaml"), *TINY_TRAIN, "--output-dir", str(out))
    assert_clean_error(proc, *needles, *([YAML_NEEDLES[kind]] if kind in YAML_NEEDLES else []))
    assert not (out / "train_log.jsonl").exists() or not (out / "train_log.jsonl").read_text().strip()


def test_accepted_oddities_train_and_the_start_up_log_says_what_is_trained_on(fresh_data, tmp_path):
    """Hidden files, a BOM, a JPEG trailer and pairs without labels at once: training runs, and the log's
    first lines give pairs, boxes, background and what was ignored."""
    _accept_resource_forks(fresh_data)
    _accept_bom(fresh_data)
    _accept_jpeg_trailer(fresh_data)
    _accept_missing_labels(fresh_data)
    out = tmp_path / "run"
    proc = run_cli("train.py", "--data", str(fresh_data / "data.yaml"), *TINY_TRAIN, "--output-dir", str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "data train: 8 pairs, " in text and "2 without a label file" in text and "9 hidden file(s)" in text
    assert "data val: 4 pairs, " in text and (out / "train_log.jsonl").read_text().strip()


#: What the data section tries, one name per kind (the README quotes the count).
DATA_KINDS = sorted({*DATA_ERRORS, *DATA_ACCEPTED})
