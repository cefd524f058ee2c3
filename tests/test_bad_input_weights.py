"""Bad weights files (``--weights`` of val, predict and export-onnx; ``FusionDetector.load``): an edited model
dict (code in the activation, a module or argument that is not allowed, an unknown key), tensors that do not fit
it, a file that is not a weights file at all (text, truncated, a pickle that would run code). Each is refused by
name, and nothing in the file runs (the marker a gadget would create never appears).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _code, _Touch, _write_gadget, assert_clean_error, run_cli

small_data_template = battery.small_data_template  # the battery's fixture


def _edit_yaml(edit):
    """A weights-file edit that changes the model dictionary only (saved with plain tensors and dicts)."""
    def apply(payload: dict, tmp: Path, marker: Path) -> dict:
        edit(payload["model_yaml"], tmp, marker)
        return payload
    apply.__name__ = edit.__name__
    return apply


def _activation_code(d, tmp, marker):
    d["activation"] = _code(marker) + " or torch.nn.SiLU()"


def _module_os_system(d, tmp, marker):
    d["backbone"][3][2] = "os.system"


def _module_from_parser_namespace(d, tmp, marker):
    # Ultralytics looks module names up in its tasks module: torch_safe_load unpickles with weights_only=False
    gadget = _write_gadget(tmp / "gadget.pt", marker)
    d["backbone"].insert(0, [-1, 1, "torch_safe_load", [repr(str(gadget))]])


def _string_arg_code(d, tmp, marker):
    d["backbone"][3][3] = [64, 3, _code(marker)]


def _string_arg_parser_variable(d, tmp, marker):
    d["backbone"][3][3] = [64, "d", 2]  # the parser would pass its whole dictionary `d` to Conv


def _unknown_key(d, tmp, marker):
    d["activaton"] = "nn.ReLU()"


def _shape_mismatch(payload, tmp, marker):
    name = next(k for k, v in payload["model"].items() if v.ndim == 4)
    payload["model"][name] = payload["model"][name][:, :1].clone()
    return payload


def _missing_tensor(payload, tmp, marker):
    payload["model"].pop(next(iter(payload["model"])))
    return payload


def _model_not_a_state_dict(payload, tmp, marker):
    payload["model"] = list(payload["model"].values())
    return payload


def _bad_ir_channels(payload, tmp, marker):
    payload["ir_channels"] = 2
    return payload


def _lacks_keys(payload, tmp, marker):
    return payload["model"]  # a bare state dict, no model_yaml / names / channels


def _not_a_dict(payload, tmp, marker):
    return list(payload["model"].values())


#: (edit, needle, CLI command that also gets it or None: the API check only). Every edit is saved with
#: torch.save of tensors, dicts and lists, so the file itself passes torch.load(weights_only=True).
WEIGHT_EDITS = [
    (_edit_yaml(_activation_code), "model_yaml: activation", "val"),
    (_edit_yaml(_module_os_system), "module 'os.system' is not an allowed module", "predict"),
    (_edit_yaml(_module_from_parser_namespace), "module 'torch_safe_load' is not an allowed module", "export"),
    (_edit_yaml(_string_arg_code), "Conv argument 2", "predict"),
    (_edit_yaml(_string_arg_parser_variable), "Conv argument 1: 'd' is not a literal argument", None),
    (_edit_yaml(_unknown_key), "unknown key 'activaton'", None),
    (_shape_mismatch, "its tensors do not fit the model its model_yaml describes", "val"),
    (_missing_tensor, "its tensors do not fit the model its model_yaml describes", None),
    (_model_not_a_state_dict, "'model' is not a state dict", None),
    (_bad_ir_channels, "ir_channels 2 must be 1 or 3", None),
    (_lacks_keys, "weights file lacks model, model_yaml", None),
    (_not_a_dict, "not a yolofuse-scale weights file (holds a list", None),
]


def _weights_cli(cmd: str, weights: Path, data: Path, tmp: Path) -> subprocess.CompletedProcess:
    if cmd == "val":
        return run_cli("val", "--weights", str(weights), "--data", str(data / "data.yaml"), "--workers", "0",
                       "--out", str(tmp / "val"))
    if cmd == "predict":
        rgb = sorted((data / "images" / "val").iterdir())[0]
        return run_cli("predict", "--weights", str(weights), "--rgb", str(rgb),
                       "--ir", str(data / "imagesIR" / "val" / rgb.name), "--out", str(tmp / "pred"))
    return run_cli("export-onnx", "--weights", str(weights), "--out", str(tmp / "m.onnx"))


@pytest.mark.parametrize("edit,needle,cmd", WEIGHT_EDITS, ids=[e[0].__name__ for e in WEIGHT_EDITS])
def test_edited_weights_file_is_refused_and_runs_nothing(small_run, small_data_template, tmp_path, edit, needle, cmd):
    import torch

    from yolofuse_scale import FusionDetector

    marker = tmp_path / "marker"
    payload = torch.load(small_run / "weights" / "last.pt", weights_only=True)
    bad = tmp_path / "best.pt"
    torch.save(edit(payload, tmp_path, marker), bad)
    torch.load(bad, weights_only=True)  # a loadable file: the refusal is ours, not torch's
    with pytest.raises((ValueError, RuntimeError), match=re.escape("best.pt: ") + ".*" + re.escape(needle)):
        FusionDetector.load(bad, device="cpu")
    assert not marker.exists()
    if cmd:
        assert_clean_error(_weights_cli(cmd, bad, small_data_template, tmp_path), "best.pt", needle)
        assert not marker.exists()


def test_code_in_the_activation_runs_under_no_command(small_run, small_data_template, tmp_path):
    """The report's case: val, predict and export all refuse it by name and the marker is never created."""
    import torch

    marker = tmp_path / "marker"
    payload = torch.load(small_run / "weights" / "last.pt", weights_only=True)
    _activation_code(payload["model_yaml"], tmp_path, marker)
    bad = tmp_path / "best.pt"
    torch.save(payload, bad)
    for cmd in ("predict", "export-onnx"):  # val: in the parametrized case above
        assert_clean_error(_weights_cli(cmd, bad, small_data_template, tmp_path),
                           "best.pt: model_yaml: activation", "is not an allowed activation (allowed: nn.CELU()")
    assert not marker.exists()


