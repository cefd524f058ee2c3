"""Broken copies of the benchmark releases, and bad KAIST ground truth for the miss rate: refused with one message.

Each converter test plants several problems in one fake copy (tests/benchmark_fakes.py) and checks that the single
error names every one of them (file, and line where there is one), and that nothing was written.
"""

from __future__ import annotations

import pytest

from tests.bad_input_helpers import assert_user_error
from tests.benchmark_fakes import fake_flir, fake_kaist, fake_m3fd, fake_vedai, image, voc_xml, write
from tests.test_convert import _snapshot
from yolofuse_scale.cli import main
from yolofuse_scale.data import kaist_gt
from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.convert.flir import convert_flir
from yolofuse_scale.data.convert.kaist import convert_kaist
from yolofuse_scale.data.convert.m3fd import convert_m3fd
from yolofuse_scale.data.convert.vedai import convert_vedai
from yolofuse_scale.data.data_yaml import load_data_config
from yolofuse_scale.data.kaist_gt import KaistImage, KaistObject
from yolofuse_scale.engine.missrate import MissRate


def test_flir_broken_copy(tmp_path, capsys):
    src = tmp_path / "FLIR"
    fake_flir(src)
    a = src / "align"
    for pid in ("FLIR_00003", "FLIR_00004", "FLIR_00005", "FLIR_00006"):
        image(a / "JPEGImages" / f"{pid}_RGB.jpg", 80, 64, 40)
        image(a / "JPEGImages" / f"{pid}_PreviewData.jpeg", 80, 64, 200)
        write(a / "Annotations" / f"{pid}_PreviewData.xml", voc_xml([("car", 1, 1, 9, 9)], (80, 64)))
    (a / "JPEGImages" / "FLIR_00003_RGB.jpg").unlink()                                       # no visible partner
    write(a / "Annotations" / "FLIR_00004_PreviewData.xml", "<annotation><object>")          # unreadable XML
    write(a / "Annotations" / "FLIR_00005_PreviewData.xml", voc_xml([("truck", 1, 1, 9, 9)], (80, 64)))
    image(a / "JPEGImages" / "FLIR_00006_PreviewData.jpeg", 64, 64, 200)                    # RGB 80x64, IR 64x64
    write(a / "Annotations" / "FLIR_00001_PreviewData.xml", voc_xml([("person", 1, 1, 9, 9)], (640, 512)))
    write(a / "align_train.txt", "FLIR_00001\nFLIR_00003\nFLIR_00004\nFLIR_00005\nFLIR_00006\nFLIR_00002\n"
          "images/FLIR_00007.jpg\n")
    dst = tmp_path / "out"
    assert_user_error(lambda: convert_flir(src, dst), "nothing written",
                      f"FLIR_00003 (listed for train): missing {a / 'JPEGImages' / 'FLIR_00003_RGB.jpg'}",
                      f"{a / 'Annotations' / 'FLIR_00004_PreviewData.xml'}: not a readable VOC XML file",
                      "object 1 has class 'truck', not one of FLIR-aligned's classes person, car, bicycle",
                      "FLIR_00006_RGB.jpg: RGB is 80x64 but its infrared partner",
                      "FLIR_00001_PreviewData.xml: says its image is 640x512, but",
                      "FLIR_00002 is in align_train.txt too (a pair in both splits)",
                      "align_train.txt:7: 'images/FLIR_00007.jpg' is not an id this list may hold", capsys=capsys)
    assert not dst.exists()


