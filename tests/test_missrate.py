"""KAIST's log-average miss rate (engine/missrate.py): a hand-computed case, the protocol's rules, ``val``'s report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import launch
from yolofuse_scale.data import kaist_gt
from yolofuse_scale.data.kaist_gt import KaistImage
from yolofuse_scale.data.kaist_gt import KaistObject as O
from yolofuse_scale.engine.missrate import FPPI_POINTS, REASONABLE, MissRate


def _xyxy(x, y, w, h, score):
    return [x, y, x + w, y + h, score]


def test_mr2_of_a_hand_computed_case():
    """Four 640x512 images, three pedestrians, nine detections (boxes x, y, w, h):

    A: pedestrian P1 (100, 100, 40, 100); a 50 px person (ignored: under 55 px); a ``people`` region R
       (400, 100, 100, 100). Detections: 0.90 exactly on P1 (TP); 0.85 on P1 shifted 2 px (IoU 0.90, but P1 is
       taken: FP); 0.80 and 0.75 inside R (intersection over their own area 1: removed, R absorbs both); 0.30
       exactly on the 50 px person (an ignore region: removed).
    B: pedestrian P3 (100, 200, 40, 80), partly occluded (kept); a heavily occluded person (ignored); a person at
       x = 2 (outside [5, 635]: ignored). Detections: 0.70 on empty ground (FP); 0.60 at x = 110 (IoU with P3
       30*80 / (3200 + 3200 - 2400) = 0.6: TP); 0.50 on the heavily occluded one (removed).
    C: pedestrian P6 (200, 100, 50, 120); a ``cyclist``; a person flagged ignore. Detection 0.40 at y = 160
       (IoU 3000 / 9000 = 0.33 < 0.5: FP).
    D: no object; detection 0.20 (FP). It still counts as an image for FPPI.

    Remaining detections by score: TP (fppi 0, recall 1/3), FP (.25, 1/3), FP (.5, 1/3), TP (.5, 2/3),
    FP (.75, 2/3), FP (1, 2/3). At the FPPI points 10^-2 .. 10^-0.75 (6 points: below .25) the last point at or
    under them is the first TP: miss 2/3; at 10^-0.5 = 0.316: the point (.25, 1/3): miss 2/3; at 10^-0.25 = 0.562
    and 10^0: recall 2/3, miss 1/3. MR-2 = exp((7 ln(2/3) + 2 ln(1/3)) / 9) = (2/3)^(7/9) (1/3)^(2/9) = 0.57150.
    """
    images = {
        "A": KaistImage((640, 512), (O("person", 100, 100, 40, 100, 0, False), O("person", 300, 100, 40, 50, 0, False),
                                     O("people", 400, 100, 100, 100, 0, False))),
        "B": KaistImage((640, 512), (O("person", 100, 200, 40, 80, 1, False), O("person", 300, 200, 40, 80, 2, False),
                                     O("person", 2, 200, 40, 80, 0, False))),
        "C": KaistImage((640, 512), (O("person", 200, 100, 50, 120, 0, False),
                                     O("cyclist", 500, 300, 60, 100, 0, False),
                                     O("person", 400, 50, 40, 100, 0, True))),
        "D": KaistImage((640, 512), ()),
    }
    dets = {
        "A": [_xyxy(100, 100, 40, 100, .9), _xyxy(102, 100, 40, 100, .85), _xyxy(420, 120, 40, 60, .8),
              _xyxy(410, 110, 40, 60, .75), _xyxy(300, 100, 40, 50, .3)],
        "B": [_xyxy(500, 300, 40, 80, .7), _xyxy(110, 200, 40, 80, .6), _xyxy(300, 200, 40, 80, .5)],
        "C": [_xyxy(200, 160, 50, 120, .4)],
        "D": [_xyxy(10, 10, 40, 80, .2)],
    }
    r = MissRate(images, "hand")([(k, np.array(v, float)) for k, v in dets.items()])
    assert (r["images"], r["pedestrians"], r["detections"], r["ignore_regions"]) == (4, 3, 6, 6)
    assert r["fppi"] == pytest.approx([10 ** (-2 + k / 4) for k in range(9)])
    assert r["miss_rate"] == pytest.approx([2 / 3] * 7 + [1 / 3] * 2)
    assert r["MR-2"] == pytest.approx((2 / 3) ** (7 / 9) * (1 / 3) ** (2 / 9)) and round(r["MR-2"], 4) == 0.5715
    # the order of the images does not matter (a DDP gather hands them over in dataset order anyway)
    again = MissRate(images, "hand")([(k, np.array(dets[k], float)) for k in "DCBA"])
    assert again["MR-2"] == pytest.approx(r["MR-2"])


@pytest.mark.parametrize("obj, ignored", [
    (O("person", 100, 100, 40, 55, 0, False), False),    # 55 px: reasonable
    (O("person", 100, 100, 40, 54.9, 0, False), True),   # under 55 px
    (O("person", 100, 100, 40, 80, 1, False), False),    # partial occlusion: kept
    (O("person", 100, 100, 40, 80, 2, False), True),     # heavy occlusion
    (O("person", 4, 100, 40, 80, 0, False), True),       # left edge outside [5, 635]
    (O("person", 600, 100, 40, 80, 0, False), True),     # right edge 640 > 635
    (O("person", 100, 430, 40, 80, 0, False), True),     # bottom 510 > 507
    (O("person", 100, 100, 40, 80, 0, True), True),      # the annotation's ignore flag
    (O("people", 100, 100, 40, 80, 0, False), True),     # an ignore label
    (O("person?", 100, 100, 40, 80, 0, False), True),
    (O("cyclist", 100, 100, 40, 80, 0, False), True),
])
def test_reasonable_ground_truth(obj, ignored):
    xywh, ignore = REASONABLE.ground_truth((obj,))
    assert xywh.tolist() == [[obj.x, obj.y, obj.w, obj.h]], "boxes as annotated: no aspect-ratio reshaping"
    assert ignore.tolist() == [ignored]


def test_no_detection_is_all_misses_and_no_pedestrian_is_no_number():
    im = {"a": KaistImage((640, 512), (O("person", 100, 100, 40, 80, 0, False),))}
    assert MissRate(im, "x")([("a", np.zeros((0, 5)))])["MR-2"] == 1.0
    empty = {"a": KaistImage((640, 512), (O("people", 100, 100, 40, 80, 0, False),))}
    r = MissRate(empty, "x")([("a", np.array([_xyxy(0, 0, 9, 9, .5)], float))])
    assert r["MR-2"] is None and r["pedestrians"] == 0 and r["fppi"] == list(FPPI_POINTS)


def test_evaluate_reports_the_miss_rate_in_original_pixels():
    """``evaluate`` undoes the letterbox (a 640x512 frame at 64 px: r = 0.1, 6.4 px of padding on top) before it
    scores the person class; the detection drawn on P's place in the canvas finds P, so miss rate 0."""
    from accelerate import Accelerator

    from tests.test_val import _FixedDetector
    from yolofuse_scale.engine.evaluate import evaluate

    # P (100, 100, 40, 100) on the canvas: x 10..14, y 16.4..26.4 -> centre (12, 21.4), 4 x 10
    model = _FixedDetector([[12, 21.4, 4, 10], [40, 40, 4, 4]], [[0.9, 0.0], [0.0, 0.0]])
    batch = {"img": torch.zeros(1, 4, 64, 64, dtype=torch.uint8), "batch_idx": torch.zeros(1),
             "bboxes": torch.tensor([[12 / 64, 21.4 / 64, 4 / 64, 10 / 64]]), "cls": torch.zeros(1, 1),
             "index": torch.tensor([0]), "im_file": ["/d/images/test/set06_V000_I00019.jpg"],
             "ratio_pad": [((0.1, 0.1), (0.0, 6.4))]}
    gt = MissRate({"set06_V000_I00019": KaistImage((640, 512), (O("person", 100, 100, 40, 100, 0, False),))}, "gt")
    m = evaluate(model, [batch], Accelerator(cpu=True), {0: "person", 1: "car"}, missrate=gt)
    assert m["missrate"]["pedestrians"] == 1 and m["missrate"]["MR-2"] == pytest.approx(1e-10)
    assert m["mAP50"] > 0.9, "mAP is still reported beside it"
    shifted = MissRate({"set06_V000_I00019": KaistImage((640, 512), (O("person", 140, 100, 40, 100, 0, False),))},
                       "gt")
    assert evaluate(model, [batch], Accelerator(cpu=True), {0: "person", 1: "car"},
                    missrate=shifted)["missrate"]["MR-2"] == 1.0, "scored where the detection is, in original pixels"


