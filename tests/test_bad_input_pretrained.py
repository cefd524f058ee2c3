"""Bad --pretrained files for the run at hand: a checkpoint of another family or scale than a model YAML is
written for, a YAML run's weights into another model (new: YAMLs take --pretrained now), and the built-in
variants' refusal naming what the file is.

In-process through ``errors.run_entry`` (the same one ``error:`` line the entry points print, exit code 1); at the
end, ``train.py --pretrained`` with a wrong file (code in a pickle, another family, text, missing) as a real
subprocess.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests import bad_input_helpers as battery
from tests.bad_input_helpers import _write_gadget, assert_clean_error, assert_user_error, run_cli
from tests.helpers import ROOT
from tests.test_pretrained_yaml import model_dict, old_style, write_checkpoint, yaml_run_weights
from yolofuse_scale.model import build_model
from yolofuse_scale.model.pretrained import apply_pretrained

small_data_template = battery.small_data_template  # the battery's fixture

ASSETS = ROOT / "tests" / "assets"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wrong")
    return {"yolo11t": write_checkpoint(folder / "yolo11t.pt", model_dict("yolo11", "t")),
            "yolov8n": write_checkpoint(folder / "yolov8n.pt", old_style("yolov8", "n"))}


@pytest.fixture(scope="module")
def built():
    """Built-in mid models by name, built once (a refusal changes nothing in them)."""
    models: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in models:
            models[name] = build_model(name, "mid", nc=2, ir_channels=1)
        return models[name]

    return get


def _refused_unchanged(model, path: Path, capsys, *needles: str) -> None:
    before = copy.deepcopy(model.state_dict())
    assert_user_error(lambda: apply_pretrained(model, path), f"--pretrained {path}: ", *needles, capsys=capsys)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_yaml_given_another_familys_checkpoint(files, capsys):
    """DEYOLO's YOLOv8 layout and a yolo11 checkpoint: only the two stem convs have counterparts."""
    model = build_model(str(ASSETS / "deyolo_schema.yaml"), nc=2, ir_channels=1, scale="t")
    _refused_unchanged(model, files["yolo11t"], capsys,
                       "% of the weights of the model's streams (input to fusion) find a layer of the same type and "
                       "shapes in it (the first that does not: layer 5 C2fBiFocusLayer (rgb))",
                       "yolo11t.pt is yolo11 scale t; this run builds deyolo_schema.yaml at scale t "
                       "[0.33, 0.125, 512]. It must be an RGB checkpoint of the family and scale the YAML is written "
                       "for")


def test_a_yaml_given_a_checkpoint_of_another_scale(files, capsys):
    """The Ultralytics 8.3 yolov8n (old scale keys) into YOLOFuse's YOLOv8 mid layout built at scale t."""
    model = build_model(str(ASSETS / "yolofuse_mid_schema.yaml"), nc=2, ir_channels=1, scale="t")
    _refused_unchanged(model, files["yolov8n"], capsys,
                       "only 0% of the weights of the model's streams (input to fusion) find a layer of the same type "
                       "and shapes in it (the first that does not: layer 3 Conv (rgb))",
                       "yolov8n.pt is yolov8 scale n (from depth_multiple 0.33, width_multiple 0.25); this run builds "
                       "yolofuse_mid_schema.yaml at scale t [0.33, 0.125, 512]")


@pytest.mark.parametrize(("model", "file", "said"), [
    ("yolo11t", "yolov8n", "yolov8n.pt is yolov8 scale n (from depth_multiple 0.33, width_multiple 0.25); this run "
                           "builds yolo11 scale t (fusion=mid)"),
    ("yolov8t", "yolov8n", "yolov8n.pt is yolov8 scale n (from depth_multiple 0.33, width_multiple 0.25); this run "
                           "builds yolov8 scale t (fusion=mid)"),
    ("yolov8t", "yolo11t", "yolo11t.pt is yolo11 scale t; this run builds yolov8 scale t (fusion=mid)"),
])
def test_a_built_in_variants_refusal_names_the_files_family_and_scale(files, built, capsys, model, file, said):
    _refused_unchanged(built(model), files[file], capsys, "fit " + model, said,
                       "It must be a checkpoint of the same family and scale as --model")


@pytest.fixture(scope="module")
def yaml_run(tmp_path_factory) -> Path:
    return yaml_run_weights(tmp_path_factory.mktemp("yaml_run"), "rgbt_midfusion-P3_schema")[2]


@pytest.mark.parametrize("target", ["rgbt_midfusion_schema.yaml", "yolo11t"])
def test_a_yaml_runs_weights_into_another_model(yaml_run, capsys, target):
    """A YAML run's weights start that same YAML only: nothing says where its layers belong in another one."""
    model = (build_model(str(ASSETS / target), nc=2, ir_channels=1, scale="t") if target.endswith(".yaml") else
             build_model(target, "mid", nc=2, ir_channels=1))
    builds = "rgbt_midfusion_schema.yaml at scale t [0.5, 0.125, 1024]" if target.endswith(".yaml") else \
        "yolo11 scale t (fusion=mid)"
    _refused_unchanged(model, yaml_run, capsys, "the weights of another model (", "the weights of a model YAML's run "
                       "start that same YAML only (its layers match by name)", f"This run builds {builds}")


def _pretrained_code(path: Path, marker: Path) -> str:
    _write_gadget(path, marker)  # an object whose unpickling would create the marker
    return "refused: it holds builtins.getattr, pathlib.Path, pathlib.PosixPath"


def _pretrained_other_family(path: Path, marker: Path) -> str:
    from tests.test_pretrained import write_ultralytics_checkpoint

    write_ultralytics_checkpoint(path, "yolo11", "t")  # into --model yolov8t
    return "only 76 of its 499 tensors (15%) fit yolov8t fusion=mid"


def _pretrained_text_file(path: Path, marker: Path) -> str:
    path.write_text("yolov8n.pt\n")
    return "not a PyTorch checkpoint"


def _pretrained_missing(path: Path, marker: Path) -> str:
    return "no such file"


@pytest.mark.parametrize("plant", [_pretrained_code, _pretrained_other_family, _pretrained_text_file,
                                   _pretrained_missing])
def test_bad_pretrained_file_stops_training_with_one_clean_message(small_data_template, tmp_path, plant):
    marker = tmp_path / "marker"
    bad = tmp_path / "yolo.pt"
    needle = plant(bad, marker)
    proc = run_cli("train.py", "--data", str(small_data_template / "data.yaml"), "--model", "yolov8t", "--fusion",
                   "mid", "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--no-val",
                   "--pretrained", str(bad), "--output-dir", str(tmp_path / "r"))
    assert_clean_error(proc, f"--pretrained {bad}: ", needle)
    assert not marker.exists()
    assert not (tmp_path / "r" / "checkpoints").exists() and not (tmp_path / "r" / "weights").exists()
