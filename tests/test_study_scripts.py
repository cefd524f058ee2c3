"""benchmarks/pretrained_start.py, recipe_ablation.py and step_profile.py: what they read from a training and how
they summarise it (the studies themselves are real trainings, minutes each: not tests)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.pretrained_start import steps_to, summarise, val_curve

OUTPUT = """12:00:01 epoch 1/3 step 1 (1/4) loss 9.1
12:00:02 val epoch 1: mAP50 0.1000 mAP50-95 0.0500 P 0.1 R 0.2 (16 images)
12:00:03 val epoch 2: mAP50 0.5000 mAP50-95 0.2500 P 0.5 R 0.5 (16 images)
12:00:04 val epoch 3: mAP50 0.8000 mAP50-95 0.4000 P 0.8 R 0.7 (16 images)
"""


def test_val_curve_reads_each_validated_epoch_at_its_step():
    curve = val_curve(OUTPUT, steps_per_epoch=4)
    assert [(p["epoch"], p["step"], p["mAP50-95"]) for p in curve] == [(1, 4, 0.05), (2, 8, 0.25), (3, 12, 0.4)]
    assert steps_to(curve, 0.25) == 8 and steps_to(curve, 0.41) is None


def test_summary_measures_both_starts_against_the_scratch_runs_final():
    scratch = {"seed": 0, "final": {"mAP50": 0.8, "mAP50-95": 0.4}, "curve": val_curve(OUTPUT, 4)}
    fast = {"seed": 0, "final": {"mAP50": 0.9, "mAP50-95": 0.45},
            "curve": [{"epoch": 1, "step": 4, "mAP50": 0.7, "mAP50-95": 0.37}]}
    summary = summarise({"scratch": [scratch], "pretrained": [fast]})
    assert summary["scratch"]["steps_to_90pct_of_scratch_final"] == [12]  # 0.36 first reached at epoch 3
    assert summary["pretrained"]["steps_to_90pct_of_scratch_final"] == [4]
    assert summary["pretrained"]["steps_to_90pct_of_own_final"] == [None]  # 0.405 never reached on its curve
    assert summary["scratch"]["steps_to_90pct_of_own_final"] == [12]
    assert summary["pretrained"]["mAP50-95"]["mean"] == 0.45


def test_recipe_ablation_rows_bring_back_one_earlier_choice_each(tmp_path):
    from benchmarks.recipe_ablation import ablations, summarise
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.config import config_from_args

    table = ablations()
    for name, (flags, _) in table.items():  # each row is a real setting of train.py
        (tmp_path / "d.yaml").touch()
        cfg = config_from_args(build_train_parser().parse_args(["--data", str(tmp_path / "d.yaml"), *flags]))
        partners = name.removeprefix("partners=") if name.startswith("partners=") else "micro_batch" if name == "both" \
            else "pool"
        assert cfg.data.recipe.mosaic_partners == partners, name
        assert (cfg.optim.warmup_min_steps == 0) == ("floor" in name or name == "both")
        assert (cfg.data.recipe.hsv_s == 0 and cfg.data.recipe.hsv_v == 0) == (name == "no HSV")
        assert (cfg.optim.decay_every == "epoch") == (name == "per-epoch decay")
    runs = {"today": [{"seed": 0, "mAP50-95": 0.5}, {"seed": 1, "mAP50-95": 0.7}],
            "no warm-up floor": [{"seed": 0, "mAP50-95": 0.4}, {"seed": 1, "mAP50-95": 0.8}]}
    s = summarise(runs, "mAP50-95")
    assert abs(s["no warm-up floor"]["paired_difference"]["min"] + 0.1) < 1e-12
    assert abs(s["no warm-up floor"]["paired_difference"]["mean"]) < 1e-12


def _inner(n):
    return sum(range(n))


def _outer():
    total = 0
    for _ in range(3):  # a loop, not a comprehension: that would be a caller of its own
        total += _inner(20_000)
    return total


def test_step_profile_reads_a_call_by_its_caller():
    import cProfile
    import pstats
    import time

    from benchmarks.step_profile import call_seconds

    prof = cProfile.Profile(time.process_time)
    prof.runcall(_outer)
    _inner(10)  # a call from elsewhere: not counted
    stats = pstats.Stats(prof)
    seconds, calls = call_seconds(stats, "tests/test_study_scripts.py:_outer", "tests/test_study_scripts.py:_inner")
    assert calls == 3 and seconds >= 0
    assert call_seconds(stats, "tests/test_study_scripts.py:nobody", "tests/test_study_scripts.py:_inner") == (0.0, 0)


def test_step_profile_parts_name_functions_that_exist():
    # A part whose caller or callee was renamed (ours, Ultralytics', torch's, Accelerate's) would read 0 ms
    # silently: every pattern must name a def in the file it names.
    import importlib.util
    import re

    from benchmarks.step_profile import NOT_STEPS, PARTS

    patterns = {p for parts in PARTS.values() for pair in parts.values() for p in pair}
    patterns |= {p for pairs in NOT_STEPS.values() for pair in pairs for p in pair}
    for pattern in sorted(patterns):
        suffix, name = pattern.rsplit(":", 1)
        package, _, rest = suffix.partition("/")
        spec = importlib.util.find_spec(package)
        path = Path(spec.submodule_search_locations[0]) / rest
        assert path.is_file(), pattern
        assert re.search(rf"^\s*def {re.escape(name)}\(", path.read_text(), re.M), pattern


def test_fusion_study_before_after_table_checks_each_fusion_against_the_best_single_modality():
    from benchmarks.fusion_study import before_after

    def row(variant: str, mean: float, spread: float = 0.01) -> dict:
        return {"variant": variant, "mAP50-95": {"mean": mean, "spread": spread}}

    before = [row("rgb", 0.34), row("ir", 0.08), row("data", 0.32), row("late", 0.39)]
    after = [row("rgb", 0.34), row("ir", 0.08), row("data", 0.35), row("late", 0.385), row("mid-align", 0.33)]
    lines = before_after(before, after).splitlines()
    assert lines[0].startswith("| fusion | mAP50-95 before | after | change |")
    assert lines[2] == "| rgb | 0.340 ± 0.005 | 0.340 ± 0.005 | +0.000 |  |  |"
    assert lines[4] == "| data | 0.320 ± 0.005 | 0.350 ± 0.005 | +0.030 | no (-0.020) | yes |"
    assert lines[5] == "| late | 0.390 ± 0.005 | 0.385 ± 0.005 | -0.005 | yes | yes |"
    assert lines[6] == "| mid-align | - | 0.330 ± 0.005 | - |  | no (-0.010) |"


def test_fusion_study_before_after_pairs_rows_by_label_policy():
    """With ``--label-policies`` a study has one row per variant and policy: each is compared with the same
    variant trained on the same labels, and with the best single modality trained on those labels."""
    from benchmarks.fusion_study import before_after

    def row(variant: str, policy: str, mean: float) -> dict:
        return {"variant": variant, "policy": policy, "mAP50-95": {"mean": mean, "spread": 0.0}}

    before = [row("rgb", "rgb", 0.30), row("rgb", "ir", 0.10), row("mid", "rgb", 0.20), row("mid", "ir", 0.25)]
    after = [row("rgb", "rgb", 0.30), row("rgb", "ir", 0.10), row("mid", "rgb", 0.32), row("mid", "ir", 0.26)]
    lines = before_after(before, after).splitlines()
    assert lines[0].startswith("| fusion | trained on | mAP50-95 before | after | change |")
    assert lines[1].count("---") == 7
    assert lines[4] == "| mid | rgb labels | 0.200 ± 0.000 | 0.320 ± 0.000 | +0.120 | no (-0.100) | yes |"
    assert lines[5] == "| mid | ir labels | 0.250 ± 0.000 | 0.260 ± 0.000 | +0.010 | yes | yes |"
