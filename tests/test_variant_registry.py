"""The variant registry (model/variants.py) and what is derived from it: ``--fusion``'s choices, the sizes in
its help and in the docs (model/sizes.py: computed by building the models), and the blocks the strategies
shard and recompute, which the model declares (model/units.py) and engine/strategy/ no longer names."""

from __future__ import annotations

import argparse
import copy
import functools
import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import ROOT
from tests.test_model import _batch
from yolofuse_scale.config import ModelConfig, add_train_arguments
from yolofuse_scale.engine.strategy.activation_checkpoint import apply_activation_checkpointing
from yolofuse_scale.engine.strategy.fsdp import fsdp_plugin, wrap_units
from yolofuse_scale.engine.task import DetectionTask
from yolofuse_scale.errors import ConfigError
from yolofuse_scale.model import build_model, sizes
from yolofuse_scale.model.attention import DEA, DEFA, ROW_LAYERS
from yolofuse_scale.model.rgbt import PARSER_LAYERS
from yolofuse_scale.model.units import RECOMPUTE_UNITS, SHARD_UNITS, recompute_units, shard_unit_names
from yolofuse_scale.model.variants import FUSIONS, VARIANTS

ASSETS = Path(__file__).parent / "assets"


def _fusion_action() -> argparse.Action:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return next(a for a in parser._actions if "--fusion" in a.option_strings)


def test_fusion_choices_are_the_registry():
    assert FUSIONS == tuple(VARIANTS) == ("data", "early", "mid", "dea", "late", "early-align", "mid-align", "rgb",
                                          "ir")
    assert _fusion_action().choices == list(VARIANTS)
    with pytest.raises(ConfigError, match="--fusion must be one of data, early, mid, dea, late, early-align, "
                                          "mid-align, rgb or ir"):
        ModelConfig(fusion="middle")


def test_stored_sizes_are_what_building_the_models_measures():
    """Every number the help and the docs show is what the models measure (27 builds at scale n, 640 px)."""
    stored, measured = sizes.stored(), sizes.measure()
    stale = f"stale: run `{sizes.COMMAND}` from the checkout root and commit what it writes"
    assert list(stored) == list(measured) == list(VARIANTS), stale
    for fusion, by_family in measured.items():
        for family, (params, gflops) in by_family.items():
            kept_params, kept_gflops = stored[fusion][family]
            assert kept_params == params, (fusion, family, stale)
            assert abs(kept_gflops - gflops) <= 5e-4, (fusion, family, stale)  # stored to 3 decimals


def test_help_and_docs_show_the_stored_sizes_without_building_a_model(monkeypatch):
    """--help lists every variant with its words and yolov8n's size from the table (no model is built to print
    it), and the tables of README.md and docs/training.md are the ones rendered from the same table."""
    import yolofuse_scale.model.detector as detector

    def refuse(*args, **kwargs):
        raise AssertionError("printing --help built a model")

    monkeypatch.setattr(detector, "build_model", refuse)
    monkeypatch.setattr(detector, "model_summary", refuse)
    help_text = " ".join(_fusion_action().help.split())
    for name, variant in VARIANTS.items():
        params, gflops = sizes.stored()[name]["yolov8"]
        assert f"{name} ({variant.brief}; {params / 1e6:.1f}/{gflops:.1f})" in help_text, name
    for doc, lines in sizes.doc_tables().items():
        text = (ROOT / doc).read_text()
        start, end = sizes.marked(text, doc)
        assert text[start:end].splitlines() == lines, f"{doc}: run `{sizes.COMMAND}`"
    mid = sizes.doc_tables()["README.md"][2 + FUSIONS.index("mid")]
    assert mid.startswith(f"| `mid` | {VARIANTS['mid'].architecture} | 4.46, 11.7 / ")


def test_the_strategy_package_and_its_configs_name_no_model_class():
    """engine/strategy/ asks model/units.py; neither its modules nor the accelerate configs name a block."""
    import ultralytics.nn.modules

    blocks = {*SHARD_UNITS, *RECOMPUTE_UNITS, *ultralytics.nn.modules.__all__, *ROW_LAYERS, *PARSER_LAYERS}
    files = sorted((ROOT / "yolofuse_scale/engine/strategy").glob("*.py"))
    files += sorted((ROOT / "yolofuse_scale/configs/accelerate").glob("*.yaml"))
    named = {f.name: sorted(set(re.findall(r"\b\w+\b", f.read_text())) & blocks) for f in files}
    assert not any(named.values()), named


