"""Oriented boxes and per-modality labels on the data side: the label dict is Ultralytics' OBB dataset's, the recipe
moves rotated boxes as its OBB pipeline does (``preserve_obb``, ``Format(return_obb=True)``), both loaders give the
same rotated boxes, the letterbox puts them where the image goes, and the label policies (``rgb``, ``ir``,
``union`` by rotated IoU) keep and count what they say, for oriented and axis-aligned boxes, from the scan cache too.
No training here: batches as the contract of issue 26 defines them.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ultralytics.data.augment import Format, RandomFlip, RandomPerspective
from ultralytics.utils.ops import xywhr2xyxyxyxy

from yolofuse_scale.data import load_data_config, scan_dataset, scan_split, write_synthetic_dataset
from yolofuse_scale.data.augment import AugmentRecipe, seeded_global_rngs
from yolofuse_scale.data.labels import (
    LABEL_KIND,
    OBB_POINTS,
    DetectLabels,
    OrientedLabels,
    augmented_targets,
    label_dict,
)
from yolofuse_scale.data.loaders import training_feed, validation_feed
from yolofuse_scale.data.modality import apply_policy, match, polygon_iou

S = 64
FULL = AugmentRecipe(mixup=0.5, degrees=10, shear=4, ir_gain=0.3)
RECIPES = {  # mosaic (default on), affine with rotation and shear, perspective, flip (default 0.5), mixup
    "default": AugmentRecipe(),
    "full": FULL,
    "perspective": replace(FULL, perspective=0.001, mosaic=0.5),
    "rotate only, no mosaic": AugmentRecipe(mosaic=0.0, degrees=45, translate=0.3, scale=0.6),
}


@pytest.fixture(scope="module")
def aerial(tmp_path_factory) -> Path:
    """8 + 2 aerial pairs at 96 px (task: obb; labels/ and labelsIR/)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("aerial"), n_train=8, n_val=2, imgsz=96, seed=0,
                                   scene="aerial")


def _samples(data_yaml: Path, policy: str | None = None, split: str = "train"):
    cfg = load_data_config(data_yaml)
    if policy is not None:
        cfg = replace(cfg, label_policy={"train": policy, "val": policy})
    return scan_split(cfg, split)


# ------------------------------------------------------------------------------------ Ultralytics' pipeline
def test_the_label_dict_is_ultralytics_obb_datasets(aerial, tmp_path):
    """YOLODataset(task='obb') reads the same label files into the same Instances: corners resampled to 100 points
    as segments, their enclosing xywh as bboxes, bit for bit."""
    from ultralytics.data.dataset import YOLODataset

    copy_root = tmp_path / "copy"
    shutil.copytree(aerial.parent, copy_root)  # Ultralytics writes its labels cache next to the labels
    samples = _samples(copy_root / "data.yaml", "rgb")  # Ultralytics reads labels/, the RGB image's
    ds = YOLODataset(img_path=str(copy_root / "images" / "train"), data={"names": {i: str(i) for i in range(5)},
                                                                          "channels": 3}, task="obb", imgsz=S)
    assert [lb["im_file"] for lb in ds.labels] == [str(s.rgb) for s in samples]
    assert sum(len(s.boxes) for s in samples) > 10
    for i, s in enumerate(samples):
        ref = ds.update_labels_info(copy.deepcopy(ds.labels[i]))
        ours = label_dict(s, np.zeros((4, 4, 4), np.uint8), (4, 4))
        assert ours["instances"].segments.shape == (len(s.boxes), OBB_POINTS, 2)
        assert np.array_equal(ref["instances"].segments, ours["instances"].segments)
        assert np.array_equal(ref["instances"].bboxes, ours["instances"].bboxes)
        assert np.array_equal(ref["cls"], ours["cls"])


