"""The bad-input battery: plant one kind of bad input in a fresh copy of a small dataset, config, run
folder or weights file, and check the documented handling: one clear message naming the file, the line
(where there is one) and what is wrong, a non-zero exit without a Python traceback, and no earlier
output lost. Each area has its own section; ``KINDS`` at the end counts what the battery tries (the
README quotes it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ENV, ROOT


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def small_data_template(tmp_path_factory) -> Path:
    """A tiny synthetic dataset written once per module; tests copy it with ``fresh_data``."""
    from yolofuse_scale.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("bad_input_template"), n_train=8, n_val=4, imgsz=64,
                                   seed=0).parent


@pytest.fixture
def fresh_data(small_data_template, tmp_path) -> Path:
    """A private copy of the tiny dataset (its folder; ``/ "data.yaml"`` is the config)."""
    dst = tmp_path / "data"
    shutil.copytree(small_data_template, dst)
    return dst


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m yolofuse_scale ARGS`` (or ``python train.py ARGS`` when args[0] == "train.py")."""
    cmd = [sys.executable, *args] if args and args[0].endswith(".py") else [sys.executable, "-m", "yolofuse_scale",
                                                                            *args]
    return subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, every needle in the output; returns the output."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    return out


# ------------------------------------------------------------------------------------------ data
# (the start-up scan: images, labels, list files, data.yaml)


# ------------------------------------------------------------------------------------------ config
# (flags, YAML configs, DeepSpeed JSON, launch problems)


# ------------------------------------------------------------------------------------------ checkpoints
# (truncated, missing, extra, edited files; another run's lineage; another model)
@pytest.fixture(scope="module")
def small_run(small_data_template, tmp_path_factory) -> Path:
    """One real 2-step training run on the tiny dataset (single process): its checkpoint and weights/last.pt."""
    out = tmp_path_factory.mktemp("bad_input_run")
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", "yolov8t", "--fusion",
                   "mid", "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--output-dir", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


class _Touch:
    """A pickled object whose unpickling creates a file: what a malicious pickle does, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _write_gadget(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state": _Touch(marker)}, path)
    return path


def _plant_unlisted(folder: Path, marker: Path) -> str:
    # DeepSpeed's zero_to_fp32 unpickles every `*_model_states.pt` it globs, with weights_only=False
    (folder / "pytorch_model").mkdir(exist_ok=True)
    _write_gadget(folder / "pytorch_model" / "zz_model_states.pt", marker)
    return "pytorch_model/zz_model_states.pt: not in the manifest"


def _edit_file(folder: Path, marker: Path) -> str:
    blob = bytearray((folder / "ema.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "ema.safetensors").write_bytes(bytes(blob))
    return "ema.safetensors: contents differ from the manifest"


def _truncate_file(folder: Path, marker: Path) -> str:
    blob = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return f"model.safetensors: {len(blob) // 2} bytes, the manifest says {len(blob)}"


def _remove_file(folder: Path, marker: Path) -> str:
    (folder / "optimizer.bin").unlink()
    return "optimizer.bin: missing"


def _code_in_run_meta(folder: Path, marker: Path) -> str:
    import json

    from yolofuse_scale.engine.checkpoint import _write_manifest

    meta = json.loads((folder / "run_meta.json").read_text())
    meta["model_yaml"]["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or torch.nn.SiLU()"
    (folder / "run_meta.json").write_text(json.dumps(meta))
    _write_manifest(folder)  # the manifest rewritten to match: only the model dict check is left to refuse it
    return "run_meta.json: model_yaml: activation"


def _garbled_manifest(folder: Path, marker: Path) -> str:
    (folder / "manifest.json").write_text('{"train_state.json": ')
    return "manifest.json: unreadable"


@pytest.mark.parametrize("plant", [_plant_unlisted, _edit_file, _truncate_file, _remove_file, _code_in_run_meta,
                                   _garbled_manifest])
def test_bad_checkpoint_is_refused_by_export_and_resume(small_run, tmp_path, plant):
    from yolofuse_scale.engine.checkpoint import CheckpointError, resolve_resume
    from yolofuse_scale.model import ModelConfigError

    folder = tmp_path / "step_2"
    shutil.copytree(small_run / "checkpoints" / "step_2", folder)
    marker = tmp_path / "marker"
    needle = plant(folder, marker)
    out = tmp_path / "exported.pt"
    assert_clean_error(run_cli("export-weights", str(folder), str(out)), needle)
    assert not out.exists() and not marker.exists()
    if plant is not _code_in_run_meta:  # resume reads Accelerate's files, not the model dict
        with pytest.raises(CheckpointError, match=needle):
            resolve_resume(str(folder), tmp_path)
    else:
        with pytest.raises(ModelConfigError, match=needle):
            from yolofuse_scale.engine.checkpoint import export_weights

            export_weights(folder, out)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ weights
# (edited model dict, wrong tensors, not a weights file, code in a model dict)
def _code(marker: Path) -> str:
    """A Python expression that creates ``marker`` if anything evaluates it."""
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


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
    return run_cli("export", "--weights", str(weights), "--out", str(tmp / "m.onnx"))


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
    for cmd in ("predict", "export"):  # val: in the parametrized case above
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


def _yaml_activation_code(text: str, marker: Path) -> str:
    return f"activation: {_code(marker) + ' or torch.nn.SiLU()'!r}\n" + text


def _yaml_module_not_allowed(text: str, marker: Path) -> str:
    return text.replace("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, os.system, ['touch marker']]")


@pytest.mark.parametrize("edit,needle", [
    (_yaml_activation_code, "is not an allowed activation"),
    (_yaml_module_not_allowed, "module 'os.system' is not an allowed module"),
])
def test_model_yaml_with_code_is_refused_and_runs_nothing(small_data_template, tmp_path, edit, needle):
    from yolofuse_scale.model import ModelConfigError, build_model

    marker = tmp_path / "marker"
    src = (ROOT / "tests" / "assets" / "yolofuse_mid_schema.yaml").read_text()
    bad = tmp_path / "evil.yaml"
    bad.write_text(edit(src, marker))
    with pytest.raises(ModelConfigError, match=re.escape(f"{bad}: ") + ".*" + re.escape(needle)):
        build_model(str(bad), nc=2, ir_channels=1, scale="t")
    assert not marker.exists()
    # through `train --model FILE.yaml` too: refused by name before anything is built
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", str(bad), "--scale", "t",
                   "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--output-dir", str(tmp_path / "r"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in out, out[-3000:]
    assert not marker.exists()
