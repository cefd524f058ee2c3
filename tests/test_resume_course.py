"""What a resume may change of a run's course (engine/course.py) and which weights stay with the timeline it
continues (engine/checkpoint/'s later_outputs): an extended run's lr continues its decay, no warm-up, exactly
the same whether or not the extension was killed on the way; another optimizer, lr or (mid-epoch) seed is refused
before anything loads; weights and metrics.json written after the resume point move aside with their steps.

The training runs are one base run and three continuations of it (8 pairs, batch 4: 2 steps an epoch, 64 px)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import launch
from yolofuse_scale.config import OptimConfig, RunConfig, TrainConfig
from yolofuse_scale.engine.course import continue_course, course_of
from yolofuse_scale.engine.optim import Schedule
from yolofuse_scale.errors import ConfigError

# ------------------------------------------------------------------------------------------ the lr schedule


def _cosine(cfg: OptimConfig, x: float, x0: float, f0: float, end: int) -> float:
    """The rule, written out: from f0 at x0 to lrf at end (epochs), half a cosine."""
    return cfg.lrf + (f0 - cfg.lrf) * (1 + math.cos(math.pi * (x - x0) / (end - x0))) / 2


def test_without_extensions_the_schedule_is_the_one_it_always_was():
    for shape in ("cosine", "linear"):
        cfg = OptimConfig(schedule=shape, lrf=0.02)
        sched = Schedule(cfg, 7, 5, 0.01)
        for step in range(1, 40):
            x = min(step / 7, 5)
            old = (((1 - math.cos(x * math.pi / 5)) / 2) * (cfg.lrf - 1) + 1 if shape == "cosine"
                   else max(1 - x / 5, 0) * (1.0 - cfg.lrf) + cfg.lrf)
            assert sched.decay(step) == old  # bit for bit: runs that never change --epochs are untouched


def test_extending_a_finished_run_keeps_its_final_lr_and_restarts_no_warmup():
    """A 2-epoch run of 4 steps an epoch (warm-up capped at 1 epoch), extended to 5 at its end (step 8): the
    added epochs run at lrf x lr (the decay continues from where it was, which is its end), and the warm-up
    keeps its 4 steps. Re-deriving both from --epochs 5, as before, gave a 16-step warm-up from step 0."""
    cfg = OptimConfig()
    base = Schedule(cfg, 4, 2, 0.01)
    ext = Schedule(cfg, 4, 2, 0.01, ((8, 5),))
    assert ext.warmup_steps == base.warmup_steps == 4 and ext.total_epochs == 5
    assert [ext.decay(s) for s in range(8)] == [base.decay(s) for s in range(8)]
    assert ext.decay(8) == base.decay(8) == pytest.approx(cfg.lrf, rel=1e-12)  # cosine's end, to rounding
    assert [ext.decay(s) for s in range(8, 21)] == pytest.approx([cfg.lrf] * 13, rel=1e-12)
    restarted = Schedule(cfg, 4, 5, 0.01)  # what the extension used to compute
    assert restarted.warmup_steps == 16 and restarted.decay(8) > 10 * ext.decay(8)


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_extending_mid_run_continues_the_decay_from_the_resume_step(shape):
    cfg = OptimConfig(schedule=shape, warmup_epochs=0)
    base = Schedule(cfg, 4, 2, 0.01)
    ext = Schedule(cfg, 4, 2, 0.01, ((5, 4),))  # resumed at step 5 (epoch 1.25) with --epochs 4
    assert ext.decay(5) == base.decay(5)  # the step it starts at keeps its lr
    f0 = base.decay(5)
    for step in range(5, 17):
        x = step / 4
        want = (_cosine(cfg, x, 1.25, f0, 4) if shape == "cosine" else f0 + (cfg.lrf - f0) * (x - 1.25) / 2.75)
        assert ext.decay(step) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert ext.decay(16) == pytest.approx(cfg.lrf, rel=1e-12)
    assert all(ext.decay(s + 1) <= ext.decay(s) for s in range(5, 20))
    # shortened instead (to 3 epochs at step 5): the same rule, the decay reaches lrf at step 12
    short = Schedule(cfg, 4, 2, 0.01, ((5, 3),))
    assert short.decay(5) == f0 and short.decay(12) == pytest.approx(cfg.lrf, rel=1e-12)


def test_extensions_chain_and_hold_per_epoch_decay_within_the_epoch():
    """--decay-every epoch, extended mid-epoch: the rest of that epoch keeps its lr; a second extension
    continues from where the first had got."""
    cfg = OptimConfig(decay_every="epoch", schedule="linear", warmup_epochs=0)
    base = Schedule(cfg, 4, 3, 0.01)
    once = Schedule(cfg, 4, 3, 0.01, ((6, 5),))
    twice = Schedule(cfg, 4, 3, 0.01, ((6, 5), (13, 8)))
    assert [once.decay(s) for s in (4, 5, 6, 7)] == [base.decay(4)] * 4  # epoch 1, before and after step 6
    assert [twice.decay(s) for s in range(14)] == [once.decay(s) for s in range(14)]
    assert twice.decay(13) == once.decay(13) and twice.decay(32) == pytest.approx(cfg.lrf)
    assert twice.decay(16) == pytest.approx(once.decay(12) + (cfg.lrf - once.decay(12)) * 1 / 5, rel=1e-12)


def test_yolo26_loss_weight_continues_after_an_extension():
    from yolofuse_scale.engine.task import DetectionTask
    from yolofuse_scale.model import build_model

    task = DetectionTask(build_model("yolo26t", "data", nc=2, ir_channels=1), epochs=3)
    before = [task.one_to_many_weight(e) for e in range(3)]
    task.extensions = ((2, 10),)  # resumed in epoch 2 (0-based) with --epochs 10
    after = [task.one_to_many_weight(e) for e in range(10)]
    assert after[:3] == before  # the resume epoch keeps its weight (0.1: the 3-epoch run's last)
    assert after[9] == pytest.approx(0.1) and after == pytest.approx([*before[:2], *[0.1] * 8])
    task.extensions = ((1, 10),)  # resumed in epoch 1: from its weight (0.45) linearly to 0.1 at epoch 9
    w = [task.one_to_many_weight(e) for e in range(10)]
    assert w[:2] == before[:2] and w == pytest.approx([0.8, 0.45, *[0.45 - 0.35 * k / 8 for k in range(1, 9)]])
    task.set_epoch(5)
    assert task.criterion.o2m == w[5] and task.criterion.o2o == pytest.approx(1 - w[5])
    from yolofuse_scale.engine.course import describe

    sched = Schedule(OptimConfig(), 2, 3, 0.01, ((2, 10),))  # at step 2 (epoch 2) of a 4-step warm-up
    line = describe(sched, 2, 3, None, task)  # no mosaic drawn
    assert line.startswith(f"--epochs 10 (was 3) from step 2: the lr continues from {sched.lr_at(2):.3g} at step 3 "
                           "(as before the change)") and sched.lr_at(2) == Schedule(OptimConfig(), 2, 3, 0.01).lr_at(2)
    assert line.endswith("cosine per step, the warm-up continues to step 4 (its length is kept); YOLO26 one-to-many "
                         "loss weight 0.45 in epoch 2 to 0.1 in epoch 10"), line


# ------------------------------------------------------------------------------------------ the resume's checks
def _saved(step: int, in_epoch: int, cfg: RunConfig, epoch: int | None = None) -> dict:
    """A checkpoint's train_state.json as Checkpointer.save writes it (2 steps an epoch, 4 images a step, 8 pairs)."""
    return {"step": step, "epoch": step // 2 if epoch is None else epoch, "step_in_epoch": in_epoch,
            "steps_per_epoch": 2, "images_per_step": 4, "dataset": {"train_pairs": 8, "paths_sha256": "x"},
            "course": course_of(cfg)}


