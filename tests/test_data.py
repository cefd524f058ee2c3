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
    synth,
    write_synthetic_dataset,
)


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
    ds = PairedRGBIRDataset(samples, 96, augment=flip, ir_channels=1, hflip=1.0)
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


def test_bad_labels_and_missing_pairs_are_all_reported(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    pairs = {
        "good": (rgb, ir, ok),
        "short": (rgb, ir, ok + "0 0.5 0.5 0.1\n"),
        "cls": (rgb, ir, "2 0.5 0.5 0.1 0.1\n"),
        "coord": (rgb, ir, "0 1.7 0.5 0.1 0.1\n"),
        "text": (rgb, ir, "0 0.5 zero 0.1 0.1\n"),
        "noir": (rgb, None, ok),
    }
    data = _write_dataset(tmp_path, pairs)
    with pytest.raises(DataError) as e:
        scan_split(load_data_config(data), "train")
    msg = str(e.value)
    lbl = tmp_path / "labels" / "train"
    assert f"{lbl / 'short.txt'}:2: expected 5 fields" in msg
    assert f"{lbl / 'cls.txt'}:1: class id 2 is not an integer in 0..1" in msg
    assert f"{lbl / 'coord.txt'}:1: box 1.7" in msg
    assert f"{lbl / 'text.txt'}:1: non-numeric" in msg
    ir_file, rgb_file = (tmp_path / d / "train" / "noir.png" for d in ("imagesIR", "images"))
    assert f"{ir_file}: missing IR partner of {rgb_file}" in msg
    assert "5 problem(s)" in msg


def test_duplicate_label_rows_are_dropped(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"dup": (rgb, ir, ok * 3)})
    assert len(scan_split(load_data_config(data), "train")[0].boxes) == 1


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


def test_ir_of_another_size_is_resized_to_rgb(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    ir = cv2.resize(ir, (ir.shape[1] * 2, ir.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok)}, ir_channels=1)
    samples = scan_split(load_data_config(data), "train")
    item = PairedRGBIRDataset(samples, 64, augment=False, ir_channels=1)[0]
    img = item["img"].numpy()
    assert item["ori_shape"] == (48, 80)
    assert np.array_equal(img[3] > 200, img[0] > 200)


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


def test_empty_and_corrupt_images(tmp_path):
    rgb, ir, ok = _asymmetric_pair()
    data = _write_dataset(tmp_path, {"a": (rgb, ir, ok), "b": (rgb, ir, ok)})
    empty = tmp_path / "images" / "train" / "a.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=f"{empty}: empty file"):
        scan_split(load_data_config(data), "train")
    corrupt = tmp_path / "imagesIR" / "val" / "b.png"
    corrupt.write_bytes(b"not a png at all")
    samples = scan_split(load_data_config(data), "val")  # the scan only checks size: cheap
    ds = PairedRGBIRDataset(samples, 64, augment=False)
    assert ds[0]["img"].shape == (6, 64, 64)
    with pytest.raises(DataError, match=f"{corrupt}: cannot be decoded"):
        ds[1]


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


def test_synth_main_writes_a_loadable_set(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--train", "3", "--val", "2", "--imgsz", "64", "--ir-channels", "3"]
    assert synth.main(argv) == 0
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
