"""Thermal data as it comes: 16-bit radiometric IR under a stated mapping, unaligned rigs (pairs files, a read-time
homography, ``register``), the peers' own layouts (YOLOv11-RGBT, DEYOLO), the radiometric synthetic scene.

Every check reads through the loaders' own readers (``decode.py``, ``imagefile.py``, ``scan/``) and compares the
CPU and the device loader (``--loader device`` decodes 16-bit and registered IR in its workers with the CPU code).
Bad input of these features: tests/test_bad_input_thermal.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import TINY_TRAIN, _scan_data, run_cli
from tests.test_bad_input_images import _batches, _pixels, _png_chunk, _same_targets, _tiff_block, _val_batches
from yolofuse_scale.data import load_data_config, scan_dataset, scan_split, write_synthetic_dataset
from yolofuse_scale.data.decode import decode_pair, decode_resized


def kelvin100(t: np.ndarray) -> np.ndarray:
    """Degrees Celsius as 16-bit centi-Kelvin (``thermal16.kelvin100``; imported where used, so that every test of this
    file fails on its own on a version without the feature)."""
    from yolofuse_scale.data.synth.thermal16 import kelvin100 as k100

    return k100(t)

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures
DEGREES = "raw_per_degree: 100, raw_at_zero: 27315"  # FLIR's radiometric files: centi-Kelvin


def _yaml(d: Path, *extra: str, train: str = "images/train", val: str = "images/val") -> Path:
    """The template's data.yaml plus ``extra`` lines."""
    y = d / "data.yaml"
    y.write_text(f"path: .\ntrain: {train}\nval: {val}\nnames: [person, car]\nir_channels: 1\n"
                 + "".join(line + "\n" for line in extra))
    return y


def _to_16bit(d: Path) -> None:
    """Every IR frame of the copy as a 16-bit radiometric PNG: its 8-bit value v as the temperature v / 4 - 10 C."""
    for p in sorted((d / "imagesIR").rglob("*.png")):
        v = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float32)
        cv2.imwrite(str(p), kelvin100(v / 4 - 10))


# ------------------------------------------------------------------------------------------ 16-bit mapping
def test_a_fixed_mapping_keeps_a_temperature_that_per_frame_minmax_moves():
    """Two frames holding a person at 35 C, one cold (-5..10 C) and one with a hot spot (120 C): under ``range`` the
    person is the same value in both, under per-frame min-max (today's default, kept bit for bit) it is not."""
    from yolofuse_scale.data.config import IRMapping
    from yolofuse_scale.data.decode import map_depth

    cold = kelvin100(np.array([[-5.0, 10.0], [35.0, 0.0]], np.float32))
    hot = kelvin100(np.array([[-5.0, 120.0], [35.0, 0.0]], np.float32))
    fixed = IRMapping("range", 27315 - 1000.0, 27315 + 6000.0)  # -10..60 C
    a, b = map_depth(cold, fixed), map_depth(hot, fixed)
    assert a[1, 0] == b[1, 0] == round(45 / 70 * 255)  # 35 C
    assert b[0, 1] == 255 and a[0, 0] == b[0, 0] == round(5 / 70 * 255)  # clipped above 60 C; -5 C the same
    mm_a, mm_b = map_depth(cold), map_depth(hot)
    assert mm_a[1, 0] != mm_b[1, 0]  # the person's value follows the frame's extremes
    assert np.array_equal(mm_b, cv2.normalize(hot, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8))  # as before
    assert np.array_equal(map_depth(hot, IRMapping("shift8")), (hot >> 8).astype(np.uint8))  # Ultralytics'
    flt = np.array([[300.0, 70000.0]], np.float32)  # a float radiometric TIFF: shift8 is floor(raw / 256), clipped
    assert map_depth(flt, IRMapping("shift8")).tolist() == [[1, 255]]


