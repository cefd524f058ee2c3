"""YOLOv11-RGBT's input selectors and joins (Silence, SilenceChannel, ADD, ChannelToNumber, NumberToChannel):
the modules' behaviour, and our mirrors of its nine plain fusion configs built through Ultralytics' parser."""

from pathlib import Path

import pytest
import torch

from yolofuse_scale.engine.task import DetectionTask
from yolofuse_scale.model import ModelConfigError, build_model, model_from_config
from yolofuse_scale.model.rgbt import ADD, ChannelToNumber, NumberToChannel, Silence, SilenceChannel

ASSETS = Path(__file__).parent / "assets"
MODES = ["earlyfusion", "midfusion", "midfusion-P3", "midfusion-P3P4", "midfusion-add", "latefusion",
         "mid-to-late-fusion", "scorefusion", "share"]


def _asset(mode: str) -> Path:
    return ASSETS / f"rgbt_{mode}_schema.yaml"


def _stacked(b=2, c=4, h=4, w=6):
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)


def _batch(ch, n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return {"img": (torch.rand(n, ch, size, size, generator=g) * 255).to(torch.uint8),
            "batch_idx": torch.tensor([0.0, 1.0, 1.0]), "cls": torch.tensor([[0.0], [1.0], [0.0]]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.6], [0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.5]])}


# ----------------------------------------------------------------------------------------------------
# the modules


def test_silence_passes_the_input_and_silence_channel_selects_a_channel_range():
    x = _stacked()
    assert Silence()(x) is x
    assert torch.equal(SilenceChannel(0, 3)(x), x[:, :3])
    ir = SilenceChannel(3, 4)(x)
    assert ir.shape == (2, 1, 4, 6) and torch.equal(ir, x[:, 3:4])
    assert torch.equal(SilenceChannel(0, 4)(x), x), "early fusion: all four channels"


def test_add_is_x0_plus_half_x1_by_default_and_alpha_times_x1_when_given():
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.allclose(ADD()([a, b]), a + 0.5 * b)
    assert torch.allclose(ADD(1.0)([a, b]), a + b)
    assert torch.allclose(ADD(-1)([a, b]), a - b)


def test_channel_to_number_puts_rgb_then_ir_images_on_the_batch():
    x = _stacked(b=2, c=4)
    y = ChannelToNumber()(x)
    assert y.shape == (4, 3, 4, 6)
    assert torch.equal(y[:2], x[:, :3]), "items 0..B-1: the RGB images"
    assert all(torch.equal(y[2:, k], x[:, 3]) for k in range(3)), "items B..2B-1: the IR channel, repeated"
    x6 = _stacked(b=2, c=6)
    y6 = ChannelToNumber()(x6)
    assert torch.equal(y6[:2], x6[:, :3]) and torch.equal(y6[2:], x6[:, 3:]), "3-channel IR: taken as it is"
    with pytest.raises(ValueError, match="expected 3 RGB \\+ 1 or 3 IR channels, got 5"):
        ChannelToNumber()(_stacked(c=5))


def test_number_to_channel_inverts_channel_to_number():
    x6 = _stacked(b=3, c=6)
    assert torch.equal(NumberToChannel()(ChannelToNumber()(x6)), x6), "round trip for RGB + 3-channel IR"
    x4 = _stacked(b=3, c=4)
    back = NumberToChannel()(ChannelToNumber()(x4))
    assert back.shape == (3, 6, 4, 6)
    assert torch.equal(back[:, :3], x4[:, :3]) and torch.equal(back[:, 3:], x4[:, 3:4].expand(-1, 3, -1, -1))
    feats = torch.randn(4, 5, 2, 2)  # features of 2 RGB then 2 IR images
    joined = NumberToChannel()(feats)
    assert joined.shape == (2, 10, 2, 2)
    assert torch.equal(joined[1, :5], feats[1]) and torch.equal(joined[1, 5:], feats[3]), "image 1: its RGB | its IR"
    with pytest.raises(ValueError, match="must hold RGB and IR halves"):
        NumberToChannel()(torch.randn(3, 5, 2, 2))


# ----------------------------------------------------------------------------------------------------
# the configs


