"""The ``-align`` variants (model/align.py): IR features warped onto RGB's by a predicted flow before the join.

The warp itself, that an align variant starts as its variant without alignment (zero offsets; ``--pretrained`` of
that variant's weights places everything else), that the offset head gets a gradient, its FSDP / recompute units,
ONNX export (tests/test_export.py) and a 2-process DDP run that matches the single-process reference.

(Forward/backward of every family at scale t is the FUSIONS-parametrized ``test_model.test_variant_forward_backward``
/ ``test_families.test_family_variant_forward_backward``.)
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from tests.helpers import assert_recompute_gives_the_same_gradients
from tests.test_model import _batch
from tests.test_pretrained import our_random_weights_file
from yolofuse_scale.engine.task import DetectionTask
from yolofuse_scale.model import build_model
from yolofuse_scale.model.align import FlowAlign, FlowAlignLayer, warp_by_flow
from yolofuse_scale.model.pretrained import apply_pretrained
from yolofuse_scale.model.variants import FUSIONS, Origin, family_yaml, fusion_origins

ALIGNED = [f for f in FUSIONS if f.endswith("-align")]


def test_the_warp_is_the_identity_at_zero_and_moves_by_the_flow():
    x = torch.randn(2, 3, 6, 10, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 2, 6, 10)
    torch.testing.assert_close(warp_by_flow(x, flow), x, rtol=0, atol=1e-5)
    flow[:, 0] = 1.0  # each cell reads IR one cell to its right
    torch.testing.assert_close(warp_by_flow(x, flow)[..., :-1], x[..., 1:], rtol=0, atol=1e-5)
    flow[:, 0], flow[:, 1] = 0.0, -1.0  # ... one cell above
    torch.testing.assert_close(warp_by_flow(x, flow)[:, :, 1:], x[:, :, :-1], rtol=0, atol=1e-5)
    flow[:, 1] = 0.5  # half a cell down: the mean of the two rows (bilinear)
    torch.testing.assert_close(warp_by_flow(x, flow)[:, :, :-1], (x[:, :, :-1] + x[:, :, 1:]) / 2, rtol=0, atol=1e-5)
    flow[:, 1] = 30.0  # far outside: the border row
    torch.testing.assert_close(warp_by_flow(x, flow), x[:, :, -1:].expand_as(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_warp_keeps_its_grid_in_float32_in_a_half_precision_model(dtype):
    """A bf16/fp16 map (``--mixed-precision``, a bf16 DeepSpeed model) comes back in its dtype, and zero offsets
    or a whole-cell offset read exact cells: a grid in bf16 misplaced the cell centres of an 80-cell map by up to
    a third of a cell (values off by up to 0.5 here). Bound: one ulp of the dtype, from the float32 round trip."""
    x = torch.randn(2, 8, 80, 80, generator=torch.Generator().manual_seed(3)).to(dtype)
    flow = torch.zeros(2, 2, 80, 80, dtype=dtype)
    ulp = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]
    out = warp_by_flow(x, flow)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), x.float(), rtol=ulp, atol=1e-5)
    flow[:, 0] = 1.0
    torch.testing.assert_close(warp_by_flow(x, flow)[..., :-1].float(), x[..., 1:].float(), rtol=ulp, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast too, the offsets are float32
        assert FlowAlign(8).flow(x.float(), x.float()).dtype == torch.float32


def test_a_learnt_offset_undoes_a_shift_of_ir_and_offsets_stay_within_reach():
    """IR = RGB moved right by 1 cell: an offset of +1 in x (here its bias) gives RGB's map back. However large
    the offset conv's output, the offset stays below ``reach`` cells."""
    rgb = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    ir = torch.roll(rgb, 1, dims=3)
    align = FlowAlign(4)
    with torch.no_grad():
        align.offset.bias.copy_(torch.tensor([align.reach * math.atanh(1 / align.reach), 0.0]))  # reach tanh = 1
        torch.testing.assert_close(align.flow(rgb, ir)[:, 0], torch.ones(1, 8, 12), rtol=0, atol=1e-5)
        torch.testing.assert_close(align((rgb, ir))[..., :-1], rgb[..., :-1], rtol=0, atol=1e-5)
        align.offset.bias.fill_(1e4)
        assert float(align.flow(rgb, ir).max()) <= align.reach == 2.0


