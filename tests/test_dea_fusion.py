"""``--fusion dea``: ``mid`` with DEYOLO's cross-modal attention (DEAPair) on each P3-P5 pair before the fusion
conv, in every family: its layout, that the attention really mixes the streams, its cost over ``mid``, the
pretrained mapping, its FSDP / activation-checkpointing units, and a 2-process DDP run.

(Forward/backward of every family at scale t, every parameter with a gradient, is the FUSIONS-parametrized
``test_model.test_variant_forward_backward`` / ``test_families.test_family_variant_forward_backward``.)
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from ultralytics.nn.modules import Conv
from ultralytics.nn.tasks import DetectionModel

from tests.helpers import assert_recompute_gives_the_same_gradients
from tests.test_model import _batch
from tests.test_pretrained import (
    YOLO11_LAYERS,
    _layer,
    _reference,
    _same,
    our_random_weights_file,
    write_ultralytics_checkpoint,
)
from yolofuse_scale.model import build_model, model_summary
from yolofuse_scale.model.attention import DEAPair, DEAPairLayer
from yolofuse_scale.model.pretrained import apply_pretrained
from yolofuse_scale.model.pretrained.identify import recognise
from yolofuse_scale.model.variants import Origin, family_yaml, fusion_origins

FAMILIES = ("yolov8", "yolo11", "yolo26")
#: Overhead of dea over mid at scale n, 640 px (measured: params +6.0 / +7.3 / +7.5 %, GFLOPs +4.4 / +10.5 /
#: +11.9 % for yolov8 / yolo11 / yolo26).
MAX_PARAMS, MAX_GFLOPS = 1.10, 1.15


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_origins_name_every_built_layer_and_the_attention_sits_before_each_fusion_conv(family):
    """fusion_origins counts built layers (a DEAPair row builds Concat, DEAPair, Index); each copied layer is
    the single-stream layer it names, each attention layer reads that tap's two backbone maps."""
    base = family_yaml(family, "t")
    model = build_model(f"{family}t", "dea", nc=2, ir_channels=1)
    single = DetectionModel(copy.deepcopy(base), nc=2, verbose=False)
    origins = fusion_origins(base, "dea")
    assert len(origins) == len(model.model)
    taps = []
    for j, o in enumerate(origins):
        layer = model.model[j]
        if o is None:
            assert _params(layer) == 0, (j, type(layer).__name__)
        elif o.stream == "attention":
            assert isinstance(layer, DEAPairLayer) and isinstance(layer.block, DEAPair)
            rgb, ir = model.model[j - 1].f  # the Concat before it: the two streams' copies of layer o.src
            assert (origins[rgb], origins[ir]) == (Origin(o.src, "rgb"), Origin(o.src, "ir"))
            fuse = model.model[j + 2]
            assert origins[j + 2] == Origin(o.src, "fusion") and isinstance(fuse, Conv)
            assert fuse.conv.in_channels == 2 * fuse.conv.out_channels == 2 * layer.split[0]
            taps.append(o.src)
        elif o.stream != "fusion":
            assert type(layer) is type(single.model[o.src]), (j, o)
            assert _params(layer) == _params(single.model[o.src]) or o.src == 0  # the IR stem reads 1 channel
    assert len(taps) == 3 and taps == sorted(taps)  # P3, P4, P5
    assert [m.block.deca.kernel_size for m in model.modules() if isinstance(m, DEAPairLayer)] == [80, 40, 20]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_rgb_path_sees_the_ir_stream(family):
    """Changing only the IR image leaves the RGB backbone's maps as they are but changes the RGB half of every
    attention output: the gates are computed from the other stream (in mid nothing reads IR before the conv)."""
    torch.manual_seed(0)
    # train mode (batch statistics): a fresh model's eval-mode BatchNorms shrink deep maps towards 0
    model = build_model(f"{family}t", "dea", nc=1, ir_channels=1).train()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0][:, : m.split[0]], o[0][:, : m.split[0]])))
             for m in model.modules() if isinstance(m, DEAPairLayer)]
    x = torch.rand(2, 4, 64, 64)
    x2 = x.clone()
    x2[:, 3:] = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        model(x)
        model(x2)
    for h in hooks:
        h.remove()
    assert len(seen) == 6
    for (rgb_in, rgb_out), (rgb_in2, rgb_out2) in zip(seen[:3], seen[3:]):
        assert torch.equal(rgb_in, rgb_in2)  # the RGB backbone never saw the IR change
        moved = (rgb_out - rgb_out2).abs().max() / rgb_out.abs().max()
        assert moved > 0.01, moved  # ... but its attended map did (by 18-32% at init)


