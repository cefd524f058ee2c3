"""`yolofuse-scale convert`: LLVIP and generic VOC RGB-T releases -> YOLOFuse layout, idempotently."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolofuse_scale.cli import main
from yolofuse_scale.data import DataError, load_data_config, scan_split
from yolofuse_scale.data.convert import VocSource, convert_voc

W, H = 80, 64  # LLVIP is 1280x1024 (5:4); the tests keep the aspect at a size that writes in microseconds


def _xml(name: str, objects: list[tuple[str, int, int, int, int]], size: tuple[int, int] = (W, H)) -> str:
    objs = "".join(f"<object><name>{c}</name><pose>Unspecified</pose><difficult>0</difficult><bndbox>"
                   f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for c, x1, y1, x2, y2 in objects)
    return (f"<annotation><folder>x</folder><filename>{name}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.full((H, W, 3), value, np.uint8)
    im[5:20, 10:30] = 255 - value  # something for the JPEG encoder, so the files differ
    cv2.imwrite(str(path), im)


def _fake_llvip(root: Path) -> dict[str, list]:
    """LLVIP's layout: visible/ and infrared/ with train/ and test/, flat Annotations/ of VOC XML."""
    objects = {"010001": [("person", 10, 5, 30, 60)], "010002": [("person", 0, 0, 80, 64), ("person", 40, 8, 52, 40)],
               "190001": [("person", 20, 10, 36, 50)]}
    for name, objs in objects.items():
        split = "test" if name.startswith("19") else "train"
        _image(root / "visible" / split / f"{name}.jpg", 40)
        _image(root / "infrared" / split / f"{name}.jpg", 200)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        size = (0, 0) if name == "010002" else (W, H)  # a zero size in the XML: read from the image header
        (root / "Annotations" / f"{name}.xml").write_text(_xml(f"{name}.jpg", objs, size))
    return objects


def _snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_llvip_converts_to_a_loadable_dataset(tmp_path, capsys):
    _fake_llvip(tmp_path / "LLVIP")
    dst = tmp_path / "out"
    assert main(["convert", "llvip", str(tmp_path / "LLVIP"), str(dst)]) == 0
    assert "3 pairs (train 2, val 1), 4 boxes" in capsys.readouterr().out
    cfg = load_data_config(dst / "data.yaml")
    assert cfg.names == {0: "person"} and cfg.ir_channels == 1
    train, val = scan_split(cfg, "train"), scan_split(cfg, "val")
    assert [s.rgb.name for s in train] == ["010001.jpg", "010002.jpg"] and [s.rgb.name for s in val] == ["190001.jpg"]
    assert np.allclose(train[0].boxes, [[0, 20 / W, 32.5 / H, 20 / W, 55 / H]], atol=1e-6)
    assert np.allclose(train[1].boxes[0], [0, 0.5, 0.5, 1, 1], atol=1e-6), "full-frame box, size from the header"
    ir = cv2.imread(str(train[0].ir))
    assert ir.mean() > 150, "the IR partner is the infrared file, not the visible one"
    assert os.path.samefile(train[0].rgb, tmp_path / "LLVIP" / "visible" / "train" / "010001.jpg"), "hard link"


@pytest.mark.parametrize("link", ["hard", "symlink", "copy"])
def test_second_run_changes_nothing_and_repairs_appended_labels(tmp_path, link):
    _fake_llvip(tmp_path / "LLVIP")
    dst = tmp_path / "out"
    args = ["convert", "llvip", str(tmp_path / "LLVIP"), str(dst), "--link", link]
    main(args)
    before = _snapshot(dst)
    main(args)
    assert _snapshot(dst) == before, "a rerun writes nothing"
    label = dst / "labels" / "train" / "010002.txt"
    good = label.read_text()
    label.write_text(good + good)  # what LLVIP's official script leaves after a second run
    main(args)
    assert label.read_text() == good and len(good.splitlines()) == 2


