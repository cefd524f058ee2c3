"""Bad flags of ``yolofuse-scale bench``: one ``error: ...`` line naming the flag, exit code 1, no traceback,
and nothing run or written, before the first of the sweep's runs (a projection flag used to fail after all
of them, with a traceback). In process: the checks come before any launch."""

from __future__ import annotations

import json

import pytest

from yolofuse_scale.cli import main

TINY = ["--strategies", "ddp", "--devices", "1", "--model", "yolov8t", "--imgsz", "64", "--batch-size", "4"]


def _bench(capsys, tmp_path, *flags: str) -> str:
    out = tmp_path / "report"
    code = main(["bench", *TINY, *flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing measured, nothing written
    return err


@pytest.mark.parametrize(("flags", "message"), [
    (["--vary", "compile"], "--vary item 'compile': expected NAME=V1[,V2...]"),
    (["--devices", "1,two"], "--devices '1,two': expected a comma list of device counts >= 1"),
    (["--devices", "0"], "--devices '0': expected a comma list of device counts >= 1"),
    (["--scaling", "strong", "--devices", "1,2", "--global-batch-size", "5"],
     "--global-batch-size 5 is not divisible by 2 devices"),
    (["--topologies", "nvswitch+warp9"], "--topologies item 'nvswitch+warp9': expected INTRA[+INTER] from nvswitch"),
    (["--project", "8,lots"], "--project '8,lots': expected a comma list of device counts >= 1"),
], ids=["vary-item", "devices-word", "devices-zero", "global-batch", "topology", "project"])
def test_bad_sweep_flags_are_refused_before_any_run(capsys, tmp_path, flags, message):
    assert message in _bench(capsys, tmp_path, *flags)


def test_compute_from_must_be_a_results_file_of_the_same_setting(capsys, tmp_path):
    other = tmp_path / "other.json"
    other.write_text("not json")
    assert f"--compute-from {other}: not a scaling benchmark's results.json" in _bench(
        capsys, tmp_path, "--compute-from", str(other))
    other.write_text(json.dumps({"config": {"model": "yolov8s", "fusion": "mid", "imgsz": 64, "batch_size": 4},
                                 "environment": {"gpus": ["H100"], "cpu": "x"}, "runs": []}))
    assert f"--compute-from {other}: its model differ from this run's" in _bench(
        capsys, tmp_path, "--compute-from", str(other))
