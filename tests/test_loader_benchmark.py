"""The loader benchmark runs end to end (tiny settings) and writes a complete JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_loader_benchmark_writes_every_cell(tmp_path, capsys):
    import loader  # benchmarks/loader.py

    out = tmp_path / "bench.json"
    assert loader.main(["--pairs", "6", "--frame", "64", "--imgsz", "64", "--workers", "0", "--batch", "2",
                        "--batches", "1", "--repeats", "1", "--cache", "disk", "--ultralytics", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    modes = [(r["mode"], r["workers"]) for r in result["rows"]]
    assert modes == [("decode", 0), ("letterbox", 0), ("mosaic", 0), ("ultralytics_mosaic_4ch", 0)]
    assert all(r["pairs_per_s"] > 0 and r["pss_mib"] > 0 for r in result["rows"])
    assert result["cache"]["mode"] == "disk" and result["cache"]["gib"] > 0 and result["machine"]["cpus"]
    assert "pairs/s" in capsys.readouterr().out


def test_loader_benchmark_times_both_pipelines_side_by_side(tmp_path):
    import loader  # benchmarks/loader.py

    out = tmp_path / "bench.json"
    assert loader.main(["--pairs", "6", "--frame", "64", "--imgsz", "64", "--workers", "0", "--batch", "2",
                        "--batches", "1", "--repeats", "1", "--modes", "mosaic", "device", "--device", "cpu",
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["device"]) for r in rows] == [("mosaic", "cpu"), ("device", "cpu")]
    assert all(r["pairs_per_s"] > 0 and r["images_per_s"] == 2 * r["pairs_per_s"] for r in rows)