def test_ir_mapping_forms_of_data_yaml(fresh_data):
    from yolofuse_scale.data.config import IRMapping

    forms = {
        "minmax": ("minmax", None, None),
        "shift8": ("shift8", None, None),
        "{range: [7000, 9000]}": ("range", 7000.0, 9000.0),
        f"{{range: [-10, 45], {DEGREES}}}": ("range", 26315.0, 31815.0),
        "{percentile: [1, 99]}": ("percentile", None, None),
    }
    for text, (mode, lo, hi) in forms.items():
        m = load_data_config(_yaml(fresh_data, f"ir_mapping: {text}")).ir_read.mapping
        assert (m.mode, m.lo, m.hi, m.chosen) == (mode, lo, hi, True), text
    default = load_data_config(_yaml(fresh_data)).ir_read
    assert default.mapping == IRMapping() and not default.mapping.chosen and default.homography is None


def test_16bit_ir_is_read_mapped_alike_by_both_loaders_and_the_cache(fresh_data, tmp_path):
    """The scan reports the depth and the mapping; every reader maps a frame exactly as ``map_depth`` does; both
    loaders give the same targets and pixels (the device loader's workers decode 16-bit with the CPU code); the
    pair cache holds the mapped pixels under a key of the mapping."""
    from yolofuse_scale.data.decode import map_depth

    _to_16bit(fresh_data)
    y = _yaml(fresh_data, f"ir_mapping: {{range: [-10, 60], {DEGREES}}}")
    result = _scan_data(fresh_data)
    report = result.report()
    assert "data train: 8 pairs" in report and "; IR 16-bit" in report, report
    assert "mapped to 8 bits by ir_mapping range [-10, 60] degrees (raw = 27315 + 100 * T: raw 26315..33315)" in report
    s = result.take(log=lambda _m: None)["train"][0]
    raw = cv2.imread(str(s.ir), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decode_pair(s, 1)[0][..., 3], map_depth(raw, s.ir_read.mapping))
    a, b = _batches(y, augment=False)
    _same_targets(a, b, "ratio_pad", "ori_shape")
    _pixels(a, b, 1, 0.2)
    a, b = _batches(y, augment=False, cache=tmp_path / "cache")
    assert torch.equal(a["img"], b["img"])
    first = sorted(p.name for p in (tmp_path / "cache").glob("pairs-*.u8"))
    _yaml(fresh_data, "ir_mapping: shift8")  # another mapping: another cache file, other pixels
    c, _ = _batches(y, augment=False, cache=tmp_path / "cache")
    assert len(sorted((tmp_path / "cache").glob("pairs-*.u8"))) == 2 and len(first) == 1
    assert not torch.equal(a["img"][:, 3], c["img"][:, 3])


def test_16bit_ir_without_a_mapping_keeps_per_frame_minmax_and_warns(fresh_data):
    _to_16bit(fresh_data)
    _yaml(fresh_data)
    result = _scan_data(fresh_data)
    lines = result.report().splitlines()
    assert any(ln.startswith("warning: radiometric (16-bit) IR read with the default per-frame min-max") for ln in
               lines), lines
    s = result.take(log=lambda _m: None)["train"][0]
    raw = cv2.imread(str(s.ir), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decode_pair(s, 1)[0][..., 3], cv2.normalize(raw, None, 0, 255, cv2.NORM_MINMAX).astype(
        np.uint8))


