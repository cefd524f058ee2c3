"""Ultralytics' command line on ours (issue 24): key=value commands from Ultralytics' docs parse to the settings
they mean, device= starts the DDP job itself (the same weights as torchrun's), project/name number the run
folders, patience stops where Ultralytics' rule says (also after a resume), Ultralytics' model file names map to
our family and scale, and the Python API trains, validates and exports with its callbacks firing in order.

Parser-level tests run in-process; the three slow ones launch real trainings (a 2-process launch, three tiny
single-process runs, one API script)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import BASE_ARGS, ENV, ROOT, launch
from yolofuse_scale.cli import build_train_parser, parse_train_args
from yolofuse_scale.config import RunConfig, config_from_args
from yolofuse_scale.config.ultralytics import rewrite_train_args
from yolofuse_scale.devices import parse_devices
from yolofuse_scale.engine.early_stop import EarlyStopping
from yolofuse_scale.engine.run_dir import choose_run_dir, claim_next


def _cfg(*argv: str) -> RunConfig:
    return config_from_args(parse_train_args(build_train_parser(), list(argv)))


@pytest.fixture
def data_yaml(tmp_path, monkeypatch) -> str:
    """An existing data.yaml path (the parser checks the file exists; nothing reads it here); cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: person}\n")
    return "data.yaml"


# --------------------------------------------------------------------------------- commands from Ultralytics' docs
def test_ultralytics_docs_train_commands_parse_to_the_same_settings(data_yaml, tmp_path):
    """Ultralytics' documented train commands (`yolo train ...`), with our data.yaml, as `yolofuse-scale train ...`."""
    # yolo detect train data=coco8.yaml model=yolo26n.yaml epochs=100 imgsz=640  (a new model from its YAML)
    cfg = _cfg(f"data={data_yaml}", "model=yolo26n.yaml", "epochs=100", "imgsz=640")
    assert (cfg.data.data, cfg.model.model, cfg.model.pretrained, cfg.train.epochs, cfg.data.imgsz) == (
        data_yaml, "yolo26n", "", 100, 640)
    # yolo detect train data=coco8.yaml model=yolo26n.pt epochs=100 imgsz=640  (from pretrained weights)
    (tmp_path / "yolo26n.pt").write_bytes(b"")  # the file must be here: nothing is downloaded (its contents: later)
    cfg = _cfg(f"data={data_yaml}", "model=yolo26n.pt", "epochs=100", "imgsz=640")
    assert (cfg.model.model, cfg.model.pretrained) == ("yolo26n", "yolo26n.pt")
    # yolo detect train data=coco8.yaml model=yolo26n.yaml pretrained=yolo26n.pt epochs=100 imgsz=640
    cfg = _cfg(f"data={data_yaml}", "model=yolo26n.yaml", "pretrained=yolo26n.pt", "epochs=100", "imgsz=640")
    assert (cfg.model.model, cfg.model.pretrained) == ("yolo26n", "yolo26n.pt")
    # yolo detect train data=coco8.yaml model=yolo26n.pt epochs=100 imgsz=640 device=0,1  (multi-GPU)
    args = parse_train_args(build_train_parser(), [f"data={data_yaml}", "model=yolo26n.pt", "epochs=100",
                                                   "imgsz=640", "device=0,1", "batch=16"])
    assert args.device == "0,1" and parse_devices(args.device).gpus == (0, 1)
    assert config_from_args(args).train.batch_size == 8  # Ultralytics' batch is the job's, split over its devices
    # yolo train data=coco8.yaml model=yolo26n.pt epochs=10 lr0=0.01  (the CLI help's example), on the CPU
    cfg = _cfg(f"data={data_yaml}", "model=yolo26n.pt", "epochs=10", "lr0=0.01", "device=cpu")
    assert (cfg.train.epochs, cfg.optim.lr) == (10, 0.01)
    # the hyper-parameters of Ultralytics' default.yaml, by its names
    cfg = _cfg(f"data={data_yaml}", "model=yolo11s", "batch=32", "workers=8", "seed=7", "optimizer=AdamW", "lr0=0.002",
               "lrf=0.05", "momentum=0.9", "weight_decay=0.0001", "warmup_epochs=1.5", "warmup_momentum=0.5",
               "warmup_bias_lr=0.05", "cos_lr=False", "close_mosaic=5", "mosaic=0.5", "mixup=0.1", "degrees=5",
               "translate=0.2", "scale=0.3", "shear=2", "perspective=0.0005", "fliplr=0.4", "hsv_h=0.02", "hsv_s=0.5",
               "hsv_v=0.3", "nbs=32", "patience=50", "cache=disk", "amp=False", "val=False", "exist_ok=True",
               "project=experiments", "name=llvip", "compile=False", "channels_last=True")
    r, o = cfg.data.recipe, cfg.optim
    assert (cfg.model.model, cfg.train.batch_size, cfg.data.workers, cfg.train.seed) == ("yolo11s", 32, 8, 7)
    assert (o.optimizer, o.lr, o.lrf, o.momentum, o.weight_decay, o.warmup_epochs, o.warmup_momentum,
            o.warmup_bias_lr, o.schedule, o.nbs) == ("adamw", 0.002, 0.05, 0.9, 0.0001, 1.5, 0.5, 0.05, "linear", 32)
    assert (r.close_mosaic, r.mosaic, r.mixup, r.degrees, r.translate, r.scale, r.shear, r.perspective, r.fliplr,
            r.hsv_h, r.hsv_s, r.hsv_v) == (5, 0.5, 0.1, 5.0, 0.2, 0.3, 2.0, 0.0005, 0.4, 0.02, 0.5, 0.3)
    c, p = cfg.checkpoint, cfg.parallel
    assert (cfg.train.patience, cfg.data.cache, p.mixed_precision, cfg.train.val) == (50, "disk", "no", False)
    assert (c.exist_ok, c.project, c.name, cfg.parallel.compile, cfg.parallel.channels_last) == (
        True, "experiments", "llvip", False, True)
    # Ultralytics' value spellings: any-case booleans, a bracketed device list, None for the default
    args = parse_train_args(build_train_parser(), ["val=false", "cos_lr=TRUE", "device=[0, 1]", "name=None"])
    assert args.device == "0,1" and config_from_args(args).optim.schedule == "cosine"
    assert config_from_args(args).checkpoint.name == "train"