def test_affine_and_flip_move_rotated_boxes_as_ultralytics_obb_pipeline(aerial):
    """The recipe without mosaic (close_mosaic's epochs) against Ultralytics' own RandomPerspective(preserve_obb)
    and RandomFlip, as v8_transforms sets them for an OBB dataset, then Format(return_obb=True): the same draws from
    the same seeded generators, the same boxes exactly (strong rotation and translation: boxes cut by the border)."""
    recipe = AugmentRecipe(degrees=60, translate=0.35, scale=0.6, shear=5, hsv_h=0, hsv_s=0, hsv_v=0)
    samples = _samples(aerial)
    feed = training_feed("cpu", samples, imgsz=S, ir_channels=1, device="cpu", recipe=recipe, seed=3, epochs=15,
                         batch_size=4, log=lambda _m: None)
    ds = feed.dataset
    ds.set_epoch(12)  # close_mosaic 10 of 15: affine -> HSV (off) -> IR gain (off) -> flip
    cut = 0
    for i in range(len(samples)):
        key, mosaic, window = ds.draw(i)
        assert not mosaic
        start = ds.resized_labels(i)
        ref = copy.deepcopy(start)
        ours = ds.pipeline(start, key, mosaic, window)
        with seeded_global_rngs(key):
            ref = RandomPerspective(degrees=60, translate=0.35, scale=0.6, shear=5, size=(S, S), preserve_obb=True)(ref)
            ref = RandomFlip(p=0.5, direction="horizontal")(ref)
        ref.pop(LABEL_KIND)
        want = Format(bbox_format="xywh", normalize=True, return_obb=True, batch_idx=True)(ref)
        boxes, cls, _, _ = augmented_targets(ours)
        assert torch.equal(torch.from_numpy(boxes), want["bboxes"]) and np.array_equal(cls, want["cls"].numpy())
        seg = ours["instances"].segments
        cut += int(((seg < 0.5) | (seg > S - 0.5)).any())  # a box at the border: clipped by preserve_obb's fit
    assert cut >= 2, cut
    assert ds.pipeline.with_mosaic.transforms[0].transforms[0].preserve_obb  # Mosaic: the dataset's use_obb


def test_the_recipe_switches_ultralytics_obb_handling_on_for_oriented_boxes_only(aerial, tmp_path):
    """v8_transforms' switch for an OBB dataset: Mosaic reads the dataset's use_obb, RandomPerspective takes
    preserve_obb (a box cut by the border is fitted in its own axes); both loaders' pipelines, never for axis-aligned
    boxes (whose pipeline must stay Ultralytics' detect one)."""
    detect = write_synthetic_dataset(tmp_path / "d", n_train=4, n_val=1, imgsz=64)
    for data, obb in ((aerial, True), (detect, False)):
        for loader in ("cpu", "device"):
            feed = training_feed(loader, _samples(data), imgsz=S, ir_channels=1, device="cpu", batch_size=4,
                                 log=lambda _m: None)
            pre = feed.dataset.pipeline.with_mosaic.transforms[0]
            mosaic, affine = pre.transforms
            assert mosaic.preserve_obb is obb and affine.preserve_obb is obb, (loader, data)
            assert feed.dataset.pipeline.without_mosaic.transforms[0] is affine


# ------------------------------------------------------------------------------------ the two loaders
def _both(data: Path, recipe: AugmentRecipe, augment: bool = True, epoch: int = 0, n: int = 8):
    samples = _samples(data)
    kw = {"imgsz": S, "ir_channels": 1, "device": "cpu", "augment": augment, "seed": 1, "recipe": recipe,
          "epochs": 15, "batch_size": 4, "shuffle": True, "log": lambda _m: None}
    out = []
    for loader in ("cpu", "device"):
        feed = training_feed(loader, samples, **kw)
        feed.dataset.set_epoch(epoch)
        out.append(feed.to_device(feed.collate([feed.dataset[i] for i in range(n)])))
    return out


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_both_loaders_give_the_same_rotated_boxes(aerial, name):
    """Same (seed, epoch, index): the same partners, matrices and flips, so the same rotated boxes, exactly; pixels
    within the axis-aligned test's tolerance (tests/test_device_loader.py)."""
    a, b = _both(aerial, RECIPES[name])
    assert a["bboxes"].shape[1] == 5 and len(a["bboxes"]) > 10
    assert torch.equal(a["bboxes"], b["bboxes"]) and torch.equal(a["cls"], b["cls"])
    assert torch.equal(a["batch_idx"], b["batch_idx"])
    assert (a["bboxes"][:, 4] >= -np.pi / 4).all() and (a["bboxes"][:, 4] < 3 * np.pi / 4).all()  # xyxyxyxy2xywhr
    assert ((a["bboxes"][:, :4] >= 0) & (a["bboxes"][:, :4] <= 1.5)).all()  # normalised to the output image
    d = (a["img"].float() - b["img"].float()).abs()
    assert d.mean() < 0.6, (name, d.mean())


