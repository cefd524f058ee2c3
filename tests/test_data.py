"""Pairing, label scan, aligned transforms, determinism and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolofuse_scale.data import (
    DataError,
    PairedRGBIRDataset,
    collate_pairs,
    ir_path_for,
    label_path_for,
    load_data_config,
    scan_split,
    write_synthetic_dataset,
)
from yolofuse_scale.data.augment import AugmentRecipe


def test_ir_path_swaps_the_folder_component_only():
    p = Path("/data/images_2024/images/train/a_images.jpg")
    assert ir_path_for(p) == Path("/data/images_2024/imagesIR/train/a_images.jpg")
    assert ir_path_for(Path("/x/images/images/v.png")) == Path("/x/images/imagesIR/v.png")  # the last one
    assert ir_path_for(Path("/d/rgb/t/a.jpg"), "rgb", "thermal") == Path("/d/thermal/t/a.jpg")
    with pytest.raises(DataError, match="no folder named 'images'"):
        ir_path_for(Path("/data/visible/train/a.jpg"))
    assert label_path_for(p) == Path("/data/images_2024/labels/train/a_images.txt")


Pair = tuple[np.ndarray, "np.ndarray | None", str]  # RGB (RGB order), IR as written (None: no file), label


def _write_dataset(root: Path, pairs: dict[str, Pair], ir_channels: int = 3) -> Path:
    for split in ("train", "val"):
        for d in ("images", "imagesIR", "labels"):
            (root / d / split).mkdir(parents=True, exist_ok=True)
    for name, (rgb, ir, label) in pairs.items():
        for split in ("train", "val"):
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), rgb[..., ::-1])
            if ir is not None:
                cv2.imwrite(str(root / "imagesIR" / split / f"{name}.png"), ir)
            (root / "labels" / split / f"{name}.txt").write_text(label)
    cfg = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": ["person", "car"],
        "ir_channels": ir_channels,
    }
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"


def _asymmetric_pair(h: int = 48, w: int = 80) -> tuple[np.ndarray, np.ndarray, str]:
    """A bright square near the top-left corner of both modalities, plus its YOLO label."""
    rgb = np.zeros((h, w, 3), np.uint8)
    ir = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = 4, 6, 20, 18
    rgb[y1:y2, x1:x2] = (250, 10, 10)  # red in RGB order
    ir[y1:y2, x1:x2] = 240
    label = f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
    return rgb, ir, label


def _box_px(item: dict, size: int) -> tuple[int, int, int, int]:
    xc, yc, bw, bh = (item["bboxes"][0] * size).tolist()
    return round(xc - bw / 2), round(yc - bh / 2), round(xc + bw / 2), round(yc + bh / 2)


@pytest.mark.parametrize("flip", [False, True])
def test_letterbox_and_flip_keep_rgb_ir_and_boxes_aligned(tmp_path, flip):
    data = _write_dataset(tmp_path, {"a": _asymmetric_pair()}, ir_channels=1)
    samples = scan_split(load_data_config(data), "train")
    only_flip = AugmentRecipe(mosaic=0, translate=0, scale=0, hsv_h=0, hsv_s=0, hsv_v=0, fliplr=1.0)
    ds = PairedRGBIRDataset(samples, 96, augment=flip, ir_channels=1, recipe=only_flip)
    item = ds[0]
    img = item["img"].numpy()
    assert img.shape == (4, 96, 96)
    red, ir = img[0] > 200, img[3] > 200
    assert red.sum() > 50 and np.array_equal(red, ir), "RGB and IR pattern at the same pixels"
    ys, xs = np.nonzero(ir)
    x1, y1, x2, y2 = _box_px(item, 96)
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1 and abs(ys.min() - y1) <= 1
    assert abs(ys.max() + 1 - y2) <= 1
    assert (xs.mean() > 48) == flip, "the square starts top-left and moves right only when flipped"
    assert img[1][ir].max() < 40, "the pattern is red: RGB channel order is R, G, B"


def test_augmentation_depends_only_on_seed_epoch_index(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=12, n_val=2, imgsz=64, seed=1)
    samples = scan_split(load_data_config(data), "train")
    ds = PairedRGBIRDataset(samples, 64, augment=True, ir_channels=1, seed=5)
    first = [ds[i]["img"] for i in range(12)]
    assert all((ds[i]["img"] == first[i]).all() for i in range(12)), "same item twice is identical"
    ds.set_epoch(1)
    assert any((ds[i]["img"] != first[i]).any() for i in range(12)), "another epoch flips other samples"
    plain = PairedRGBIRDataset(samples, 64, augment=False, ir_channels=1)
    a = [plain[i]["img"] for i in range(12)]
    plain.set_epoch(7)
    assert all((plain[i]["img"] == a[i]).all() for i in range(12))


@pytest.mark.parametrize("on_disk", [1, 3])
@pytest.mark.parametrize("wanted", [1, 3])
def test_ir_channels_on_disk_and_in_the_model_are_independent(tmp_path, on_disk, wanted):
    rgb, ir, ok = _asymmetric_pair()
    ir = ir if on_disk == 1 else cv2.merge([ir] * 3)
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok)}, ir_channels=wanted)
    cfg = load_data_config(data)
    item = PairedRGBIRDataset(scan_split(cfg, "train"), 64, augment=False, ir_channels=cfg.ir_channels)[0]
    img = item["img"].numpy()
    assert img.shape == (3 + wanted, 64, 64) and img.dtype == np.uint8
    hot = img[3] > 200
    assert hot.sum() > 20 and np.array_equal(hot, img[0] > 200), "the IR square sits where the RGB one is"
    assert all(np.array_equal(img[3], img[c]) for c in range(3, 3 + wanted)), "gray IR: channels equal"


def test_list_file_split_and_relative_path(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path / "ds", {"a": (rgb, ir, ok), "b": (rgb, ir, "")})
    (tmp_path / "ds" / "train.txt").write_text("images/train/b.png\n\n./images/train/a.png\n")
    (tmp_path / "cfg").mkdir()
    rel = tmp_path / "cfg" / "data.yaml"  # path relative to the yaml's folder, train a .txt list
    rel.write_text("path: ../ds\ntrain: train.txt\nval: [images/val]\nnames: {0: person, 1: car}\n")
    cfg = load_data_config(rel)
    assert cfg.root == (tmp_path / "ds").resolve() and cfg.nc == 2 and cfg.ir_channels == 3
    samples = scan_split(cfg, "train")
    assert [s.rgb.name for s in samples] == ["a.png", "b.png"], "sorted by path"
    assert samples[1].boxes.shape == (0, 5) and samples[0].ir == cfg.root / "imagesIR" / "train" / "a.png"
    assert len(scan_split(cfg, "val")) == 2
    assert load_data_config(data).train == [tmp_path / "ds" / "images" / "train"]


def test_empty_split_names_split_and_folder(tmp_path):
    data = _write_dataset(tmp_path, {})
    with pytest.raises(DataError, match=r"split 'val' has no images \(looked in .*images/val"):
        scan_split(load_data_config(data), "val")


def test_data_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "data.yaml"
    bad.write_text("train: images/train\n")
    with pytest.raises(DataError, match=f"{bad}: missing key"):
        load_data_config(bad)
    bad.write_text(f"path: {tmp_path}\ntrain: nowhere\nval: nowhere\nnames: [a]\n")
    with pytest.raises(DataError, match="'train' entry 'nowhere'"):
        load_data_config(bad)


def test_synthetic_set_is_deterministic_and_complementary(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", n_train=24, n_val=4, imgsz=96, seed=3)
    b = write_synthetic_dataset(tmp_path / "b", n_train=24, n_val=4, imgsz=96, seed=3)
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    assert files and all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)
    cfg = load_data_config(a)
    assert cfg.names == {0: "person", 1: "car"} and cfg.ir_channels == 1
    ds = PairedRGBIRDataset(scan_split(cfg, "train"), 96, augment=False, ir_channels=1)
    contrast = {0: [], 1: []}  # per class: (RGB contrast, IR contrast) of each box against the image
    for i in range(len(ds)):
        item = ds[i]
        img = item["img"].float()
        rgb, ir = img[:3].mean(0), img[3]
        for c, box in zip(item["cls"].view(-1).tolist(), item["bboxes"]):
            xc, yc, bw, bh = (box * 96).tolist()
            # the central half of the box: mostly body, little background
            y0, y1, x0, x1 = int(yc - bh / 4), int(yc + bh / 4) + 1, int(xc - bw / 4), int(xc + bw / 4) + 1
            sl = (slice(y0, y1), slice(x0, x1))
            rgb_c, ir_c = rgb[sl].mean() - rgb.median(), ir[sl].mean() - ir.median()
            contrast[int(c)].append((float(rgb_c), float(ir_c)))
    people, cars = np.array(contrast[0]), np.array(contrast[1])
    assert len(people) > 10 and len(cars) > 5
    assert (people[:, 1] > 60).mean() > 0.9, "people are warm in IR"
    assert (people[:, 0] < 20).mean() > 0.3, "many people are hard to see in RGB"
    assert (cars[:, 1] < 20).mean() > 0.8 and (cars[:, 0] > 25).mean() > 0.8, "cars show in RGB, not in IR"


def test_collate_builds_ultralytics_targets(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=6, n_val=2, imgsz=64, seed=0)
    ds = PairedRGBIRDataset(scan_split(load_data_config(data), "train"), 64, augment=False, ir_channels=1)
    items = [ds[i] for i in range(4)]
    b = collate_pairs(items)
    n = sum(len(it["cls"]) for it in items)
    assert b["img"].shape == (4, 4, 64, 64) and b["img"].dtype.is_floating_point is False
    assert b["cls"].shape == (n, 1) and b["bboxes"].shape == (n, 4) and b["batch_idx"].shape == (n,)
    assert b["batch_idx"].tolist() == [float(i) for i, it in enumerate(items) for _ in range(len(it["cls"]))]


def test_synth_command_writes_a_loadable_set(tmp_path, capsys):
    from yolofuse_scale.cli import main

    argv = ["synth", "--out", str(tmp_path), "--train", "3", "--val", "2", "--imgsz", "64", "--ir-channels", "3"]
    assert main(argv) == 0
    cfg = load_data_config(tmp_path / "data.yaml")
    assert cfg.ir_channels == 3 and len(scan_split(cfg, "train")) == 3 and len(scan_split(cfg, "val")) == 2
    ir = cv2.imread(str(tmp_path / "imagesIR" / "val" / "val_00001.png"), cv2.IMREAD_UNCHANGED)
    assert ir.shape == (64, 80, 3)
    assert "data.yaml" in capsys.readouterr().out


def test_ratio_pad_maps_boxes_back_with_ultralytics_scale_boxes(tmp_path):
    from ultralytics.utils.ops import scale_boxes, xywh2xyxy  # after yolofuse_scale: stays offline

    rgb, ir, ok = _asymmetric_pair()  # 48 x 80, box (4, 6)-(20, 18) in pixels
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok)})
    item = PairedRGBIRDataset(scan_split(load_data_config(data), "val"), 96, augment=False)[0]
    xyxy = xywh2xyxy(item["bboxes"] * 96)
    back = scale_boxes((96, 96), xyxy, item["ori_shape"], ratio_pad=item["ratio_pad"])
    assert np.allclose(back.numpy(), [[4, 6, 20, 18]], atol=0.6)


# --------------------------------------------------------------------------------------- the scan
def _scan_problems(data: Path, split: str = "train") -> str:
    with pytest.raises(DataError) as e:
        scan_split(load_data_config(data), split)
    return str(e.value)


LABEL_CASES = {  # name: (label text, the problem's line number, what the message says)
    "fields": ("0 0.5 0.5 0.1\n", 1, "expected 5 fields 'cls xc yc w h', found 4"),
    "text": ("0 0.5 zero 0.1 0.1\n", 1, "non-numeric value in '0 0.5 zero 0.1 0.1'"),
    "nan": ("0 0.5 0.5 nan 0.1\n", 1, "NaN or infinite value"),
    "inf": ("0 0.5 inf 0.1 0.1\n", 1, "NaN or infinite value"),
    "coord": ("0 1.7 0.5 0.1 0.1\n", 1, "box 1.7 0.5 0.1 0.1 is outside [0, 1]"),
    "neg": ("0 -0.2 0.5 0.1 0.1\n", 1, "box -0.2 0.5 0.1 0.1 is outside [0, 1]"),
    "zero": ("0 0.5 0.5 0 0.1\n", 1, "box size w=0 h=0.1 is zero or negative"),
    "negsize": ("0 0.5 0.5 0.1 -0.1\n", 1, "box size w=0.1 h=-0.1 is zero or negative"),
    "cls": ("2 0.5 0.5 0.1 0.1\n", 1, "class id 2 is not an integer in 0..1"),
    "frac": ("0.5 0.5 0.5 0.1 0.1\n", 1, "class id 0.5 is not an integer"),
    "second": ("0 0.5 0.5 0.1 0.1\n\n1 0.5 0.5 0.1\n", 3, "expected 5 fields"),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_each_kind_of_bad_label_row_is_named_with_file_and_line(tmp_path, case):
    text, line, what = LABEL_CASES[case]
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"good": (rgb, ir, ok), "bad": (rgb, ir, text)})
    msg = _scan_problems(data)
    assert f"{tmp_path / 'labels' / 'train' / 'bad.txt'}:{line}: {what}" in msg
    assert "1 problem(s)" in msg and "good.txt" not in msg
    kept = scan_split(load_data_config(data), "train", on_bad_sample="skip")
    assert [s.rgb.name for s in kept] == ["good.png"], "skip drops the whole pair, not just the row"


def test_duplicate_rows_are_reported_and_skip_keeps_one_copy(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"dup": (rgb, ir, ok + "1 0.5 0.5 0.2 0.2\n" + ok)})
    assert f"{tmp_path / 'labels' / 'train' / 'dup.txt'}:3: duplicate of line 1" in _scan_problems(data)
    (sample,) = scan_split(load_data_config(data), "train", on_bad_sample="skip")
    assert sample.boxes[:, 0].tolist() == [0.0, 1.0], "the pair stays, each box once"


def test_missing_partners_on_either_side(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"good": (rgb, ir, ok), "noir": (rgb, None, ok), "norgb": (rgb, ir, ok)})
    (tmp_path / "images" / "train" / "norgb.png").unlink()
    msg = _scan_problems(data)
    d = tmp_path
    assert (f"{d / 'images/train/noir.png'}: RGB image without IR partner (expected "
            f"{d / 'imagesIR/train/noir.png'})") in msg
    assert (f"{d / 'imagesIR/train/norgb.png'}: IR image without RGB partner (expected "
            f"{d / 'images/train/norgb.png'})") in msg
    assert "2 problem(s)" in msg
    kept = scan_split(load_data_config(data), "train", on_bad_sample="skip")
    assert [s.rgb.name for s in kept] == ["good.png"]


def test_rgb_and_ir_of_different_sizes(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    big = cv2.resize(ir, (ir.shape[1] * 2, ir.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    data = _write_dataset(tmp_path, {"a": (rgb, big, ok), "b": (rgb, ir, ok)})
    msg = _scan_problems(data)
    assert f"{tmp_path / 'images/train/a.png'}: RGB is 80x48 but its IR partner" in msg and "is 160x96" in msg


def _truncate(path: Path, keep: float = 0.6) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated_png", "truncated_jpg"])
def test_unreadable_and_truncated_images(tmp_path, damage):
    rgb, ir, ok = _asymmetric_pair()
    rgb = rgb + np.random.default_rng(0).integers(0, 40, rgb.shape, dtype=np.uint8)  # make the files non-trivial
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok), "b": (rgb, ir, ok)})
    bad = tmp_path / "imagesIR" / "train" / "b.png"
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "garbage":
        bad.write_bytes(b"not a png at all")
    elif damage == "truncated_png":
        _truncate(bad)
    else:  # a .jpg RGB/IR pair whose IR download stopped half-way
        for d in ("images", "imagesIR"):
            cv2.imwrite(str(tmp_path / d / "train" / "b.jpg"), rgb if d == "images" else ir)
            (tmp_path / d / "train" / "b.png").unlink()
        bad = tmp_path / "imagesIR" / "train" / "b.jpg"
        (tmp_path / "labels" / "train" / "b.txt").write_text(ok)
        _truncate(bad)
    msg = _scan_problems(data)
    why = "truncated JPEG" if damage == "truncated_jpg" else "unreadable or truncated image"
    assert f"{bad}: {why}" in msg and "1 problem(s)" in msg
    kept = scan_split(load_data_config(data), "train", on_bad_sample="skip")
    assert [s.rgb.stem for s in kept] == ["a"]


def test_empty_dataset_and_missing_split_path(tmp_path):
    data = _write_dataset(tmp_path, {})
    with pytest.raises(DataError, match=r"split 'val' has no images \(looked in .*images/val"):
        scan_split(load_data_config(data), "val")
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"a": (rgb, ir, "9 0.5 0.5 0.1 0.1\n")})
    with pytest.raises(DataError, match="split 'train' has no usable pair left"):
        scan_split(load_data_config(data), "train", on_bad_sample="skip")
    (tmp_path / "gone.txt").write_text("images/train/a.png\nimages/train/nothere.png\n")
    cfg = load_data_config(data)
    cfg.train[:] = [tmp_path / "gone.txt"]
    with pytest.raises(DataError) as e:
        scan_split(cfg, "train")
    msg = str(e.value)
    assert f"{tmp_path / 'gone.txt'}:2: image {tmp_path / 'images/train/nothere.png'} does not exist" in msg
    cfg.train[:] = [tmp_path / "images" / "nosuchsplit"]
    with pytest.raises(DataError, match="split 'train' entry .*nosuchsplit does not exist"):
        scan_split(cfg, "train")


def test_scan_is_cached_and_the_cache_follows_file_changes(tmp_path):
    from yolofuse_scale.data.scan import scan_pairs

    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path / "ds", {"a": (rgb, ir, ok), "b": (rgb, ir, ok + ok)})
    cfg, cache = load_data_config(data), [tmp_path / "ro" / "sub", tmp_path / "cache"]
    (tmp_path / "ro").write_text("a file, so the first cache folder cannot be created")
    first = scan_pairs(cfg, "train", cache)
    assert not first.from_cache and len(list((tmp_path / "cache").glob("*.scan.json"))) == 1
    again = scan_pairs(cfg, "train", cache)
    assert again.from_cache and again.problems == first.problems
    assert [(s.rgb, s.boxes.tolist()) for s in again.samples] == [(s.rgb, s.boxes.tolist()) for s in first.samples]
    (tmp_path / "ds" / "labels" / "train" / "b.txt").write_text(ok)  # fixed: the cache must not answer
    fixed = scan_pairs(cfg, "train", cache)
    assert not fixed.from_cache and fixed.problems == []


def test_error_result_is_raised_identically_wherever_it_is_taken(tmp_path):
    """What the main process broadcasts: a pickled result that raises the same error on every rank."""
    import pickle

    from yolofuse_scale.data import scan_dataset

    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok), "b": (rgb, None, ok)})
    result = scan_dataset(load_data_config(data), ("train", "val"), "error")
    copy = pickle.loads(pickle.dumps(result))
    for r in (result, copy):
        with pytest.raises(DataError, match="2 problem\\(s\\)"):
            r.take()
    logged: list[str] = []
    skip = pickle.loads(pickle.dumps(scan_dataset(load_data_config(data), ("train", "val"), "skip")))
    samples = skip.take(logged.append)
    assert [len(samples["train"]), len(samples["val"])] == [1, 1]
    assert "trained without 2 problem item(s)" in logged[0] and "b.png: RGB image without IR partner" in logged[0]


@pytest.fixture(scope="module")
def flawed_data(tmp_path_factory) -> tuple[Path, list[str]]:
    """A synthetic set with one instance of several kinds of bad input; returns data.yaml and the bad files."""
    root = tmp_path_factory.mktemp("flawed")
    data = write_synthetic_dataset(root, n_train=20, n_val=4, imgsz=64, seed=2)
    tr = lambda d, i, ext="png": root / d / "train" / f"train_{i:05d}.{ext}"  # noqa: E731
    tr("imagesIR", 1).unlink()  # RGB without IR
    tr("images", 2).unlink()  # IR without RGB
    _truncate(tr("images", 3))  # truncated image
    tr("labels", 4, "txt").write_text("0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n")  # class id outside names
    tr("labels", 5, "txt").write_text("0 0.5 0.5 0.1\n")  # wrong field count
    cv2.imwrite(str(tr("imagesIR", 6)), np.zeros((10, 10), np.uint8))  # IR of another size
    return data, [str(tr("images", 1)), str(tr("imagesIR", 2)), str(tr("images", 3)), str(tr("labels", 4, "txt")),
                  str(tr("labels", 5, "txt")), str(tr("images", 6))]


TRAIN_ARGS = ["--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--max-steps", "3",
              "--epochs", "1", "--no-val", "--warmup-epochs", "0"]


@pytest.mark.slow
def test_training_skips_bad_pairs_and_logs_them(flawed_data, tmp_path):
    from tests.helpers import launch

    data, bad = flawed_data
    out = tmp_path / "skip"
    run = launch("python", 1, ["train.py", "--data", str(data), *TRAIN_ARGS, "--on-bad-sample", "skip",
                               "--output-dir", str(out)], out)
    assert "trained without 6 problem item(s)" in run.output
    assert all(f in run.output for f in bad), "every problem is printed with its file"
    assert [r["step"] for r in run.log] == [1, 2, 3]


@pytest.mark.slow
def test_bad_input_stops_every_rank_before_the_first_step(flawed_data, tmp_path):
    """Two ranks: rank 0 scans and fails; rank 1 must raise the same error, not hang in the broadcast."""
    from tests.helpers import launch

    data, bad = flawed_data
    out = tmp_path / "error"
    run = launch("torchrun", 2, ["train.py", "--data", str(data), *TRAIN_ARGS, "--output-dir", str(out)], out,
                 timeout=240, check=False)
    assert run.proc.returncode != 0
    assert "6 problem(s)" in run.output and all(f in run.output for f in bad)
    assert "--on-bad-sample skip" in run.output
    assert not (out / "train_log.jsonl").exists() or not (out / "train_log.jsonl").read_text().strip()


def test_large_jpeg_pairs_decode_reduced_for_training(tmp_path):
    """A JPEG pair >= 2x the training size is decoded at 1/2 (1/4, 1/8) by libjpeg: same geometry and
    nearly the same pixels as a full decode + bilinear resize, RGB and IR still aligned."""
    from yolofuse_scale.data.decode import jpeg_reduction

    rgb, ir, ok = _asymmetric_pair()
    rgb, ir = (cv2.resize(x, (320, 192), interpolation=cv2.INTER_NEAREST) for x in (rgb, ir))
    root = tmp_path
    for d in ("images", "imagesIR", "labels"):
        (root / d / "train").mkdir(parents=True)
    cv2.imwrite(str(root / "images/train/a.jpg"), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    cv2.imwrite(str(root / "imagesIR/train/a.jpg"), ir, [cv2.IMWRITE_JPEG_QUALITY, 98])
    (root / "labels/train/a.txt").write_text(ok)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [person]\nir_channels: 1\n")
    (sample,) = scan_split(load_data_config(root / "data.yaml"), "train")
    assert sample.hw == (192, 320) and jpeg_reduction(sample, 128) == 2 and jpeg_reduction(sample, 192) == 1
    ds = PairedRGBIRDataset([sample], 128, augment=False, ir_channels=1)
    reduced, ori = ds.resized_pair(0)
    full = cv2.resize(ds.load_pair(0)[0], (128, 77), interpolation=cv2.INTER_AREA)
    assert ori == (192, 320) and reduced.shape == (77, 128, 4)
    assert np.abs(reduced.astype(int) - full).mean() < 3
    assert np.array_equal(reduced[..., 0] > 128, reduced[..., 3] > 128), "RGB and IR aligned"


def test_16bit_tiff_ir_passes_the_scan_and_loads(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok)}, ir_channels=1)
    (tmp_path / "imagesIR" / "train" / "a.png").unlink()
    (tmp_path / "images" / "train" / "a.png").rename(tmp_path / "images" / "train" / "a.tiff")
    cv2.imwrite(str(tmp_path / "imagesIR" / "train" / "a.tiff"), ir.astype(np.uint16) * 200)  # raw thermal counts
    (sample,) = scan_split(load_data_config(data), "train")
    assert sample.ir.suffix == ".tiff" and sample.hw == (48, 80)
    img = PairedRGBIRDataset([sample], 64, augment=False, ir_channels=1)[0]["img"].numpy()
    assert np.array_equal(img[3] > 200, img[0] > 200), "16-bit IR stretched to 8 bits, still aligned"


# ------------------------------------------------------------------ what the scan sees, what it reports
def _scan(data: Path, policy: str = "error"):
    from yolofuse_scale.data import scan_dataset

    return scan_dataset(load_data_config(data), ("train", "val"), policy)


def test_symlinked_subfolders_are_followed_and_a_link_loop_is_listed_once(tmp_path):
    """Half of each split lives elsewhere behind symlinked sub-folders (rglob skipped them: 4 of 8 pairs,
    no word); a link back to the split's own folder must neither loop nor list a pair twice."""
    data = write_synthetic_dataset(tmp_path / "ds", n_train=8, n_val=2, imgsz=64, seed=0)
    root, extra = data.parent, tmp_path / "extra"
    for d in ("images", "imagesIR", "labels"):
        (extra / d).mkdir(parents=True)
        for f in sorted((root / d / "train").iterdir())[4:]:
            f.rename(extra / d / f.name)
        (root / d / "train" / "more").symlink_to(extra / d, target_is_directory=True)
    (root / "images" / "train" / "loop").symlink_to("..", target_is_directory=True)  # -> images/, an ancestor
    (root / "images" / "train" / "self").symlink_to(".", target_is_directory=True)
    result = _scan(data)
    samples = result.take()["train"]
    assert len(samples) == 8 and sum(s.rgb.parent.name == "more" for s in samples) == 4
    assert len({s.rgb for s in samples}) == 8
    line = result.report().splitlines()[0]
    assert line.startswith("data train: 8 pairs") and "not entered again" in line
    assert f"{root / 'images/train/self'} -> {root / 'images/train'} (a loop)" in line
    assert f"{root / 'images/train/loop'} -> {root / 'images'} (a loop)" in line