def test_ultralytics_resume_command_continues_that_run_with_its_settings(data_yaml, tmp_path):
    """`yolo train resume model=path/to/last.pt` (Ultralytics' docs): the run of that weights file, resumed with the
    config.yaml it wrote (other arguments still win)."""
    run = tmp_path / "runs" / "train-2"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"")
    saved = _cfg(f"data={data_yaml}", "model=yolo11s", "epochs=30", "--fusion", "late", "--output-dir", str(run))
    saved.save(run / "config.yaml")
    cfg = _cfg("resume", f"model={run}/weights/last.pt", "epochs=40")
    assert (cfg.checkpoint.resume, cfg.checkpoint.output_dir, cfg.model.model, cfg.model.fusion, cfg.train.epochs) == (
        "auto", str(run), "yolo11s", "late", 40)


def test_keys_and_flags_mix_and_a_setting_set_twice_is_refused(data_yaml):
    cfg = _cfg(f"data={data_yaml}", "--fusion", "early", "epochs=3", "--imgsz", "128", "batch_size=4", "--no-ema")
    assert (cfg.model.fusion, cfg.train.epochs, cfg.data.imgsz, cfg.train.batch_size, cfg.optim.ema) == (
        "early", 3, 128, 4, False)
    # our own settings by name, any flag's unique prefix written in full for the workers
    assert rewrite_train_args(["--epo", "3", "fusion=dea", "output_dir=x"], build_train_parser()) == [
        "--epochs", "3", "--fusion", "dea", "--output-dir", "x"]
    assert _cfg("--epochs", "3", "--epochs", "5").train.epochs == 5  # a flag twice: argparse's last wins, as before