def _synthetic_kaist(tmp_path: Path) -> Path:
    """The synthetic set at 320x256 (people mostly 55 px and taller), its people written as a KAIST side file."""
    from yolofuse_scale.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "kaist_like", n_train=0, n_val=10, imgsz=256, seed=5)
    images = {}
    for label in sorted((data.parent / "labels" / "val").glob("*.txt")):
        w, h = 320, 256
        rows = [list(map(float, ln.split())) for ln in label.read_text().splitlines()]
        objects = tuple(O("person", (xc - bw / 2) * w, (yc - bh / 2) * h, bw * w, bh * h, 0, False)
                        for c, xc, yc, bw, bh in rows if c == 0)
        images[label.stem] = KaistImage((w, h), objects)
    (data.parent / "kaist.json").write_text(kaist_gt.dumps(images))
    data.write_text(data.read_text() + "missrate: kaist.json\n")
    return data


@pytest.mark.slow
def test_val_miss_rate_is_the_same_on_one_and_two_processes(train_run, tmp_path):
    """The metric is computed from the gathered per-image detections: ``val`` under torchrun with 2 processes
    (each running the model on half of the images) reports exactly what one process computes (here in-process,
    with val's own pieces: the weights, the validation feed, ``evaluate``)."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from yolofuse_scale.data import load_data_config, scan_split
    from yolofuse_scale.data.loaders import validation_feed
    from yolofuse_scale.engine.evaluate import evaluate
    from yolofuse_scale.inference import load_weights_model

    weights = train_run("torchrun", 2, 1).out / "weights" / "last.pt"
    data = _synthetic_kaist(tmp_path)
    out = tmp_path / "val2"
    run = launch("torchrun", 2, ["-m", "yolofuse_scale", "val", "--weights", str(weights), "--data", str(data),
                                 "--batch-size", "5", "--workers", "0", "--no-plots", "--out", str(out)], out)
    assert "KAIST reasonable: log-average miss rate MR-2" in run.proc.stdout
    two = json.loads((out / "metrics.json").read_text())["missrate"]

    model, payload = load_weights_model(str(weights))
    cfg = load_data_config(data, splits=("val",))
    feed = validation_feed("cpu", scan_split(cfg, "val"), int(payload["imgsz"]), cfg.ir_channels, "cpu")
    loader = DataLoader(feed.dataset, batch_size=5, collate_fn=feed.collate)
    one = evaluate(model, loader, Accelerator(cpu=True), payload["names"], batch_to_device=feed.to_device,
                   missrate=MissRate.from_file(cfg.missrate))["missrate"]
    assert one == two
    assert one["images"] == 10 and one["pedestrians"] > 0 and 0 < one["MR-2"] < 1, one