def test_16bit_ir_with_an_exif_orientation_is_mapped_and_turned_by_every_reader(fresh_data):
    """A 16-bit IR PNG tagged with orientation 3 (turned 180 degrees): the same reader turns and maps it, for the
    CPU loader and for the device loader's workers."""
    from yolofuse_scale.data.decode import map_depth, read_ir

    _to_16bit(fresh_data)
    _yaml(fresh_data, f"ir_mapping: {{range: [-10, 60], {DEGREES}}}")
    p = fresh_data / "imagesIR" / "train" / "train_00002.png"
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    data = p.read_bytes()
    p.write_bytes(data[:33] + _png_chunk(b"eXIf", _tiff_block(3)) + data[33:])  # after IHDR
    s = next(s for s in scan_split(load_data_config(fresh_data / "data.yaml"), "train") if s.ir == p)
    expected = map_depth(raw, s.ir_read.mapping)[::-1, ::-1]
    assert np.array_equal(read_ir(s, 1)[..., 0], expected)
    a, b = _val_batches(fresh_data / "data.yaml")
    _pixels(a, b, 1, 0.2)


def test_percentile_levels_are_resolved_once_over_the_training_set_and_travel_with_the_weights(fresh_data):
    from yolofuse_scale.data.levels import chosen_frames
    from yolofuse_scale.data.scan import trained_mapping

    _to_16bit(fresh_data)
    _yaml(fresh_data, "ir_mapping: {percentile: [2, 98]}")
    cfg = load_data_config(fresh_data / "data.yaml")
    cache = fresh_data / ".levels"
    result = scan_dataset(cfg, ("train", "val"), cache_dirs=(cache,))
    m = result.ir_read.mapping
    train = result.samples["train"]
    values = np.concatenate([cv2.imread(str(p), cv2.IMREAD_UNCHANGED).reshape(-1) for p in chosen_frames(train)])
    assert (m.lo, m.hi) == tuple(np.percentile(values.astype(np.float64), [2, 98]))
    assert all(s.ir_read.mapping == m for v in result.samples.values() for s in v)  # val maps with train's levels
    assert len(list(cache.glob("irlevels-*.json"))) == 1
    assert scan_dataset(cfg, ("train", "val"), cache_dirs=(cache,)).ir_read.mapping == m  # cached: the same
    # val of an evaluation-only copy (no training split): the weights' levels, not recomputed
    shutil.rmtree(fresh_data / "images" / "train")
    _yaml(fresh_data, "ir_mapping: {percentile: [2, 98]}")
    val_cfg = load_data_config(fresh_data / "data.yaml", splits=("val",))
    mapping = trained_mapping(val_cfg, m.record(), "w.pt")
    assert scan_split(val_cfg, "val", ir_mapping=mapping)[0].ir_read.mapping.key() == m.key()


# ------------------------------------------------------------------------------------------ unaligned rigs
H = np.array([[1.9, 0.05, 4.0], [-0.03, 2.02, 2.5], [0.0002, 0.0001, 1.0]])  # IR (half size) -> RGB


def _unaligned(d: Path, jpeg: bool = False) -> None:
    """Each IR frame replaced by what a half-resolution camera of a slightly turned view records: the RGB frame's
    gray warped by the inverse of ``H`` to 40x32. ``jpeg``: RGB written as 160x128 JPEGs (the reduced decode)."""
    for rgb_path in sorted((d / "images").rglob("*.png")):
        rgb = cv2.imread(str(rgb_path))
        ir_path = d / "imagesIR" / rgb_path.relative_to(d / "images")
        if jpeg:  # the pair keeps one name, .jpg: IR stays a PNG inside (formats go by content)
            rgb = cv2.resize(rgb, (160, 128), interpolation=cv2.INTER_LINEAR)
            rgb_path.unlink()
            ir_path.unlink()
            cv2.imwrite(str(rgb_path.with_suffix(".jpg")), rgb, [cv2.IMWRITE_JPEG_QUALITY, 98])
            ir_path = ir_path.with_suffix(".jpg")
        scale = np.diag([rgb.shape[1] / 80, rgb.shape[0] / 64, 1.0])
        gray = cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)
        ir = cv2.warpPerspective(gray, scale @ H, (40, 32), flags=cv2.WARP_INVERSE_MAP)
        ir_path.write_bytes(cv2.imencode(".png", ir)[1].tobytes())


