"""Bad flags of ``yolofuse-scale bench``: one ``error: ...`` line naming the flag, exit code 1, no traceback,
and nothing run or written, before the first of the sweep's runs (a projection flag used to fail after all
of them, with a traceback). In process: the checks come before any launch."""

from __future__ import annotations

import json
from pathlib import Path

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


# ------------------------------------------------------------------------------------------ --render-only
COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "scaling_2core_cpu" / "results.json"


def _incomplete(path: Path) -> None:
    res = json.loads(COMMITTED.read_text())
    del res["runs"][1]["images_per_s"]
    path.write_text(json.dumps(res))


@pytest.mark.parametrize(("plant", "message"), [
    (lambda p: None, "--render-only {path}: no such file"),
    (lambda p: p.write_bytes(b'{"schema_version": 1,\n "runs": [\xff]}'), "{path}: not UTF-8 text (invalid start byte"),
    (lambda p: p.write_text('{"schema_version": 1,\n "runs": [,]}'), "{path}:2: not JSON (Expecting value, column"),
    (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "{path}: nested deeper than Python's JSON reader goes"),
    (lambda p: p.write_text("[1, 2]"), "{path}: not a scaling benchmark results.json (no schema_version)"),
    (lambda p: p.write_text('{"schema_version": 2}'), "{path}: schema_version 2; this version renders 1"),
    (lambda p: p.write_text('{"schema_version": 1, "environment": {}, "config": {}, "runs": {}}'),
     "{path}: not a scaling benchmark results.json ('runs' is not a list)"),
    (_incomplete, "{path}: not a complete scaling benchmark results.json (KeyError: 'images_per_s'); nothing was "
                  "written"),
], ids=["missing", "not-utf8", "not-json", "deep", "no-schema", "other-schema", "section-type", "incomplete-run"])
def test_render_only_refuses_what_is_not_a_sweeps_results(capsys, tmp_path, plant, message):
    path = tmp_path / "results.json"
    plant(path)
    code = main(["bench", "--render-only", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message.format(path=path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["results.json"] if path.exists() else [])  # nothing written


def test_render_only_refuses_a_file_too_large_to_be_a_sweeps(capsys, tmp_path, monkeypatch):
    from yolofuse_scale.bench import sweep

    path = tmp_path / "results.json"
    path.write_text(" " * 2048)
    monkeypatch.setattr(sweep, "MAX_RESULTS_BYTES", 1024)  # the real limit, 64 MiB, scaled down: not read at all
    assert main(["bench", "--render-only", str(path)]) == 1
    assert f"error: {path}: 2048 bytes, more than a sweep's results.json" in capsys.readouterr().err