def _cfg(**train) -> RunConfig:
    shuffle = train.pop("shuffle", True)
    optim = {k: train.pop(k) for k in list(train) if k in OptimConfig.__dataclass_fields__}
    run = RunConfig(train=TrainConfig(**{"epochs": 2, **train}), optim=OptimConfig(**optim))
    run.data.shuffle = shuffle
    return run


def test_schedule_settings_are_refused_by_name_before_loading():
    saved = _saved(3, 1, _cfg())
    with pytest.raises(ConfigError) as e:
        continue_course(Path("ck"), saved, course_of(_cfg(optimizer="adamw", lr=0.02, warmup_epochs=1.0)))
    msg = str(e.value)
    for needle in ("--resume ck: this launch changes what the run's course depends on (step 3, epoch 2, 1 of its 2",
                   "--optimizer: sgd when saved, adamw now (the saved optimizer state",
                   "--lr: 0.01 when saved, 0.02 now (the peak lr", "--warmup-epochs: 3.0 when saved, 1.0 now",
                   "Resume with the saved settings", "--pretrained <run>/weights/last.pt"):
        assert needle in msg, msg


@pytest.mark.parametrize("change", [{"seed": 5}, {"shuffle": False}], ids=["seed", "no-shuffle"])
def test_data_order_changes_only_at_an_epoch_boundary(change):
    now = course_of(_cfg(**change))
    with pytest.raises(ConfigError, match=r"the run stopped inside epoch 2, whose sample order is a permutation"):
        continue_course(Path("ck"), _saved(3, 1, _cfg()), now)
    done = continue_course(Path("ck"), _saved(4, 0, _cfg()), now)  # at the end of epoch 2
    assert done.course["seed" if "seed" in change else "shuffle"] == next(iter(change.values()))
    assert len(done.notes) == 1 and "from epoch 3 on" in done.notes[0] and done.extended_from is None
    # the step of the epoch's last step, saved before its epoch end was: the epoch's samples are all trained
    assert continue_course(Path("ck"), _saved(4, 2, _cfg(), epoch=1), now).notes


