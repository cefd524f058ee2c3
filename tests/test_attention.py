"""DEYOLO's DEA (DECA + DEPA), YOLOFuse's DEFA and C2f_BiFocus: the modules' behaviour, and the DEYOLO /
DEFA schema YAMLs built through Ultralytics' unmodified parser."""

from pathlib import Path

import pytest
import torch

from yolofuse_scale.engine.task import DetectionTask
from yolofuse_scale.model import ModelConfigError, build_model, model_from_config
from yolofuse_scale.model.attention import DEA, DECA, DEFA, DEPA, BiFocus, C2f_BiFocus, _pack_rows, _unpack_rows

ASSETS = Path(__file__).parent / "assets"
YAMLS = ["deyolo_schema.yaml", "defa_schema.yaml"]


def _pair(c=16, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, c, h, w, generator=g), torch.randn(2, c, h, w, generator=g)


def _all_params_have_grad(module, out):
    loss = sum(o.float().square().mean() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    return [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_checkerboard_packing_is_lossless_and_groups_the_two_phases():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    p0, p1 = _pack_rows(x)
    assert p0.shape == p1.shape == (2, 3, 6, 4)
    assert torch.equal(_unpack_rows(p0, p1), x)
    r, c = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    assert set(p0[0, 0].flatten().tolist()) == set(x[0, 0][(r + c) % 2 == 0].tolist())
    assert torch.equal(p0[0, 0, 1], x[0, 0, 1, 1::2]), "each row keeps its own pixels, in order"


@pytest.mark.parametrize("make", [lambda: DECA(16, kernel_size=20), lambda: DEPA(16), lambda: DEA(16, 20),
                                  lambda: DEFA(16, reduction=4, num_heads=4)], ids=["DECA", "DEPA", "DEA", "DEFA"])
def test_pair_modules_shapes_gradients_and_cross_modal_dependence(make):
    torch.manual_seed(0)
    m = make()
    rgb, ir = _pair()
    out = m((rgb, ir))
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.shape == rgb.shape for o in outs)
    # Every weight learns at a map smaller than DECA's nominal one (DEYOLO averages there instead, so its
    # pyramid gets no gradient and DDP without find_unused_parameters stops).
    assert _all_params_have_grad(m, out) == []
    m.eval()
    with torch.no_grad():
        base = m((rgb, ir))
        other = m((rgb, ir + torch.randn_like(ir)))
    first = (base if isinstance(base, tuple) else (base,))[0]
    moved = (other if isinstance(other, tuple) else (other,))[0]
    assert not torch.allclose(first, moved), "the RGB output depends on the IR input"


def test_deca_is_a_channel_gate_and_depa_a_spatial_gate():
    torch.manual_seed(0)
    rgb, ir = _pair()
    rgb = rgb.abs() + 0.1  # positive, so output / input is the gate
    with torch.no_grad():
        c_rgb, _ = DECA(16, kernel_size=20).eval()((rgb, ir))
        s_rgb, _ = DEPA(16).eval()((rgb, ir))
    channel_gate = c_rgb / rgb  # one value per (image, channel)
    assert torch.allclose(channel_gate, channel_gate[..., :1, :1].expand_as(channel_gate), atol=1e-6)
    spatial_gate = s_rgb / rgb  # one value per (image, pixel)
    assert torch.allclose(spatial_gate, spatial_gate[:, :1].expand_as(spatial_gate), atol=1e-6)
    assert ((channel_gate > 0) & (channel_gate < 1)).all() and ((spatial_gate > 0) & (spatial_gate < 1)).all()


def test_dea_output_is_the_sigmoid_of_the_enhanced_pair():
    torch.manual_seed(0)
    m = DEA(16, 20).eval()
    pair = _pair()
    with torch.no_grad():
        rgb, ir = m.depa(m.deca(pair))
        assert torch.allclose(m(pair), torch.sigmoid(rgb + ir))


def test_defa_without_cross_attention_is_the_refined_sum():
    """With the attention's output projection zeroed nothing is injected, and DEFA is refine(rgb + ir)."""
    torch.manual_seed(0)
    m = DEFA(16, reduction=4, num_heads=4).eval()
    with torch.no_grad():
        m.attn.out_proj.weight.zero_()
        m.attn.out_proj.bias.zero_()
        rgb, ir = _pair()
        assert torch.allclose(m((rgb, ir)), m.refine(rgb + ir), atol=1e-6)


def test_c2f_bifocus_shapes_and_gradients():
    torch.manual_seed(0)
    m = C2f_BiFocus(8, 16, 2, True)
    x = torch.randn(2, 8, 12, 10)
    y = m(x)
    assert y.shape == (2, 16, 12, 10)
    assert _all_params_have_grad(m, y) == []
    with pytest.raises(ValueError, match="even map size"):
        BiFocus(4)(torch.randn(1, 4, 5, 6))


def _batch(ch, n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return {"img": (torch.rand(n, ch, size, size, generator=g) * 255).to(torch.uint8),
            "batch_idx": torch.tensor([0.0, 1.0, 1.0]), "cls": torch.tensor([[0.0], [1.0], [0.0]]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.6], [0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.5]])}


