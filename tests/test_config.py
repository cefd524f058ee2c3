"""The config package derives every flag from its dataclass field: help from the field's docstring, choices and
the check from its ``Literal`` type, the augmentation flags from the one ``AugmentRecipe``; config.yaml has one
key per flag in its section, and files of the layout before the sections (version 1) load into them."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import launch
from yolofuse_scale.cli import build_train_parser
from yolofuse_scale.config import DataConfig, LogConfig, OptimConfig, ParallelConfig, RunConfig, config_from_args
from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.errors import ConfigError


def _setting_actions() -> dict[str, object]:
    return {a.dest: a for a in build_train_parser()._actions if "." in a.dest}


def test_every_flag_has_its_docstring_as_help():
    actions = _setting_actions()
    settings = {f"{section}.{key}" for section, values in RunConfig().to_dict().items() for key in values}
    assert set(actions) == settings  # every setting of every section is a flag
    for dest, action in actions.items():
        text = action.help.rsplit(" (default: ", 1)[0]
        assert len(text) > 15, f"{dest}: no help text ({action.help!r})"
    # the recipe's help lives in data/augment.py, beside the field; a docstring over several lines reads as one
    assert actions["data.hsv_h"].help == "hue augmentation gain (RGB only) (default: 0.015)"
    assert actions["data.aug_scale"].help.startswith("random zoom range, 1 +/- this")
    assert "(mosaic, perspective, mixup, flip: the same geometry for RGB and IR;" in actions["data.augment"].help
    assert "~20-30%% more compute" in actions["parallel.activation_checkpointing"].help  # argparse prints one %


def test_literal_types_are_the_choices_and_the_check():
    actions = _setting_actions()
    assert actions["log.log_with"].choices is None  # several trackers, comma-separated: LogConfig checks each name
    assert actions["parallel.mixed_precision"].choices == ["no", "fp16", "bf16"]
    assert actions["parallel.strategy"].choices[-1] == "zero3_offload"
    assert actions["data.cache"].choices == ["none", "ram", "disk"]
    assert actions["data.imgsz"].choices is None
    with pytest.raises(ConfigError, match="--schedule must be cosine or linear, got 'step'"):
        OptimConfig(schedule="step")
    with pytest.raises(ConfigError, match="--log-with must be one of tensorboard, wandb, mlflow or none"):
        LogConfig(log_with="comet")
    with pytest.raises(ConfigError, match="got 'none,wandb'"):
        LogConfig(log_with="none,wandb")
    assert LogConfig(log_with="mlflow, tensorboard,mlflow").trackers == ("mlflow", "tensorboard")
    ParallelConfig(mixed_precision=None)  # None: the launcher decides


def test_the_recipe_is_held_once_and_keeps_its_flags(tmp_path):
    cfg = config_from_args(build_train_parser().parse_args(["--aug-scale", "0.3", "--mosaic", "0.25",
                                                            "--close-mosaic", "2"]))
    assert isinstance(cfg.data.recipe, AugmentRecipe)
    assert (cfg.data.recipe.scale, cfg.data.recipe.mosaic, cfg.data.recipe.close_mosaic) == (0.3, 0.25, 2)
    keys = set(cfg.to_dict()["data"])
    assert {f.name for f in dataclasses.fields(AugmentRecipe)} - {"scale"} | {"aug_scale"} <= keys
    assert "recipe" not in keys and "scale" not in keys  # config.yaml: one flat key per flag, as before
    cfg.save(tmp_path / "config.yaml")
    again = config_from_args(build_train_parser().parse_args(["--config", str(tmp_path / "config.yaml")]))
    assert again == cfg
    with pytest.raises(ConfigError, match="--aug-scale must be >= 0, got -1"):
        DataConfig(recipe=AugmentRecipe(scale=-1))


def test_a_config_yaml_of_the_earlier_layout_loads(tmp_path):
    """A config.yaml as runs wrote it before the recipe was nested (its data keys, recipe included)."""
    old = tmp_path / "config.yaml"
    old.write_text("data:\n  data: ''\n  imgsz: 64\n  augment: true\n  cache: none\n  mosaic: 0.5\n  aug_scale: 0.2\n"
                   "  hsv_v: 0.1\n  close_mosaic: 1\noptim:\n  lr: 0.002\ntrain:\n  mixed_precision: null\n")
    cfg = config_from_args(build_train_parser().parse_args(["--config", str(old)]))
    assert cfg.data.recipe == AugmentRecipe(mosaic=0.5, scale=0.2, hsv_v=0.1, close_mosaic=1)
    assert cfg.data.imgsz == 64 and cfg.optim.lr == 0.002 and cfg.parallel.mixed_precision is None
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text, needle", [
    ("data:\n  imgsz: 64\n  aug_scale: -1\n", ":3: data.aug_scale: --aug-scale must be >= 0, got -1"),
    ("data:\n  fliplr: 1.5\n", ":2: data.fliplr: --fliplr is a probability in [0, 1], got 1.5"),
    ("train:\n  seed: 1\n  log_with: comet\n", ":3: train.log_with: --log-with must be one of tensorboard"),
    ("data:\n  scale: 0.5\n", ":2: unknown setting data.scale"),
], ids=["recipe-range", "recipe-probability", "literal", "recipe-field-name-is-not-a-key"])
def test_a_bad_setting_in_a_file_names_its_line(text, needle, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config_from_args(build_train_parser().parse_args(["--config", str(path)]))
    assert str(e.value).startswith(str(path)) and needle in str(e.value), str(e.value)


# ------------------------------------------------------------------- sections, versions and the old layout
ASSETS = Path(__file__).parent / "assets"
#: config.yaml as the code before version 2 wrote it (one train section, benchmark switch included), for a tiny
#: run (DATA_YAML and OUTPUT_DIR stand for its paths)
CONFIG_V1 = ASSETS / "config_v1.yaml"


def _old_config(tmp_path: Path, data: str = "", out: str = "runs/x") -> Path:
    path = tmp_path / "old_config.yaml"
    path.write_text(CONFIG_V1.read_text().replace("DATA_YAML", repr(data)).replace("OUTPUT_DIR", out))
    return path


def test_an_old_layout_config_yaml_loads_into_the_sections(tmp_path):
    old = yaml.safe_load(CONFIG_V1.read_text())
    cfg = config_from_args(build_train_parser().parse_args(["--config", str(_old_config(tmp_path))]))
    assert (cfg.train.epochs, cfg.train.seed, cfg.checkpoint.keep_last, cfg.log.log_every) == (2, 5, 2, 1)
    assert cfg.checkpoint.output_dir == "runs/x" and cfg.parallel.mixed_precision is None and cfg.train.val is False
    # every setting keeps its value, in its section now; only the benchmark's switch is gone
    flat = {k: v for section in cfg.to_dict().values() for k, v in section.items()}
    before = {k: v for section in old.values() for k, v in section.items() if k != "benchmark_skip_grad_sync"}
    assert {k: flat[k] for k in before} == {**before, "data": "", "output_dir": "runs/x"}
    # settings added since version 1 (e.g. log.plots, --task, Ultralytics' patience and run folder naming, the IR
    # misregistration augmentation) take their defaults
    defaults = {k: v for section in RunConfig().to_dict().values() for k, v in section.items()}
    assert {k: flat[k] for k in set(flat) - set(before)} == {k: defaults[k] for k in set(flat) - set(before)}
    assert {"patience", "project", "name", "exist_ok", "plots", "task", "ir_shift", "ir_scale",
            "ir_rotate"} <= set(flat) - set(before)
    assert set(cfg.to_dict()["train"]) == {"epochs", "max_steps", "batch_size", "grad_accum", "global_batch_size",
                                           "seed", "val", "patience"}
    # written back in today's layout, it reads back the same
    cfg.save(tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith("version: 2\ndata:\n") and "\ncheckpoint:\n  output_dir: runs/x\n" in text
    assert [k for k in yaml.safe_load(text)] == ["version", "data", "model", "optim", "train", "checkpoint",
                                                 "parallel", "log"]
    assert config_from_args(build_train_parser().parse_args(["--config", str(tmp_path / "config.yaml")])) == cfg


def test_the_benchmark_switch_is_no_setting(tmp_path, capsys):
    from yolofuse_scale.bench import plan, sweep
    from yolofuse_scale.bench.launch import NO_SYNC_MODULE, TRAIN_MODULE, train_command

    assert "skip-grad-sync" not in build_train_parser().format_help()
    RunConfig().save(tmp_path / "config.yaml")
    assert "skip_grad_sync" not in (tmp_path / "config.yaml").read_text()
    with pytest.raises(SystemExit):  # an unknown flag now: argparse's usage error
        build_train_parser().parse_args(["--benchmark-skip-grad-sync"])
    capsys.readouterr()
    # the no-sync baseline runs launch the benchmark's own entry point with the plain train flags
    args = sweep.build_parser().parse_args(["--devices", "1,2", "--no-sync-baseline"])
    nosync = [s for s in plan.plan(args) if s.scaling == "no_sync"]
    assert [(s.label, s.module, s.extra) for s in nosync] == [("no_sync_ddp_n2_b16", NO_SYNC_MODULE, [])]
    assert all(s.module == TRAIN_MODULE for s in plan.plan(args) if s.scaling != "no_sync")
    assert train_command(["--epochs", "1"], module=NO_SYNC_MODULE)[1:] == ["-m", "yolofuse_scale.bench.no_sync",
                                                                           "--epochs", "1"]


def test_help_placeholders_read_as_values():
    usage = " ".join(build_train_parser().format_usage().split())
    for shown in ("--epochs N", "--data FILE", "--lr LR", "--strategy {auto,ddp,fsdp,zero1,zero2,zero3,zero3_offload}",
                  "--output-dir DIR", "--resume auto|DIR", "--config FILE", "--mixed-precision {no,fp16,bf16}"):
        assert shown in usage, shown
    assert not re.search(r"[A-Z]+\.[A-Z_]+", usage), usage  # never the section.key the parser stores it under


@pytest.mark.slow
def test_an_old_run_resumes_with_its_old_layout_config_yaml(tiny_data, tmp_path):
    """A run folder as the code before version 2 left it (config.yaml in the old layout) continues through
    ``--config <run>/config.yaml --resume auto``; the resumed run writes config.yaml in today's layout."""
    out = tmp_path / "run"
    old = _old_config(tmp_path, str(tiny_data), str(out))
    launch("python", 1, ["train.py", "--config", str(old)], out)  # 2 steps of a 32-step epoch: a mid-epoch stop
    shutil.copy(old, out / "config.yaml")
    run = launch("python", 1, ["train.py", "--config", str(out / "config.yaml"), "--resume", "auto",
                               "--max-steps", "3"], out)
    assert "resumed from" in run.output and [r["step"] for r in run.log] == [1, 2, 3]
    assert (out / "config.yaml").read_text().startswith("version: 2\n")