def test_epochs_extend_shorten_or_are_refused():
    saved = _saved(3, 1, _cfg())
    longer = continue_course(Path("ck"), saved, course_of(_cfg(epochs=6)))
    assert longer.course["extensions"] == [[3, 6]] and longer.course["first_epochs"] == 2
    assert longer.extended_from == 2 and longer.course["epochs"] == 6
    # resumed again later with the same --epochs: the record is kept, nothing is added
    again = continue_course(Path("ck"), {**_saved(7, 1, _cfg()), "course": longer.course}, course_of(_cfg(epochs=6)))
    assert again.course["extensions"] == [[3, 6]] and again.extended_from is None and not again.notes
    shorter = continue_course(Path("ck"), {**_saved(7, 1, _cfg()), "course": longer.course},
                              course_of(_cfg(epochs=5)))
    assert shorter.course["extensions"] == [[3, 6], [7, 5]] and shorter.extended_from == 6
    with pytest.raises(ConfigError, match=r"--epochs: 2 when saved, 1 now: the run is already at step 3 \(epoch 2\); "
                                          r"--epochs 1 ends at step 2. Pass --epochs 2 or more"):
        continue_course(Path("ck"), saved, course_of(_cfg(epochs=1)))
    # a 10-epoch run warms up for 9 epochs (capped; the 100-step floor): cut to 5 it would end inside its warm-up
    long_run = _saved(3, 1, _cfg(epochs=10))
    with pytest.raises(ConfigError, match=r"warm-up \(18 steps, set by its first --epochs 10\) would not end before "
                                          r"its new last epoch; pass --epochs 10 or more"):
        continue_course(Path("ck"), long_run, course_of(_cfg(epochs=5)))


def test_close_mosaic_is_accepted_and_old_checkpoints_resume_unchecked():
    cfg = _cfg()
    cfg.data.recipe = type(cfg.data.recipe)(close_mosaic=1)
    done = continue_course(Path("ck"), _saved(3, 1, _cfg()), course_of(cfg))
    assert done.notes == ["--close-mosaic 1 (saved: 10): mosaic is off in the last 1 of 2 epochs from epoch 2 on"]
    old = {k: v for k, v in _saved(3, 1, _cfg()).items() if k != "course"}
    now = course_of(_cfg(optimizer="adamw", epochs=9))
    done = continue_course(Path("ck"), old, now)
    assert done.course == now and "predates recorded schedules" in done.notes[0]


