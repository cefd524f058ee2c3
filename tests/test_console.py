"""The console (engine/console.py), the guard rails for small runs (engine/guards.py), the small-set recipe
(configs/small_data.yaml) and what real runs print: progress lines without carriage returns when redirected,
summaries, none of the third-party notices that are noise."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from yolofuse_scale.config import OptimConfig
from yolofuse_scale.data.sample import Sample
from yolofuse_scale.engine import guards
from yolofuse_scale.engine.console import Console, iterate, silence
from yolofuse_scale.engine.optim import Schedule

NAMES = ("box", "cls", "dfl")


class Clock:
    """A clock the test moves: each step takes ``dt`` seconds."""

    def __init__(self, dt: float = 0.5):
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        return self.t


def _record(step: int, epoch: int, loss: float) -> dict:
    return {"step": step, "epoch": epoch, "loss": loss, "box": loss / 2, "cls": loss / 4, "dfl": loss / 4,
            "loss_backprop": 64 * loss, "lr": 0.01 / step, "images_per_s": 8.0, "step_time_s": 0.5}


def _train(console: Console, clock: Clock, epochs: int, steps: int, metrics=None) -> list[dict]:
    """Drive ``console`` as the trainer does: start, one record per step, end; return each epoch's values."""
    values, step = [], 0
    for epoch in range(epochs):
        console.start_epoch(epoch, epochs, steps, 0, 4, NAMES, -1.0)
        for _ in range(steps):
            step += 1
            clock.t += clock.dt
            console.step(_record(step, epoch, float(step)))
        values.append(console.end_epoch(metrics[epoch] if metrics else None))
    return values


def _metrics(fitness: float) -> dict:
    return {"precision": 0.5, "recall": 0.25, "mAP50": 2 * fitness, "mAP50-95": fitness, "fitness": fitness}


def test_redirected_output_is_plain_lines_at_quarters_with_epoch_summaries():
    """Not a terminal, --log-every 0: the launch's first step and each quarter of an epoch, then a summary line per
    epoch (its mean losses, time, best so far, ETA) and never a carriage return. Before: one line every 10 steps
    (none at all in an 8-step epoch but the first step's) and no summary."""
    lines: list[str] = []
    clock = Clock()
    console = Console(lines.append, torch.device("cpu"), every=0, terminal=False, clock=clock)
    values = _train(console, clock, epochs=2, steps=8, metrics=[_metrics(0.2), _metrics(0.1)])
    steps = [int(m[1]) for line in lines if (m := re.match(r"epoch \d+/2 step (\d+) ", line))]
    assert steps == [1, 2, 4, 6, 10, 12, 14]
    first = next(line for line in lines if " step 1 " in line)
    assert "loss 1.000 (box 0.500 cls 0.250 dfl 0.250) lr 1.00e-02 8.0 img/s rss " in first and " ETA 0:00:04" in first
    summaries = [line for line in lines if " done in " in line]
    assert summaries[0].startswith("epoch 1/2 done in 0:00:04 (8 steps): loss 4.500 (box 2.250 cls 1.125 dfl 1.125)")
    assert "best mAP50-95 0.2000 (epoch 1); ETA 0:00:04" in summaries[0]
    assert summaries[1].startswith("epoch 2/2 done in 0:00:04 (8 steps): loss 12.500")  # the mean of steps 9..16
    assert "best mAP50-95 0.2000 (epoch 1)" in summaries[1] and "ETA" not in summaries[1]
    assert not any("\r" in line for line in lines)
    assert values[1] == {"train/loss": 12.5, "train/box_loss": 6.25, "train/cls_loss": 3.125, "train/dfl_loss": 3.125,
                         "lr": 0.01 / 16, "train/images_per_s": 8.0, "time/epoch_s": 4.0, "metrics/precision": 0.5,
                         "metrics/recall": 0.25, "metrics/mAP50": 0.2, "metrics/mAP50-95": 0.1}
    done = console.done_line(16, Path("/runs/x"), best_weights=True)
    assert done == ("done: step 16 (2 epochs in 0:00:08); best epoch 1 (mAP50-95 0.2000): /runs/x/weights/best.pt; "
                    "weights in /runs/x/weights, metrics in /runs/x/metrics.json")