@pytest.mark.parametrize("yaml_name", YAMLS)
@pytest.mark.parametrize("ir_channels", [1, 3])
def test_schema_yaml_builds_trains_a_step_and_rebuilds(yaml_name, ir_channels):
    model = build_model(str(ASSETS / yaml_name), nc=2, ir_channels=ir_channels, scale="t")
    assert model.two_stream and model.stride.tolist() == [8.0, 16.0, 32.0]
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"C2f_BiFocus", "DEA" if yaml_name.startswith("deyolo") else "DEFA"} <= kinds
    batch = _batch(3 + ir_channels)
    loss, items = DetectionTask(model).step(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and items.shape == (3,)
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    rebuilt = model_from_config(model.yaml, 3, ir_channels)  # what a weights file holds: the user's rows
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        x = batch["img"].float() / 255
        assert torch.equal(model(x)[0], rebuilt(x)[0])


def test_expanded_rows_compute_the_widths_the_parser_does():
    """Our modules are told their input widths by expand_rows; they must be the widths the layers have."""
    model = build_model(str(ASSETS / "deyolo_schema.yaml"), nc=2, ir_channels=1, scale="n")
    dea = [m for m in model.modules() if isinstance(m, DEA)]
    assert [m.deca.joint.conv.out_channels for m in dea] == [64, 128, 256]
    assert [m.deca.kernel_size for m in dea] == [80, 40, 20]
    bifocus = [m for m in model.modules() if isinstance(m, C2f_BiFocus)]
    assert len(bifocus) == 2 and all(m.c2f.cv1.conv.in_channels == 32 for m in bifocus)
    assert all(len(m.c2f.m) == 1 and not m.c2f.m[0].add for m in bifocus), "[128, True]: one bottleneck, no shortcut"


@pytest.mark.parametrize(("row", "message"), [
    ("[[7], 1, DEA, [256, 80]]", r"layer 23 DEA: expects from: \[rgb_layer, ir_layer\]"),
    ("[[7, 17], 1, DEA, [512, 80]]",
     "layer 23 DEA: its inputs have 32 and 32 channels, but its width 512 scales to 64"),
    ("[[7, 17], 1, DEFA, []]", "layer 23 DEFA: the first argument must be the output width"),
])
def test_bad_attention_rows_are_refused_clearly(tmp_path, row, message):
    text = (ASSETS / "deyolo_schema.yaml").read_text().replace("[[7, 17], 1, DEA, [256, 80]]", row, 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ModelConfigError, match=rf"{path}: {message}"):
        build_model(str(path), nc=2, scale="t")


@pytest.mark.slow
def test_deyolo_schema_trains_with_train_py(tiny_data, tmp_path):
    from tests.helpers import train_yaml_briefly

    train_yaml_briefly(tiny_data, ASSETS / "deyolo_schema.yaml", tmp_path / "run")


def test_model_summary_counts_defa_attention_at_the_real_size():
    """DEFA attends over all pixels (FLOPs ~ area squared): scaling a small probe's count by the area would
    miss most of it, so its summary is thop's count at the size asked for."""
    import copy

    import thop

    from yolofuse_scale.model import model_summary

    model = build_model(str(ASSETS / "defa_schema.yaml"), nc=2, ir_channels=1, scale="t")
    _, gflops = model_summary(model, 128)
    direct = thop.profile(copy.deepcopy(model).eval(), inputs=[torch.zeros(1, 4, 128, 128)], verbose=False)[0] * 2e-9
    assert gflops == pytest.approx(direct, rel=1e-6)
    _, small = model_summary(model, 64)
    assert gflops > 4.05 * small, "more than the area ratio: the attention part is quadratic"