# ------------------------------------------------------------------------------------------ weights of a timeline
def _weights(path: Path, step: int, fitness: float | None) -> None:
    from yolofuse_scale.weights import write_weights

    write_weights(path, {"w": torch.zeros(2)}, {"step": step, "metrics": {} if fitness is None else
                                                {"fitness": fitness}})


def test_later_outputs_are_the_files_of_another_timeline(tmp_path):
    from yolofuse_scale.engine.checkpoint import later_outputs

    w = tmp_path / "weights"
    _weights(w / "last.pt", 4, None)
    _weights(w / "best.pt", 2, 0.25)
    (tmp_path / "metrics.json").write_text(json.dumps({"step": 4}))
    # resuming at step 4 (best 0.25 at step 2): everything is this timeline's
    assert later_outputs(tmp_path, 4, 0.25) == []
    # at step 3: last.pt and metrics.json are later; best.pt (step 2, 0.25) is the one the checkpoint records
    assert [p.name for p, _ in later_outputs(tmp_path, 3, 0.25)] == ["last.pt", "metrics.json"]
    # at step 2, when the checkpoint's best is 0.1: best.pt is another timeline's (its fitness differs)
    moved = later_outputs(tmp_path, 2, 0.1)
    assert [p.name for p, _ in moved] == ["last.pt", "best.pt", "metrics.json"]
    assert "weights/best.pt (step 2, fitness 0.25: not the best 0.1 this checkpoint records)" in moved[1][1]
    # at step 1, before any validation: a best.pt cannot be this timeline's
    assert [p.name for p, _ in later_outputs(tmp_path, 1, -1.0)] == ["last.pt", "best.pt", "metrics.json"]
    # files that record no step (older runs, foreign or damaged files) stay where they are
    (w / "last.pt").write_bytes(b"not a weights file")
    assert [p.name for p, _ in later_outputs(tmp_path, 3, 0.25)] == ["metrics.json"]


# ------------------------------------------------------------------------------------------ real runs
#: 8 pairs, batch 4: 2 steps an epoch; a checkpoint every step, none pruned; mosaic off in the last epoch.
RUN = ["--model", "yolov8t", "--fusion", "mid", "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--no-plots",
       "--save-every-steps", "1", "--keep-last", "0", "--close-mosaic", "1", "--seed", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from yolofuse_scale.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("course_data"), n_train=8, n_val=4, imgsz=64, seed=0)


@pytest.fixture(scope="module")
def base(data, tmp_path_factory) -> Path:
    """--epochs 2 stopped at step 3 (mid-epoch), validated at step 2: best.pt (step 2), last.pt (step 3),
    checkpoints at steps 1-3; a 2-step warm-up (capped at epochs - 1)."""
    out = tmp_path_factory.mktemp("course") / "base"
    launch("python", 1, ["train.py", "--data", str(data), *RUN, "--epochs", "2", "--max-steps", "3",
                         "--output-dir", str(out)], out)
    return out


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to)
    return to


def _lr_loss(out: Path) -> list[tuple[int, float, float]]:
    records = map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
    return [(r["step"], r["lr"], r["loss"]) for r in records]


def _abandoned(out: Path, step: int) -> Path:
    (found,) = (out / "replaced").glob(f"abandoned-after-step_{step}-*")
    return found


@pytest.fixture(scope="module")
def extended(base, data, tmp_path_factory):
    """The base run extended to --epochs 4 from its step-2 checkpoint (--resume PATH: step 3 is abandoned),
    once uninterrupted and once stopped at step 5, its step-5 checkpoint losing its COMPLETE marker (a kill
    while publishing it), and resumed with --resume auto (from step 4). Before the uninterrupted run, best.pt
    is made the abandoned timeline's: written by step 3, with a better fitness than step 2's."""
    root = tmp_path_factory.mktemp("extended")
    whole, part = _copy(base, root / "whole"), _copy(base, root / "part")
    best = torch.load(whole / "weights" / "best.pt", weights_only=True)
    best_fitness_2 = best["metrics"]["fitness"]
    torch.save({**best, "step": 3, "metrics": {**best["metrics"], "fitness": best_fitness_2 + 0.5}},
               whole / "weights" / "best.pt")
    args = ["train.py", "--data", str(data), *RUN, "--epochs", "4", "--no-val"]
    runs = {"whole": launch("python", 1, [*args, "--resume", str(whole / "checkpoints" / "step_2"),
                                          "--output-dir", str(whole)], whole)}
    launch("python", 1, [*args, "--resume", str(part / "checkpoints" / "step_2"), "--max-steps", "5",
                         "--output-dir", str(part)], part)
    (part / "checkpoints" / "step_5" / "COMPLETE").unlink()
    runs["part"] = launch("python", 1, [*args, "--resume", "auto", "--output-dir", str(part)], part)
    return runs, best_fitness_2


