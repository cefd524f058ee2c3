"""The bad-input battery: plant one kind of bad input in a fresh copy of a small dataset, config, run
folder or weights file, and check the documented handling: one clear message naming the file, the line
(where there is one) and what is wrong, a non-zero exit without a Python traceback, and no earlier
output lost. Each area has its own section; ``KINDS`` at the end counts what the battery tries (the
README quotes it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, ENV, ROOT, free_port


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def small_data_template(tmp_path_factory) -> Path:
    """A tiny synthetic dataset written once per module; tests copy it with ``fresh_data``."""
    from yolofuse_scale.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("bad_input_template"), n_train=8, n_val=4, imgsz=64,
                                   seed=0).parent


@pytest.fixture
def fresh_data(small_data_template, tmp_path) -> Path:
    """A private copy of the tiny dataset (its folder; ``/ "data.yaml"`` is the config)."""
    dst = tmp_path / "data"
    shutil.copytree(small_data_template, dst)
    return dst


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m yolofuse_scale ARGS`` (or ``python train.py ARGS`` when args[0] == "train.py")."""
    cmd = [sys.executable, *args] if args and args[0].endswith(".py") else [sys.executable, "-m", "yolofuse_scale",
                                                                            *args]
    return subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, every needle in the output; returns the output."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    return out


# ------------------------------------------------------------------------------------------ data
# (the start-up scan: images, labels, list files, data.yaml)
def _tr(d: Path, folder: str, i: int, ext: str = "png") -> Path:
    """A file of the template's training split: ``_tr(d, "labels", 3, "txt")``."""
    return d / folder / "train" / f"train_{i:05d}.{ext}"


def _scan_data(d: Path, policy: str = "error"):
    """What the trainer gets from the start-up scan: load data.yaml, scan train and val (DataError on a bad yaml)."""
    from yolofuse_scale.data import load_data_config, scan_dataset

    return scan_dataset(load_data_config(d / "data.yaml"), ("train", "val"), policy)


def _data_error(d: Path) -> str:
    from yolofuse_scale.data import DataError

    try:
        result = _scan_data(d)
    except DataError as e:  # data.yaml itself
        return str(e)
    assert result.error is not None, f"no error for the planted input; the scan says:\n{result.report()}"
    return result.error


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
    (d / "train.csv").write_text("images/train/train_00000.png\n")
    (d / "data.yaml").write_text("train: train.csv\nval: images/val\nnames: [person, car]\nir_channels: 1\n")
    return [f"{d / 'train.csv'}: expected an image folder, a .txt list of images, or an image"]


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


TINY_TRAIN = ["--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--max-steps", "1",
              "--epochs", "1", "--no-val", "--warmup-epochs", "0"]


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



# ------------------------------------------------------------------------------------------ config
# (flags, YAML configs, DeepSpeed JSON, launch problems)
def assert_user_error(fn, *needles: str, capsys) -> str:
    """In-process: ``fn`` raises a user error that the entry points print as one message (exit code 1)."""
    from yolofuse_scale.errors import run_entry

    assert run_entry(fn) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    return err


def _train_config(*flags: str):
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.config import config_from_args

    return lambda: config_from_args(build_train_parser().parse_args(list(flags)))


@pytest.mark.parametrize("text, needles", [
    ("data:\n  imgsz: 64\n  mosiac: 0.5\n", [":3: unknown setting data.mosiac (did you mean 'mosaic'?)"]),
    ("dataa:\n  imgsz: 64\n", [":1: unknown section 'dataa' (did you mean 'data'?)"]),
    ("train:\n  epochs: 3\n  batch_size: big\n", [":3: train.batch_size must be an integer, got 'big'"]),
    ("optim:\n  ema: 2\n", [":2: optim.ema must be true or false, got 2"]),
    ("train:\n  mixed_precision: no\n", [":2: train.mixed_precision must be text, got False", "quote the value"]),
    ("train:\n  strategy: zero9\n", [":2: train.strategy: --strategy must be one of"]),
    ("data:\n  imgsz: 100\n", [":2: data.imgsz: --imgsz must be a positive multiple of 32, got 100"]),
    ("data: [1, 2]\n", [":1: section 'data' must be a mapping"]),
    ("data:\n  imgsz: 64\n   workers: 2\n", [":3: not a valid config YAML"]),
    ("- data\n- model\n", ["expected a mapping of sections"]),
    ("data:\n  imgsz: 64\n  mosaic_partners: buffer\n",
     [":3: data.mosaic_partners: --mosaic-partners must be pool, dataset or micro_batch, got 'buffer'"]),
], ids=["unknown-key", "unknown-section", "wrong-type-int", "wrong-type-bool", "yaml-boolean-for-text",
        "bad-choice-in-file", "bad-value-in-file", "section-not-mapping", "not-yaml", "not-a-mapping",
        "bad-recipe-choice-in-file"])
