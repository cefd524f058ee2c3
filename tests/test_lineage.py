"""One run per output folder, each step logged once, nothing of a finished run rewritten, and a
re-saved step never missing (engine/checkpoint.py's Checkpointer). The refusals themselves (another
run's folder, another batch, dataset or model) are in the bad-input battery."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import BASE_ARGS, launch


def test_resaving_a_step_never_leaves_it_missing(tmp_path, monkeypatch):
    """An epoch end that is also a --save-every-steps point saves its step twice. Killed between the
    renames of the second save, the first copy must still be there for --resume auto."""
    from accelerate import Accelerator

    from yolofuse_scale.engine import checkpoint as ckpt

    acc = Accelerator(cpu=True)
    acc.prepare(torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
    root = tmp_path / "checkpoints"
    meta = {"model_yaml": {}, "rgb_channels": 3, "ir_channels": 1, "names": {0: "a"}}
    ckpt.save_checkpoint(acc, root, 4, {"step": 4, "epoch": 0}, meta)
    real_replace = os.replace

    def killed_before_publishing(src, dst):
        if Path(src).name == ".tmp_step_4":
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_publishing)
    with pytest.raises(OSError, match="killed"):
        ckpt.save_checkpoint(acc, root, 4, {"step": 4, "epoch": 1}, meta)
    monkeypatch.undo()
    survivor = ckpt.resolve_resume("auto", root)
    assert survivor is not None and json.loads((survivor / "train_state.json").read_text())["epoch"] == 0
    ckpt.save_checkpoint(acc, root, 4, {"step": 4, "epoch": 1}, meta)  # the next save completes and cleans up
    assert sorted(p.name for p in root.iterdir()) == ["step_4"]
    assert json.loads((root / "step_4" / "train_state.json").read_text())["epoch"] == 1


def _forge_other_run(ckpt_dir: Path, run_id: str) -> None:
    """Make a copied checkpoint another run's: its state names ``run_id`` (manifest updated)."""
    import hashlib

    f = ckpt_dir / "train_state.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "run_id": run_id}))
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    manifest["train_state.json"] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_one_lineage_per_folder(tiny_data, tmp_path):
    """Resume from an earlier checkpoint: each step logged once, another run's checkpoint neither
    resumed nor pruned; a finished run relaunched keeps its outputs; --overwrite moves the old run
    aside and the new run keeps its own checkpoint (keep-last used to sort both runs' steps)."""
    out = tmp_path / "run"
    common = ["train.py", "--data", str(tiny_data), *BASE_ARGS, "--epochs", "2", "--save-every-steps", "2",
              "--keep-last", "2", "--output-dir", str(out)]  # 8 steps an epoch
    first = launch("python", 1, [*common, "--max-steps", "3"], out)
    assert [r["step"] for r in first.log] == [1, 2, 3]
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    shutil.copytree(out / "checkpoints" / "step_3", out / "checkpoints" / "step_100")
    _forge_other_run(out / "checkpoints" / "step_100", "someoneelse")
    shutil.copytree(out / "checkpoints" / "step_3", out / "checkpoints" / "step_7")  # this run, a later step

    # Back to step 2: step 3 is trained and logged again, once; step_3 re-saved; step_100 kept; this
    # run's step_3 and step_7 belong to the abandoned timeline: moved aside (--resume auto would take step_7)
    again = launch("python", 1, [*common, "--max-steps", "3", "--resume", str(out / "checkpoints" / "step_2")], out)
    assert "at step 2" in again.output
    assert [r["step"] for r in again.log] == [1, 2, 3]
    assert [r["loss"] for r in again.log] == [r["loss"] for r in first.log]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_100", "step_2", "step_3"]
    (abandoned,) = (out / "replaced").iterdir()
    assert abandoned.name.startswith("abandoned-after-step_2-")
    # step_3: trained again; with it what step 3 wrote (the run stopped there): weights/last.pt, metrics.json
    assert sorted(p.name for p in abandoned.iterdir()) == ["metrics.json", "step_3", "step_7", "weights"]
    assert "moved this run's later checkpoints (step 3, 7)" in again.output
    shutil.rmtree(out / "replaced")

    # Relaunching the finished run: resumes its own newest step (not step_100), trains nothing, rewrites nothing
    metrics = (out / "metrics.json").read_bytes()
    kept = {p: p.stat().st_mtime_ns for p in [*(out / "checkpoints").rglob("*"), *(out / "weights").iterdir()]}
    done = launch("python", 1, [*common, "--max-steps", "3", "--resume", "auto"], out)
    assert f"resumed from {out / 'checkpoints' / 'step_3'} at step 3" in done.output
    assert "nothing left to train at step 3" in done.output
    assert (out / "metrics.json").read_bytes() == metrics
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert [r["step"] for r in done.log] == [1, 2, 3]

    # A new run with --overwrite: the old one moves into replaced/, the new one keeps its checkpoint
    new = launch("python", 1, [*common, "--max-steps", "1", "--keep-last", "1", "--overwrite"], out)
    (moved,) = (out / "replaced").iterdir()
    assert moved.name.startswith(run_id) and f"moved the previous run's outputs to {moved}" in new.output
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["step_100", "step_2", "step_3"]
    assert len((moved / "train_log.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1"]
    assert [r["step"] for r in new.log] == [1]
    assert json.loads((out / "run.json").read_text())["run_id"] != run_id
