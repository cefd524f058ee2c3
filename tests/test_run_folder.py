"""The run folder an Ultralytics user knows (engine/outputs.py, engine/plots.py): results.csv with one row per epoch
across resumes and world-size changes, results.png, labels.jpg/json, RGB | IR batch previews, the final validation's
curves, confusion matrices and per-class table; the validation loss, the same at any batching."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests.helpers import launch

COLUMNS = ["epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
           "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
           "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _image(path: Path, min_hw: tuple[int, int]) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path.name}: not a readable image"
    assert img.shape[0] >= min_hw[0] and img.shape[1] >= min_hw[1] and img.std() > 5, (path.name, img.shape)
    return img


@pytest.mark.slow
def test_results_csv_has_one_row_per_epoch_across_a_resume_and_a_world_size_change(train_run, tiny_data, tmp_path):
    """The session's DDP run (2 processes, --global-batch-size 16, stopped at step 12, inside epoch 2 of 8 steps),
    copied and resumed by one process to the end of epoch 2 with the pictures on. results.csv: Ultralytics' columns,
    epochs 1 and 2 once each (row 1, written at world size 2, kept), each row's train losses the mean of
    train_log.jsonl's records of its epoch (epoch 2's from both launches), lr/pg0 the epoch's last lr, the final
    validation (--max-steps ends at an epoch end) in the last row only (--no-val). The pictures are there and
    readable: results.png, labels.jpg, the final curves and matrices, RGB | IR previews (written by the resume, which
    found them missing: that run had --no-plots)."""
    import shutil

    from tests.helpers import BASE_ARGS

    gbs = ["--global-batch-size", "16", "--no-val"]
    out = tmp_path / "run"
    shutil.copytree(train_run("torchrun", 2, 1, *gbs, "--max-steps", "12").out, out)
    first = _rows(out / "results.csv")
    assert [r["epoch"] for r in first] == ["1"]
    resumed = launch("python", 1, ["train.py", "--data", str(tiny_data), *BASE_ARGS, *gbs, "--plots", "--max-steps",
                                   "16", "--resume", "auto", "--output-dir", str(out)], out)
    assert "at step 12" in resumed.output and "accumulation 2 = 16 images/step" in resumed.output

    with open(out / "results.csv") as fh:
        assert next(csv.reader(fh)) == COLUMNS
    rows = _rows(out / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0] == first[0], "the world-size change keeps the rows written before it"
    log = resumed.log
    assert [r["step"] for r in log] == list(range(1, 17))
    for row in rows:
        records = [r for r in log if r["epoch"] == int(row["epoch"]) - 1]
        assert len(records) == 8
        for name in ("box", "cls", "dfl"):
            want = sum(r[name] for r in records) / len(records)
            assert float(row[f"train/{name}_loss"]) == pytest.approx(want, rel=1e-5), (row["epoch"], name)
        assert float(row["lr/pg0"]) == pytest.approx(records[-1]["lr"], rel=1e-5)  # the weights' group
        assert row["lr/pg1"] == row["lr/pg2"] == row["lr/pg0"]  # no warm-up: every group at the scheduled lr
    assert 0 < float(rows[0]["time"]) < float(rows[1]["time"])
    measured = [c for c in COLUMNS if c.startswith(("metrics/", "val/"))]
    assert all(rows[0][c] == "" for c in measured), "an epoch not validated leaves its cells empty"
    final = json.loads((out / "metrics.json").read_text())["metrics"]
    for key, column in (("mAP50-95", "mAP50-95(B)"), ("precision", "precision(B)"), ("recall", "recall(B)")):
        assert float(rows[1][f"metrics/{column}"]) == pytest.approx(final[key], rel=1e-5)
    assert all(float(rows[1][f"val/{n}_loss"]) >= 0 for n in ("box", "cls", "dfl")) and float(rows[1]["val/cls_loss"])
    assert "losses" not in final, "metrics.json keeps exactly what `val` reports"

    _image(out / "results.png", (500, 1200))
    _image(out / "labels.jpg", (600, 600))
    for name in ("BoxPR_curve.png", "BoxF1_curve.png", "BoxP_curve.png", "BoxR_curve.png", "confusion_matrix.png",
                 "confusion_matrix_normalized.png"):
        _image(out / name, (800, 800))
    table = (out / "val_per_class.txt").read_text().splitlines()
    assert table[0].split()[:2] == ["class", "images"]
    assert [ln.split()[0] for ln in table[1:4]] == ["all", "person", "car"]
    labels = json.loads((out / "labels.json").read_text())
    assert labels["images"] == 128 and sum(labels["instances_per_class"].values()) == labels["instances"] > 0
    # the previews: micro-batches of 8 samples at 128 px, a 3 x 3 grid of RGB | IR cells (the ninth white)
    for i in range(3):
        img = _image(out / f"train_batch{i}.jpg", (384, 768))
        assert img.shape == (384, 768, 3)
        for cell in range(8):
            r, c = divmod(cell, 3)
            rgb = img[r * 128: (r + 1) * 128, c * 256: c * 256 + 128].astype(int)
            ir = img[r * 128: (r + 1) * 128, c * 256 + 128: (c + 1) * 256].astype(int)
            assert np.abs(rgb - ir).mean() > 5, f"train_batch{i}.jpg cell {cell}: the IR pane repeats the RGB pane"
        assert (img[256:, 512:] > 240).all(), "the ninth cell is empty"


def test_a_resume_drops_later_rows_and_a_row_averages_its_whole_epoch(tmp_path):
    """In-process, on hand-written files: a resume inside epoch 2 keeps row 1 only (a row per epoch, the later
    ones written again), averages epoch 2 over the steps logged before and after the resume, counts the time of
    the earlier launch's epoch-2 steps, maps the param groups to lr/pg0..2; a fresh start drops every row."""
    from yolofuse_scale.data.sample import Sample
    from yolofuse_scale.engine.outputs import RunOutputs

    log_path = tmp_path / "train_log.jsonl"

    def log(*records):
        with open(log_path, "a") as fh:
            for step, epoch, box in records:
                fh.write(json.dumps({"step": step, "epoch": epoch, "box": box, "cls": 2 * box, "dfl": 3 * box,
                                     "lr": 0.01, "step_time_s": 0.25}) + "\n")

    log(*[(s, 0, 1.0) for s in (1, 2, 3, 4)], (5, 1, 0.5), (6, 1, 0.7))
    (tmp_path / "results.csv").write_text(
        ",".join(COLUMNS) + "\n" + "".join(f"{e},{10 * e},9,9,9,,,,,,,,0.01,0.01,0.01\n" for e in (1, 2, 3)))
    said = []
    outputs = RunOutputs(tmp_path, SimpleNamespace(path=log_path, info=said.append), ("box", "cls", "dfl"),
                         {0: "person", 1: "car"}, plots_on=False)
    samples = [Sample(Path("a.png"), Path("a_ir.png"), None, np.array([[1, 0.5, 0.5, 0.2, 0.4]], np.float32)),
               Sample(Path("b.png"), Path("b_ir.png"), None, np.zeros((0, 5), np.float32))]
    outputs.start(epoch=1, step=6, samples=samples)
    assert [r["epoch"] for r in _rows(tmp_path / "results.csv")] == ["1"]
    log((7, 1, 0.9), (8, 1, 1.1))  # the resumed launch's steps of epoch 2
    metrics = {"precision": 0.5, "recall": 0.25, "mAP50": 0.4, "mAP50-95": 0.2, "images": 2, "instances": 1,
               "per_class": {"car": {"precision": 0.5, "recall": 0.25, "mAP50": 0.4, "mAP50-95": 0.2, "instances": 1}}}
    outputs.validated(metrics, {"box_loss": 1.5, "cls_loss": 2.5, "dfl_loss": 3.5}, final=True)
    outputs.epoch_end(1, [0.3, 0.1, 0.2])  # our groups: biases, weights, norms
    rows = _rows(tmp_path / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["time"] == "10"
    row = rows[1]
    assert float(row["train/box_loss"]) == pytest.approx(0.8) and float(row["train/dfl_loss"]) == pytest.approx(2.4)
    assert 10.5 <= float(row["time"]) < 10.5 + 60  # row 1's time + the earlier launch's two steps of epoch 2
    assert (row["lr/pg0"], row["lr/pg1"], row["lr/pg2"]) == ("0.1", "0.2", "0.3")
    assert (row["metrics/mAP50(B)"], row["val/cls_loss"]) == ("0.4", "2.5")
    assert "car" in (tmp_path / "val_per_class.txt").read_text() and "final validation" in said[0]
    stats = json.loads((tmp_path / "labels.json").read_text())
    assert (stats["images"], stats["background_images"], stats["instances_per_class"]) == (2, 1, {"person": 0,
                                                                                                  "car": 1})
    assert not (tmp_path / "labels.jpg").exists() and not list(tmp_path.glob("*.png")), "--no-plots: no pictures"
    # another launch resuming at the boundary keeps both rows as they are; a fresh start of the folder drops them
    before = (tmp_path / "results.csv").read_text()
    RunOutputs(tmp_path, SimpleNamespace(path=log_path, info=said.append), ("box", "cls", "dfl"), {0: "p", 1: "c"},
               False).start(epoch=2, step=8, samples=samples)
    assert (tmp_path / "results.csv").read_text() == before
    RunOutputs(tmp_path, SimpleNamespace(path=log_path, info=said.append), ("box", "cls", "dfl"), {0: "p", 1: "c"},
               False).start(epoch=0, step=0, samples=samples)
    assert (tmp_path / "results.csv").read_text() == ",".join(COLUMNS) + "\n"


def test_batch_preview_shows_each_sample_rgb_and_ir_side_by_side(tmp_path):
    """Five samples: a 2 x 3 grid of RGB | IR cells (the sixth white), the RGB pane in its colour, the 1-channel IR
    pane gray, the same box on both; a 3-channel IR pane in its own colours; three previews, then no more."""
    from yolofuse_scale.engine.outputs import RunOutputs
    from yolofuse_scale.engine.plots import batch_jpg, preview_layout

    img = np.zeros((5, 4, 64, 64), np.uint8)
    img[:, 0], img[:, 1], img[:, 2], img[:, 3] = 200, 40, 40, 90  # RGB red, IR gray 90
    batch_idx = np.arange(5, dtype=np.float32)
    targets = np.array([[1, 0.25, 0.25, 0.3, 0.3]] * 5, np.float32)  # one car box in the top-left quarter
    assert preview_layout(5, 64) == (2, 3, 64)
    pic = cv2.imdecode(np.frombuffer(batch_jpg(img, batch_idx, targets, {0: "person", 1: "car"}), np.uint8),
                       cv2.IMREAD_COLOR)
    assert pic.shape == (128, 384, 3)
    for cell in range(5):
        r, c = divmod(cell, 3)
        y, x = r * 64, c * 128
        assert np.abs(pic[y + 40, x + 40].astype(int) - (40, 40, 200)).max() <= 12  # BGR of the red RGB pane
        assert np.abs(pic[y + 40, x + 64 + 40].astype(int) - 90).max() <= 12  # the gray IR pane
        for dx in (0, 64):  # the box's top edge (y 0.1 x 64 = 6) is drawn on both panes, not in their fill colour
            edge = pic[y + 6, x + dx + 10: x + dx + 20].astype(int)
            assert np.abs(edge - pic[y + 40, x + dx + 40].astype(int)).max(axis=1).mean() > 40, (cell, dx)
    assert (pic[64:, 256:] > 240).all(), "the sixth cell is empty (white)"
    three = np.zeros((1, 6, 64, 64), np.uint8)
    three[:, 3:] = np.array([10, 200, 10], np.uint8)[:, None, None]  # a 3-channel IR pane in green
    pic = cv2.imdecode(np.frombuffer(batch_jpg(three, np.zeros(0), np.zeros((0, 5)), {}), np.uint8), cv2.IMREAD_COLOR)
    assert pic.shape == (64, 128, 3) and np.abs(pic[32, 96].astype(int) - (10, 200, 10)).max() <= 12
    assert preview_layout(64, 640) == (4, 4, 256), "at most 16 samples, at most 2,048 px wide"

    outputs = RunOutputs(tmp_path, SimpleNamespace(path=tmp_path / "log", info=print), ("box", "cls", "dfl"),
                         {0: "person", 1: "car"}, plots_on=True)
    outputs.wants_batches = True
    batch = {"img": torch.from_numpy(img), "batch_idx": torch.from_numpy(batch_idx),
             "cls": torch.from_numpy(targets[:, :1]), "bboxes": torch.from_numpy(targets[:, 1:])}
    while outputs.wants_batches:
        outputs.preview(batch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg"]


def test_validation_loss_is_the_mean_of_each_images_loss_at_any_batching(tiny_data):
    """The criterion normalises by a batch's summed target scores, so a batch's loss depends on its company; the
    validation loss is each image's loss alone, averaged in dataset order: the same whether the images come in
    batches of 1, of 8, or shard-interleaved as two ranks hold them (float rounding of the forward aside)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from yolofuse_scale.data import PairedRGBIRDataset, collate_pairs, load_data_config, scan_split
    from yolofuse_scale.engine.evaluate import evaluate
    from yolofuse_scale.engine.task import DetectionTask
    from yolofuse_scale.model import build_model

    cfg = load_data_config(tiny_data)
    set_seed(0)
    model = build_model("yolov8t", "mid", nc=cfg.nc, ir_channels=cfg.ir_channels).eval()
    task = DetectionTask(model)
    data = PairedRGBIRDataset(scan_split(cfg, "val")[:8], 64, augment=False, ir_channels=cfg.ir_channels)
    acc = Accelerator(cpu=True)
    shards = [list(range(r, 8, 2))[i: i + 2] for r in (0, 1) for i in (0, 2)]  # two ranks' batches of 2

    def losses(**loader):
        m = evaluate(model, DataLoader(data, collate_fn=collate_pairs, **loader), acc, cfg.names,
                     loss_items=task.loss_items)
        return m["losses"]

    alone, eight, sharded = losses(batch_size=1), losses(batch_size=8), losses(batch_sampler=shards)
    assert len(alone) == 3 and alone[1] > 0
    assert eight == pytest.approx(alone, rel=1e-5, abs=1e-7) and sharded == pytest.approx(alone, rel=1e-5, abs=1e-7)


def test_overwrite_moves_the_run_folder_files_aside(tmp_path):
    """--overwrite moves a previous run's outputs into replaced/: results.csv and the pictures with them."""
    from yolofuse_scale.engine.checkpoint.ownership import RUN_OUTPUTS, _move_aside
    from yolofuse_scale.engine.outputs import RUN_FOLDER_FILES

    assert {"results.csv", "results.png", "labels.jpg", "train_batch0.jpg", "confusion_matrix.png"} <= set(
        RUN_FOLDER_FILES) <= set(RUN_OUTPUTS)
    for name in RUN_FOLDER_FILES:
        (tmp_path / name).write_text(name)
    _move_aside(tmp_path, tmp_path / "replaced" / "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replaced"]
    assert all((tmp_path / "replaced" / "old" / name).read_text() == name for name in RUN_FOLDER_FILES)
