"""The fusion variants and the YOLOFuse-schema parser: shapes, gradients, parameter counts."""

from pathlib import Path

import pytest
import torch

from yolofuse_scale.engine.task import DetectionTask
from yolofuse_scale.model import FUSIONS, build_model, model_summary

ASSETS = Path(__file__).parent / "assets"


def _batch(ch: int, n: int = 2, size: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "img": (torch.rand(n, ch, size, size, generator=g) * 255).to(torch.uint8),
        "batch_idx": torch.tensor([0.0, 1.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0], [0.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.6], [0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.5]]),
    }


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("ir_channels", [1, 3])
def test_variant_forward_backward(fusion, ir_channels):
    model = build_model("yolov8t", fusion, nc=2, ir_channels=ir_channels)
    batch = _batch(3 + ir_channels)
    loss, items = DetectionTask(model, nbs=64).step(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and items.shape == (3,)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]  # DFL conv is fixed
    assert all(g is not None for g in grads), "every parameter takes part in the loss"
    levels = 6 if fusion == "late" else 3
    assert model.stride.tolist() == [8.0, 16.0, 32.0] * (levels // 3)
    model.eval()
    with torch.no_grad():
        y, _ = model(batch["img"].float() / 255)
    anchors = sum((64 // s) ** 2 for s in (8, 16, 32)) * (levels // 3)
    assert y.shape == (2, 4 + 2, anchors)


@pytest.mark.parametrize("fusion", ["data", "mid"])
def test_the_step_feeds_channels_last_images_with_the_same_loss(fusion):
    # NHWC is the default layout the convolutions see (the speed of a CPU/GPU step); NCHW must give the
    # same loss and gradients to float rounding.
    seen = []
    results = {}
    for channels_last in (True, False):
        torch.manual_seed(0)
        model = build_model("yolov8t", fusion, nc=2, ir_channels=1)
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        hook = first_conv.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
        loss, _ = DetectionTask(model, channels_last=channels_last).step(model, _batch(4))
        loss.backward()
        hook.remove()
        results[channels_last] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()
                                                            if p.grad is not None]))
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert seen[-1].stride()[-1] == 1 and not seen[-1].is_contiguous(memory_format=torch.channels_last)  # NCHW (a view)
    # Same arithmetic, other summation order. Measured on AMD EPYC: loss 3e-6 relative, gradient vector
    # 3-5e-5 (an untrained model's gradients cancel a lot); a layout mistake (channels mixed up) is O(1).
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    a, b = results[True][1], results[False][1]
    assert float((a - b).norm() / b.norm()) < 1e-3


def test_single_modality_baselines_ignore_the_other_stream():
    x = torch.rand(1, 4, 64, 64)
    for fusion, blanked in (("rgb", slice(3, 4)), ("ir", slice(0, 3))):
        model = build_model("yolov8t", fusion, nc=1, ir_channels=1).eval()
        x2 = x.clone()
        x2[:, blanked] = 0
        with torch.no_grad():
            assert torch.equal(model(x)[0], model(x2)[0]), fusion


def test_parameter_counts_follow_the_architecture():
    params = {f: sum(p.numel() for p in build_model("yolov8n", f, nc=1).parameters()) for f in FUSIONS}
    assert params["rgb"] == params["ir"]  # same network, other input
    assert params["data"] - params["rgb"] == 27 * 16  # only the stem's 3 extra input channels (3x3 conv, 16 out)
    backbone = params["rgb"] - 0  # a second backbone makes mid and late clearly larger
    assert params["mid"] > params["rgb"] * 1.3 and params["late"] > params["mid"]
    assert params["data"] < params["early"] < params["data"] * 1.01  # a second stem is small next to a backbone
    assert params["late"] < 2 * backbone + 1  # two branches share nothing but one Detect


def test_yolov8n_matches_ultralytics_size_and_flops():
    params, gflops = model_summary(build_model("yolov8n", "rgb", nc=80), 640)
    assert params == 3_157_200  # Ultralytics' own YOLOv8n summary
    assert 8.5 < gflops < 9.0