def test_a_split_without_any_label_file_is_refused_and_missing_ones_are_reported(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=6, n_val=2, imgsz=64, seed=0)
    labels = tmp_path / "labels" / "train"
    (labels / "train_00001.txt").unlink()
    (labels / "train_00002.txt").write_text("")
    result = _scan(data)
    result.take()
    line = result.report().splitlines()[0]
    assert "2 background (1 with an empty label file; 1 without a label file: " in line
    assert str(labels / "train_00001.txt") in line
    (tmp_path / "labels").rename(tmp_path / "label")  # a misnamed folder: all background, mAP 0, no warning
    with pytest.raises(DataError) as e:
        _scan(data).take()
    msg = str(e.value)
    assert f"{data}: split 'train': none of its 6 pairs has a label file" in msg
    assert f"Looked in {tmp_path / 'labels' / 'train'} for one .txt per image" in msg


def test_a_validation_split_without_boxes_is_refused(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=4, n_val=2, imgsz=64, seed=0)
    for f in (tmp_path / "labels" / "val").iterdir():
        f.write_text("")
    with pytest.raises(DataError, match=r"split 'val' has no boxes at all \(its 2 pairs have empty or missing"):
        _scan(data).take()
    assert len(scan_split(load_data_config(data), "train")) == 4, "a training split may be all background"


