"""benchmarks/fusion_study.py end to end at a toy budget: real train.py and val runs, table, JSON, chart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ENV, ROOT

pytestmark = pytest.mark.slow  # real train.py and val runs


def test_fusion_study_runs_and_reuses_finished_runs(tmp_path):
    cmd = [sys.executable, "benchmarks/fusion_study.py", "--variants", "rgb", "mid", "--seeds", "0", "--train", "16",
           "--val", "8", "--imgsz", "64", "--epochs", "1", "--out", str(tmp_path / "res"), "--work",
           str(tmp_path / "work"), "--label", "test box"]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
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