@pytest.mark.parametrize("mode", MODES)
def test_rgbt_config_builds_forwards_and_trains_a_step(mode):
    model = build_model(str(_asset(mode)), nc=2, ir_channels=1, scale="t")
    assert not model.two_stream, "the stacked tensor reaches layer 0; the YAML's selectors split it"
    levels = 6 if mode == "scorefusion" else 3
    assert model.stride.tolist() == [8.0, 16.0, 32.0] * (levels // 3)
    batch = _batch(4)
    loss, items = DetectionTask(model).step(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and items.shape == (3,)
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    model.eval()
    with torch.no_grad():
        x = batch["img"].float() / 255
        y = model(x)[0]
    assert y.shape == (2, 4 + 2, sum((64 // s) ** 2 for s in (8, 16, 32)) * (levels // 3))


@pytest.mark.parametrize("mode", ["midfusion-add", "scorefusion", "share"])  # each kind of rewritten row
def test_rgbt_model_rebuilds_from_the_yaml_a_weights_file_holds(mode):
    model = build_model(str(_asset(mode)), nc=2, ir_channels=1, scale="t").eval()
    rebuilt = model_from_config(model.yaml, 3, 1).eval()  # the user's rows, rewritten again
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], rebuilt(x)[0])


def _first_convs_after(model, kind):
    """(selector module, in_channels of the Conv that reads it) for each ``kind`` layer of the built model."""
    layers = list(model.model)
    out = []
    for i, m in enumerate(layers):
        if isinstance(m, kind):
            conv = next(x for x in layers[i + 1:] if type(x).__name__ == "Conv")
            out.append((m, conv.conv.in_channels))
    return out


def test_midfusion_branches_read_rgb_and_ir_channels_only():
    model = build_model(str(_asset("midfusion")), nc=2, ir_channels=1, scale="t").eval()
    selectors = _first_convs_after(model, SilenceChannel)
    assert [(m.start, m.end, c) for m, c in selectors] == [(0, 3, 3), (3, 4, 1)]
    seen = []
    for m, _ in selectors:
        m.register_forward_hook(lambda _m, _i, out: seen.append(out[0]))
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        base = model(x)[0]
        assert torch.equal(seen[0], x[:, :3]) and torch.equal(seen[1], x[:, 3:4])
        x_ir = x.clone()
        x_ir[:, 3] = 0
        assert not torch.equal(model(x_ir)[0], base), "the IR channel reaches the output"


def test_share_config_runs_one_backbone_over_both_modalities():
    model = build_model(str(_asset("share")), nc=2, ir_channels=1, scale="t")
    kinds = [type(m).__name__ for m in model.model]
    assert kinds.count("ChannelToNumberLayer") == 1 and kinds.count("NumberToChannelLayer") == 3
    assert kinds.count("SPPF") == 1, "one backbone"
    first = next(m for m in model.model if type(m).__name__ == "Conv")
    assert first.conv.in_channels == 3
    shapes = []
    first.register_forward_hook(lambda _m, i, _o: shapes.append(tuple(i[0].shape)))
    with torch.no_grad():
        model.eval()(torch.rand(2, 4, 64, 64))
    assert shapes == [(4, 3, 64, 64)], "2 RGB + 2 IR images through the shared weights"


def test_share_config_takes_3_channel_ir_when_written_for_ch_6(tmp_path):
    path = tmp_path / "share6.yaml"
    path.write_text(_asset("share").read_text().replace("\nch: 4\n", "\nch: 6\n"))
    model = build_model(str(path), nc=2, ir_channels=3, scale="t")
    loss, _ = DetectionTask(model).step(model, _batch(6))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["midfusion", "share"])
def test_config_for_4_channels_is_refused_on_3_channel_ir(mode):
    path = _asset(mode)
    used = "SilenceChannel" if mode == "midfusion" else "ChannelToNumber"
    with pytest.raises(ModelConfigError, match=rf"{path}: ch: 4 but the data gives 6 channels \(RGB \+ 3-channel IR\); "
                                               rf"its {used} rows select input channels by index, so use data with "
                                               r"ir_channels: 1 or write the config for ch: 6"):
        build_model(str(path), nc=2, ir_channels=3, scale="t")


def test_a_refused_config_is_one_message_from_a_command(capsys):
    """ModelConfigError is a user error: ``train.py`` (run_entry) prints it as one line and exits 1."""
    from yolofuse_scale.errors import run_entry

    assert run_entry(lambda: build_model(str(_asset("midfusion")), nc=2, ir_channels=3, scale="t")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {_asset('midfusion')}: ch: 4 but the data gives 6 channels")
    assert "Traceback" not in err


@pytest.mark.parametrize(("mode", "old", "new", "message"), [
    ("midfusion", "[0, 1, SilenceChannel, [3, 4]]", "[0, 1, SilenceChannel, [3, 5]]",
     r"layer 11 SilenceChannel: args \[3, 5\] must be \[start, end\] channel indices with 0 <= start < end <= 4"),
    ("midfusion", "[0, 1, SilenceChannel, [3, 4]]", "[0, 1, SilenceChannel, [3]]",
     r"layer 11 SilenceChannel: args \[3\] must be \[start, end\]"),
    ("midfusion-add", "[[6, 16], 1, ADD, []]", "[[6, 14], 1, ADD, []]",
     "layer 21 ADD: its inputs have 64 and 32 channels; ADD needs equal widths"),
    ("midfusion-add", "[[6, 16], 1, ADD, []]", "[[6, 16, 14], 1, ADD, []]",
     r"layer 21 ADD: expects from: \[layer, layer\] and repeats 1"),
    ("midfusion-add", "[[6, 16], 1, ADD, []]", "[[6, 16], 1, ADD, [0.5, 2]]", r"layer 21 ADD: args \[0.5, 2\] must be"),
    ("share", "[0, 1, ChannelToNumber, []]", "[0, 1, ChannelToNumber, [1]]",
     r"layer 1 ChannelToNumber: takes no args and a stacked RGB \+ IR input \(4 or 6 channels\), got args \[1\]"),
    ("share", "[6, 1, NumberToChannel, []]", "[6, 2, NumberToChannel, []]",
     "layer 13 NumberToChannel: expects one input layer and repeats 1"),
])
def test_bad_rgbt_rows_are_refused_clearly(tmp_path, mode, old, new, message):
    text = _asset(mode).read_text()
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelConfigError, match=rf"{path}: {message}"):
        build_model(str(path), nc=2, ir_channels=1, scale="t")


@pytest.mark.slow
def test_rgbt_share_config_trains_with_train_py(tiny_data, tmp_path):
    from tests.helpers import train_yaml_briefly

    train_yaml_briefly(tiny_data, _asset("share"), tmp_path / "run")