@pytest.mark.slow
def test_an_extended_run_continues_its_lr_without_warmup_to_lrf(base, extended):
    """Item 1 of issue 22: --epochs 2 -> 4 at step 2. The lr of step 3 is the one the 2-epoch run gave it (no
    jump), it only decreases from there (no warm-up: re-derived from --epochs 4 it lasted 6 steps), and follows
    the stated rule, half a cosine from there to lrf x lr at the end of epoch 4."""
    runs, _ = extended
    before, after = _lr_loss(base), _lr_loss(runs["whole"].out)
    assert [s for s, _, _ in after] == list(range(1, 9))
    assert after[:2] == before[:2] and after[2][1] == before[2][1]  # step 3: the lr of the run before the change
    lrs = [lr for _, lr, _ in after]
    assert all(b <= a for a, b in zip(lrs[2:], lrs[3:])), lrs
    cfg = OptimConfig()
    f0 = (1 + cfg.lrf) / 2  # the 2-epoch cosine at epoch 1
    want = [cfg.lr * _cosine(cfg, (step - 1) / 2, 1.0, f0, 4) for step in range(3, 9)]
    assert lrs[2:] == pytest.approx(want, rel=1e-9)
    assert ("--epochs 4 (was 2) from step 2: the lr continues from 0.00505 at step 3 (as before the change) to "
            "0.0001 (lrf x lr) at step 8, cosine per step, no warm-up; mosaic in epochs 2-3, off in the last 1"
            in runs["whole"].output)


@pytest.mark.slow
def test_an_extension_killed_and_resumed_equals_it_uninterrupted(extended):
    """The schedule is a function of the step and the recorded extension: resumed from step 4 (a kill lost step
    5's checkpoint) with the same --epochs 4, every step's lr and loss equal the uninterrupted extension's
    (augmentation on, mosaic returning in epoch 2-3 and closing in epoch 4), bit for bit."""
    runs, _ = extended
    assert "resumed from" in runs["part"].output and "at step 4" in runs["part"].output
    assert "lr schedule: warm-up 2 steps, cosine decay per step to 0.0001 (lrf x lr) at step 8 (extended at step 2)" \
        in runs["part"].output
    assert _lr_loss(runs["part"].out) == _lr_loss(runs["whole"].out)


def _consistent(out: Path) -> dict:
    """metrics.json names best.pt exactly when it exists, with the fitness that file was saved with."""
    metrics = json.loads((out / "metrics.json").read_text())
    best = out / "weights" / "best.pt"
    assert metrics["best_weights"] == (str(best) if best.exists() else None)
    if best.exists():
        payload = torch.load(best, weights_only=True)
        assert metrics["best_fitness"] == payload["metrics"]["fitness"] and payload["step"] <= metrics["step"]
    else:
        assert metrics["best_fitness"] is None
    return metrics