def test_voc_with_class_map_and_flat_layout(tmp_path):
    """M3FD's shape: Vis/, Ir/, Annotation/ without split folders; several classes renamed and merged."""
    src = tmp_path / "M3FD"
    objs = [("People", 1, 1, 9, 9), ("Car", 10, 10, 30, 20), ("Truck", 40, 10, 70, 30), ("Lamp", 5, 5, 6, 6)]
    for name in ("00001", "00002"):
        _image(src / "Vis" / f"{name}.png", 30)
        _image(src / "Ir" / f"{name}.png", 220)
        (src / "Annotation").mkdir(exist_ok=True)
        (src / "Annotation" / f"{name}.xml").write_text(_xml(name, objs))
    dst = tmp_path / "out"
    assert main(["convert", "voc", str(src), str(dst), "--classes", "person,vehicle", "--class-map",
                 "People=person,Car=vehicle,Truck=vehicle,Lamp=-", "--rgb-dir", "Vis", "--ir-dir", "Ir",
                 "--ann-dir", "Annotation"]) == 0
    cfg = load_data_config(dst / "data.yaml")
    assert cfg.names == {0: "person", 1: "vehicle"} and cfg.val == cfg.train, "one split: validates on it"
    (a, _b) = scan_split(cfg, "train")
    assert a.boxes[:, 0].tolist() == [0, 1, 1], "Lamp dropped, Car and Truck merged"


def test_flir_aligned_names_pair_through_patterns(tmp_path, capsys):
    """FLIR-aligned: RGB, IR and XML in one folder pair under different names around one id."""
    src = tmp_path / "FLIR_aligned"
    for n, (rgb_v, ir_v) in {"FLIR_08865": (30, 200), "FLIR_08866": (60, 150)}.items():
        _image(src / "JPEGImages" / f"{n}_RGB.jpg", rgb_v)
        _image(src / "JPEGImages" / f"{n}_PreviewData.jpeg", ir_v)
        (src / "Annotations").mkdir(exist_ok=True)
        (src / "Annotations" / f"{n}_PreviewData.xml").write_text(_xml(n, [("car", 10, 10, 30, 20)]))
    dst = tmp_path / "out"
    args = ["convert", "voc", str(src), str(dst), "--classes", "person,car", "--rgb-dir", "JPEGImages",
            "--ir-dir", "JPEGImages", "--rgb-name", "{id}_RGB.jpg", "--ir-name", "{id}_PreviewData.jpeg",
            "--ann-name", "{id}_PreviewData.xml"]
    assert main(args) == 0
    samples = scan_split(load_data_config(dst / "data.yaml"), "train")
    assert [s.rgb.name for s in samples] == ["FLIR_08865.jpg", "FLIR_08866.jpg"]  # the IR files are not RGB
    assert all(s.boxes[:, 0].tolist() == [1] for s in samples)
    ir = cv2.imread(str(samples[0].ir))
    assert abs(int(ir[40, 40, 0]) - 200) <= 3, "the IR file of the pair, not the RGB one"
    (src / "JPEGImages" / "FLIR_08866_PreviewData.jpeg").unlink()
    capsys.readouterr()
    assert main(args) == 1  # a user error: one message, exit code 1, no traceback
    assert re.search("FLIR_08866_RGB.jpg: no infrared partner .*FLIR_08866_PreviewData.jpeg", capsys.readouterr().err)
    with pytest.raises(ValueError, match="go together"):
        VocSource(names=["a"], rgb_name="{id}_RGB.jpg")


def test_unknown_class_and_missing_partner_stop_before_writing(tmp_path):
    src = tmp_path / "LLVIP"
    _fake_llvip(src)
    (src / "Annotations" / "010001.xml").write_text(_xml("010001.jpg", [("cyclist", 1, 1, 5, 5)]))
    (src / "infrared" / "test" / "190001.jpg").unlink()
    with pytest.raises(DataError) as e:
        convert_voc(src, tmp_path / "out", VocSource(names=["person"], split_map={"test": "val"}))
    msg = str(e.value)
    assert f"{src / 'Annotations' / '010001.xml'}: object 1 has class 'cyclist'" in msg
    assert f"{src / 'visible' / 'test' / '190001.jpg'}: no infrared partner" in msg
    assert not (tmp_path / "out").exists()