def test_flir_refusal_through_the_command(tmp_path, capsys):
    """The command line: one ``error:`` line, exit code 1, no traceback; a copy without JPEGImages/ is named."""
    (tmp_path / "FLIR").mkdir()
    assert main(["convert", "flir", str(tmp_path / "FLIR"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert f"{tmp_path / 'FLIR' / 'JPEGImages'}: no such folder" in err


def test_m3fd_broken_copy(tmp_path, capsys):
    src = tmp_path / "M3FD"
    fake_m3fd(src)
    image(src / "Vis" / "99999.png", 96, 72, 10)                          # not one of the release's ids
    write(src / "Annotation" / "99999.xml", voc_xml([], (96, 72)))
    image(src / "Ir" / "00003.png", 96, 72, 10)                           # an IR file without visible partner
    image(src / "Vis" / "00004.png", 96, 72, 10)                          # no IR partner, no annotation
    (src / "Vis" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # unreadable image
    dst = tmp_path / "out"
    assert_user_error(lambda: convert_m3fd(src, dst), "nothing written",
                      "'99999' is not one of M3FD's 4,200 pair ids",
                      f"{src / 'Ir' / '00003.png'}: no visible partner",
                      f"{src / 'Vis' / '00004.png'}: missing {src / 'Ir' / '00004.png'}, "
                      f"{src / 'Annotation' / '00004.xml'}",
                      f"{src / 'Vis' / '00002.png'}: unreadable or truncated image", capsys=capsys)
    assert not dst.exists()
    (src / "Ir").rename(src / "IR")
    assert_user_error(lambda: convert_m3fd(src, dst), f"{src / 'Ir'}: no such folder", capsys=capsys)


def test_kaist_broken_copy(tmp_path, capsys):
    src = tmp_path / "KAIST"
    fake_kaist(src)
    ann = src / "annotations" / "set00" / "V000"
    image(src / "images" / "set00" / "V000" / "visible" / "I00005.jpg", 160, 128, 50)       # no lwir partner
    for i in ("I00007", "I00009", "I00011", "I00013"):
        image(src / "images" / "set00" / "V000" / "visible" / f"{i}.jpg", 160, 128, 50)
        image(src / "images" / "set00" / "V000" / "lwir" / f"{i}.jpg", 160, 128, 50)
    write(ann / "I00005.txt", "% bbGt version=3\n")
    write(ann / "I00009.txt", "person 1 2 3 4 0 0 0 0 0 0 0\n")                                # no header
    write(ann / "I00011.txt", "% bbGt version=3\n"
          "person 10 20 30\n"                                    # 4 fields of 12
          "walker 10 20 30 60 0 0 0 0 0 0 0\n"                   # unknown label
          "person 10 20 30 60 3 0 0 0 0 0 0\n"                   # occlusion 3
          "person 10 20 0 60 0 0 0 0 0 0 0\n"                    # empty box
          "person 10 20 30 60 0 0 0 0 0 0 45\n")                 # oriented
    write(ann / "I00013.txt", "% bbGt version=3\nperson 170 20 30 60 0 0 0 0 0 0 0\n")   # outside the 160 px image
    write(src / "improved" / "set06_V001_I00019.xml", "<annotation><object>")             # unreadable XML
    write(src / "improved" / "set06_V001_I00039.xml", "<annotation><object><name>person</name><bndbox><x>1</x>"
          "<y>1</y><w>9</w><h>9</h></bndbox></object></annotation>")                       # no occlusion level;
    #                                                                                 and no images of its frame
    dst = tmp_path / "out"
    assert_user_error(lambda: convert_kaist(src, dst, ann={"test": src / "improved"}), "nothing written",
                      "set00/V000/I00005 (train): no lwir image",
                      "set00/V000/I00007 (train): no annotation",
                      f"{ann / 'I00009.txt'}:1: expected the header '% bbGt version=N'",
                      f"{ann / 'I00011.txt'}:2: 4 fields, bbGt version 3 has 12",
                      f"{ann / 'I00011.txt'}:3: label 'walker' is not one of KAIST's person, people, person?, cyclist",
                      f"{ann / 'I00011.txt'}:4: person has occlusion 3",
                      f"{ann / 'I00011.txt'}:5: person has an empty box (w 0, h 60)",
                      f"{ann / 'I00011.txt'}:6: an oriented box (angle 45)",
                      f"{ann / 'I00013.txt'}: a person box (170, 20, 30, 60) lies outside the 160x128 image",
                      f"{src / 'improved' / 'set06_V001_I00019.xml'}: not a readable XML annotation",
                      "set06/V001/I00039 (test): no visible image, no lwir image", capsys=capsys)
    assert not dst.exists()
    write(src / "improved" / "set06_V001_I00039.xml", "<annotation/>")
    image(src / "images" / "set06" / "V001" / "visible" / "I00039.jpg", 160, 128, 50)
    image(src / "images" / "set06" / "V001" / "lwir" / "I00039.jpg", 160, 128, 50)
    write(src / "improved" / "set06_V001_I00019.xml", "<annotation><object><name>person</name><bndbox><x>1</x>"
          "<y>1</y><w>9</w><h>9</h></bndbox></object></annotation>")
    write(src / "train.txt", "set00/V000/I00001\nset06/V001/I00019\nset00/V000\n")
    assert_user_error(lambda: convert_kaist(src, dst, ann={"test": src / "improved"}, lists={"train": src /
                                                                                             "train.txt"}),
                      "set06/V001/I00019: chosen for both train and test",
                      f"{src / 'train.txt'}:3: 'set00/V000' is not an id this list may hold",
                      "set06_V001_I00019.xml: object 1: person needs numeric x, y, w, h and an occlusion level",
                      capsys=capsys)
    assert not dst.exists()


def test_vedai_broken_copy(tmp_path, capsys):
    src = tmp_path / "VEDAI"
    fake_vedai(src)
    a = src / "Annotations512"
    for pid in ("00000003", "00000004"):
        image(src / "Vehicules512" / f"{pid}_co.png", 64, 64, 70)
        image(src / "Vehicules512" / f"{pid}_ir.png", 64, 64, 180)
    (src / "Vehicules512" / "00000004_ir.png").unlink()                                      # missing IR
    write(a / "annotation512.txt", a.joinpath("annotation512.txt").read_text()
          + "00000003 20 20 0.0 10 30 30 10 12 12 28 28 1 1\n"                    # 14 fields
          + "00000003 20 20 0.0 10 30 30 10 12 12 28 28 6 1 0\n"                  # class 6: none of VEDAI's
          + "00000003 90 90 0.0 80 99 99 80 80 80 99 99 1 0 0\n")                 # entirely outside the 64 px image
    write(a / "fold01.txt", "1\n3\n4\n2\n")                                      # 2 is the fold's test image
    dst = tmp_path / "out"
    assert_user_error(lambda: convert_vedai(src, dst), "nothing written",
                      f"{a / 'annotation512.txt'}:5: expected 15 numbers",
                      f"{a / 'annotation512.txt'}:6: class 6 is not one of VEDAI's",
                      f"{a / 'annotation512.txt'}:7: the box of 00000003 lies outside its 64x64 image",
                      f"00000004 (fold 1 train): missing {src / 'Vehicules512' / '00000004_ir.png'}",
                      f"{a / 'fold01test.txt'}: 00000002 is in the fold's training list too", capsys=capsys)
    assert not dst.exists()
    assert_user_error(lambda: convert_vedai(src, dst, fold=2), f"{a / 'fold02.txt'}: not found", capsys=capsys)


def test_another_fold_into_the_same_folder_is_refused(tmp_path, capsys):
    """A conversion into a DST holding images it would not write (fold 1's, converting fold 2) refuses before
    writing: they would be trained on as if they belonged to the new split."""
    src = tmp_path / "VEDAI"
    fake_vedai(src)
    write(src / "Annotations512" / "fold02.txt", "00000002\n")
    write(src / "Annotations512" / "fold02test.txt", "00000001\n")
    dst = tmp_path / "out"
    convert_vedai(src, dst, fold=1)
    before = _snapshot(dst)
    assert_user_error(lambda: convert_vedai(src, dst, fold=2), f"{dst}: nothing written: it holds file(s) this "
                      "conversion would not write", str(dst / "images" / "train" / "00000001.png"), capsys=capsys)
    assert _snapshot(dst) == before, "nothing touched"


# ------------------------------------------------------------------------------------------ KAIST ground truth
@pytest.mark.parametrize("text, needle", [
    ("missrate: [a, b]\n", "'missrate' names the KAIST annotation file"),
    ("missrate: ''\n", "'missrate' names the KAIST annotation file"),
])
def test_data_yaml_missrate_must_name_a_file(tmp_path, text, needle):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: images/val\nval: images/val\nnames: [person]\n" + text)
    with pytest.raises(DataError, match=needle) as e:
        load_data_config(tmp_path / "data.yaml")
    assert f"{tmp_path / 'data.yaml'}:4:" in str(e.value), "the key's line is named"


@pytest.mark.parametrize("text, needle", [
    (None, "KAIST annotation file not found"),
    ("{not json", "not a readable KAIST annotation file"),
    ('{"format": "coco", "images": {}}', "not a yolofuse-scale/kaist-gt file of version 1"),
    ('{"format": "yolofuse-scale/kaist-gt", "version": 1, "images": {"a": {"size": [640], "objects": []}}}',
     "image a: expected {\"size\": [width, height]"),
    ('{"format": "yolofuse-scale/kaist-gt", "version": 1, "images": {"a": {"size": [640, 512], "objects": '
     '[["person", 1, 2, 3, 4, 5, 0]]}}}', "image a: expected [label, x, y, w, h, occlusion 0-2, ignore 0/1]"),
    ('{"format": "yolofuse-scale/kaist-gt", "version": 1, "images": {"a": {"size": [640, 512], "objects": '
     '[["dog", 1, 2, 3, 4, 0, 0]]}}}', "with label one of person, people, person?, cyclist"),
])
def test_bad_kaist_annotation_file(tmp_path, text, needle):
    path = tmp_path / "kaist_annotations.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=None) as e:
        kaist_gt.load(path)
    assert str(e.value).startswith(str(path)) and needle in str(e.value)


def test_miss_rate_needs_every_image_and_a_person_class(tmp_path):
    gt = MissRate({"set06_V000_I00019": KaistImage((640, 512), (KaistObject("person", 1, 1, 9, 60, 0, False),))},
                  tmp_path / "kaist_annotations.json")
    gt.check_covers([tmp_path / "images" / "test" / "set06_V000_I00019.jpg"])
    with pytest.raises(DataError, match="no KAIST annotation for image") as e:
        gt.check_covers([tmp_path / "set06_V000_I00019.jpg", tmp_path / "set06_V000_I00039.jpg"])
    assert "set06_V000_I00039.jpg" in str(e.value) and "I00019" not in str(e.value).split("\n", 1)[1]
    assert gt.class_id({0: "car", 1: "person"}) == 1
    with pytest.raises(DataError, match="scores a class named 'person'; the model's classes are car, bus"):
        gt.class_id({0: "car", 1: "bus"})
