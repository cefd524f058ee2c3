"""Bad input to ``train --engine ray`` and to ``yolofuse-scale tune``: one ``error: ...`` message (the sweep file's
line where there is one), exit code 1 (2 for a bad flag value), no traceback, and nothing started: every check
here runs in the driver before Ray does (in process, so none of these tests starts Ray). ``KINDS`` counts the
kinds this file adds.
"""

from __future__ import annotations

import pytest

from tests.bad_input_helpers import assert_clean_error, assert_user_error, run_cli

SMALL = ["--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--epochs", "2", "--workers", "0"]


def _ray_train(*flags: str, env: dict | None = None):
    """In process: parse ``train`` flags and make every refusal a Ray launch makes before Ray starts."""
    def run():
        from yolofuse_scale.cli import build_train_parser
        from yolofuse_scale.cluster.driver import prepare
        from yolofuse_scale.cluster.settings import ray_settings
        from yolofuse_scale.config import config_from_args

        args = build_train_parser().parse_args(list(flags))
        prepare(config_from_args(args), ray_settings(args))
    return run


@pytest.mark.parametrize("flags, needles", [
    (["--ray-workers", "2-4"], ["--ray-workers 2-4 is an elastic range", "pass --global-batch-size G",
                                "G = 48 (or a multiple of it)"]),
    (["--ray-workers", "2-4", "--global-batch-size", "16"],
     ["--global-batch-size 16 with --ray-workers 2-4: not a multiple of --batch-size 4 x 3 worker(s)", "use 48"]),
    (["--ray-workers", "1-2", "--global-batch-size", "8", "--strategy", "zero3"],
     ["ZeRO-3 checkpoints resume at the world size that wrote them only", "give a fixed --ray-workers N"]),
    (["--save-on-each-node"], ["--save-on-each-node with --engine ray", "every node must reach"]),
], ids=["elastic-without-global-batch", "elastic-global-batch-misfit", "elastic-zero3", "ray-node-local-storage"])
def test_ray_launch_refusals(flags, needles, tmp_path, capsys):
    assert_user_error(_ray_train(*SMALL, "--engine", "ray", "--output-dir", str(tmp_path / "run"), *flags), *needles,
                      capsys=capsys)


def test_elastic_zero2_is_accepted_with_a_note(tmp_path):
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.cluster.driver import prepare
    from yolofuse_scale.cluster.settings import ray_settings
    from yolofuse_scale.config import config_from_args

    args = build_train_parser().parse_args([*SMALL, "--engine", "ray", "--ray-workers", "1-2", "--strategy", "zero2",
                                            "--global-batch-size", "8", "--output-dir", str(tmp_path / "run")])
    cfg, notes = prepare(config_from_args(args), ray_settings(args))
    assert notes and "re-partitions ZeRO-2's whole optimizer state" in notes[0]
    assert ray_settings(args).num_workers == (1, 2) and cfg.checkpoint.output_dir == str(tmp_path / "run")


def test_ray_engine_under_a_launcher_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert_user_error(_ray_train(*SMALL, "--engine", "ray", "--output-dir", str(tmp_path / "run")),
                      "--engine ray starts its own Ray Train workers", "not under torchrun", capsys=capsys)


def test_overwrite_of_a_ray_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert_user_error(_ray_train(*SMALL, "--engine", "ray", "--overwrite", "--output-dir", str(run)),
                      f"{run} holds a Ray Train run", "write to a new --output-dir", capsys=capsys)


def test_ray_flags_without_the_ray_engine_are_refused(tmp_path, capsys):
    from yolofuse_scale.cli import build_train_parser, run_train

    args = build_train_parser().parse_args([*SMALL, "--ray-workers", "2", "--output-dir", str(tmp_path / "run")])
    assert_user_error(lambda: run_train(args), "--ray-workers without --engine ray", capsys=capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "3-1", "two"])
def test_a_bad_worker_count_is_a_usage_error(value, tmp_path):
    proc = run_cli("train", *SMALL, "--engine", "ray", "--ray-workers", value, "--output-dir", str(tmp_path / "r"))
    out = assert_clean_error(proc, "--ray-workers", "give a worker count N or an elastic range MIN-MAX"
                             if value == "two" else "MIN <= MAX")
    assert proc.returncode == 2 and out.count("error:") == 1
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ sweep files
def _sweep(text: str, tmp_path, *flags: str):
    """In process: read ``text`` as a sweep file over the base flags (what ``tune`` does before Ray starts)."""
    path = tmp_path / "sweep.yaml"
    path.write_text(text)

    def run():
        from yolofuse_scale.cli import build_train_parser
        from yolofuse_scale.cluster.space import read_sweep
        from yolofuse_scale.config import config_from_args

        read_sweep(str(path), config_from_args(build_train_parser().parse_args([*SMALL, *flags])))
    return run


