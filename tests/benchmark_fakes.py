"""Tiny fake copies of the benchmark releases' layouts, for the converter tests (a few images, real annotation files).

Each ``fake_*`` writes a copy under ``root`` and returns what a correct conversion gives: per output split and file
stem, the label rows as ``(class, xc, yc, w, h)`` computed by hand in the comments.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def image(path: Path, w: int, h: int, value: int, ext_params: list | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.full((h, w, 3), value, np.uint8)
    im[2:10, 3:12] = 255 - value  # something for the encoder, so files differ
    assert cv2.imwrite(str(path), im, ext_params or [])
    return path


def voc_xml(objects: list[tuple[str, float, float, float, float]], size: tuple[int, int]) -> str:
    objs = "".join(f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                   f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for c, x1, y1, x2, y2 in objects)
    return (f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}"
            "</annotation>")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ FLIR-aligned
FLIR_W, FLIR_H = 80, 64


def fake_flir(root: Path) -> dict[str, dict[str, list[tuple]]]:
    """FLIR-aligned nested under ``align/``; the validation list under ImageSets/Main/ with ``_PreviewData`` ids."""
    a = root / "align"
    for pid, rgb_v, ir_v in (("FLIR_00001", 40, 200), ("FLIR_00002", 60, 150)):
        image(a / "JPEGImages" / f"{pid}_RGB.jpg", FLIR_W, FLIR_H, rgb_v)
        image(a / "JPEGImages" / f"{pid}_PreviewData.jpeg", FLIR_W, FLIR_H, ir_v)
    write(a / "Annotations" / "FLIR_00001_PreviewData.xml", voc_xml(
        [("person", 10, 5, 30, 60), ("dog", 1, 1, 5, 5), ("bicycle", 40, 8, 52, 40)], (FLIR_W, FLIR_H)))
    write(a / "Annotations" / "FLIR_00002_PreviewData.xml", voc_xml([("car", 0, 0, 80, 64)], (0, 0)))
    write(a / "align_train.txt", "FLIR_00001\n")
    write(a / "ImageSets" / "Main" / "align_validation.txt", "FLIR_00002_PreviewData\n")
    return {
        # person x 10..30 of 80, y 5..60 of 64; dog dropped; bicycle x 40..52, y 8..40
        "train": {"FLIR_00001": [(0, 20 / 80, 32.5 / 64, 20 / 80, 55 / 64), (2, 46 / 80, 24 / 64, 12 / 80, 32 / 64)]},
        # car: the whole frame (the XML's size is 0: read from the image)
        "val": {"FLIR_00002": [(1, 0.5, 0.5, 1.0, 1.0)]},
    }


# ------------------------------------------------------------------------------------------ M3FD
M3FD_W, M3FD_H = 96, 72


def fake_m3fd(root: Path) -> dict[str, dict[str, list[tuple]]]:
    """Three pairs of M3FD's Vis/, Ir/, Annotation/: ids 00000 and 00002 are in the shipped train list, 00001 in
    val; 00000 has one box of each of the six classes."""
    for pid, value in (("00000", 30), ("00001", 90), ("00002", 150)):
        image(root / "Vis" / f"{pid}.png", M3FD_W, M3FD_H, value)
        image(root / "Ir" / f"{pid}.png", M3FD_W, M3FD_H, 255 - value)
    six = [("People", 0, 0, 12, 36), ("Car", 12, 36, 48, 72), ("Bus", 48, 0, 96, 36), ("Motorcycle", 6, 6, 18, 18),
           ("Lamp", 90, 60, 96, 72), ("Truck", 24, 12, 72, 60)]
    write(root / "Annotation" / "00000.xml", voc_xml(six, (M3FD_W, M3FD_H)))
    write(root / "Annotation" / "00001.xml", voc_xml([("Car", 48, 36, 96, 72)], (M3FD_W, M3FD_H)))
    write(root / "Annotation" / "00002.xml", voc_xml([], (M3FD_W, M3FD_H)))
    return {
        "train": {"00000": [(0, 6 / 96, 18 / 72, 12 / 96, 36 / 72), (1, 30 / 96, 54 / 72, 36 / 96, 36 / 72),
                            (2, 72 / 96, 18 / 72, 48 / 96, 36 / 72), (3, 12 / 96, 12 / 72, 12 / 96, 12 / 72),
                            (4, 93 / 96, 66 / 72, 6 / 96, 12 / 72), (5, 48 / 96, 36 / 72, 48 / 96, 48 / 72)],
                  "00002": []},
        "val": {"00001": [(1, 72 / 96, 54 / 72, 48 / 96, 36 / 72)]},
    }


# ------------------------------------------------------------------------------------------ KAIST
KAIST_W, KAIST_H = 160, 128
BBGT_I00001 = """% bbGt version=3
person 10 20 30 60 0 0 0 0 0 0 0
people 50 20 40 40 0 0 0 0 0 0 0
person? 100 20 10 30 0 0 0 0 0 0 0
cyclist 120 50 20 40 1 0 0 0 0 0 0
person 140 60 30 80 2 140 60 30 40 0 0
person 60 70 20 30 0 0 0 0 0 1 0
"""
KAIST_XML_I00019 = ("<annotation><size><width>160</width><height>128</height></size>"
                    "<object><name>person</name><bndbox><x>20</x><y>10</y><w>40</w><h>100</h></bndbox>"
                    "<occlusion>1</occlusion></object>"
                    "<object><name>people</name><bndbox><x>100</x><y>10</y><w>50</w><h>60</h></bndbox>"
                    "<occlusion>0</occlusion></object></annotation>")


def fake_kaist(root: Path) -> dict[str, dict[str, list[tuple]]]:
    """KAIST's video-set layout: set00/V000 frames I00000-I00003 (train by the rule: the odd ones) with bbGt text in a
    per-video tree, set06/V001 frames I00019 and I00020 with their tree files too, and a flat ``improved/``
    folder holding an XML annotation of set06_V001_I00019 only (the improved-test-set shape)."""
    for frame in ("set00/V000/I00000", "set00/V000/I00001", "set00/V000/I00002", "set00/V000/I00003",
                  "set06/V001/I00019", "set06/V001/I00020"):
        s, v, i = frame.split("/")
        image(root / "images" / s / v / "visible" / f"{i}.jpg", KAIST_W, KAIST_H, 50)
        image(root / "images" / s / v / "lwir" / f"{i}.jpg", KAIST_W, KAIST_H, 210)
        write(root / "annotations" / s / v / f"{i}.txt", "% bbGt version=3\n")
    write(root / "annotations" / "set00" / "V000" / "I00001.txt", BBGT_I00001)
    write(root / "improved" / "set06_V001_I00019.xml", KAIST_XML_I00019)
    return {
        # the first person: x 10..40 of 160, y 20..80 of 128; the heavily occluded one: x 140..170 -> 140..160,
        # y 60..140 -> 60..128 (clipped; still a training box); people, person?, cyclist and the person flagged
        # ignore are no YOLO rows
        "train": {"set00_V000_I00001": [(0, 25 / 160, 50 / 128, 30 / 160, 60 / 128),
                                        (0, 150 / 160, 94 / 128, 20 / 160, 68 / 128)],
                  "set00_V000_I00003": []},
        # from the flat XML: x 20..60, y 10..110
        "test": {"set06_V001_I00019": [(0, 40 / 160, 60 / 128, 40 / 160, 100 / 128)]},
    }


# ------------------------------------------------------------------------------------------ VEDAI
VEDAI_W = VEDAI_H = 64
VEDAI_ANNOTATIONS = """00000001 20 20 0.0 10 30 30 10 12 12 28 28 1 1 0
00000001 40 40 0.785398 40 50 40 30 30 40 50 40 9 1 0
00000001 5 5 0.0 1 9 9 1 1 1 9 9 31 1 0
00000002 62.5 56 0.0 55 70 70 55 50 50 62 62 2 0 0
"""


def fake_vedai(root: Path) -> dict[str, dict[str, list[tuple]]]:
    """Two co-registered pairs at "512" (drawn at 64 px), fold 1: 1 (written unpadded) trains, 00000002 tests."""
    for pid in ("00000001", "00000002"):
        image(root / "Vehicules512" / f"{pid}_co.png", VEDAI_W, VEDAI_H, 70)
        image(root / "Vehicules512" / f"{pid}_ir.png", VEDAI_W, VEDAI_H, 180)
    write(root / "Annotations512" / "annotation512.txt", VEDAI_ANNOTATIONS)
    write(root / "Annotations512" / "fold01.txt", "1\n")
    write(root / "Annotations512" / "fold01test.txt", "00000002\n")
    return {
        # car: corners x 10..30, y 12..28; van: a diamond with corners at x 30/50, y 30/50, enclosed by 30..50 x
        # 30..50; plane (31): dropped
        "train": {"00000001": [(0, 20 / 64, 20 / 64, 20 / 64, 16 / 64), (7, 40 / 64, 40 / 64, 20 / 64, 20 / 64)]},
        # truck: x 55..70 clipped to 55..64, y 50..62
        "val": {"00000002": [(3, 59.5 / 64, 56 / 64, 9 / 64, 12 / 64)]},
    }


def read_labels(dst: Path) -> dict[str, dict[str, list[tuple]]]:
    """What a conversion wrote under ``dst/labels``, as ``fake_*`` return it."""
    out: dict[str, dict[str, list[tuple]]] = {}
    for p in sorted((dst / "labels").glob("*/*.txt")):
        rows = [tuple(float(v) for v in ln.split()) for ln in p.read_text().splitlines()]
        out.setdefault(p.parent.name, {})[p.stem] = [(int(r[0]), *r[1:]) for r in rows]
    return out


def assert_labels(got: dict, want: dict) -> None:
    assert got.keys() == want.keys(), (got.keys(), want.keys())
    for split in want:
        assert got[split].keys() == want[split].keys(), (split, got[split].keys(), want[split].keys())
        for stem, rows in want[split].items():
            g = got[split][stem]
            assert [r[0] for r in g] == [r[0] for r in rows], (split, stem, g, rows)
            assert np.allclose(np.array([r[1:] for r in g]).reshape(-1, 4), np.array([r[1:] for r in rows]).reshape(
                -1, 4), atol=1e-6), (split, stem, g, rows)