@pytest.mark.parametrize("yaml_name", ["yolofuse_mid_schema.yaml", "yolofuse_data_level_schema.yaml"])
@pytest.mark.parametrize("ir_channels", [1, 3])
def test_yolofuse_schema_yaml_trains(yaml_name, ir_channels):
    model = build_model(str(ASSETS / yaml_name), nc=2, ir_channels=ir_channels, scale="t")
    assert model.model[-1].nc == 2 and model.two_stream
    loss, _ = DetectionTask(model).step(model, _batch(3 + ir_channels))
    loss.backward()
    assert torch.isfinite(loss)


def test_yaml_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model YAML"):
        build_model(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 1\n")
    with pytest.raises(ValueError, match="bad.yaml: not an Ultralytics model YAML"):
        build_model(str(bad))
    with pytest.raises(ValueError, match="scale 'q' is not in its scales table"):
        build_model(str(ASSETS / "yolofuse_mid_schema.yaml"), scale="q")
    with pytest.raises(ValueError, match="unknown fusion"):
        build_model("yolov8n", "sideways")


def test_allowed_activation_is_built_from_its_parsed_form(tmp_path):
    """``activation: nn.LeakyReLU(0.1)`` reaches every Conv (Ultralytics' meaning) without being evaluated,
    and the process-wide default (SiLU) is back afterwards; the weights file rebuilds the same model."""
    from ultralytics.nn.modules import Conv

    from yolofuse_scale.model import model_from_config

    src = (ASSETS / "yolofuse_mid_schema.yaml").read_text()
    path = tmp_path / "leaky.yaml"
    path.write_text('activation: "nn.LeakyReLU(0.1)"\n' + src)
    model = build_model(str(path), nc=2, ir_channels=1, scale="t")
    acts = {type(m.act).__name__ for m in model.modules() if isinstance(m, Conv)}
    assert acts == {"LeakyReLU"} and next(m.act for m in model.modules() if isinstance(m, Conv)).negative_slope == 0.1
    assert type(Conv.default_act).__name__ == "SiLU"
    rebuilt = model_from_config(model.yaml, 3, 1)
    rebuilt.load_state_dict(model.state_dict())
    assert {type(m.act).__name__ for m in rebuilt.modules() if isinstance(m, Conv)} == {"LeakyReLU"}
    assert type(Conv.default_act).__name__ == "SiLU"


@pytest.mark.parametrize("spec", ["nn.LeakyReLU(slope)", "nn.Module()", "os.system('x')", "nn.ReLU", "nn.ReLU(**{})",
                                  "torch.nn.modules.ReLU()", "nn.ReLU(); 1"])
def test_activation_outside_the_allow_list_is_refused(spec):
    from yolofuse_scale.model import ModelConfigError
    from yolofuse_scale.model.safe_config.activation import parse_activation

    with pytest.raises(ModelConfigError, match=r"src: activation .* is not an allowed activation \(allowed: nn\.CELU"):
        parse_activation(spec, "src")


def test_every_built_in_variant_passes_the_check():
    from yolofuse_scale.model import SCALES, fusion_yaml
    from yolofuse_scale.model.safe_config.schema import check_model_dict

    for fusion in FUSIONS:
        for scale in SCALES:
            check_model_dict(fusion_yaml(fusion, 3, scale), f"{fusion}/{scale}")


def test_model_package_imports_nothing_distributed():
    import subprocess
    import sys

    code = (
        "import sys, yolofuse_scale.model; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('accelerate', 'deepspeed')]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"model package imported: {r.stdout}"


@pytest.mark.parametrize("ir_channels", [1, 3])
def test_early_fusion_has_a_stem_per_modality_and_fuses_at_p2(ir_channels):
    """YOLOFuse's early feature fusion: each modality gets its own P1/P2 convs (3 and ``ir_channels``
    input channels), and the two stride-4 maps are concatenated once, before the shared trunk."""
    model = build_model("yolov8t", "early", nc=2, ir_channels=ir_channels).eval()
    firsts = [m.conv.weight.shape[1] for m in model.model if type(m).__name__ == "Conv" and m.f in (1, 2)]
    assert firsts == [3, ir_channels]
    seen = []
    concat = next(m for m in model.model if type(m).__name__ == "Concat")
    concat.register_forward_hook(lambda _m, inputs, _out: seen.append([t.shape for t in inputs[0]]))
    with torch.no_grad():
        model(torch.rand(1, 3 + ir_channels, 64, 64))
    assert seen == [[torch.Size([1, 16, 16, 16])] * 2]  # two P2 maps (64 / 4), 16 channels each at scale t