SWEEP_ERRORS = {
    "unknown-top-key": ("space:\n  lr: {grid: [0.01]}\nschedular: asha\n",
                        [":3: unknown key 'schedular' (did you mean 'scheduler'?)"]),
    "no-space": ("metric: mAP50\n", ["space: give the settings to sweep"]),
    "unknown-setting": ("space:\n  lrr: {grid: [0.01]}\n", [":2: unknown setting lrr (did you mean 'lr'?)"]),
    "unknown-section-key": ("space:\n  optim.lrr: {grid: [0.01]}\n", [":2: unknown setting optim.lrr"]),
    "unknown-distribution": ("space:\n  lr: {logunifrom: [0.001, 0.1]}\n",
                             [":2: lr: unknown distribution 'logunifrom' (did you mean 'loguniform'?)"]),
    "not-a-distribution": ("space:\n  lr: 0.01\n", [":2: lr: give one distribution as a mapping"]),
    "grid-value-refused": ("metric: mAP50\nspace:\n  lr: {grid: [0.01, -1]}\n",
                           [":3: lr: grid value -1: --lr must be > 0, got -1"]),
    "choice-value-wrong-type": ("space:\n  fusion: {choice: [mid, 3]}\n", [":2: fusion: choice value 3"]),
    "empty-grid": ("space:\n  seed: {grid: []}\n", [":2: seed: grid takes a non-empty list of values"]),
    "uniform-integer-setting": ("space:\n  imgsz: {uniform: [64, 128]}\n",
                                [":2: imgsz: uniform draws real numbers but imgsz takes an integer",
                                 "grid or choice"]),
    "uniform-bound-refused": ("space:\n  momentum: {uniform: [0.8, 1.0]}\n",
                              [":2: momentum: uniform bound 1.0: --momentum must be in [0, 1)"]),
    "range-reversed": ("space:\n  lr: {uniform: [0.1, 0.01]}\n", [":2: lr: uniform takes [low, high] with low < high"]),
    "loguniform-from-zero": ("space:\n  lr: {loguniform: [0, 0.1]}\n", [":2: lr: loguniform needs low > 0"]),
    "fixed-setting": ("space:\n  output_dir: {grid: [a, b]}\n", [":2: output_dir is decided by the experiment"]),
    "bundle-not-mappings": ("space:\n  recipe: {grid: [{mosaic: 0.0}, 3]}\n",
                            [":2: unknown setting recipe", "a bundle of settings takes a list of mappings"]),
    "bundle-unknown-setting": ("space:\n  recipe: {grid: [{}, {mosiac: 0.0}]}\n",
                               [":2: recipe: value 2: unknown setting mosiac (did you mean 'mosaic'?)"]),
    "swept-twice": ("space:\n  lr: {grid: [0.01]}\n  recipe: {grid: [{lr: 0.02}]}\n",
                    [":3: recipe sets lr, which lr sweeps too"]),
    "unknown-metric": ("metric: map50\nspace:\n  lr: {grid: [0.01]}\n", [":1: metric 'map50'", "mAP50-95"]),
    "unknown-scheduler": ("scheduler: hyperband\nspace:\n  lr: {grid: [0.01]}\n",
                          [":1: scheduler 'hyperband'", "asha, median, none"]),
    "grace-period-past-epochs": ("scheduler: {type: asha, grace_period: 5}\nspace:\n  lr: {grid: [0.01]}\n",
                                 [":1: scheduler.grace_period 5 is more than --epochs 2"]),
    "reduction-factor-one": ("scheduler: {type: asha, reduction_factor: 1}\nspace:\n  lr: {grid: [0.01]}\n",
                             [":1: scheduler.reduction_factor must be a number > 1"]),
    "trial-workers-zero": ("trial:\n  workers: 0\nspace:\n  lr: {grid: [0.01]}\n",
                           [":2: trial.workers must be an integer >= 1, got 0"]),
    "trial-unknown-key": ("trial:\n  gpus: 1\nspace:\n  lr: {grid: [0.01]}\n",
                          [":2: trial.gpus: unknown (trial takes workers, cpus_per_worker, gpus_per_worker"]),
    "too-many-trials": ("num_samples: 2000\nspace:\n  seed: {grid: [0, 1, 2, 3, 4, 5]}\n",
                        ["6 grid point(s) x num_samples 2000 = 12000 trials; at most 10000"]),
    "not-yaml": ("space:\n  lr: {grid: [0.01]\n", ["not a valid sweep YAML"]),
    "not-a-mapping": ("- lr\n- seed\n", ["expected a mapping with metric, scheduler"]),
}


@pytest.mark.parametrize("kind", list(SWEEP_ERRORS))
def test_sweep_file_refusals_name_the_line(kind, tmp_path, capsys):
    text, needles = SWEEP_ERRORS[kind]
    err = assert_user_error(_sweep(text, tmp_path), *needles, capsys=capsys)
    assert str(tmp_path / "sweep.yaml") in err