def _h_yaml(h: np.ndarray) -> str:
    return "ir_homography: " + json.dumps(h.tolist())


def test_a_rig_with_a_homography_reads_ir_registered_in_rgbs_frame_in_both_loaders(fresh_data, tmp_path):
    _unaligned(fresh_data)
    y = _yaml(fresh_data)
    err = _scan_data(fresh_data).error  # as before: pairs of two sizes are refused, now with a hint
    assert "RGB is 80x64 but its IR partner" in err and "need data.yaml's ir_homography" in err
    _yaml(fresh_data, _h_yaml(H))
    result = _scan_data(fresh_data)
    assert result.error is None, result.error
    assert "warped into RGB's frame by ir_homography when read; the IR frame covers" in result.report()
    s = result.take(log=lambda _m: None)["train"][3]
    assert s.hw == (64, 80) and s.ir_hw == (32, 40)
    pair, ori = decode_pair(s, 1)
    ir_file = cv2.imread(str(s.ir), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(pair[..., 3], cv2.warpPerspective(ir_file, H, (80, 64), flags=cv2.INTER_LINEAR))
    gray = cv2.cvtColor(pair[..., :3], cv2.COLOR_RGB2GRAY).astype(float)
    inside = cv2.warpPerspective(np.ones((32, 40), np.uint8), H, (80, 64)) > 0
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    err = np.abs(pair[..., 3].astype(float) - gray)[inside].mean()
    naive = np.abs(cv2.resize(ir_file, (80, 64)).astype(float) - gray)[inside].mean()  # what a plain resize gave
    assert inside.mean() > 0.5 and err < 0.5 * naive, (err, naive)  # RGB's scene, where RGB sees it
    outside = cv2.dilate(cv2.warpPerspective(np.ones((32, 40), np.uint8), H, (80, 64)), np.ones((3, 3), np.uint8))
    assert (pair[..., 3][outside == 0] == 0).all()  # beyond the IR camera's field of view: 0
    a, b = _batches(y, augment=False)
    _same_targets(a, b, "ratio_pad", "ori_shape")
    _pixels(a, b, 1, 0.2)
    a, b = _batches(y, augment=False, cache=tmp_path / "cache")
    assert torch.equal(a["img"], b["img"])


def test_a_homography_with_reduced_jpeg_decoding_registers_at_the_reduced_size(fresh_data):
    """RGB 160x128 JPEG decoded at 1/4 for --imgsz 32: IR is warped straight into the reduced frame (the matrix
    scaled), and gives what registering at full size and then resizing gives."""
    _unaligned(fresh_data, jpeg=True)
    _yaml(fresh_data, _h_yaml(np.diag([2.0, 2.0, 1.0]) @ H))  # RGB is twice the template's size now
    s = _scan_data(fresh_data).take(log=lambda _m: None)["train"][3]
    small, _ = decode_resized(s, 32, 1)
    full, _ = decode_pair(s, 1)
    ref = cv2.resize(full[..., 3], (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    assert small.shape[:2] == (26, 32) and np.abs(small[..., 3].astype(float) - ref).mean() < 6


def test_register_recovers_the_rigs_homography_and_writes_a_snippet_data_yaml_reads(fresh_data, tmp_path, capsys):
    from yolofuse_scale.cli import main

    rng = np.random.default_rng(0)
    ir = rng.uniform([0, 0], [40, 32], size=(9, 2))
    p = np.c_[ir, np.ones(9)] @ H.T
    rgb = p[:, :2] / p[:, 2:]
    rgb[8] += 25  # a mis-clicked pair
    csv = tmp_path / "points.csv"
    csv.write_text("x_rgb,y_rgb,x_ir,y_ir\n" + "".join(f"{a:.4f},{b:.4f},{c:.4f},{e:.4f}\n"
                                                         for (a, b), (c, e) in zip(rgb, ir)))
    assert main(["register", str(csv), "--out", str(tmp_path / "h.yaml")]) == 0
    out = capsys.readouterr().out
    assert "9 point pairs, 8 inliers" in out and out.count("outlier: left out") == 1
    y = _yaml(fresh_data)
    y.write_text(y.read_text() + (tmp_path / "h.yaml").read_text())
    got = np.array(load_data_config(y).ir_read.homography)
    assert np.allclose(got, H / H[2, 2], rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------ layouts
def _move_to(d: Path, layout: dict[str, str]) -> Path:
    """The template's files moved into another layout: ``{kind/split: folder}`` (kind: images, imagesIR, labels)."""
    new = d.parent / "peer"
    for key, folder in layout.items():
        src = d / key
        (new / folder).mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            shutil.copy(f, new / folder / f.name)
    return new


@pytest.mark.parametrize("method", ["beside", "images-first", "split-first"])
def test_yolov11_rgbt_layouts_are_read_as_they_are(fresh_data, method):
    """YOLOv11-RGBT's layouts (its README's methods 1-3), with its own data.yaml (no key of ours): recognised,
    IR from the 'infrared' twin, labels where Ultralytics finds them."""
    where = {"beside": {"images/{s}": "visible/{t}", "labels/{s}": "visible/{t}", "imagesIR/{s}": "infrared/{t}"},
             "images-first": {"images/{s}": "images/visible/{t}", "labels/{s}": "labels/visible/{t}",
                              "imagesIR/{s}": "images/infrared/{t}"},
             "split-first": {"images/{s}": "{t}/visible/images", "labels/{s}": "{t}/visible/labels",
                             "imagesIR/{s}": "{t}/infrared/images"}}[method]
    layout = {k.format(s=s): v.format(t=t) for s, t in (("train", "train"), ("val", "test")) for k, v in where.items()}
    peer = _move_to(fresh_data, layout)
    entry = {"beside": "visible/{t}", "images-first": "images/visible/{t}", "split-first": "{t}/visible/images"}[method]
    (peer / "rgbt.yaml").write_text(f"path: {peer}\ntrain: {entry.format(t='train')}\nval: {entry.format(t='test')}\n"
                                    "nc: 2\nnames: ['person', 'car']\n")
    cfg = load_data_config(peer / "rgbt.yaml")
    assert cfg.layout == "yolov11-rgbt" and (cfg.images_dir, cfg.ir_dir) == ("visible", "infrared")
    result = scan_dataset(cfg, ("train", "val"))
    assert result.error is None, result.error
    samples = result.take(log=lambda _m: None)
    assert len(samples["train"]) == 8 and len(samples["val"]) == 4
    assert "data layout: yolov11-rgbt (recognised" in result.report()
    s = samples["train"][1]
    assert s.ir.parent.name in ("train", "images") and "infrared" in s.ir.parts and s.label is not None
    ref = scan_split(load_data_config(fresh_data / "data.yaml"), "train")[1]
    assert np.array_equal(s.boxes, ref.boxes) and np.array_equal(decode_pair(s, 1)[0], decode_pair(ref, 1)[0])


def test_deyolo_layout_pairs_train_with_train2_by_position(fresh_data):
    """DEYOLO's data.yaml (train/train2, val/val2; labels of the visible images): pairs as DEYOLO's loader pairs
    them, by position in sorted order, also where the two cameras name their files differently."""
    peer = _move_to(fresh_data, {"images/train": "images/vis_train", "imagesIR/train": "images/Ir_train",
                                 "labels/train": "labels/vis_train", "images/val": "images/vis_val",
                                 "imagesIR/val": "images/Ir_val", "labels/val": "labels/vis_val"})
    for i, f in enumerate(sorted((peer / "images/Ir_train").iterdir())):
        f.rename(f.with_name(f"ir_{i:03d}.png"))  # another naming, the same order
    (peer / "M3FD.yaml").write_text(f"path: {peer}\ntrain: images/vis_train\ntrain2: images/Ir_train\n"
                                    "val: images/vis_val\nval2: images/Ir_val\ntest:\nnc: 2\nnames:\n  0: person\n"
                                    "  1: car\n")
    cfg = load_data_config(peer / "M3FD.yaml")
    assert cfg.layout == "deyolo"
    result = scan_dataset(cfg, ("train", "val"))
    assert result.error is None, result.error
    report = result.report()
    assert "8 pair(s) whose RGB and IR files are named differently (paired by position" in report
    train = result.take(log=lambda _m: None)["train"]
    ref = scan_split(load_data_config(fresh_data / "data.yaml"), "train")
    assert [s.ir.name for s in train] == [f"ir_{i:03d}.png" for i in range(8)]
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(train, ref))
    assert np.array_equal(decode_pair(train[5], 1)[0], decode_pair(ref[5], 1)[0])


def test_pairs_files_pair_what_names_cannot(fresh_data):
    """A CSV (header, a label column), a JSON list, and FLIR ADAS v2's shape (a JSON object RGB -> IR, folders in
    ``pairs_dirs``): the same pairs as name pairing gives."""
    d = fresh_data
    for f in sorted((d / "imagesIR" / "train").iterdir()):
        f.rename(f.with_name("thermal_" + f.name))
    rows = [(f"images/train/train_{i:05d}.png", f"imagesIR/train/thermal_train_{i:05d}.png") for i in range(8)]
    (d / "train.csv").write_text("rgb,ir,label\n" + "".join(f"{r},{i},labels/train/train_{k:05d}.txt\n"
                                                           for k, (r, i) in enumerate(rows)))
    (d / "val.json").write_text(json.dumps([{"rgb": f"images/val/val_{i:05d}.png", "ir": f"imagesIR/val/val_{i:05d}"
                                             ".png"} for i in range(4)]))
    _yaml(d, train="train.csv", val="val.json")
    result = _scan_data(d)
    assert result.error is None, result.error
    train = result.take(log=lambda _m: None)["train"]
    assert [s.ir.name for s in train] == [f"thermal_train_{i:05d}.png" for i in range(8)]
    assert all(s.label is not None and len(s.boxes) for s in train[:2])
    # FLIR's rgb_to_thermal_vid_map.json: bare names, the folders in pairs_dirs; labels found under its labels folder
    (d / "map.json").write_text(json.dumps({f"train_{i:05d}.png": f"thermal_train_{i:05d}.png" for i in range(8)},
                                           indent=1))
    _yaml(d, "pairs_dirs: {rgb: images/train, ir: imagesIR/train, labels: labels/train}", train="map.json")
    flir = _scan_data(d).take(log=lambda _m: None)["train"]
    assert [(s.rgb, s.ir, s.label) for s in flir] == [(s.rgb, s.ir, s.label) for s in train]


# ------------------------------------------------------------------------------------------ the synthetic scene
def test_thermal16_scene_writes_radiometric_ir_with_people_at_body_temperature(tmp_path):
    y = write_synthetic_dataset(tmp_path / "t16", n_train=12, n_val=2, imgsz=64, seed=3, scene="thermal16")
    cfg = load_data_config(y)
    assert cfg.names == {0: "person"} and "synth" in y.read_text()
    samples = scan_split(cfg, "train")
    assert {s.ir_bits for s in samples} == {16}
    means, heads = [], []
    for s in samples:
        t = cv2.imread(str(s.ir), cv2.IMREAD_UNCHANGED).astype(np.float64) / 100 - 273.15
        means.append(np.median(t))
        for _, xc, yc, _w, h in s.boxes:  # the head: a few pixels below the box's top
            heads.append(t[int((yc - h / 2) * 64 + 0.12 * h * 64), int(xc * 80)])
    assert min(means) < 12 and max(means) > 26  # cold and warm frames
    assert 32.5 < np.median(heads) < 37.5, heads
    again = write_synthetic_dataset(tmp_path / "again", n_train=12, n_val=2, imgsz=64, seed=3, scene="thermal16")
    assert (again.parent / "imagesIR/train/train_00004.png").read_bytes() == \
        (y.parent / "imagesIR/train/train_00004.png").read_bytes()


@pytest.mark.slow
def test_training_records_the_percentile_levels_and_val_predict_apply_them(fresh_data, tmp_path):
    """A tiny training on 16-bit IR with a percentile mapping: the weights record the levels the scan resolved;
    ``val`` of a copy without the training split and the Python API map IR with them."""
    from yolofuse_scale.inference import FusionDetector
    from yolofuse_scale.weights import read_weights

    _to_16bit(fresh_data)
    y = _yaml(fresh_data, "ir_mapping: {percentile: [1, 99]}")
    levels = scan_dataset(load_data_config(y), ("train", "val")).ir_read.mapping
    out = tmp_path / "run"
    proc = run_cli("train.py", "--data", str(y), *TINY_TRAIN, "--output-dir", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "mapped to 8 bits by ir_mapping percentile [1, 99]" in proc.stdout + proc.stderr
    rec = read_weights(out / "weights" / "last.pt")["ir_mapping"]
    assert (rec["lo"], rec["hi"]) == (levels.lo, levels.hi)
    det = FusionDetector.load(out / "weights" / "last.pt", device="cpu")
    assert det.ir_mapping.key() == levels.key()
    y = _yaml(fresh_data, "ir_mapping: {percentile: [1, 99]}", train="images/gone")
    proc = run_cli("val", "--weights", str(out / "weights" / "last.pt"), "--data", str(y), "--imgsz", "64",
                   "--workers", "0", "--no-plots", "--out", str(tmp_path / "val"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "error" not in proc.stderr


def test_the_mapping_study_splits_frames_by_the_generators_draw_and_summarises_per_kind(tmp_path):
    """benchmarks/ir_mapping_study.py's bookkeeping: the cold/warm lists are the generator's own draws, and the
    table's per-kind columns are the means over seeds."""
    import argparse

    from benchmarks import ir_mapping_study as study
    from yolofuse_scale.data.synth import render_pair
    from yolofuse_scale.data.synth.common import pair_rng

    args = argparse.Namespace(imgsz=64, val=10, data_seed=2)
    lists = study.frame_kinds(tmp_path / "data.yaml", args)
    warm, cold = lists["warm"].read_text().splitlines(), lists["cold"].read_text().splitlines()
    assert sorted(warm + cold) == [f"images/val/val_{i:05d}.png" for i in range(10)]
    assert all(render_pair(pair_rng(2, "val", int(n[-9:-4])), 64, 80, "thermal16")[3]["warm"] for n in warm)
    runs = [{"mapping": m, "seed": s, "mAP50": v, "mAP50-95": v / 2, "precision": 1.0, "recall": 1.0,
             "kinds": {k: {"mAP50-95": v / 2 + d, "images": 5} for k, d in (("cold", 0.1), ("warm", -0.1))}}
            for m, vs in (("minmax", (0.2, 0.4)), ("range", (0.8, 0.9))) for s, v in zip((0, 1), vs)]
    rows = study.summarise(runs, ["minmax", "range"])
    assert rows[0]["mAP50-95 warm"]["mean"] == pytest.approx(0.05) and rows[1]["mAP50-95"]["spread"] == \
        pytest.approx(0.05)
    table = study.markdown(rows, {"data": "d", "model": "m", "fusion": "ir", "epochs": 1, "batch_size": 2,
                                  "label": "l", "torch": "t"})
    assert "| mAP50-95 cold frames (5) | mAP50-95 warm frames (5) |" in table
    assert "| `minmax` | 0.150 ± 0.050 |" in table
