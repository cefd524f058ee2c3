"""One run per output folder, each step logged once, nothing of a finished run rewritten, and a
re-saved step never missing (engine/checkpoint/'s Checkpointer). The refusals themselves (another
run's folder, another batch, dataset or model) are in tests/test_bad_input_checkpoints.py."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import BASE_ARGS, launch


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


def folder_tree(out: Path) -> dict[str, str | None]:
    """Every path under ``out``, folders included, with its file's SHA-256 (None: a folder)."""
    import hashlib

    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(out.rglob("*"))}


def _run_at_step_3(tmp_path: Path, distributed_type: str = "NO"):
    """A run folder as a run stopped at step 3 leaves it (checkpoints at steps 2 and 3 written by the real
    save_checkpoint, run.json, config.yaml, train_log.jsonl, weights/last.pt and metrics.json of step 3), and
    (accelerator, prepared model, the run's position, its run_meta): what a resume describes the run by."""
    from accelerate import Accelerator

    from yolofuse_scale.config import RunConfig
    from yolofuse_scale.engine import checkpoint as ckpt
    from yolofuse_scale.engine.course import course_of
    from yolofuse_scale.model.variants import fusion_yaml

    acc = Accelerator(cpu=True)
    net = torch.nn.Linear(2, 2)
    model, _ = acc.prepare(net, torch.optim.SGD(net.parameters(), lr=0.1))
    out = tmp_path / "run"
    position = {"images_per_step": 4, "batch_size": 2, "world_size": 1, "grad_accum": 2, "steps_per_epoch": 4,
                "dataset": {"train_pairs": 16, "paths_sha256": "0123456789abcdef"},
                "model": "--model yolov8t --fusion mid", "course": course_of(RunConfig())}
    meta = json.loads(json.dumps({"model_yaml": fusion_yaml("mid", 2, "t"), "rgb_channels": 3, "ir_channels": 1,
                                  "names": {0: "a", 1: "b"}, "imgsz": 64}))
    for step in (2, 3):
        state = {"step": step, "epoch": 0, "step_in_epoch": step, "best_fitness": -1.0, "ema_updates": None,
                 "world_size": 1, "distributed_type": distributed_type, "metrics": {}, "run_id": "r1", **position}
        ckpt.save_checkpoint(acc, out / "checkpoints", step, state, meta)
    (out / "run.json").write_text('{"run_id": "r1"}\n')
    (out / "config.yaml").write_text("train:\n  epochs: 2\n")
    (out / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)))
    (out / "weights").mkdir()
    torch.save({"model": {}, "step": 3, "metrics": {}}, out / "weights" / "last.pt")
    (out / "metrics.json").write_text(json.dumps({"step": 3}))
    return acc, model, position, meta


def _changed_model(position, meta):
    from yolofuse_scale.model.variants import fusion_yaml

    return position, {**meta, "model_yaml": json.loads(json.dumps(fusion_yaml("early", 2, "t")))}


def _changed_batch(position, meta):
    return {**position, "images_per_step": 8, "batch_size": 4}, meta


def _changed_optimizer(position, meta):
    return {**position, "course": {**position["course"], "optimizer": "adamw"}}, meta


@pytest.mark.parametrize(("change", "saved_by", "needle"), [
    (_changed_model, "NO", "the checkpoint holds --model yolov8t --fusion mid"),
    (None, "FSDP", "a FSDP (sharded DCP files) checkpoint cannot be resumed by a full-state (DDP) run"),
    (_changed_batch, "NO", "images per optimizer step: 4 (batch 2 x 1 process(es) x accumulation 2) when saved"),
    (_changed_optimizer, "NO", "--optimizer: sgd when saved, adamw now"),
], ids=["model", "strategy-layout", "position", "course"])
def test_a_refused_resume_of_an_earlier_step_leaves_the_folder_as_it_was(tmp_path, change, saved_by, needle):
    """--resume checkpoints/step_2 abandons step 3 (its checkpoint, last.pt, metrics.json). Refused (another model,
    a layout this strategy cannot load, another position, another course), the Checkpointer used to have moved
    them into replaced/ and rewritten run.json already, in its constructor, before load() refused: now every
    refusal comes first, and the folder is byte for byte as it was (only run.lock came and went)."""
    from types import SimpleNamespace

    from yolofuse_scale.engine.checkpoint import Checkpointer
    from yolofuse_scale.errors import UserError

    acc, model, position, meta = _run_at_step_3(tmp_path, saved_by)
    out = tmp_path / "run"
    before = folder_tree(out)
    train = SimpleNamespace(resume=str(out / "checkpoints" / "step_2"), overwrite=False, keep_last=0)
    checkpointer = Checkpointer(acc, out, train)
    try:
        with pytest.raises(UserError, match=re.escape(needle)):
            checkpointer.load(model, *(change(position, meta) if change else (position, meta)))
    finally:
        checkpointer.release()
    assert folder_tree(out) == before


def test_an_accepted_resume_of_an_earlier_step_moves_the_later_timeline_aside(tmp_path):
    """The other side of the test above, on the same folder: accepted, the resume moves step 3's files aside."""
    from types import SimpleNamespace

    from yolofuse_scale.engine.checkpoint import Checkpointer

    acc, model, position, meta = _run_at_step_3(tmp_path)
    out = tmp_path / "run"
    checkpointer = Checkpointer(acc, out, SimpleNamespace(resume=str(out / "checkpoints" / "step_2"),
                                                          overwrite=False, keep_last=0))
    try:
        saved, _ = checkpointer.load(model, position, meta)
    finally:
        checkpointer.release()
    assert saved["step"] == 2 and sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2"]
    (aside,) = (out / "replaced").iterdir()
    assert aside.name.startswith("abandoned-after-step_2-")
    assert sorted(p.name for p in aside.iterdir()) == ["metrics.json", "step_3", "weights"]
    assert [p.name for p in (aside / "weights").iterdir()] == ["last.pt"] and not (out / "metrics.json").exists()
    assert any("moved this run's later checkpoints (step 3)" in n for n in checkpointer.folder_notes)