def test_log_every_and_the_time_floor():
    """--log-every N: every N optimizer steps (the run's step count, as before); with 0 a long epoch still gets a
    line at least every 5 minutes, and an epoch of one step only its summary."""
    lines: list[str] = []
    clock = Clock()
    console = Console(lines.append, torch.device("cpu"), every=3, terminal=False, clock=clock)
    _train(console, clock, epochs=2, steps=8)
    assert [int(m[1]) for line in lines if (m := re.match(r"epoch \d/2 step (\d+) ", line))] == [1, 3, 6, 9, 12, 15]

    lines.clear()
    slow = Clock(dt=100.0)  # 100 s a step: quarters of 400 steps are 100 steps apart, the floor is every 300 s
    console = Console(lines.append, torch.device("cpu"), every=0, terminal=False, clock=slow)
    console.start_epoch(0, 1, 400, 0, 4, NAMES, -1.0)
    for step in range(1, 21):
        slow.t += slow.dt
        console.step(_record(step, 0, 1.0))
    assert [int(m[1]) for line in lines if (m := re.match(r"epoch 1/1 step (\d+) ", line))] == [1, 4, 7, 10, 13, 16, 19]

    lines.clear()
    console = Console(lines.append, torch.device("cpu"), every=0, terminal=False, clock=Clock())
    console.start_epoch(0, 3, 1, 0, 4, NAMES, -1.0)
    console.step(_record(1, 0, 1.0))
    console.end_epoch(None)
    console.start_epoch(1, 3, 1, 0, 4, NAMES, -1.0)
    console.step(_record(2, 1, 1.0))
    console.end_epoch(None)
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/3 step 1", "epoch 1/3 done in 0:00:00",
                                                       "epoch 2/3 done in 0:00:00"]


def test_a_terminal_gets_a_live_bar_and_the_summary(capsys):
    """On a terminal each step redraws one bar (tqdm, on stdout) instead of printing lines; the bar goes at the
    epoch's end and the summary line stays. A validation loop gets a bar only there."""
    lines: list[str] = []
    clock = Clock()
    console = Console(lines.append, torch.device("cpu"), every=0, terminal=True, clock=clock)
    console.start_epoch(0, 1, 4, 0, 4, NAMES, -1.0)
    for step in range(1, 5):
        clock.t += clock.dt
        console.step(_record(step, 0, float(step)))
    assert console.bar.n == 4
    assert console.bar.desc.startswith("epoch 1/1 loss 2.5 box 1.25 cls 0.625 dfl 0.625 8.0 img/s rss ")
    console.end_epoch(None)
    drawn = capsys.readouterr().out
    assert "\r" in drawn and "epoch 1/1" in drawn  # tqdm redraws at most every 0.1 s: these steps took no time
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/1 done in 0:00:02"]
    assert console.bar is None
    loader = [1, 2]
    assert iterate(loader, "val", enabled=True) is loader  # pytest's stdout is no terminal: no bar, the loader as is


def test_silence_drops_only_the_named_messages(caplog):
    silence("yolofuse_test.noisy", "You are using ZeRO with an untested optimizer")
    logger = __import__("logging").getLogger("yolofuse_test.noisy")
    with caplog.at_level("WARNING", logger="yolofuse_test.noisy"):
        logger.warning("**** You are using ZeRO with an untested optimizer, proceed with caution *****")
        logger.warning("You are using ZeRO with a tested optimizer")
    assert [r.getMessage() for r in caplog.records] == ["You are using ZeRO with a tested optimizer"]


# ------------------------------------------------------------------------------------------- guard rails
def test_warmup_over_half_the_run_is_warned_with_the_fix():
    """The issue's run: 32 pairs at batch 8 for 20 epochs is 80 steps, of which the defaults (3 epochs, at least
    100 steps, at most epochs - 1) spend 76 warming up."""
    schedule = Schedule(OptimConfig(), steps_per_epoch=4, epochs=20, peak_lr=0.01)
    warning = guards.warmup_warning(schedule)
    assert warning.startswith("the warm-up takes 76 of the run's 80 optimizer steps (95%: --warmup-epochs 3 x 4 "
                              "steps/epoch, at least --warmup-min-steps 100")
    assert "--warmup-epochs 1 --warmup-min-steps 0: 4 steps" in warning
    assert warning.endswith("--config configs/small_data.yaml")
    assert guards.warmup_warning(schedule, step=76) is None  # a resume past the warm-up: nothing left to warn about
    fine = Schedule(OptimConfig(warmup_epochs=1, warmup_min_steps=0), steps_per_epoch=4, epochs=20, peak_lr=0.01)
    assert guards.warmup_warning(fine) is None
    half = Schedule(OptimConfig(warmup_min_steps=40), steps_per_epoch=4, epochs=20, peak_lr=0.01)
    assert half.warmup_steps == 40 and guards.warmup_warning(half) is None  # exactly half: not more than half