def test_validation_letterbox_puts_the_rotated_boxes_where_the_image_goes(aerial):
    """Both loaders' validation batches: the same boxes; each box's corners (xywhr2xyxyxyxy) are the label's
    corners scaled and shifted as the letterbox moves the image."""
    samples = _samples(aerial)
    batches = []
    for loader in ("cpu", "device"):
        feed = validation_feed(loader, samples, S, 1, "cpu")
        batches.append(feed.to_device(feed.collate([feed.dataset[i] for i in range(len(samples))])))
    a, b = batches
    assert torch.equal(a["bboxes"], b["bboxes"]) and a["ratio_pad"] == b["ratio_pad"]
    corners = xywhr2xyxyxyxy(a["bboxes"].double() * torch.tensor([S, S, S, S, 1.0])).numpy()  # (N, 4, 2) pixels
    k = checked = 0
    for s, ((r, _), (left, top)) in zip(samples, a["ratio_pad"]):
        h, w = s.hw
        want = s.boxes[:, 1:].reshape(-1, 4, 2) * [round(w * r), round(h * r)] + [left, top]  # the resized image
        whole = ((s.boxes[:, 1:] > 0) & (s.boxes[:, 1:] < 1)).all(1)  # the scene's rectangles (cut ones: clipped)
        for got, exp in zip(corners[k: k + len(want)][whole], want[whole]):  # one rectangle, any corner first
            assert min(np.abs(np.roll(g, j, 0) - exp).max() for g in (got, got[::-1]) for j in range(4)) < 0.01
            checked += 1
        k += len(want)
    assert k == len(a["bboxes"]) and checked > 5


# ------------------------------------------------------------------------------------ label policies
def _square(cx: float, cy: float, half: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = np.array([c, s]) * half, np.array([-s, c]) * half
    return np.stack([[cx, cy] - u - v, [cx, cy] + u - v, [cx, cy] + u + v, [cx, cy] - u + v])


def test_polygon_iou_is_the_area_ratio():
    a = np.stack([_square(0.5, 0.5, 0.1)])
    b = np.stack([_square(0.6, 0.5, 0.1), _square(0.5, 0.5, 0.1, np.pi / 4), _square(0.9, 0.9, 0.05)])
    iou = polygon_iou(a, b)
    assert iou.shape == (1, 3)
    assert abs(iou[0, 0] - 1 / 3) < 1e-5  # half overlapping: 0.02 / (0.04 + 0.04 - 0.02)
    octagon = 8 * (np.sqrt(2) - 1) * 0.1 ** 2  # a square and itself turned 45 degrees meet in a regular octagon
    assert abs(iou[0, 1] - octagon / (0.08 - octagon)) < 1e-5
    assert iou[0, 2] == 0


def test_match_is_greedy_by_iou_one_box_per_pair_classes_ignored():
    rgb = np.stack([_square(0.5, 0.5, 0.1), _square(0.53, 0.5, 0.1), _square(0.2, 0.2, 0.05)])
    ir = np.stack([_square(0.51, 0.5, 0.1), _square(0.8, 0.8, 0.05)])
    assert polygon_iou(rgb, ir)[1, 0] > 0.5  # both RGB boxes overlap the IR one enough; the closer one is its match
    assert match(rgb, ir, 0.5) == [(0, 0)]
    assert match(rgb[1:], ir, 0.5) == [(0, 0)] and match(rgb, ir, 0.95) == []


def test_policies_keep_and_count_what_they_say():
    """RGB: a, b, c; IR: a' (a, slightly moved, another class), d. Union: a' (the IR box of the match), d, b, c."""
    def rows(cls, sq):
        return np.concatenate([[cls], sq.reshape(-1)]).astype(np.float32)

    rgb = np.stack([rows(0, _square(0.5, 0.5, 0.1)), rows(1, _square(0.2, 0.2, 0.05)),
                    rows(2, _square(0.8, 0.2, 0.05))])
    ir = np.stack([rows(3, _square(0.51, 0.5, 0.1, 0.05)), rows(4, _square(0.2, 0.8, 0.05))])
    corners = OrientedLabels.corners
    for policy, want in (("rgb", rgb), ("ir", ir), ("union", np.concatenate([ir, rgb[1:]]))):
        kept, counts = apply_policy(policy, rgb, ir, corners, 0.5)
        assert np.array_equal(kept, want), policy
        assert (counts.rgb, counts.ir, counts.matched, counts.kept) == (3, 2, 1, len(want))


def _detect_set_with_ir_labels(root: Path) -> Path:
    """The easy synthetic set (axis-aligned) with labelsIR/: each pair's RGB boxes, the first one moved a little,
    the second dropped, two boxes added; data.yaml: labels_ir, union for train, ir for val."""
    y = write_synthetic_dataset(root, n_train=6, n_val=2, imgsz=64, seed=1)
    for split in ("train", "val"):
        (root / "labelsIR" / split).mkdir(parents=True)
        for f in sorted((root / "labels" / split).glob("*.txt")):
            rows = [ln.split() for ln in f.read_text().splitlines() if ln.strip()]
            if rows:
                rows[0][1] = f"{float(rows[0][1]) + 0.005:.6f}"
            extra = ["0 0.05 0.05 0.04 0.04", "1 0.95 0.95 0.04 0.04"]  # in the corners: no RGB box matches them
            ir = [" ".join(r) for k, r in enumerate(rows) if k != 1] + extra
            (root / "labelsIR" / split / f.name).write_text("\n".join(ir) + "\n")
    y.write_text(y.read_text() + "labels_ir: labelsIR\nlabel_policy: {train: union, val: ir}\n")
    return y


def _rows(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in ln.split()] for ln in path.read_text().splitlines() if ln.strip()],
                    np.float32).reshape(-1, 5)