@pytest.mark.parametrize("family", FAMILIES)
def test_overhead_over_mid_is_the_attention_and_stays_small(family):
    """At scale n, 640 px, nc=1, 1-channel IR: dea adds exactly the attention's parameters to mid, and stays
    within the stated bound in parameters and GFLOPs (the numbers the README table gives)."""
    mid = build_model(f"{family}n", "mid", nc=1, ir_channels=1)
    dea = build_model(f"{family}n", "dea", nc=1, ir_channels=1)
    (p_mid, g_mid), (p_dea, g_dea) = model_summary(mid, 640), model_summary(dea, 640)
    attention = sum(_params(m) for m in dea.modules() if isinstance(m, DEAPairLayer))
    assert p_dea - p_mid == attention > 0
    assert p_dea <= MAX_PARAMS * p_mid, (p_dea, p_mid)
    assert g_mid < g_dea <= MAX_GFLOPS * g_mid, (g_dea, g_mid)
    print(f"{family}n mid {p_mid} {g_mid:.2f} GFLOPs, dea {p_dea} {g_dea:.2f} GFLOPs")


def test_pretrained_fills_both_backbones_neck_and_head_and_leaves_the_attention_new(tmp_path):
    path = write_ultralytics_checkpoint(tmp_path / "yolo11t.pt")
    src = _reference(path)
    model = build_model("yolo11t", "dea", nc=80, ir_channels=1)
    before = copy.deepcopy(model.state_dict())
    report = apply_pretrained(model, path)
    sd = model.state_dict()
    for i in range(11):  # both backbones, as in mid (rows 3.., 14..)
        _same(sd, 3 + i, src, i)
        _same(sd, 14 + i, src, i, skip={"conv.weight"} if i == 0 else ())
    for i in range(11, YOLO11_LAYERS):  # neck and head: 4 layers per tap (Concat, DEAPair, Index, Conv) before
        _same(sd, i + 26, src, i)
    attention = [k for k in sd if k.split(".")[1] in ("26", "30", "34")]
    assert attention and all(torch.equal(sd[k], before[k]) for k in attention)  # the model's own init
    for j in (28, 32, 36):  # the fusion convs: the two streams' average, as in mid
        w = sd[f"model.{j}.conv.weight"][:, :, 0, 0]
        assert torch.equal(w, torch.cat([torch.eye(w.shape[0])] * 2, 1) / 2)
    assert report.counts["attention"] == {"loaded": 0, "adapted": 0, "skipped": 0, "reinit": 0,
                                          "new": len(attention)}
    assert report.share == 1.0 and not report.new and report.attention_new == [26, 30, 34]
    text = "\n".join(report.lines())
    assert "  stream      loaded  adapted  skipped  re-init   new" in text  # one wider: "attention"
    assert f"  attention        0        0        0        0{len(attention):>6}" in text
    assert "new cross-modal attention (layers 26, 30, 34): the model's own initialisation" in text


