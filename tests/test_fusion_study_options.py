"""benchmarks/fusion_study.py's options for oriented boxes and label policies, without training: the data.yaml copy
each policy trains on, train.py's --task, the table with a column per policy and the published numbers apart.
(The study end to end is tests/test_fusion_study.py, slow.)"""

from __future__ import annotations

import sys

from tests.helpers import ROOT
from yolofuse_scale.data import load_data_config, write_synthetic_dataset

sys.path.insert(0, str(ROOT))
from benchmarks import fusion_study  # noqa: E402


def _row(variant: str, policy: str | None, m: float) -> dict:
    return {"variant": variant, "seed": 0, "policy": policy, "ground_truth": "the IR labels (labelsIR/)",
            "params": 1e6, "gflops": 2.0, "steps": 10, "train_s": 3.0, "mAP50": m, "mAP50-95": m / 2,
            "precision": 0.5, "recall": 0.5, "per_class": {"car": {"mAP50": m}}}


def test_each_policy_trains_on_its_copy_of_the_data_and_scores_on_the_ir_labels(tmp_path):
    data = write_synthetic_dataset(tmp_path / "set", n_train=2, n_val=1, imgsz=64, scene="aerial")
    args = fusion_study.parse_args(["--scene", "aerial", "--label-policies", "rgb", "union", "--work",
                                    str(tmp_path / "work")])
    assert args.task is None and args.score_policy == "ir"  # main() makes it obb for the aerial scene
    copy = fusion_study.policy_data(data, "union", args.score_policy, tmp_path / "work")
    cfg = load_data_config(copy)
    assert cfg.root == data.parent.resolve() and cfg.task == "obb" and cfg.labels_ir == "labelsIR"
    assert (cfg.policy("train"), cfg.policy("val")) == ("union", "ir")
    args.task = "obb"
    flags = fusion_study.train_flags(args, copy)
    assert flags[flags.index("--task") + 1] == "obb" and flags[flags.index("--data") + 1] == str(copy)
    args.task = None
    assert "--task" not in fusion_study.train_flags(args, copy)


def test_the_table_has_a_row_per_variant_and_policy_and_the_published_numbers_apart():
    records = [_row(v, p, m) for v, p, m in (("rgb", "ir", 0.4), ("mid", "ir", 0.6), ("rgb", "union", 0.5),
                                             ("mid", "union", 0.7))]
    rows = fusion_study.summarise(records, ["rgb", "mid"], ["ir", "union"])
    assert [(r["variant"], r["policy"], r["mAP50"]["mean"]) for r in rows] == [
        ("rgb", "ir", 0.4), ("mid", "ir", 0.6), ("rgb", "union", 0.5), ("mid", "union", 0.7)]
    env = {"imgsz": 128, "data": "synthetic aerial set", "model": "yolov8t", "epochs": 1, "batch_size": 8,
           "label": "test box", "torch": "x", "python": "y"}
    published = [{"method": "X-Det", "venue": "Journal 2024", "modality": "RGB+IR", "mAP50": 70.0,
                  "source": "the paper's table 3"}]
    md = fusion_study.markdown(rows, env, published)
    assert "| fusion | trained on | mAP50 |" in md and "| mid | union labels | 0.700 ± 0.000 |" in md
    assert "scored against the IR labels (labelsIR/)" in md
    assert "Published on the real dataset (different data: not comparable with the table above)" in md
    assert "| X-Det | Journal 2024 | RGB+IR | 70.0 | the paper's table 3 |" in md
    plain = fusion_study.markdown(fusion_study.summarise([_row("rgb", None, 0.4)], ["rgb"]), env)
    assert "trained on" not in plain and "Published" not in plain