def test_a_scheduler_needs_per_epoch_validation(tmp_path, capsys):
    assert_user_error(_sweep("space:\n  lr: {grid: [0.01, 0.02]}\n", tmp_path, "--no-val"),
                      "sweep.yaml: scheduler asha (the default) compares trials epoch by epoch, but --no-val",
                      "scheduler: none",
                      capsys=capsys)
    _sweep("scheduler: none\nspace:\n  lr: {grid: [0.01, 0.02]}\n", tmp_path, "--no-val")()  # accepted


def test_a_huge_sweep_file_is_refused_unread(tmp_path, capsys):
    from yolofuse_scale.cluster.space import MAX_BYTES

    path = tmp_path / "sweep.yaml"
    path.write_text("# " + "x" * MAX_BYTES + "\nspace:\n  lr: {grid: [0.01]}\n")

    def run():
        from yolofuse_scale.cluster.space import read_sweep
        from yolofuse_scale.config import RunConfig

        read_sweep(str(path), RunConfig())
    assert_user_error(run, f"--space {path}:", "a sweep file is at most", capsys=capsys)


def test_a_good_sweep_file_reads_into_the_trials(tmp_path):
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.cluster.space import apply_overrides, read_sweep
    from yolofuse_scale.config import RunConfig, config_from_args

    path = tmp_path / "sweep.yaml"
    path.write_text("metric: val_loss\nscheduler: {type: median, grace_period: 1}\nnum_samples: 3\nseed: 7\n"
                    "trial: {workers: 2, cpus_per_worker: 2}\nspace:\n  optim.lr: {loguniform: [1.0e-3, 0.1]}\n"
                    "  fusion: {choice: [early, mid]}\n  seed: {grid: [0, 1]}\n"
                    "  recipe: {grid: [{}, {mosaic: 0.0, hsv_h: 0.0}]}\n")
    base = config_from_args(build_train_parser().parse_args(SMALL))
    spec = read_sweep(str(path), base)
    assert (spec.metric, spec.mode, spec.scheduler.kind, spec.trials) == ("val_loss", "min", "median", 12)
    assert (spec.workers, spec.cpus_per_worker, spec.seed) == (2, 2.0, 7)
    assert [d.name for d in spec.dimensions] == ["lr", "fusion", "seed", "recipe"]
    values = apply_overrides(base.to_dict(), {"lr": 0.05, "fusion": "early", "seed": 1,
                                              "recipe": {"mosaic": 0.0, "hsv_h": 0.0}})
    cfg = RunConfig.from_dict(values)
    assert (cfg.optim.lr, cfg.model.fusion, cfg.train.seed, cfg.data.recipe.mosaic, cfg.data.recipe.hsv_h) == \
        (0.05, "early", 1, 0.0, 0.0)


def test_tune_command_refusals_before_ray_starts(tmp_path):
    """Through the command: a bad sweep file, --resume, and a folder that holds something else."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("space:\n  lr: {grid: [0.01, bad]}\n")
    proc = run_cli("tune", "--space", str(sweep), *SMALL, "--output-dir", str(tmp_path / "exp"))
    assert_clean_error(proc, f"error: {sweep}:2: lr: grid value 'bad'")
    sweep.write_text("space:\n  lr: {grid: [0.01, 0.02]}\n")
    proc = run_cli("tune", "--space", str(sweep), *SMALL, "--resume", "auto", "--output-dir", str(tmp_path / "exp"))
    assert_clean_error(proc, "--resume with tune: each trial's run folder is the experiment's")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "notes.txt").write_text("mine")
    proc = run_cli("tune", "--space", str(sweep), *SMALL, "--output-dir", str(tmp_path / "exp"))
    assert_clean_error(proc, f"--output-dir {tmp_path / 'exp'}: not empty and not a sweep's folder")
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["notes.txt"]


def test_a_changed_sweep_is_not_continued_in_its_folder(tmp_path, capsys):
    import json

    from yolofuse_scale.cluster.space import read_sweep
    from yolofuse_scale.cluster.tune import SWEEP_FILE, _check_resume, _sweep_record
    from yolofuse_scale.config import RunConfig

    path = tmp_path / "sweep.yaml"
    path.write_text("space:\n  lr: {grid: [0.01, 0.02]}\n")
    record = _sweep_record(read_sweep(str(path), RunConfig()), {"optim": {"lr": 0.01}})
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / SWEEP_FILE).write_text(json.dumps(record))
    assert _check_resume(exp, record, can_restore=True) is True
    changed = {**record, "space": record["space"].replace("0.02", "0.03")}
    assert_user_error(lambda: _check_resume(exp, changed, can_restore=True),
                      f"--output-dir {exp} holds an experiment started with other settings (the sweep file differs",
                      capsys=capsys)


#: the kinds of bad input this file adds (the README's total counts them)
KINDS = ["elastic-without-global-batch", "elastic-global-batch-misfit", "elastic-zero3", "ray-node-local-storage",
         "ray-under-a-launcher", "overwrite-ray-run-folder", "ray-flags-without-engine", "bad-worker-count",
         *SWEEP_ERRORS, "scheduler-with-no-val", "huge-sweep-file", "tune-with-resume", "tune-folder-not-a-sweep",
         "changed-sweep-in-folder"]