def test_config_file(text, needles, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    assert_user_error(_train_config("--config", str(cfg)), str(cfg), *needles, capsys=capsys)


def test_config_file_flag_wins_over_its_bad_value(tmp_path):
    """A flag replaces the file's value before the checks, so a file corrected on the command line runs."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  imgsz: 100\noptim:\n  lr: 1e-3\n")
    run = _train_config("--config", str(cfg), "--imgsz", "64")()
    assert run.data.imgsz == 64 and run.optim.lr == 0.001  # PyYAML reads 1e-3 as text; accepted as the flag is


@pytest.mark.parametrize("flags, needles", [
    (["--grad-accum", "0"], ["--grad-accum must be >= 1, got 0"]),
    (["--lr", "-0.01"], ["--lr must be > 0, got -0.01"]),
    (["--momentum", "1.5"], ["--momentum must be in [0, 1), got 1.5"]),
    (["--imgsz", "100"], ["--imgsz must be a positive multiple of 32, got 100"]),
    (["--log-every", "-1"], ["--log-every must be >= 0, got -1"]),
    (["--resume", "{tmp}/runs/checkpoints/step_9"], ["--resume {tmp}/runs/checkpoints/step_9: no such checkpoint"]),
    (["--data", "{tmp}/nodata/data.yaml"], ["--data {tmp}/nodata/data.yaml: no such file"]),
    (["--model", "{tmp}/mine.yaml"], ["--model {tmp}/mine.yaml: no such model YAML file"]),
    (["--model", "yolov9n"], ["--model must be {{yolov8,yolo11,yolo26}}{{t,n,s,m,l,x}} (e.g. yolo11n) or a model "
                              "YAML file (.yaml), got 'yolov9n'"]),
    (["--deepspeed", "{tmp}/ds.json"], ["--deepspeed {tmp}/ds.json: no such file"]),
    (["--strategy", "zero2", "--deepspeed", "{tmp}/ds.json"], ["--deepspeed {tmp}/ds.json and --strategy zero2"]),
    (["--model", "{assets}/yolofuse_mid_schema.yaml", "--fusion", "late"],
     ["--fusion late with --model", "defines its own fusion"]),
], ids=["grad-accum-0", "negative-lr", "momentum-range", "imgsz-not-32", "log-every-negative", "resume-missing",
        "data-missing", "model-yaml-missing", "unknown-model", "deepspeed-json-missing", "deepspeed-and-strategy",
        "fusion-with-model-yaml"])
def test_config_flags(flags, needles, tmp_path, capsys):
    fill = {"tmp": tmp_path, "assets": ROOT / "tests" / "assets"}
    flags = [f.format(**fill) for f in flags]
    assert_user_error(_train_config(*flags), *(n.format(**fill) for n in needles), capsys=capsys)


def test_config_model_yaml_without_fusion_is_accepted():
    run = _train_config("--model", str(ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml"))()
    assert run.model.model.endswith("yolofuse_mid_schema.yaml")


def test_config_strategy_contradicts_the_accelerate_config(capsys):
    from yolofuse_scale.config import ParallelConfig
    from yolofuse_scale.engine.strategy.launch import check_strategy_flags

    fsdp = {"ACCELERATE_USE_FSDP": "true"}
    assert_user_error(lambda: check_strategy_flags(ParallelConfig(strategy="zero2"), fsdp),
                      "--strategy zero2 asks for DeepSpeed but the accelerate config", "sets up FSDP", capsys=capsys)
    deepspeed = {"ACCELERATE_USE_DEEPSPEED": "true"}
    assert_user_error(lambda: check_strategy_flags(ParallelConfig(strategy="ddp"), deepspeed),
                      "--strategy ddp asks for DDP", "sets up DeepSpeed", capsys=capsys)
    check_strategy_flags(ParallelConfig(strategy="fsdp"), fsdp)  # agreeing: fine
    check_strategy_flags(ParallelConfig(), fsdp)  # auto: the launcher decides


def test_config_deepspeed_json_contradicts_the_batch_flags(tmp_path, capsys):
    from yolofuse_scale.config import RunConfig, TrainConfig
    from yolofuse_scale.engine.strategy.deepspeed import deepspeed_config

    ds = tmp_path / "ds.json"
    ds.write_text('{"train_batch_size": 64, "zero_optimization": {"stage": 2}}')
    assert_user_error(lambda: deepspeed_config(str(ds), RunConfig(train=TrainConfig(batch_size=4, grad_accum=2)), 2),
                      f"{ds}: 'train_batch_size': 64 contradicts the loop's --batch-size x processes x "
                      "--grad-accum = 16",
                      capsys=capsys)


def test_config_data_yaml_not_yaml_names_the_line(fresh_data, capsys):
    from yolofuse_scale.data import load_data_config

    data_yaml = fresh_data / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images/train\nval: [images/val\nnames: {0: person}\n")
    assert_user_error(lambda: load_data_config(data_yaml), str(data_yaml), "not valid YAML", "line 4", capsys=capsys)


@pytest.mark.parametrize("where", ["config", "data.yaml"])
def test_config_python_tag_is_refused_by_safe_loading(where, fresh_data, tmp_path):
    """``!!python/object/apply`` would run a command under an unsafe loader: refused, and nothing ran."""
    ran = tmp_path / "ran"
    tag = f"!!python/object/apply:os.system ['touch {ran}']"
    if where == "config":
        target = tmp_path / "run.yaml"
        target.write_text(f"data:\n  imgsz: 64\ntrain:\n  seed: {tag}\n")
        args = ["train.py", "--config", str(target), "--output-dir", str(tmp_path / "run")]
        needles = [f"{target}:4: not a valid config YAML", "could not determine a constructor"]
    else:
        target = fresh_data / "data.yaml"
        target.write_text(target.read_text() + f"extra: {tag}\n")
        args = ["train.py", "--data", str(target), "--model", "yolov8t", "--imgsz", "64", "--epochs", "1",
                "--output-dir", str(tmp_path / "run")]
        needles = [str(target), "not valid YAML", "could not determine a constructor"]
    assert_clean_error(run_cli(*args), *needles)
    assert not ran.exists()


def test_config_deepspeed_json_not_json_through_train_py(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text('{\n  "zero_optimization": {"stage": 2},\n  "train_batch_size": auto\n}\n')
    out = assert_clean_error(run_cli("train.py", "--deepspeed", str(ds), "--output-dir", str(tmp_path / "run")),
                             f"error: {ds}:3: not valid JSON")
    assert out.count("not valid JSON") == 1


def test_config_usage_errors_are_argparse_clean():
    out = assert_clean_error(run_cli("train.py", "--strategy", "zero9"), "--strategy: invalid choice: 'zero9'")
    assert out.count("invalid choice") == 1


@pytest.mark.slow
def test_config_batch_larger_than_the_training_set_is_one_message(fresh_data, tmp_path):
    """8 training pairs cannot fill a 16-image step: named before the first step, no traceback."""
    out = assert_clean_error(run_cli("train.py", "--data", str(fresh_data / "data.yaml"), "--model", "yolov8t",
                                     "--imgsz", "64", "--batch-size", "16", "--workers", "0", "--output-dir",
                                     str(tmp_path / "run")),
                             "8 training pairs cannot fill one optimizer step of 16 images")
    assert out.count("cannot fill") == 1



# ------------------------------------------------------------------------------------------ checkpoints
# (truncated, missing, extra, edited files; another run's lineage; another model)
@pytest.fixture(scope="module")
def small_run(small_data_template, tmp_path_factory) -> Path:
    """One real 2-step training run on the tiny dataset (single process): its checkpoint and weights/last.pt."""
    out = tmp_path_factory.mktemp("bad_input_run")
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", "yolov8t", "--fusion",
                   "mid", "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--output-dir", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


class _Touch:
    """A pickled object whose unpickling creates a file: what a malicious pickle does, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _write_gadget(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state": _Touch(marker)}, path)
    return path


def _plant_unlisted(folder: Path, marker: Path) -> str:
    # DeepSpeed's zero_to_fp32 unpickles every `*_model_states.pt` it globs, with weights_only=False
    (folder / "pytorch_model").mkdir(exist_ok=True)
    _write_gadget(folder / "pytorch_model" / "zz_model_states.pt", marker)
    return "pytorch_model/zz_model_states.pt: not in the manifest"


def _edit_file(folder: Path, marker: Path) -> str:
    blob = bytearray((folder / "ema.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "ema.safetensors").write_bytes(bytes(blob))
    return "ema.safetensors: contents differ from the manifest"


def _truncate_file(folder: Path, marker: Path) -> str:
    blob = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return f"model.safetensors: {len(blob) // 2} bytes, the manifest says {len(blob)}"


def _remove_file(folder: Path, marker: Path) -> str:
    (folder / "optimizer.bin").unlink()
    return "optimizer.bin: missing"


def _code_in_run_meta(folder: Path, marker: Path) -> str:
    import json

    from yolofuse_scale.engine.checkpoint.folder import _write_manifest

    meta = json.loads((folder / "run_meta.json").read_text())
    meta["model_yaml"]["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or torch.nn.SiLU()"
    (folder / "run_meta.json").write_text(json.dumps(meta))
    _write_manifest(folder)  # the manifest rewritten to match: only the model dict check is left to refuse it
    return "run_meta.json: model_yaml: activation"


def _garbled_manifest(folder: Path, marker: Path) -> str:
    (folder / "manifest.json").write_text('{"train_state.json": ')
    return "manifest.json: unreadable"


@pytest.mark.parametrize("plant", [_plant_unlisted, _edit_file, _truncate_file, _remove_file, _code_in_run_meta,
                                   _garbled_manifest])
def test_bad_checkpoint_is_refused_by_export_and_resume(small_run, tmp_path, plant):
    from yolofuse_scale.engine.checkpoint import CheckpointError, resolve_resume
    from yolofuse_scale.model import ModelConfigError

    folder = tmp_path / "step_2"
    shutil.copytree(small_run / "checkpoints" / "step_2", folder)
    marker = tmp_path / "marker"
    needle = plant(folder, marker)
    out = tmp_path / "exported.pt"
    assert_clean_error(run_cli("checkpoint-to-weights", str(folder), str(out)), needle)
    assert not out.exists() and not marker.exists()
    if plant is not _code_in_run_meta:  # resume reads Accelerate's files, not the model dict
        with pytest.raises(CheckpointError, match=needle):
            resolve_resume(str(folder), tmp_path)
    else:
        with pytest.raises(ModelConfigError, match=needle):
            from yolofuse_scale.engine.checkpoint import export_weights

            export_weights(folder, out)
    assert not marker.exists()

#: A tiny run every lineage/mismatch case starts from: 8 pairs, batch 2 x accumulation 2 (4 images a
#: step, 2 steps an epoch), stopped at step 3 (checkpoints at steps 2 and 3).
LINEAGE_RUN = ["--model", "yolov8t", "--fusion", "mid", "--imgsz", "64", "--batch-size", "2", "--grad-accum", "2",
               "--epochs", "3", "--workers", "0", "--no-augment", "--no-val", "--seed", "1"]


@pytest.fixture(scope="module")
def lineage_template(small_data_template, tmp_path_factory) -> Path:
    """One finished tiny run (its output folder), written once; tests copy it with ``lineage_run``."""
    out = tmp_path_factory.mktemp("lineage") / "run"
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), *LINEAGE_RUN, "--max-steps", "3",
                   "--output-dir", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


@pytest.fixture
def lineage_run(lineage_template, fresh_data, tmp_path):
    """(a private copy of the template run, its data folder, the args that continue it)."""
    out = tmp_path / "run"
    shutil.copytree(lineage_template, out)
    return out, fresh_data, ["train.py", "--data", str(fresh_data / "data.yaml"), *LINEAGE_RUN, "--max-steps", "5",
                             "--output-dir", str(out)]


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a run folder but the caches: what a refused start must leave as it was."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "cache" not in p.parts[-2]}


def test_checkpoints_fresh_run_into_another_runs_folder_is_refused(lineage_run):
    out, _, args = lineage_run
    before = _snapshot(out)
    proc = run_cli(*args)  # no --resume: a new run
    assert_clean_error(proc, f"--output-dir {out} holds another run", "checkpoints at step 2, 3",
                       "train_log.jsonl with 3 step record(s)", "--resume auto", "--overwrite")
    assert _snapshot(out) == before  # config.yaml included: nothing was written


def _drop_one_training_pair(data: Path) -> None:
    rgb = sorted((data / "images" / "train").iterdir())[0]
    for folder in ("images", "imagesIR", "labels"):
        for f in (data / folder / "train").glob(rgb.stem + ".*"):
            f.unlink()


@pytest.mark.parametrize(("change", "needles"), [
    (["--batch-size", "4"], ["images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved, "
                             "8 (batch 4 x 1 process(es) x accumulation 2) now"]),
    (["--grad-accum", "1"], ["images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved, "
                             "2 (batch 2 x 1 process(es) x accumulation 1) now",
                             "--global-batch-size 4 (or --grad-accum 2)"]),
    ("dataset", ["training set: 8 pairs", "when saved, 7 pairs", "the training set (data.yaml, --on-bad-sample)"]),
    (["--fusion", "late"], ["the checkpoint holds --model yolov8t --fusion mid, this run builds --model yolov8t "
                            "--fusion late", "Resume with the checkpoint's --model/--fusion/--scale"]),
    (["--model", "yolov8n"], ["the checkpoint holds --model yolov8t --fusion mid, this run builds --model yolov8n"]),
], ids=["batch-size", "grad-accum", "dataset", "fusion", "model"])
def test_checkpoints_resume_with_another_batch_dataset_or_model_is_refused(lineage_run, change, needles):
    out, data, args = lineage_run
    if change == "dataset":
        _drop_one_training_pair(data)
        change = []
    before = _snapshot(out)
    proc = run_cli(*args, *change, "--resume", "auto")
    assert_clean_error(proc, f"--resume {out / 'checkpoints' / 'step_3'}", *needles)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_checkpoints_resume_at_another_world_size_without_global_batch_is_refused_on_every_rank(lineage_run):
    """An elastic restart on 2 processes of a run saved by 1 (4 images a step -> 8): every rank refuses
    before loading (the job ends, no rank waits in a collective), naming the change and the flag that
    keeps 4 images a step; nothing is written."""
    out, _, args = lineage_run
    before = _snapshot(out)
    cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}", *args, "--resume", "auto"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    out_text = proc.stdout + proc.stderr
    assert proc.returncode != 0, out_text[-3000:]
    needle = ("images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved, "
              "8 (batch 2 x 2 process(es) x accumulation 2) now")
    assert needle in out_text, out_text[-3000:]  # every rank refused (none left hanging: the job ended)
    assert "pass --global-batch-size 4 (or --grad-accum 1) to keep 4 images per step at 2 process(es)" in out_text
    assert "yolofuse_scale/engine" not in out_text, out_text[-3000:]  # no traceback through our code
    assert _snapshot(out) == before


@pytest.mark.parametrize("where", ["run-folder", "file", "missing", "empty-folder"])
def test_checkpoints_resume_from_a_path_that_is_not_a_checkpoint_is_refused(lineage_run, tmp_path, where):
    out, _, args = lineage_run
    target, needles = {
        "run-folder": (out, ["a folder but not a checkpoint", f"--resume {out / 'checkpoints' / 'step_3'}"]),
        "file": (out / "config.yaml", ["a file, not a checkpoint folder"]),
        "missing": (tmp_path / "nowhere", ["no such checkpoint folder"]),
        "empty-folder": (tmp_path, ["a folder but not a checkpoint", "checkpoints/step_<n>"]),
    }[where]
    before = _snapshot(out)
    assert_clean_error(run_cli(*args, "--resume", str(target)), f"--resume {target}: ", *needles)
    assert _snapshot(out) == before


def test_checkpoints_resume_of_another_run_into_this_runs_folder_is_refused(lineage_run, lineage_template):
    """--resume PATH of run A into the folder of run B (another run id) would mix the two."""
    out, _, args = lineage_run
    other = out.parent / "other"
    shutil.copytree(lineage_template, other)
    (other / "run.json").write_text('{"run_id": "someoneelse"}\n')
    ckpt = other / "checkpoints" / "step_2"
    _rewrite_run_id(ckpt, "someoneelse")
    before = _snapshot(out)
    proc = run_cli(*args, "--resume", str(ckpt))
    assert_clean_error(proc, f"--output-dir {out} holds another run", f"resuming {ckpt} (run someoneelse)")
    assert _snapshot(out) == before


def _rewrite_run_id(ckpt: Path, run_id: str) -> None:
    """Another run's checkpoint: its state names another run id (manifest updated, so it verifies)."""
    import hashlib

    state_file = ckpt / "train_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "run_id": run_id}, indent=1))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["train_state.json"] = {"sha256": hashlib.sha256(state_file.read_bytes()).hexdigest(),
                                    "bytes": state_file.stat().st_size}
    (ckpt / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))



# ------------------------------------------------------------------------------------------ weights
# (edited model dict, wrong tensors, not a weights file, code in a model dict)
def _pretrained_code(path: Path, marker: Path) -> str:
    _write_gadget(path, marker)  # an object whose unpickling would create the marker
    return "refused: it holds builtins.getattr, pathlib.Path, pathlib.PosixPath"


def _pretrained_other_family(path: Path, marker: Path) -> str:
    from tests.test_pretrained import write_ultralytics_checkpoint

    write_ultralytics_checkpoint(path, "yolo11", "t")  # into --model yolov8t
    return "only 76 of its 499 tensors (15%) fit yolov8t fusion=mid"


def _pretrained_text_file(path: Path, marker: Path) -> str:
    path.write_text("yolov8n.pt\n")
    return "not a PyTorch checkpoint"


def _pretrained_missing(path: Path, marker: Path) -> str:
    return "no such file"


@pytest.mark.parametrize("plant", [_pretrained_code, _pretrained_other_family, _pretrained_text_file,
                                   _pretrained_missing])
def test_bad_pretrained_file_stops_training_with_one_clean_message(small_data_template, tmp_path, plant):
    marker = tmp_path / "marker"
    bad = tmp_path / "yolo.pt"
    needle = plant(bad, marker)
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", "yolov8t", "--fusion",
                   "mid", "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--pretrained", str(bad), "--output-dir", str(tmp_path / "r"))
    assert_clean_error(proc, f"--pretrained {bad}: ", needle)
    assert not marker.exists()
    assert not (tmp_path / "r" / "checkpoints").exists() and not (tmp_path / "r" / "weights").exists()


