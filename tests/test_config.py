"""config.py derives every flag from its dataclass field: help from the field's docstring, choices and the
check from its ``Literal`` type, the augmentation flags from the one ``AugmentRecipe``; config.yaml keeps its
layout (one key per flag), so files written before load as they did."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from yolofuse_scale.cli import build_train_parser
from yolofuse_scale.config import DataConfig, OptimConfig, RunConfig, TrainConfig, config_from_args
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
    assert "~20-30%% more compute" in actions["train.activation_checkpointing"].help  # argparse prints one %


def test_literal_types_are_the_choices_and_the_check():
    actions = _setting_actions()
    hints = typing.get_type_hints(TrainConfig)
    assert actions["train.log_with"].choices == list(typing.get_args(hints["log_with"]))
    assert actions["train.mixed_precision"].choices == ["no", "fp16", "bf16"]
    assert actions["train.strategy"].choices[-1] == "zero3_offload"
    assert actions["data.cache"].choices == ["none", "ram", "disk"]
    assert actions["data.imgsz"].choices is None
    with pytest.raises(ConfigError, match="--schedule must be cosine or linear, got 'step'"):
        OptimConfig(schedule="step")
    with pytest.raises(ConfigError, match="--log-with must be one of tensorboard, wandb, mlflow or none"):
        TrainConfig(log_with="comet")
    TrainConfig(mixed_precision=None)  # None: the launcher decides


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
    assert cfg.data.imgsz == 64 and cfg.optim.lr == 0.002 and cfg.train.mixed_precision is None
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