@pytest.mark.parametrize(("model", "units"), [
    ("yolov8t", ["C2f", "SPPF", "Detect"]),
    ("yolo11t/dea", ["C3k2", "SPPF", "C2PSA", "DEAPair", "Detect"]),
    ("yolo11t/mid-align", ["C3k2", "SPPF", "C2PSA", "FlowAlign", "Detect"]),  # the alignment heads: units too
    ("yolo11t-obb/early-align", ["C3k2", "SPPF", "C2PSA", "FlowAlign", "OBB"]),
    ("yolo26t/late", ["C3k2", "SPPF", "C2PSA", "Detect"]),
    ("yolo11t-obb", ["C3k2", "SPPF", "C2PSA", "OBB"]),  # oriented boxes: the OBB head, a unit by its own name
    ("yolo26t-obb/late", ["C3k2", "SPPF", "C2PSA", "OBB26"]),
    ("yolofuse_mid_schema.yaml", ["C2f", "SPPF", "Detect"]),
    ("deyolo_schema.yaml", ["C2f", "SPPF", "DEA", "Detect"]),  # C2f_BiFocus: its C2f
    ("defa_schema.yaml", ["C2f", "SPPF", "DEFA", "Detect"]),
    ("rgbt_midfusion_schema.yaml", ["C3k2", "SPPF", "C2PSA", "Detect"]),
])
def test_every_model_declares_its_units(model, units):
    """Built-in variants and user YAMLs alike: the FSDP units are the declared blocks the model has; an
    accelerate config's own list is kept to the classes the model has; the recompute units are its blocks
    but the head."""
    if model.endswith(".yaml"):
        built = build_model(str(ASSETS / model), nc=2, ir_channels=1, scale="t")
    else:
        name, _, fusion = model.partition("/")
        built = build_model(name, fusion or "mid", nc=2, ir_channels=1)
    assert shard_unit_names(built) == wrap_units(built) == units
    assert wrap_units(built, ["C2f", "C3k2", "Detect"]) == [u for u in ("C2f", "C3k2", "Detect") if u in units]
    recomputed = recompute_units(built)
    heads = {"Detect", "OBB", "OBB26"}
    assert {type(m).__name__ for m in recomputed} == set(units) - heads
    assert len(recomputed) == sum(type(m).__name__ in set(units) - heads for m in built.modules())


@pytest.mark.parametrize(("yaml_name", "attention"), [("deyolo_schema.yaml", DEA), ("defa_schema.yaml", DEFA)])
def test_a_yaml_models_attention_is_recomputed_with_the_same_gradients(yaml_name, attention):
    """DEYOLO's DEA and YOLOFuse's DEFA rows are recompute units like --fusion dea's DEAPair: recomputing
    them in backward gives the gradients and BatchNorm statistics of storing their activations."""
    model = build_model(str(ASSETS / yaml_name), nc=2, ir_channels=1, scale="t")
    ac = copy.deepcopy(model)
    apply_activation_checkpointing(ac)
    blocks = [m for m in ac.modules() if type(m) is attention]
    assert len(blocks) == 3 and all(isinstance(m.forward, functools.partial) for m in blocks)
    for m in (model, ac):
        m.train()
        loss, _ = DetectionTask(m, nbs=64).step(m, _batch(4))
        loss.backward()
    grads = dict(model.named_parameters())
    for n, p in ac.named_parameters():
        torch.testing.assert_close(p.grad, grads[n].grad, rtol=0, atol=0, msg=n)
    for (n, a), b in zip(model.state_dict().items(), ac.state_dict().values()):
        assert torch.equal(a, b), n


def test_packaged_fsdp_config_lists_no_class_and_the_model_names_its_units(monkeypatch):
    """configs/accelerate/fsdp.yaml wraps by block class without listing one; `accelerate launch` exports its
    fsdp_config as FSDP_* variables, the plugin built from them has no list, and the model's units fill it."""
    config = yaml.safe_load((ROOT / "configs/accelerate/fsdp.yaml").read_text())["fsdp_config"]
    assert config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in config
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP", raising=False)
    for key, value in config.items():  # as accelerate launch exports them (every key fsdp_plugin defaults)
        monkeypatch.setenv(key.upper(), str(value).lower() if isinstance(value, bool) else str(value))
    plugin = fsdp_plugin()
    assert plugin.transformer_cls_names_to_wrap is None
    model = build_model("yolov8t", "dea", nc=2, ir_channels=1)
    assert wrap_units(model, plugin.transformer_cls_names_to_wrap) == ["C2f", "SPPF", "DEAPair", "Detect"]


def test_fsdp_refuses_a_model_without_a_block_to_shard_by():
    """A model with none of the declared blocks (and no list in the accelerate config) is refused with what to
    do, not sharded as one unit that every forward gathers whole."""
    from yolofuse_scale.errors import DistributedSetupError

    bare = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8))
    with pytest.raises(DistributedSetupError, match="none of the blocks it is sharded by.*fsdp_transformer_layer_cls"):
        wrap_units(bare)
    assert wrap_units(bare, ["Conv2d"]) == ["Conv2d"]  # the user's own list names what it wraps