def _sample(boxes: list[tuple[float, float]], hw=(480, 640)) -> Sample:
    rows = np.array([[0, 0.5, 0.5, w, h] for w, h in boxes], dtype=np.float32).reshape(-1, 5)
    return Sample(Path("a.jpg"), Path("b.jpg"), None, rows, hw)


def test_boxes_under_the_finest_stride_are_warned_with_the_fix():
    """Box sides are measured after the letterbox (the long side scaled to --imgsz): on 640x480 images a box 1/128
    wide is 5 px at 640 (and 8 px at 1024)."""
    samples = [_sample([(1 / 128, 1 / 16)] * 3 + [(1 / 8, 1 / 8)]), _sample([]),
               _sample([(1 / 64, 1 / 64)], hw=(640, 320))]
    sides = guards.box_sides(samples, 640)
    assert sides.tolist() == [5.0, 5.0, 5.0, 60.0, 5.0]
    warning = guards.small_box_warning(sides, 640, 8)
    assert warning.startswith("80% of the training boxes are narrower than 8 px at --imgsz 640 (median shorter side "
                              "5.0 px), below the 8-px stride of P3")
    assert warning.endswith("raise --imgsz (--imgsz 1024 gives a median of 8 px)")
    assert guards.small_box_warning(guards.box_sides(samples, 1024), 1024, 8) is None  # 8 px: not narrower
    assert guards.small_box_warning(guards.box_sides([_sample([])], 640), 640, 8) is None  # no boxes: nothing to say


def test_the_small_set_recipe_has_no_warmup_warning():
    """configs/small_data.yaml (the demo's recipe) read with --config: the issue's 32 pairs for 20 epochs warm up
    for one epoch of its 20."""
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.config import config_from_args

    cfg = config_from_args(build_train_parser().parse_args(["--config", str(ROOT / guards.SMALL_DATA_CONFIG),
                                                            "--epochs", "20"]))
    assert (cfg.optim.lr, cfg.optim.warmup_epochs, cfg.optim.warmup_min_steps, cfg.train.batch_size) == (0.02, 1, 0, 8)
    schedule = Schedule(cfg.optim, steps_per_epoch=32 // cfg.train.batch_size, epochs=20, peak_lr=cfg.optim.lr)
    assert schedule.warmup_steps == 4 and guards.warmup_warning(schedule) is None


# ----------------------------------------------------------------------------------------- real runs
#: What third-party code printed into every run before, each now silenced at its source (or never imported).
NOISE = ("Setting accelerator to CPU", "untested optimizer", "No CUDA runtime is found", "built successfully",
         "all_gather_into_tensor` is deprecated", "no supported trackers are currently installed")


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--max-steps", "5", "--no-val", "--lr", "0.002", "--strategy", "zero2"),
                                   ("--max-steps", "5", "--no-val", "--lr", "0.002", "--strategy", "fsdp")],
                         ids=["ddp", "zero2", "fsdp"])
def test_a_redirected_run_prints_plain_progress_and_no_noise(train_run, flags):
    """2-process runs on CPU, output captured (not a terminal): no bar (the validation bar's carriage returns glued
    it and the next line together), none of DeepSpeed's, torch's or Accelerate's notices; DDP's gradient-stride
    warning may stay (a real cost, fixed elsewhere). The cached runs of test_ddp.py and test_strategies.py: the DDP
    one trains 12 epochs of 8 steps with validation, so its log has the whole shape."""
    run = train_run("torchrun", 2, 1, *flags)
    out = run.output
    # captured as text, where Python turns each '\r' into a line break: a bar would show as its frames' lines
    assert not re.search(r"\| *\d+/\d+ \[", out), "a progress bar's frame in redirected output"
    assert [n for n in NOISE if n in out] == []
    if flags:
        return
    lines = run.proc.stdout.splitlines()
    for epoch in range(1, 13):
        steps = [int(m[1]) for line in lines if (m := re.search(rf"\d epoch {epoch}/12 step (\d+) ", line))]
        first = 8 * (epoch - 1)
        assert steps == ([1] if epoch == 1 else []) + [first + 2, first + 4, first + 6], (epoch, steps)
        assert sum(f"val epoch {epoch}: mAP50 " in line for line in lines) == 1
        assert sum(f"epoch {epoch}/12 done in " in line for line in lines) == 1
    assert re.search(r"done: step 96 \(12 epochs in \d+:\d\d:\d\d\); best epoch \d+ \(mAP50-95 0\.\d{4}\): ", out)
    assert "warning:" not in out  # a run that is fine (128 px, no warm-up) gets no guard-rail warning