@pytest.mark.slow
def test_resuming_an_earlier_step_moves_the_later_weights_aside(extended):
    """Item 3: --resume checkpoints/step_2 abandons step 3 and what it wrote: last.pt, metrics.json, and
    best.pt (written by step 3, better than step 2's). Step 2's best fitness then names no file of this
    timeline: it restarts, and the final validation writes best.pt; metrics.json names it with its fitness."""
    runs, best_fitness_2 = extended
    out = runs["whole"].out
    aside = _abandoned(out, 2)
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*") if p.parent.name != "step_3") == [
        "metrics.json", "step_3", "weights", "weights/best.pt", "weights/last.pt"]
    moved_best = torch.load(aside / "weights" / "best.pt", weights_only=True)
    assert moved_best["step"] == 3 and moved_best["metrics"]["fitness"] == best_fitness_2 + 0.5
    assert "moved weights/last.pt (step 3), weights/best.pt (step 3), metrics.json (step 3)" in runs["whole"].output
    assert f"best fitness {best_fitness_2:.4g} (recorded at step 2) has no weights/best.pt" in runs["whole"].output
    metrics = _consistent(out)
    assert metrics["step"] == 8 and torch.load(out / "weights" / "best.pt", weights_only=True)["step"] == 8


@pytest.mark.slow
def test_resume_auto_past_a_lost_checkpoint_moves_the_later_weights_aside(extended):
    """Item 3, --resume auto: step 5's checkpoint lost its COMPLETE marker, so the run resumes at step 4
    while weights/last.pt and metrics.json were written by step 5: they move aside with that timeline."""
    runs, _ = extended
    out = runs["part"].out
    aside = _abandoned(out, 4)
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*")) == ["metrics.json", "weights",
                                                                           "weights/last.pt"]
    assert torch.load(aside / "weights" / "last.pt", weights_only=True)["step"] == 5
    assert json.loads((aside / "metrics.json").read_text())["step"] == 5
    assert _consistent(out)["step"] == 8


@pytest.mark.slow
@pytest.mark.parametrize(("change", "needles"), [
    (["--seed", "2"], ["--seed: 1 when saved, 2 now: the run stopped inside epoch 2, whose sample order is a "
                       "permutation drawn from (seed, epoch)", "of the 4 samples it trained would be trained twice "
                       "and as many others skipped", "change it at an epoch boundary"]),
    (["--optimizer", "adamw"], ["--optimizer: sgd when saved, adamw now (the saved optimizer state (SGD momentum or "
                                "AdamW moments) cannot be loaded into another optimizer)"]),
], ids=["mid-epoch-seed", "optimizer"])
def test_a_mid_epoch_seed_or_another_optimizer_is_refused_before_loading(base, data, tmp_path, change, needles):
    """Items 2 and 4: resuming step 3 (inside epoch 2) with another --seed was accepted (the rest of the epoch
    from another permutation: samples trained twice, others never), with --optimizer adamw it ended in torch's
    KeyError traceback. Now one clean message each, and the run folder is left as it was."""
    from tests.bad_input_helpers import _snapshot, assert_clean_error, run_cli

    out = _copy(base, tmp_path / "run")
    before = _snapshot(out)
    proc = run_cli("train.py", "--data", str(data), *RUN, "--epochs", "2", *change,
                   "--resume", str(out / "checkpoints" / "step_3"), "--output-dir", str(out))
    assert_clean_error(proc, "this launch changes what the run's course depends on (step 3, epoch 2, 1 of its 2 "
                       "steps done); refused before anything is loaded", *needles, "Resume with the saved settings")
    assert _snapshot(out) == before


@pytest.mark.slow
def test_a_refused_resume_of_an_earlier_step_leaves_the_run_folder_as_it_was(base, data, tmp_path):
    """--resume checkpoints/step_1 abandons steps 2 and 3 (their checkpoints, last.pt, best.pt, metrics.json).
    With another --optimizer it is refused; it used to move all of them into replaced/ (and rewrite run.json)
    first. Now every path of the folder and every byte of its files is as it was."""
    from tests.bad_input_helpers import assert_clean_error, run_cli
    from tests.test_lineage import folder_tree

    out = _copy(base, tmp_path / "run")
    before = folder_tree(out)
    proc = run_cli("train.py", "--data", str(data), *RUN, "--epochs", "2", "--optimizer", "adamw",
                   "--resume", str(out / "checkpoints" / "step_1"), "--output-dir", str(out))
    assert_clean_error(proc, f"--resume {out / 'checkpoints' / 'step_1'}: this launch changes what the run's course",
                       "--optimizer: sgd when saved, adamw now")
    assert folder_tree(out) == before