def test_model_file_names_map_to_family_and_scale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cfg("--model", "yolo11n.yaml").model.model == "yolo11n"  # no such file here: Ultralytics' name
    (tmp_path / "yolo11n.yaml").write_text("nc: 1\n")
    assert _cfg("--model", "yolo11n.yaml").model.model == "yolo11n.yaml"  # a file here wins, as in Ultralytics
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "yolov8s.pt").write_bytes(b"")
    cfg = _cfg("--model", "weights/yolov8s.pt")
    assert (cfg.model.model, cfg.model.pretrained) == ("yolov8s", "weights/yolov8s.pt")
    cfg = _cfg("--model", "weights/yolov8s.pt", "pretrained=False")  # an explicit no: from scratch
    assert (cfg.model.model, cfg.model.pretrained) == ("yolov8s", "")


def test_help_placeholders_read_as_values():
    text = build_train_parser().format_help()
    for shown in ("--epochs N", "--data FILE", "--imgsz N", "--lr LR", "--device DEVICES", "--project DIR",
                  "--name NAME", "--patience N", "--output-dir DIR", "--resume auto|DIR"):
        assert shown in text, shown
    assert "TRAIN." not in text and "DATA.DATA" not in text


# --------------------------------------------------------------------------------------------------------- devices
def test_device_specs_and_batch_split(data_yaml, monkeypatch):
    assert parse_devices("0") == ("cuda", (0,), 1, "0")
    assert parse_devices("cuda:0,1")[1:3] == ((0, 1), 2)
    assert parse_devices("cpu")[:3] == ("cpu", (), 1) and parse_devices("cpu:4").nproc == 4
    assert _cfg("batch=16", "device=cpu:4").train.batch_size == 4
    assert _cfg("batch=16", "--device", "0,1,2,3").train.batch_size == 4
    assert _cfg("batch=16").train.batch_size == 16
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the launcher's processes share the batch
    assert _cfg("batch=16").train.batch_size == 8
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert parse_devices("0,2").visible == "4,6"  # numbers within a CUDA_VISIBLE_DEVICES already set


# ----------------------------------------------------------------------------------------------------- run folders
def test_run_folders_are_numbered_once_each(tmp_path):
    project = tmp_path / "runs"
    assert choose_run_dir(project, "train", False, "")[0] == project / "train"
    assert choose_run_dir(project, "train", False, "")[0] == project / "train-2"
    assert choose_run_dir(project, "train", False, "")[0] == project / "train-3"
    (project / "train-2").rmdir()  # a deleted run's number is not reused: the highest is always the newest
    assert choose_run_dir(project, "train", False, "")[0] == project / "train-4"
    assert choose_run_dir(project, "exp", False, "")[0] == project / "exp"  # another name counts on its own
    assert choose_run_dir(project, "train", True, "")[0] == project / "train"  # exist_ok: the folder itself
    # --resume auto: the newest run holding a complete checkpoint; never a new folder
    (project / "train-3" / "checkpoints" / "step_8").mkdir(parents=True)
    (project / "train-3" / "checkpoints" / "step_8" / "COMPLETE").write_text("8\n")
    (project / "train-4" / "checkpoints" / ".tmp_step_4").mkdir(parents=True)  # a save that was killed
    assert choose_run_dir(project, "train", False, "auto")[0] == project / "train-3"
    assert choose_run_dir(project, "exp", False, "auto")[0] == project / "exp"  # none has one: the newest run
    assert choose_run_dir(project, "fresh", False, "auto")[0] == project / "fresh"
    assert not (project / "fresh").exists()  # chosen, not created: the run creates it
    # --resume PATH of a run's checkpoint: that run's folder
    step = project / "train-3" / "checkpoints" / "step_8"
    assert choose_run_dir(project, "train", False, str(step))[0] == project / "train-3"
    assert sorted(p.name for p in project.iterdir()) == ["exp", "train", "train-3", "train-4"]