def test_utf8_bom_in_label_and_list_files_is_accepted(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=3, n_val=1, imgsz=64, seed=0)
    label = tmp_path / "labels" / "train" / "train_00000.txt"
    boxes = label.read_text()
    label.write_bytes(b"\xef\xbb\xbf" + boxes.replace("\n", "\r\n").encode())  # Notepad: BOM and CRLF
    (tmp_path / "train.txt").write_bytes(b"\xef\xbb\xbfimages/train/train_00000.png\r\n"
                                         b"images/train/train_00001.png\r\n")
    cfg = load_data_config(data)
    cfg.train[:] = [tmp_path / "train.txt"]
    samples = scan_split(cfg, "train")
    assert [s.rgb.name for s in samples] == ["train_00000.png", "train_00001.png"]
    assert samples[0].boxes.shape[0] == len(boxes.splitlines()) > 0
    label.write_bytes(boxes.encode("utf-16"))
    with pytest.raises(DataError, match=f"{label}: unreadable label file \\(UTF-16 text"):
        scan_split(cfg, "train")


def test_hidden_files_and_macos_resource_forks_are_ignored(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=3, n_val=1, imgsz=64, seed=0)
    for d in ("images", "imagesIR"):
        (tmp_path / d / "train" / "._train_00000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "images" / "train" / ".thumbs").mkdir()
    (tmp_path / "images" / "train" / ".thumbs" / "t.png").write_bytes(b"junk")
    (tmp_path / "imagesIR" / "train" / ".DS_Store").write_bytes(b"junk")
    result = _scan(data)
    assert len(result.take()["train"]) == 3
    assert "2 hidden file(s)/folder(s) ignored" in result.report().splitlines()[0]


def _jpeg_pair(root: Path) -> Path:
    """A one-pair JPEG dataset; returns the IR file."""
    rgb, ir, ok = _asymmetric_pair()
    rgb = rgb + np.random.default_rng(0).integers(0, 40, rgb.shape, dtype=np.uint8)
    for d in ("images", "imagesIR", "labels"):
        (root / d / "train").mkdir(parents=True)
    cv2.imwrite(str(root / "images/train/a.jpg"), rgb[..., ::-1])
    cv2.imwrite(str(root / "imagesIR/train/a.jpg"), ir)
    (root / "labels/train/a.txt").write_text(ok)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [person, car]\nir_channels: 1\n")
    return root / "imagesIR/train/a.jpg"


@pytest.mark.parametrize("trailer", [b"\x00" * 1000, b"\xff\xd8 a second SOI, then camera maker data \x12\x34"])
def test_jpeg_with_bytes_after_its_end_marker_is_accepted(tmp_path, trailer):
    ir = _jpeg_pair(tmp_path)
    ir.write_bytes(ir.read_bytes() + trailer)
    (sample,) = scan_split(load_data_config(tmp_path / "data.yaml"), "train")
    img = PairedRGBIRDataset([sample], 64, augment=False, ir_channels=1)[0]["img"]
    assert img.shape == (4, 64, 64), "decoders stop at the end marker: the pair trains"


@pytest.mark.parametrize("cut", [2, 300])
def test_jpeg_cut_before_its_end_marker_stays_an_error(tmp_path, cut):
    ir = _jpeg_pair(tmp_path)
    raw = ir.read_bytes()
    ir.write_bytes(raw[:-cut] + (b"\x00" * 7 if cut > 2 else b""))  # zeros: a cut file padded by a copy tool
    msg = _scan_problems(tmp_path / "data.yaml")
    assert f"{ir}: truncated JPEG (the data stops before the end-of-image marker)" in msg


def test_jpeg_end_walk_skips_markers_inside_segments():
    """An ``FF D9`` inside an APP segment (an EXIF thumbnail's end) is not the image's end."""
    from yolofuse_scale.data.scan.pair_checks import jpeg_end

    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    raw = buf.tobytes()
    app = b"\xff\xe1" + (2 + 6).to_bytes(2, "big") + b"\xff\xd9\xff\xd9\x00\x00"
    spliced = raw[:2] + app + raw[2:]
    assert jpeg_end(spliced) == len(spliced) and jpeg_end(spliced[:-2]) is None
    assert jpeg_end(spliced + b"trailer") == len(spliced)


def test_start_up_summary_counts_pairs_boxes_background_and_skips(tmp_path):
    data = write_synthetic_dataset(tmp_path, n_train=6, n_val=2, imgsz=64, seed=0)
    (tmp_path / "imagesIR" / "train" / "train_00001.png").unlink()
    lab = tmp_path / "labels" / "train" / "train_00002.txt"
    lab.write_text("7 0.5 0.5 0.1 0.1\n")
    lab3 = tmp_path / "labels" / "train" / "train_00003.txt"
    lab3.write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n")
    result = _scan(data, "skip")
    samples = result.take(log=lambda _m: None)
    train, val = result.report().splitlines()
    boxes = sum(len(s.boxes) for s in samples["train"])
    assert train == (f"data train: 4 pairs, {boxes} boxes, 0 background; skipped 2 pair(s) (1 bad label row, "
                     f"1 no IR partner); also left out: 1 duplicate label row")
    assert val.startswith("data val: 2 pairs, ") and val.endswith("; nothing skipped")