def test_policies_on_axis_aligned_boxes_with_counts_and_from_the_scan_cache(tmp_path):
    y = _detect_set_with_ir_labels(tmp_path / "d")
    cfg = load_data_config(y)
    cache = [tmp_path / "cache"]
    first = scan_dataset(cfg, ("train", "val"), cache_dirs=cache)
    again = scan_dataset(cfg, ("train", "val"), cache_dirs=cache)
    assert first.error is None and again.cached == ["train", "val"]
    got, cached = first.take(log=lambda _m: None), again.take(log=lambda _m: None)
    for split in ("train", "val"):
        for s, c in zip(got[split], cached[split]):
            assert np.array_equal(s.boxes, c.boxes) and s.label_counts == c.label_counts and s.label_ir == c.label_ir
    for s in got["train"]:  # union: every RGB box but the dropped one matched its IR twin
        rgb, ir = _rows(s.label), _rows(s.label_ir)
        extra = 1 if len(rgb) > 1 else 0  # the dropped second box comes back from the RGB side
        assert s.label_counts == (len(rgb), len(ir), len(rgb) - extra, len(ir) + extra)
        assert np.allclose(s.boxes, np.concatenate([ir, rgb[1:2]]) if extra else ir)
    for s in got["val"]:  # ir: the IR file's rows
        assert np.allclose(s.boxes, _rows(s.label_ir))
    t = first.labels["splits"]
    assert first.labels["task"] == "detect" and t["train"]["policy"] == "union" and t["val"]["policy"] == "ir"
    c = t["train"]["counts"]
    assert c["kept"] == c["rgb"] + c["ir"] - c["matched"] == t["train"]["boxes"]
    report = first.report()
    assert (f"labels train: label_policy union: trains on the union of the RGB and IR labels (labels/ + labelsIR/), "
            f"{c['kept']} boxes; RGB {c['rgb']}, IR {c['ir']}, {c['matched']} matched (rotated IoU >= 0.5): IR adds "
            f"{c['ir'] - c['matched']} the RGB labels lack, RGB adds {c['rgb'] - c['matched']} the IR labels lack "
            "(a match keeps the IR box)") in report, report
    assert "labels val: label_policy ir: scored against the IR labels (labelsIR/)" in report