def _code(marker: Path) -> str:
    """A Python expression that creates ``marker`` if anything evaluates it."""
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _edit_yaml(edit):
    """A weights-file edit that changes the model dictionary only (saved with plain tensors and dicts)."""
    def apply(payload: dict, tmp: Path, marker: Path) -> dict:
        edit(payload["model_yaml"], tmp, marker)
        return payload
    apply.__name__ = edit.__name__
    return apply


def _activation_code(d, tmp, marker):
    d["activation"] = _code(marker) + " or torch.nn.SiLU()"


def _module_os_system(d, tmp, marker):
    d["backbone"][3][2] = "os.system"


def _module_from_parser_namespace(d, tmp, marker):
    # Ultralytics looks module names up in its tasks module: torch_safe_load unpickles with weights_only=False
    gadget = _write_gadget(tmp / "gadget.pt", marker)
    d["backbone"].insert(0, [-1, 1, "torch_safe_load", [repr(str(gadget))]])


def _string_arg_code(d, tmp, marker):
    d["backbone"][3][3] = [64, 3, _code(marker)]


def _string_arg_parser_variable(d, tmp, marker):
    d["backbone"][3][3] = [64, "d", 2]  # the parser would pass its whole dictionary `d` to Conv


def _unknown_key(d, tmp, marker):
    d["activaton"] = "nn.ReLU()"