def _text_file(path: Path, marker: Path) -> None:
    path.write_text("model: yolov8n\n")


def _truncated_weights(path: Path, marker: Path, source: Path | None = None) -> None:
    blob = source.read_bytes()
    path.write_bytes(blob[: len(blob) // 3])


def _pickled_object(path: Path, marker: Path) -> None:
    _write_gadget(path, marker)  # torch.save of an object whose unpickling runs code


def _plain_pickle(path: Path, marker: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps(_Touch(marker)))  # not even a torch zip: a bare pickle stream


@pytest.mark.parametrize("write", [_text_file, _truncated_weights, _pickled_object, _plain_pickle])
def test_not_a_weights_file_is_refused_and_runs_nothing(small_run, small_data_template, tmp_path, write):
    from yolofuse_scale import FusionDetector
    from yolofuse_scale.engine.checkpoint import CheckpointError

    marker = tmp_path / "marker"
    bad = tmp_path / "best.pt"
    if write is _truncated_weights:
        write(bad, marker, small_run / "weights" / "last.pt")
    else:
        write(bad, marker)
    with pytest.raises(CheckpointError, match="best.pt: not a yolofuse-scale weights file"):
        FusionDetector.load(bad, device="cpu")
    assert not marker.exists()
    if write is _pickled_object:
        assert_clean_error(_weights_cli("predict", bad, small_data_template, tmp_path),
                           "best.pt: not a yolofuse-scale weights file")
        assert not marker.exists()