def test_starts_at_the_same_moment_get_different_folders(tmp_path):
    """Eight threads claim at once (mkdir decides): eight folders, none shared."""
    got, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        got.append(claim_next(tmp_path / "runs" / "train"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8
    assert sorted(p.name for p in got) == sorted(["train", *(f"train-{n}" for n in range(2, 9))])


# -------------------------------------------------------------------------------------------------------- patience
def test_early_stopping_follows_ultralytics_rule():
    stop, fitness = EarlyStopping(), [0.0, 0.0, 0.0, 0.3, 0.5, 0.5, 0.4, 0.45, 0.6, 0.1]
    stopped_after = None
    for epoch, f in enumerate(fitness):
        stop.update(epoch, f)
        if stop.exhausted(epoch + 1, patience=3):
            stopped_after = epoch + 1
            break
    # zeros do not use up the patience; 0.5 (epoch 5) is the best, three epochs without better: after epoch 8
    assert stopped_after == 8 and (stop.best_epoch, stop.best_fitness) == (4, 0.5)
    assert not stop.exhausted(8, patience=0)  # 0: off
    again = EarlyStopping()
    again.restore(stop.to_json(), 8, best_fitness=0.5)
    assert again.to_json() == stop.to_json() and again.exhausted(8, patience=3)


# ---------------------------------------------------------------------------------------------------- slow: launches
@pytest.mark.slow
def test_device_starts_the_ddp_job_with_the_weights_torchrun_gives(train_run, tiny_data, tmp_path):
    """`yolofuse-scale train device=cpu:2` (no torchrun) trains exactly what `torchrun --nproc_per_node 2` does with
    the same settings: bitwise the same weights, into project/name."""
    steps = ["--max-steps", "3", "--no-val", "--no-ema"]
    ref = train_run("torchrun", 2, 1, *steps)  # tests/test_ddp.py's run, cached
    args = ["-m", "yolofuse_scale", "train", f"data={tiny_data}", *BASE_ARGS, "--grad-accum", "1", *steps,
            "device=cpu:2", f"project={tmp_path}", "name=ddp"]
    run = launch("python", 1, args, tmp_path / "ddp")
    assert "device=cpu:2: 2 processes on the CPU" in run.output and "2 process(es) on cpu (ddp: MULTI_CPU" in run.output
    assert run.output.count("done: step 3") == 1
    assert [r["loss"] for r in run.log] == [r["loss"] for r in ref.log]
    mine = load_file(sorted((tmp_path / "ddp" / "checkpoints").glob("step_*"))[-1] / "model.safetensors")
    theirs = load_file(sorted((ref.out / "checkpoints").glob("step_*"))[-1] / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.slow
def test_patience_stops_at_its_epoch_and_a_resumed_run_stops_there_too(train_run, tmp_path):
    """--patience 1 ends the run after the first epoch without a better fitness, writing metrics.json and weights as a
    finished run does; the same run resumed from its first epoch stops after the same epoch, with the same weights.
    The run starts from trained weights at a vanishing lr with one image per batch: BatchNorm's running
    statistics then drift from the batch-of-8 ones the weights were trained with towards one image's, so the fitness
    falls from the first epoch on (measured when written: 0.47, 0.44, 0.20, 0.06 ...). The resumed run's patience
    count comes from the checkpoint only: it has validated nothing itself before it stops."""
    from yolofuse_scale.data import write_synthetic_dataset

    pretrained = train_run("torchrun", 2, 1).out / "weights" / "last.pt"  # tests/test_ddp.py's trained run, cached
    data = write_synthetic_dataset(tmp_path / "data", n_train=32, n_val=16, imgsz=128, seed=0)
    args = ["train.py", "--data", str(data), "--model", "yolov8t", "--imgsz", "128", "--batch-size", "1", "--workers",
            "0", "--no-augment", "--warmup-epochs", "0", "--seed", "3", "--lr", "1e-9", "--pretrained", str(pretrained),
            "--epochs", "8", "--patience", "1", "--keep-last", "0"]
    whole = launch("python", 1, [*args, "--output-dir", str(tmp_path / "whole")], tmp_path / "whole")
    summary = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    fitness = [json.loads((p / "train_state.json").read_text())["metrics"]["fitness"]
               for p in sorted((tmp_path / "whole" / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))]
    stop, expected = EarlyStopping(), None  # the rule, applied to the run's own validations
    for epoch, f in enumerate(fitness):
        stop.update(epoch, f)
        if stop.exhausted(epoch + 1, patience=1):
            expected = epoch + 1
            break
    assert expected == len(fitness) < 8, fitness  # it stopped where the rule says, before --epochs
    assert summary["stopped_early"] == {"patience": 1, "epoch": expected, "best_epoch": stop.best_epoch + 1}
    assert "early stop (--patience 1)" in whole.output and (tmp_path / "whole" / "weights" / "best.pt").is_file()
    # the same run resumed from its first epoch's checkpoint (step 32) into a folder of its own
    first = tmp_path / "whole" / "checkpoints" / "step_32"
    resumed = launch("python", 1, [*args, "--output-dir", str(tmp_path / "parts"), "--resume", str(first)],
                     tmp_path / "parts")
    assert f"resumed from {first} at step 32 (epoch 1)" in resumed.output
    again = json.loads((tmp_path / "parts" / "metrics.json").read_text())
    assert again["stopped_early"] == summary["stopped_early"] and again["step"] == summary["step"]
    assert "early stop (--patience 1)" in resumed.output
    a = torch.load(tmp_path / "whole" / "weights" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "parts" / "weights" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


API_SCRIPT = """
import gc, json, sys
from yolofuse_scale import FusionYOLO
data, project = sys.argv[1], sys.argv[2]
events = []
m = FusionYOLO("yolov8t", fusion="mid")
m.add_callback("on_train_start", lambda trainer: events.append(["train_start", trainer.state.step, str(trainer.out)]))
# start-up ran without the cyclic collector and froze what it made; the loop runs with it (startup.py)
m.add_callback("on_train_start", lambda t: events.append(["collector", gc.isenabled(), gc.get_freeze_count() > 10**5]))
m.add_callback("on_epoch_start", lambda epoch: events.append(["epoch_start", epoch]))
m.add_callback("on_fit_epoch_end", lambda epoch, metrics: events.append(["epoch_end", epoch, metrics["fitness"]]))
m.add_callback("on_fit_end", lambda metrics: events.append(["fit_end", metrics["mAP50"]]))
metrics = m.train(data=data, epochs=2, imgsz=64, batch=4, workers=0, warmup_epochs=0, device="cpu", project=project)
val = m.val(batch=4, workers=0, plots=False)
onnx = m.export("onnx", exporter="torchscript")
print("RESULT " + json.dumps({"events": events, "metrics": metrics, "val": val, "out": str(m.out),
                              "weights": str(m.weights), "onnx": str(onnx)}))
"""


@pytest.mark.slow
def test_python_api_trains_validates_exports_and_calls_back_in_order(tmp_path):
    from yolofuse_scale.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", n_train=8, n_val=4, imgsz=64, seed=0)
    proc = subprocess.run([sys.executable, "-c", API_SCRIPT, str(data), str(tmp_path / "runs")], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    out = tmp_path / "runs" / "train"
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    fitness = [json.loads((out / "checkpoints" / f"step_{s}" / "train_state.json").read_text())["metrics"]["fitness"]
               for s in (2, 4)]
    assert got["events"] == [["train_start", 0, str(out)], ["collector", True, True], ["epoch_start", 0],
                             ["epoch_end", 0, fitness[0]],
                             ["epoch_start", 1], ["epoch_end", 1, fitness[1]], ["fit_end", saved["mAP50"]]]
    assert got["metrics"] == saved and got["out"] == str(out) and got["weights"] == str(out / "weights" / "best.pt")
    assert got["val"] == torch.load(out / "weights" / "best.pt", weights_only=True)["metrics"]  # what best.pt records
    assert Path(got["onnx"]) == out / "weights" / "best.onnx" and Path(got["onnx"]).stat().st_size > 0