def _shape_mismatch(payload, tmp, marker):
    name = next(k for k, v in payload["model"].items() if v.ndim == 4)
    payload["model"][name] = payload["model"][name][:, :1].clone()
    return payload


def _missing_tensor(payload, tmp, marker):
    payload["model"].pop(next(iter(payload["model"])))
    return payload


def _model_not_a_state_dict(payload, tmp, marker):
    payload["model"] = list(payload["model"].values())
    return payload


def _bad_ir_channels(payload, tmp, marker):
    payload["ir_channels"] = 2
    return payload


def _lacks_keys(payload, tmp, marker):
    return payload["model"]  # a bare state dict, no model_yaml / names / channels


def _not_a_dict(payload, tmp, marker):
    return list(payload["model"].values())


#: (edit, needle, CLI command that also gets it or None: the API check only). Every edit is saved with
#: torch.save of tensors, dicts and lists, so the file itself passes torch.load(weights_only=True).
WEIGHT_EDITS = [
    (_edit_yaml(_activation_code), "model_yaml: activation", "val"),
    (_edit_yaml(_module_os_system), "module 'os.system' is not an allowed module", "predict"),
    (_edit_yaml(_module_from_parser_namespace), "module 'torch_safe_load' is not an allowed module", "export"),
    (_edit_yaml(_string_arg_code), "Conv argument 2", "predict"),
    (_edit_yaml(_string_arg_parser_variable), "Conv argument 1: 'd' is not a literal argument", None),
    (_edit_yaml(_unknown_key), "unknown key 'activaton'", None),
    (_shape_mismatch, "its tensors do not fit the model its model_yaml describes", "val"),
    (_missing_tensor, "its tensors do not fit the model its model_yaml describes", None),
    (_model_not_a_state_dict, "'model' is not a state dict", None),
    (_bad_ir_channels, "ir_channels 2 must be 1 or 3", None),
    (_lacks_keys, "weights file lacks model, model_yaml", None),
    (_not_a_dict, "not a yolofuse-scale weights file (holds a list", None),
]


