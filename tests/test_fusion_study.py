"""benchmarks/fusion_study.py end to end at a toy budget: real train.py and val runs, table, JSON, chart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ENV, ROOT

pytestmark = pytest.mark.slow  # real train.py and val runs


STUDY = ["--variants", "rgb", "mid", "--seeds", "0", "--train", "16", "--val", "8", "--imgsz", "64", "--epochs", "1",
         "--label", "test box"]


@pytest.fixture(scope="module")
def sequential_study(tmp_path_factory):
    """The sequential study at a toy budget, once per module: (its command, its folder)."""
    tmp_path = tmp_path_factory.mktemp("fusion_study")
    cmd = [sys.executable, "benchmarks/fusion_study.py", *STUDY, "--out", str(tmp_path / "res"), "--work",
           str(tmp_path / "work")]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return cmd, tmp_path


def test_fusion_study_runs_and_reuses_finished_runs(sequential_study):
    cmd, tmp_path = sequential_study
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert [row["variant"] for row in res["summary"]] == ["rgb", "mid"]
    rgb, mid = res["summary"]
    assert mid["params"] > rgb["params"] and mid["gflops"] > rgb["gflops"]  # two backbones cost more
    assert all(0 <= row["mAP50"]["mean"] <= 1 and row["mAP50"]["spread"] == 0 for row in res["summary"])
    assert res["environment"]["label"] == "test box" and res["environment"]["epochs"] == 1
    table = (tmp_path / "res" / "results.md").read_text()
    assert table.count("\n| rgb |") == 1 and "| mid |" in table and "test box" in table
    assert (tmp_path / "res" / "fusion_study.png").read_bytes()[:4] == b"\x89PNG"
    # a restarted study reuses finished runs instead of training again
    log = tmp_path / "work" / "rgb_s0" / "train.log"
    before = log.stat().st_mtime_ns
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and log.stat().st_mtime_ns == before


@pytest.mark.nightly  # Ray Train and Tune themselves are CI's (tests/test_ray.py); this is the study's --engine ray
def test_fusion_study_as_a_ray_sweep_gives_the_sequential_numbers(sequential_study, ray_cluster, tmp_path):
    """--engine ray: the same variants x seeds as one Tune experiment (one Ray Train worker per run): every run
    trains the weights of the sequential runner's, bit for bit, so the study's records are the same numbers."""
    import torch
    import yaml

    _, seq = sequential_study
    cmd = [sys.executable, "benchmarks/fusion_study.py", *STUDY, "--out", str(tmp_path / "res"), "--work",
           str(tmp_path / "work"), "--engine", "ray", "--ray-address", ray_cluster.address]
    r = subprocess.run(cmd, cwd=ROOT, env=ray_cluster.env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    a = json.loads((seq / "res" / "results.json").read_text())
    b = json.loads((tmp_path / "res" / "results.json").read_text())
    assert b["environment"]["launch"] == "ray (1 worker(s) per run)"
    drop = ("train_s",)  # wall time: the one number that may differ
    assert [{k: v for k, v in run.items() if k not in drop} for run in a["runs"]] == \
        [{k: v for k, v in run.items() if k not in drop} for run in b["runs"]]
    assert [row["mAP50"] for row in a["summary"]] == [row["mAP50"] for row in b["summary"]]
    runs = {yaml.safe_load((p / "config.yaml").read_text())["model"]["fusion"]: p
            for p in (tmp_path / "work" / "sweep" / "runs").iterdir()}
    assert sorted(runs) == ["mid", "rgb"]
    for variant, run_dir in runs.items():
        want = torch.load(seq / "work" / f"{variant}_s0" / "train" / "weights" / "last.pt", weights_only=True)["model"]
        got = torch.load(run_dir / "weights" / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(want[k], got[k]) for k in want), variant
    assert (tmp_path / "work" / "sweep.yaml").read_text().startswith("metric: mAP50-95")