@pytest.mark.parametrize("fusion", ALIGNED)
def test_an_align_variant_starts_as_the_variant_without_it(fusion, tmp_path):
    """Every FlowAlign reads the two streams' copies of its tap and feeds the join in IR's place; with the plain
    variant's weights (--pretrained maps all of them, the alignment is new) the model computes what it does."""
    plain = fusion.removesuffix("-align")
    base = family_yaml("yolo11", "t")
    model = build_model("yolo11t", fusion, nc=2, ir_channels=1)
    origins = fusion_origins(base, fusion)
    aligns = [j for j, m in enumerate(model.model) if isinstance(m, FlowAlignLayer)]
    assert aligns and all(origins[j].stream == "attention" for j in aligns)
    for j in aligns:
        rgb, ir = model.model[j - 1].f  # the Concat before it
        assert (origins[rgb], origins[ir]) == (Origin(origins[j].src, "rgb"), Origin(origins[j].src, "ir"))
        assert any(isinstance(m.f, list) and m.f[1] == j + 1 for m in model.model[j + 2:])  # its Index joins
    src_model, _, path = our_random_weights_file(tmp_path, plain)
    report = apply_pretrained(model, path)
    assert report.share == 1.0 and report.attention_new[-len(aligns):] == aligns
    x = torch.rand(2, 4, 64, 64, generator=torch.Generator().manual_seed(2))
    model.train(), src_model.train()  # batch statistics: the file's random running statistics are not read
    with torch.no_grad():
        torch.testing.assert_close(model(x), src_model(x), rtol=1e-4, atol=1e-4)


def test_the_offset_head_learns_from_the_detection_loss():
    """Zero offsets at the start, but a gradient on the conv that predicts them."""
    model = build_model("yolov8t", ALIGNED[0], nc=2, ir_channels=1).train()
    heads = [m.offset for m in model.modules() if isinstance(m, FlowAlign)]
    assert heads and all(not h.weight.any() and not h.bias.any() for h in heads)
    loss, _ = DetectionTask(model, nbs=64).step(model, _batch(4))
    loss.backward()
    assert all(h.weight.grad.abs().sum() > 0 for h in heads)


def test_alignment_is_an_fsdp_unit_and_recomputed_under_activation_checkpointing():
    from yolofuse_scale.engine.strategy.activation_checkpoint import apply_activation_checkpointing
    from yolofuse_scale.engine.strategy.fsdp import wrap_units

    model = build_model("yolov8t", ALIGNED[0], nc=2, ir_channels=1)
    assert "FlowAlign" in wrap_units(model) and "FlowAlign" not in wrap_units(build_model("yolov8t", "mid", nc=2,
                                                                                          ir_channels=1))
    torch.manual_seed(0)
    with torch.no_grad():  # offsets that are not zero, so that the warp really resamples
        for m in model.modules():
            if isinstance(m, FlowAlign):
                m.offset.weight.normal_(0, 0.05)
    ac = copy.deepcopy(model)
    apply_activation_checkpointing(ac)
    blocks = [m for m in ac.modules() if isinstance(m, FlowAlign)]
    assert blocks and all(isinstance(m.forward, functools.partial) for m in blocks)
    assert_recompute_gives_the_same_gradients(model, ac, _batch(4))


@pytest.mark.slow
def test_align_trains_under_two_process_ddp_as_in_one_process(train_run):
    """2-process DDP vs one process accumulating the same two micro-batches: the same parameters to the suite's
    bound (1e-5 relative), and the offset heads have moved away from zero."""
    from tests.test_strategies import _params, relative_difference

    args = ("--fusion", ALIGNED[0], "--max-steps", "3", "--no-val", "--no-ema")
    ddp = train_run("torchrun", 2, 1, *args)
    ref = train_run("python", 1, 2, *args)
    assert len(ddp.log) == len(ref.log) == 3 and all(math.isfinite(r["loss"]) for r in ddp.log)
    pd, pr = _params(ddp), _params(ref)
    assert relative_difference(pr, pd) <= 1e-5
    offsets = [k for k in pd if k.endswith("block.offset.weight")]
    assert offsets and all(pd[k].abs().sum() > 0 for k in offsets)