def test_aerial_policies_differ_as_the_scene_says(aerial):
    """IR sees vehicles RGB does not at night: the IR labels have more boxes; the union has both sides' extras."""
    counts = {}
    for policy in ("rgb", "ir", "union"):
        samples = _samples(aerial, policy)
        counts[policy] = sum(len(s.boxes) for s in samples)
        total = [sum(s.label_counts[k] for s in samples) for k in range(4)]
    rgb, ir, matched, _ = total
    assert counts == {"rgb": rgb, "ir": ir, "union": rgb + ir - matched}
    assert ir > matched and rgb >= matched > 0


def test_kinds_round_trip_their_corners():
    rows = np.array([[1, 0.5, 0.4, 0.2, 0.1]], np.float32)
    c = DetectLabels.corners(rows)
    assert np.allclose(c[0], [[0.4, 0.35], [0.6, 0.35], [0.6, 0.45], [0.4, 0.45]])
    obb = np.concatenate([rows[:, :1], c.reshape(1, 8)], 1)
    assert np.allclose(OrientedLabels.xywh(obb), rows[:, 1:])


def test_the_run_folders_label_statistics_read_oriented_boxes_by_their_enclosing_boxes(tmp_path):
    """labels.json of an OBB training set: its boxes' sizes are their enclosing boxes' (an (n, 9) row read as
    (n, 5) rows would mix corners into sizes, or fail)."""
    import json
    from types import SimpleNamespace

    from yolofuse_scale.data.sample import Sample
    from yolofuse_scale.engine.outputs import RunOutputs

    rows = np.array([[1, 0.2, 0.1, 0.6, 0.1, 0.6, 0.3, 0.2, 0.3]], np.float32)  # 0.4 wide, 0.2 high
    samples = [Sample(Path("a.png"), Path("b.png"), None, rows), Sample(Path("c.png"), Path("d.png"), None,
                                                                        np.zeros((0, 9), np.float32))]
    log = SimpleNamespace(path=tmp_path / "train_log.jsonl", info=lambda _m: None)
    RunOutputs(tmp_path, log, ("box", "cls", "dfl", "angle"), {0: "car", 1: "truck"}, False).start(0, 0, samples)
    stats = json.loads((tmp_path / "labels.json").read_text())
    assert (stats["images"], stats["background_images"], stats["instances_per_class"]) == (2, 1, {"car": 0,
                                                                                                  "truck": 1})
    assert stats["box_width"]["median"] == pytest.approx(0.4) and stats["box_height"]["median"] == pytest.approx(0.2)


def test_val_says_which_ground_truth_it_scores(tmp_path, capsys):
    """`val` on a dataset with IR labels prints the split's ground truth and writes it into metrics.json (an untrained
    model: the labels scored against, not the score, are what is checked)."""
    import json

    from yolofuse_scale.cli import main
    from yolofuse_scale.model import build_model
    from yolofuse_scale.weights import plain_meta, write_weights

    y = _detect_set_with_ir_labels(tmp_path / "d")
    names = {0: "person", 1: "car"}
    model = build_model("yolov8t", "mid", nc=2, ir_channels=1, names=names)
    weights = tmp_path / "w.pt"
    write_weights(weights, model.state_dict(), plain_meta({"model_yaml": model.yaml, "rgb_channels": 3,
                                                           "ir_channels": 1, "names": names, "imgsz": 64}))
    out = tmp_path / "val"
    assert main(["val", "--weights", str(weights), "--data", str(y), "--imgsz", "64", "--batch-size", "2",
                 "--workers", "0", "--no-plots", "--out", str(out)]) == 0
    assert "val: val scored against the IR labels (labelsIR/)" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ground_truth"] == "the IR labels (labelsIR/)"
    ir_boxes = sum(len(_rows(f)) for f in (y.parent / "labelsIR" / "val").glob("*.txt"))
    assert metrics["instances"] == ir_boxes != sum(len(_rows(f)) for f in (y.parent / "labels" / "val").glob("*.txt"))