def test_our_dea_weights_map_into_dea_whole_and_into_mid_without_the_attention(tmp_path):
    src_model, src, path = our_random_weights_file(tmp_path, "dea")
    assert recognise(src_model.yaml)[2] == "dea"
    model = build_model("yolo11t", "dea", nc=2, ir_channels=1)
    report = apply_pretrained(model, path)
    assert all(torch.equal(v, src[k]) for k, v in model.state_dict().items())
    assert report.share == 1.0 and report.counts["attention"]["loaded"] > 0 and not report.attention_new
    mid = build_model("yolo11t", "mid", nc=2, ir_channels=1)
    report = apply_pretrained(mid, path)  # mid's fusion convs and neck from dea's; the attention has no place
    sd = mid.state_dict()
    for i, j in ((26, 28), (28, 32), (30, 36)):
        _same(sd, i, src, j)
    for i in range(11, YOLO11_LAYERS):
        _same(sd, i + 20, src, i + 26)
    assert report.placed == report.countable - sum(len(_layer(src, j)) for j in (26, 30, 34))


def test_attention_is_an_fsdp_unit_and_recomputed_under_activation_checkpointing():
    """DEAPair is a wrap unit where it exists (and only there), and recomputing it in backward gives the
    same gradients and BatchNorm statistics as storing its activations."""
    from yolofuse_scale.engine.strategy.activation_checkpoint import apply_activation_checkpointing
    from yolofuse_scale.engine.strategy.fsdp import wrap_units
    from yolofuse_scale.model.units import RECOMPUTE_UNITS

    model = build_model("yolov8t", "dea", nc=2, ir_channels=1)
    assert "DEAPair" in wrap_units(model) and "DEAPair" in RECOMPUTE_UNITS
    assert "DEAPair" not in wrap_units(build_model("yolov8t", "mid", nc=2, ir_channels=1))
    ac = copy.deepcopy(model)
    blocks = [m for m in ac.modules() if isinstance(m, DEAPair)]
    assert apply_activation_checkpointing(ac) == sum(type(m).__name__ in RECOMPUTE_UNITS for m in ac.modules())
    assert len(blocks) == 3 and all(isinstance(m.forward, functools.partial) for m in blocks)
    assert_recompute_gives_the_same_gradients(model, ac, _batch(4))
    for (n, a), b in zip(model.state_dict().items(), ac.state_dict().values()):
        assert torch.equal(a, b), n  # running statistics updated once, as without checkpointing


@pytest.mark.slow
def test_dea_trains_under_two_process_ddp(train_run):
    import math

    run = train_run("torchrun", 2, 1, "--fusion", "dea", "--max-steps", "3", "--no-val")
    assert len(run.log) == 3 and all(math.isfinite(r["loss"]) for r in run.log)
    from yolofuse_scale.weights import read_weights

    weights = read_weights(run.out / "weights" / "last.pt")
    assert recognise(weights["model_yaml"])[:3] == ("yolov8", "t", "dea")
    model = build_model("yolov8t", "dea", nc=len(weights["names"]), ir_channels=weights["ir_channels"])
    model.load_state_dict(weights["model"])  # every tensor, the three attention blocks' too
    assert sum(".block.deca." in k for k in weights["model"]) > 0


@pytest.mark.slow
def test_dea_under_fsdp_with_the_attention_as_its_own_unit_equals_ddp(train_run):
    """FSDP2 with DEAPair among the wrap units (a unit fed the (rgb, ir) pair) trains as DDP does."""
    from tests.test_strategies import _params, relative_difference

    args = ("--fusion", "dea", "--max-steps", "3", "--no-val")
    ddp = train_run("torchrun", 2, 1, *args)
    fsdp = train_run("torchrun", 2, 1, *args, "--strategy", "fsdp")
    assert len(fsdp.log) == len(ddp.log) == 3
    for a, b in zip(ddp.log, fsdp.log):
        assert abs(a["box"] - b["box"]) <= 1e-4 * abs(a["box"]), (a, b)
    assert relative_difference(_params(ddp), _params(fsdp)) <= 1e-5