def _weights_cli(cmd: str, weights: Path, data: Path, tmp: Path) -> subprocess.CompletedProcess:
    if cmd == "val":
        return run_cli("val", "--weights", str(weights), "--data", str(data / "data.yaml"), "--workers", "0",
                       "--out", str(tmp / "val"))
    if cmd == "predict":
        rgb = sorted((data / "images" / "val").iterdir())[0]
        return run_cli("predict", "--weights", str(weights), "--rgb", str(rgb),
                       "--ir", str(data / "imagesIR" / "val" / rgb.name), "--out", str(tmp / "pred"))
    return run_cli("export-onnx", "--weights", str(weights), "--out", str(tmp / "m.onnx"))


@pytest.mark.parametrize("edit,needle,cmd", WEIGHT_EDITS, ids=[e[0].__name__ for e in WEIGHT_EDITS])
def test_edited_weights_file_is_refused_and_runs_nothing(small_run, small_data_template, tmp_path, edit, needle, cmd):
    import torch

    from yolofuse_scale import FusionDetector

    marker = tmp_path / "marker"
    payload = torch.load(small_run / "weights" / "last.pt", weights_only=True)
    bad = tmp_path / "best.pt"
    torch.save(edit(payload, tmp_path, marker), bad)
    torch.load(bad, weights_only=True)  # a loadable file: the refusal is ours, not torch's
    with pytest.raises((ValueError, RuntimeError), match=re.escape("best.pt: ") + ".*" + re.escape(needle)):
        FusionDetector.load(bad, device="cpu")
    assert not marker.exists()
    if cmd:
        assert_clean_error(_weights_cli(cmd, bad, small_data_template, tmp_path), "best.pt", needle)
        assert not marker.exists()


