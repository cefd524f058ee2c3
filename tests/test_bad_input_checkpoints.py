"""Bad checkpoints and resumes: a checkpoint folder with a truncated, missing, extra or edited file, or code in
its model dict, is refused by ``checkpoint-to-weights`` and by ``--resume`` before anything is unpickled; a run
started into another run's folder, resumed with another batch, dataset or model, at another world size, from a
path that is not a checkpoint or from another run is refused with one message and nothing written is changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _snapshot, _write_gadget, assert_clean_error, run_cli
from tests.helpers import BIN, ENV, ROOT, free_port

small_data_template, fresh_data = battery.small_data_template, battery.fresh_data  # the battery's fixtures


def _plant_unlisted(folder: Path, marker: Path) -> str:
    # DeepSpeed's zero_to_fp32 unpickles every `*_model_states.pt` it globs, with weights_only=False
    (folder / "pytorch_model").mkdir(exist_ok=True)
    _write_gadget(folder / "pytorch_model" / "zz_model_states.pt", marker)
    return "pytorch_model/zz_model_states.pt: not in the manifest"


def _edit_file(folder: Path, marker: Path) -> str:
    blob = bytearray((folder / "ema.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "ema.safetensors").write_bytes(bytes(blob))
    return "ema.safetensors: contents differ from the manifest"


def _truncate_file(folder: Path, marker: Path) -> str:
    blob = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return f"model.safetensors: {len(blob) // 2} bytes, the manifest says {len(blob)}"


def _remove_file(folder: Path, marker: Path) -> str:
    (folder / "optimizer.bin").unlink()
    return "optimizer.bin: missing"


def _code_in_run_meta(folder: Path, marker: Path) -> str:
    import json

    from yolofuse_scale.engine.checkpoint.folder import _write_manifest

    meta = json.loads((folder / "run_meta.json").read_text())
    meta["model_yaml"]["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or torch.nn.SiLU()"
    (folder / "run_meta.json").write_text(json.dumps(meta))
    _write_manifest(folder)  # the manifest rewritten to match: only the model dict check is left to refuse it
    return "run_meta.json: model_yaml: activation"


def _garbled_manifest(folder: Path, marker: Path) -> str:
    (folder / "manifest.json").write_text('{"train_state.json": ')
    return "manifest.json: unreadable"


@pytest.mark.parametrize("plant", [_plant_unlisted, _edit_file, _truncate_file, _remove_file, _code_in_run_meta,
                                   _garbled_manifest])
def test_bad_checkpoint_is_refused_by_export_and_resume(small_run, tmp_path, plant):
    from yolofuse_scale.engine.checkpoint import CheckpointError, resolve_resume
    from yolofuse_scale.model import ModelConfigError

    folder = tmp_path / "step_2"
    shutil.copytree(small_run / "checkpoints" / "step_2", folder)
    marker = tmp_path / "marker"
    needle = plant(folder, marker)
    out = tmp_path / "exported.pt"
    assert_clean_error(run_cli("checkpoint-to-weights", str(folder), str(out)), needle)
    assert not out.exists() and not marker.exists()
    if plant is not _code_in_run_meta:  # resume reads Accelerate's files, not the model dict
        with pytest.raises(CheckpointError, match=needle):
            resolve_resume(str(folder), tmp_path)
    else:
        with pytest.raises(ModelConfigError, match=needle):
            from yolofuse_scale.engine.checkpoint import export_weights

            export_weights(folder, out)
    assert not marker.exists()


#: A tiny run every lineage/mismatch case starts from: 8 pairs, batch 2 x accumulation 2 (4 images a
#: step, 2 steps an epoch), stopped at step 3 (checkpoints at steps 2 and 3).
LINEAGE_RUN = ["--model", "yolov8t", "--fusion", "mid", "--imgsz", "64", "--batch-size", "2", "--grad-accum", "2",
               "--epochs", "3", "--workers", "0", "--no-augment", "--no-val", "--seed", "1"]


@pytest.fixture(scope="module")
def lineage_template(small_data_template, tmp_path_factory) -> Path:
    """One finished tiny run (its output folder), written once; tests copy it with ``lineage_run``."""
    out = tmp_path_factory.mktemp("lineage") / "run"
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), *LINEAGE_RUN, "--max-steps", "3",
                   "--output-dir", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


@pytest.fixture
def lineage_run(lineage_template, fresh_data, tmp_path):
    """(a private copy of the template run, its data folder, the args that continue it)."""
    out = tmp_path / "run"
    shutil.copytree(lineage_template, out)
    return out, fresh_data, ["train.py", "--data", str(fresh_data / "data.yaml"), *LINEAGE_RUN, "--max-steps", "5",
                             "--output-dir", str(out)]


def test_checkpoints_fresh_run_into_another_runs_folder_is_refused(lineage_run):
    out, _, args = lineage_run
    before = _snapshot(out)
    proc = run_cli(*args)  # no --resume: a new run
    assert_clean_error(proc, f"--output-dir {out} holds another run", "checkpoints at step 2, 3",
                       "train_log.jsonl with 3 step record(s)", "--resume auto", "--overwrite")
    assert _snapshot(out) == before  # config.yaml included: nothing was written


def _drop_one_training_pair(data: Path) -> None:
    rgb = sorted((data / "images" / "train").iterdir())[0]
    for folder in ("images", "imagesIR", "labels"):
        for f in (data / folder / "train").glob(rgb.stem + ".*"):
            f.unlink()


@pytest.mark.parametrize(("change", "needles"), [
    (["--batch-size", "4"], ["images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved, "
                             "8 (batch 4 x 1 process(es) x accumulation 2) now"]),
    (["--grad-accum", "1"], ["images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved, "
                             "2 (batch 2 x 1 process(es) x accumulation 1) now",
                             "--global-batch-size 4 (or --grad-accum 2)"]),
    ("dataset", ["training set: 8 pairs", "when saved, 7 pairs", "the training set (data.yaml, --on-bad-sample)"]),
    (["--fusion", "late"], ["the checkpoint holds --model yolov8t --fusion mid, this run builds --model yolov8t "
                            "--fusion late", "Resume with the checkpoint's --model/--fusion/--scale"]),
    (["--model", "yolov8n"], ["the checkpoint holds --model yolov8t --fusion mid, this run builds --model yolov8n"]),
], ids=["batch-size", "grad-accum", "dataset", "fusion", "model"])
def test_checkpoints_resume_with_another_batch_dataset_or_model_is_refused(lineage_run, change, needles):
    out, data, args = lineage_run
    if change == "dataset":
        _drop_one_training_pair(data)
        change = []
    before = _snapshot(out)
    proc = run_cli(*args, *change, "--resume", "auto")
    assert_clean_error(proc, f"--resume {out / 'checkpoints' / 'step_3'}", *needles)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_checkpoints_resume_at_another_world_size_without_global_batch_is_refused_on_every_rank(lineage_run):
    """An elastic restart on 2 processes of a run saved by 1 (4 images a step -> 8): every rank refuses
    before loading (the job ends, no rank waits in a collective), naming the change and the flag that
    keeps 4 images a step; nothing is written."""
    out, _, args = lineage_run
    before = _snapshot(out)
    cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}", *args, "--resume", "auto"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    out_text = proc.stdout + proc.stderr
    assert proc.returncode != 0, out_text[-3000:]
    needle = ("images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved, "
              "8 (batch 2 x 2 process(es) x accumulation 2) now")
    assert needle in out_text, out_text[-3000:]  # every rank refused (none left hanging: the job ended)
    assert "pass --global-batch-size 4 (or --grad-accum 1) to keep 4 images per step at 2 process(es)" in out_text
    assert "yolofuse_scale/engine" not in out_text, out_text[-3000:]  # no traceback through our code
    assert _snapshot(out) == before


@pytest.mark.parametrize("where", ["run-folder", "file", "missing", "empty-folder"])
def test_checkpoints_resume_from_a_path_that_is_not_a_checkpoint_is_refused(lineage_run, tmp_path, where):
    out, _, args = lineage_run
    target, needles = {
        "run-folder": (out, ["a folder but not a checkpoint", f"--resume {out / 'checkpoints' / 'step_3'}"]),
        "file": (out / "config.yaml", ["a file, not a checkpoint folder"]),
        "missing": (tmp_path / "nowhere", ["no such checkpoint folder"]),
        "empty-folder": (tmp_path, ["a folder but not a checkpoint", "checkpoints/step_<n>"]),
    }[where]
    before = _snapshot(out)
    assert_clean_error(run_cli(*args, "--resume", str(target)), f"--resume {target}: ", *needles)
    assert _snapshot(out) == before


def test_checkpoints_resume_of_another_run_into_this_runs_folder_is_refused(lineage_run, lineage_template):
    """--resume PATH of run A into the folder of run B (another run id) would mix the two."""
    out, _, args = lineage_run
    other = out.parent / "other"
    shutil.copytree(lineage_template, other)
    (other / "run.json").write_text('{"run_id": "someoneelse"}\n')
    ckpt = other / "checkpoints" / "step_2"
    _rewrite_run_id(ckpt, "someoneelse")
    before = _snapshot(out)
    proc = run_cli(*args, "--resume", str(ckpt))
    assert_clean_error(proc, f"--output-dir {out} holds another run", f"resuming {ckpt} (run someoneelse)")
    assert _snapshot(out) == before


def _rewrite_run_id(ckpt: Path, run_id: str) -> None:
    """Another run's checkpoint: its state names another run id (manifest updated, so it verifies)."""
    import hashlib

    state_file = ckpt / "train_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "run_id": run_id}, indent=1))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["train_state.json"] = {"sha256": hashlib.sha256(state_file.read_bytes()).hexdigest(),
                                    "bytes": state_file.stat().st_size}
    (ckpt / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
