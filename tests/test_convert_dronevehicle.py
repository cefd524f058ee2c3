"""``yolofuse-scale convert dronevehicle``: on a tiny fake copy of the release's layout, the white frame cropped from
both images (pixels exact with --lossless), corners exact after the crop, the misspelt classes mapped and reported, both
label sets written for the per-modality policy, a rerun that writes nothing, and a broken copy refused with every
problem listed and nothing written.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.bad_input_helpers import assert_user_error
from tests.test_convert import _snapshot
from yolofuse_scale.cli import main
from yolofuse_scale.data import load_data_config, scan_dataset
from yolofuse_scale.data.convert.dronevehicle import CLASSES, convert_dronevehicle
from yolofuse_scale.data.decode import read_image

W, H = 840, 712  # framed; 640 x 512 inside


def _framed(value: int, seed: int) -> np.ndarray:
    """An 840 x 712 BGR image: white frame, a pattern inside (so a crop one pixel off is seen)."""
    rng = np.random.default_rng(seed)
    im = np.full((H, W, 3), 255, np.uint8)
    im[100:612, 100:740] = rng.integers(0, 200, (512, 640, 3), dtype=np.uint8) // 2 + value // 2
    return im


def _xml(objects: list[str]) -> str:
    return (f"<annotation><filename>x.jpg</filename><size><width>{W}</width><height>{H}</height><depth>3</depth>"
            f"</size>{''.join(objects)}</annotation>")


def _poly(name: str, *xy: float) -> str:
    corners = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"), xy))
    return f"<object><name>{name}</name><pose>Unspecified</pose><polygon>{corners}</polygon></object>"


def _bndbox(name: str, x1: float, y1: float, x2: float, y2: float) -> str:
    return (f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object>")


def _write(path: Path, data: str | np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        assert cv2.imwrite(str(path), data)
    return path


def fake_dronevehicle(root: Path, ext: str = ".jpg") -> dict:
    """Two train pairs and one val pair; returns per (folder, split, stem) the rows a correct conversion writes."""
    for split, stems in (("train", ("00001", "00002")), ("val", ("00003",))):
        for stem in stems:
            seed = int(stem)
            _write(root / split / f"{split}img" / f"{stem}{ext}", _framed(120, seed))
            _write(root / split / f"{split}imgr" / f"{stem}{ext}", _framed(60, seed + 100))
    d = root / "train"
    _write(d / "trainlabel" / "00001.xml", _xml([
        _poly("car", 200, 150, 260, 150, 260, 180, 200, 180),          # x 100..160 of 640, y 50..80 of 512
        _poly("feright car", 300, 300, 400, 340, 390, 365, 290, 325),  # misspelt; a turned box
        _bndbox("bus", 500, 400, 580, 430),                            # a bndbox: its four corners
        _poly("*", 10, 10, 20, 10, 20, 20, 10, 20),                    # '*': left out
    ]))
    _write(d / "trainlabelr" / "00001.xml", _xml([
        _poly("car", 201, 151, 261, 151, 261, 181, 201, 181),
        _poly("truvk", 90, 600, 160, 600, 160, 640, 90, 640),          # misspelt; reaches into the frame: clamped
        _poly("van", 10, 10, 60, 10, 60, 50, 10, 50),                  # wholly in the frame: left out
        "<object><name>car</name></object>",                           # no geometry: left out
    ]))
    _write(d / "trainlabel" / "00002.xml", _xml([]))                   # a background image (RGB, at night)
    _write(d / "trainlabelr" / "00002.xml", _xml([_poly("freight_car", 400, 200, 520, 200, 520, 230, 400, 230)]))
    v = root / "val"
    _write(v / "vallabel" / "00003.xml", _xml([_poly("Truck", 150, 120, 250, 120, 250, 160, 150, 160)]))
    _write(v / "vallabelr" / "00003.xml", _xml([_poly("truck", 150, 120, 250, 120, 250, 160, 150, 160)]))

    def row(cls, *xy):  # corners in the cropped 640 x 512 image, normalised
        return (cls, *[c / (640 if i % 2 == 0 else 512) for i, c in enumerate(xy)])

    return {
        ("labels", "train", "00001"): [row(0, 100, 50, 160, 50, 160, 80, 100, 80),
                                       row(4, 200, 200, 300, 240, 290, 265, 190, 225),
                                       row(2, 400, 300, 480, 300, 480, 330, 400, 330)],
        ("labelsIR", "train", "00001"): [row(0, 101, 51, 161, 51, 161, 81, 101, 81),
                                         row(1, 0, 500, 60, 500, 60, 512, 0, 512)],  # x -10 -> 0, y 540 -> 512
        ("labels", "train", "00002"): [],
        ("labelsIR", "train", "00002"): [row(4, 300, 100, 420, 100, 420, 130, 300, 130)],
        ("labels", "val", "00003"): [row(1, 50, 20, 150, 20, 150, 60, 50, 60)],
        ("labelsIR", "val", "00003"): [row(1, 50, 20, 150, 20, 150, 60, 50, 60)],
    }


def _rows(path: Path) -> list[tuple]:
    return [tuple(float(v) for v in ln.split()) for ln in path.read_text().splitlines() if ln.strip()]


def _convert(capsys, *args: str) -> str:
    assert main(["convert", "dronevehicle", *args]) == 0
    return capsys.readouterr().out


def test_dronevehicle_crop_corners_classes_and_both_label_sets(tmp_path, capsys):
    want = fake_dronevehicle(tmp_path / "DV", ext=".png")
    dst = tmp_path / "out"
    out = _convert(capsys, str(tmp_path / "DV"), str(dst), "--lossless")
    assert "3 pairs (train 2, val 1), 4 boxes" in out, out
    assert "labels/ from the RGB annotations (4 boxes), labelsIR/ from the IR ones (4 boxes); label_policy: ir" in out
    assert "class names mapped (misspellings in the public annotations): 'Truck' -> truck (1), 'feright car' -> " \
           "freight_car (1), 'truvk' -> truck (1)" in out, out
    assert "left out as the dataset's evaluation leaves them out: 1 object(s) named '*' or nothing, 1 without a " \
           "polygon or bndbox" in out
    assert "1 object(s) with a <bndbox> instead of a <polygon>: written as its four corners" in out
    assert "1 object(s) reaching into it clamped to the image's edge, 1 lying wholly in it left out" in out
    for (folder, split, stem), rows in want.items():
        got = _rows(dst / folder / split / f"{stem}.txt")
        assert len(got) == len(rows) and all(g[0] == r[0] for g, r in zip(got, rows)), (folder, stem, got)
        assert np.allclose([g[1:] for g in got], [r[1:] for r in rows], atol=1e-6) if rows else True
    for folder, channels in (("images", 3), ("imagesIR", 1)):  # the frame cut off, the inside exact (PNG)
        src = read_image(tmp_path / "DV" / "train" / ("trainimg" if channels == 3 else "trainimgr") / "00001.png",
                         channels)  # as the loaders read it: RGB, or IR as one gray channel
        written = cv2.imread(str(dst / folder / "train" / "00001.png"), cv2.IMREAD_UNCHANGED)
        assert (written.ndim == 2) == (channels == 1)
        got = read_image(dst / folder / "train" / "00001.png", channels)
        assert got.shape[:2] == (512, 640) and np.array_equal(got, src[100:612, 100:740])
    cfg = load_data_config(dst / "data.yaml", splits=("train", "val"))
    assert cfg.task == "obb" and cfg.labels_ir == "labelsIR" and cfg.policy("train") == "ir" and cfg.ir_channels == 1
    assert cfg.names == {0: "car", 1: "truck", 2: "bus", 3: "van", 4: "freight_car"}
    result = scan_dataset(cfg, ("train", "val"))
    assert result.error is None, result.error
    assert result.labels["splits"]["train"]["counts"] == {"rgb": 3, "ir": 3, "matched": 1, "kept": 3}


def test_dronevehicle_default_is_jpeg_and_a_rerun_writes_nothing(tmp_path, capsys):
    fake_dronevehicle(tmp_path / "DV")
    dst = tmp_path / "out"
    _convert(capsys, str(tmp_path / "DV"), str(dst))
    before = _snapshot(dst)
    again = _convert(capsys, str(tmp_path / "DV"), str(dst))
    assert _snapshot(dst) == before and " 0 file(s) written" in again, again
    im = cv2.imread(str(dst / "images" / "train" / "00001.jpg"))
    assert im.shape == (512, 640, 3) and not (im == 255).all(axis=2)[:3].all()  # the frame is gone
    assert (dst / "imagesIR" / "val" / "00003.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_a_broken_dronevehicle_copy_is_refused_with_every_problem(tmp_path, capsys):
    root = tmp_path / "DV"
    fake_dronevehicle(root)
    d = root / "train"
    (d / "trainimgr" / "00002.jpg").unlink()                                           # no IR partner
    _write(d / "trainimg" / "00009.jpg", _framed(100, 9)[100:612, 100:740])            # already cropped, and ...
    _write(d / "trainimgr" / "00009.jpg", _framed(100, 9)[100:612, 100:740])
    _write(d / "trainlabel" / "00009.xml", _xml([_poly("tractor", 200, 150, 260, 150, 260, 180, 200, 180)]))
    _write(d / "trainlabelr" / "00009.xml", "<annotation><object>")                   # ... not XML
    _write(d / "trainlabel" / "00010.xml", _xml([]))                                   # an annotation alone
    (root / "val" / "vallabelr" / "00003.xml").write_text(_xml([_poly("car", 1, 2, 3, "x", 5, 6, 7, 8)]))
    (root / "test").mkdir()                                                            # a split without its folders
    dst = tmp_path / "out"
    err = assert_user_error(lambda: convert_dronevehicle(root, dst), "nothing written", capsys=capsys)
    for needle in (
        f"{d / 'trainimg' / '00002.jpg'}: no partner in trainimgr",
        f"{d / 'trainimg' / '00009.jpg'}: is 640x512, expected 840x712 (a 640x512 image inside DroneVehicle's 100-px "
        "white frame): an already cropped copy?",
        f"{d / 'trainimgr' / '00009.jpg'}: is 640x512",
        f"{d / 'trainlabel' / '00009.xml'}: object 1 has class 'tractor', not one of DroneVehicle's car, truck, bus, "
        "van, freight_car or their known misspellings (feright, feright car, truvk)",
        f"{d / 'trainlabelr' / '00009.xml'}: not a readable XML annotation",
        f"{d / 'trainlabel' / '00010.xml'}: no partner in trainimg, trainimgr, trainlabelr",
        f"{root / 'val' / 'vallabelr' / '00003.xml'}: object 1 (car): <polygon> needs numbers x1 y1 ... x4 y4",
        f"{root / 'test'}: missing folder(s)",
        "8 problem(s)",
    ):
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert not dst.exists()


def test_no_split_folder_is_one_message_through_the_command(tmp_path, capsys):
    assert main(["convert", "dronevehicle", str(tmp_path), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("error: ") == 1
    assert f"{tmp_path}: none of DroneVehicle's split folders (train, val, test) is here" in err


@pytest.mark.parametrize("name, ours", [("feright_car", "freight_car"), ("Freight Car", "freight_car"),
                                        ("feright", "freight_car"), ("truvk", "truck"), ("VAN", "van")])
def test_known_spellings_map_to_the_five_classes(name, ours):
    assert CLASSES[re.sub(r"[\s_\-]+", " ", name.lower()).strip()] == ours


#: What this file plants, one name per kind (the README quotes the count of the whole battery).
KINDS = ["dronevehicle: image without its IR partner", "dronevehicle: image not 840x712 (already cropped)",
         "dronevehicle: unknown class name", "dronevehicle: annotation not XML", "dronevehicle: annotation alone",
         "dronevehicle: polygon corner not a number", "dronevehicle: split folder without its four folders",
         "dronevehicle: no split folder"]