def test_code_in_the_activation_runs_under_no_command(small_run, small_data_template, tmp_path):
    """The report's case: val, predict and export all refuse it by name and the marker is never created."""
    import torch

    marker = tmp_path / "marker"
    payload = torch.load(small_run / "weights" / "last.pt", weights_only=True)
    _activation_code(payload["model_yaml"], tmp_path, marker)
    bad = tmp_path / "best.pt"
    torch.save(payload, bad)
    for cmd in ("predict", "export-onnx"):  # val: in the parametrized case above
        assert_clean_error(_weights_cli(cmd, bad, small_data_template, tmp_path),
                           "best.pt: model_yaml: activation", "is not an allowed activation (allowed: nn.CELU()")
    assert not marker.exists()


def _text_file(path: Path, marker: Path) -> None:
    path.write_text("model: yolov8n\n")


def _truncated_weights(path: Path, marker: Path, source: Path | None = None) -> None:
    blob = source.read_bytes()
    path.write_bytes(blob[: len(blob) // 3])


def _pickled_object(path: Path, marker: Path) -> None:
    _write_gadget(path, marker)  # torch.save of an object whose unpickling runs code


def _plain_pickle(path: Path, marker: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps(_Touch(marker)))  # not even a torch zip: a bare pickle stream


@pytest.mark.parametrize("write", [_text_file, _truncated_weights, _pickled_object, _plain_pickle])
def test_not_a_weights_file_is_refused_and_runs_nothing(small_run, small_data_template, tmp_path, write):
    from yolofuse_scale import FusionDetector
    from yolofuse_scale.engine.checkpoint import CheckpointError

    marker = tmp_path / "marker"
    bad = tmp_path / "best.pt"
    if write is _truncated_weights:
        write(bad, marker, small_run / "weights" / "last.pt")
    else:
        write(bad, marker)
    with pytest.raises(CheckpointError, match="best.pt: not a yolofuse-scale weights file"):
        FusionDetector.load(bad, device="cpu")
    assert not marker.exists()
    if write is _pickled_object:
        assert_clean_error(_weights_cli("predict", bad, small_data_template, tmp_path),
                           "best.pt: not a yolofuse-scale weights file")
        assert not marker.exists()


def _yaml_activation_code(text: str, marker: Path) -> str:
    return f"activation: {_code(marker) + ' or torch.nn.SiLU()'!r}\n" + text


def _yaml_module_not_allowed(text: str, marker: Path) -> str:
    return text.replace("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, os.system, ['touch marker']]")


@pytest.mark.parametrize("edit,needle", [
    (_yaml_activation_code, "is not an allowed activation"),
    (_yaml_module_not_allowed, "module 'os.system' is not an allowed module"),
])
def test_model_yaml_with_code_is_refused_and_runs_nothing(small_data_template, tmp_path, edit, needle):
    from yolofuse_scale.model import ModelConfigError, build_model

    marker = tmp_path / "marker"
    src = (ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml").read_text()
    bad = tmp_path / "evil.yaml"
    bad.write_text(edit(src, marker))
    with pytest.raises(ModelConfigError, match=re.escape(f"{bad}: ") + ".*" + re.escape(needle)):
        build_model(str(bad), nc=2, ir_channels=1, scale="t")
    assert not marker.exists()
    # through `train --model FILE.yaml` too: refused by name before anything is built
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", str(bad), "--scale", "t",
                   "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--output-dir", str(tmp_path / "r"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in out, out[-3000:]
    assert not marker.exists()
