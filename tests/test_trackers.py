"""The trackers of ``--log-with`` (engine/trackers.py), read back from what they wrote: one training logs to
TensorBoard, MLflow and W&B at once, and each holds the per-epoch metrics, the configuration and the run's images.
W&B is offline whatever the environment says, and MLflow writes its file store in the run folder."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import ENV, ROOT, Run

SLOW = pytest.mark.slow  # the tests reading the fixture's real trainings


def wandb_records(path: Path):
    """The protobuf records of a W&B offline run file (``run-<id>.wandb``): a LevelDB-style log of 32 KiB blocks
    after a 7-byte header, each record a 7-byte header (CRC, length, type: full / first / middle / last) and data."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "a W&B transaction log"
    pos, block, chunks = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunks = data[pos + 7:pos + 7 + length] if kind in (1, 2) else chunks + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            yield record


@pytest.fixture(scope="module")
def tracked(tiny_data, tmp_path_factory):
    """2 epochs of 4 steps (each validated) logging to all three trackers, in two launches: the first stops after
    epoch 1 (--max-steps 4), the second resumes (--resume auto, no --max-steps: two settings MLflow already holds
    with other values). An image lies in the run folder (as the validation plots and results.png will), and the
    environment asks for online W&B and a remote MLflow."""
    out = tmp_path_factory.mktemp("tracked")
    cv2.imwrite(str(out / "notes.png"), np.full((48, 64, 3), (0, 128, 255), np.uint8))  # BGR: orange
    home = tmp_path_factory.mktemp("tracker_home")
    env = {**ENV, "WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_CONFIG_DIR": str(home),
           "WANDB_CACHE_DIR": str(home), "WANDB_DATA_DIR": str(home), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    env.pop("WANDB_API_KEY", None)
    args = ["train.py", "--data", str(tiny_data), "--model", "yolov8t", "--imgsz", "64", "--batch-size", "32",
            "--workers", "0", "--epochs", "2", "--warmup-epochs", "0", "--no-augment",
            "--log-with", "tensorboard,mlflow,wandb", "--output-dir", str(out)]
    runs = []
    for extra in (["--max-steps", "4"], ["--resume", "auto"]):
        # bytes, not text=True: universal newlines would turn a carriage return into a line break
        proc = subprocess.run([sys.executable, *args, *extra], cwd=ROOT, env=env, capture_output=True, timeout=600)
        proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs.append(Run(out, proc))
    assert "resumed from" in runs[1].output
    epochs = {}
    for record in runs[1].log:
        epochs.setdefault(record["epoch"] + 1, []).append(record)
    return runs, json.loads((out / "run.json").read_text())["run_id"], epochs


@SLOW
def test_the_console_says_where_each_tracker_writes(tracked):
    (run, resumed), _, _ = tracked
    out = run.out
    assert f"tracking: TensorBoard in {out / 'tensorboard'} (tensorboard --logdir {out / 'tensorboard'})" in run.output
    assert f"tracking: MLflow file store {out / 'mlruns'} (mlflow ui --backend-store-uri file://{out}/mlruns)" in (
        run.output)
    assert f"tracking: W&B offline run in {out / 'wandb'}" in run.output
    assert "\r" not in run.output + resumed.output  # redirected: plain lines
    assert "wandb:" not in run.output + resumed.output  # W&B's banner and summary table stay out
    # the guard rail, in a real run: the synthetic people are ~7 px wide at 64 px
    assert "warning: 7" in run.output and "narrower than 8 px at --imgsz 64" in run.output


@SLOW
def test_tensorboard_holds_the_epochs_and_the_images(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (_, run), _, epochs = tracked
    events = EventAccumulator(str(run.out / "tensorboard" / "yolofuse-scale"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"metrics/mAP50", "metrics/mAP50-95", "metrics/precision", "metrics/recall", "train/loss",
            "train/box_loss", "train/cls_loss", "train/dfl_loss", "lr"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("metrics/mAP50-95")] == [1, 2]  # one event file per launch, one folder
    final = json.loads((run.out / "metrics.json").read_text())["metrics"]
    assert events.Scalars("metrics/mAP50-95")[-1].value == pytest.approx(final["mAP50-95"], abs=1e-6)
    for e in events.Scalars("train/loss"):  # the epoch's mean of its steps' logged losses
        assert e.value == pytest.approx(np.mean([r["loss"] for r in epochs[e.step]]), rel=1e-5)
    assert {"plots/notes", "plots/results", "plots/BoxPR_curve", "plots/confusion_matrix_normalized"} <= set(
        tags["images"])
    image = events.Images("plots/notes")[0]
    assert (image.width, image.height) == (64, 48)
    pixel = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)[0, 0]
    assert pixel.tolist() == [0, 128, 255]  # still orange: the channels reached TensorBoard in RGB order


@SLOW
def test_mlflow_holds_the_epochs_the_config_and_the_artifacts(tracked, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    (_, run), run_id, epochs = tracked
    client = MlflowClient(f"file://{run.out}/mlruns")
    experiment = client.get_experiment_by_name("yolofuse-scale")
    (found,) = client.search_runs([experiment.experiment_id])  # the resume continued the run's MLflow run
    assert found.info.run_name == run_id and found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "metrics/mAP50")
    assert [m.step for m in history] == [1, 2]
    boxes = client.get_metric_history(found.info.run_id, "train/box_loss")
    assert [m.value for m in boxes] == pytest.approx([np.mean([r["box"] for r in epochs[i]]) for i in (1, 2)], rel=1e-5)
    params = found.data.params
    assert params["train.epochs"] == "2" and params["log.log_with"] == "tensorboard,mlflow,wandb"
    assert params["data.imgsz"] == "64" and params["model.fusion"] == "mid"
    # MLflow refuses to change a parameter: the first launch's stay, the resumed launch's config is the artifact
    assert params["train.max_steps"] == "4" and params["checkpoint.resume"] == ""
    assert {a.path for a in client.list_artifacts(found.info.run_id)} == {"config.yaml", "plots"}
    plots = {a.path for a in client.list_artifacts(found.info.run_id, "plots")}
    # ours, and the run folder's own: results.png, the final validation's curves and matrices, labels, previews
    assert {"plots/notes.png", "plots/results.png", "plots/BoxPR_curve.png", "plots/confusion_matrix.png",
            "plots/labels.jpg", "plots/train_batch0.jpg"} <= plots
    config = Path(client.download_artifacts(found.info.run_id, "config.yaml", str(run.out / "downloaded")))
    assert "max_steps: 0" in config.read_text() and "resume: auto" in config.read_text()


@SLOW
def test_wandb_is_offline_and_holds_the_epochs(tracked):
    (_, run), run_id, _ = tracked
    folders = sorted((run.out / "wandb").glob("offline-run-*"))  # offline although the environment said online
    assert len(folders) == 2 and all(f.name.endswith(run_id) for f in folders)  # one per launch, the run's id
    records = [r for folder in folders for r in wandb_records(folder / f"run-{run_id}.wandb")]
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    per_epoch = [r for r in rows if "metrics/mAP50" in r]
    assert [r["_step"] for r in per_epoch] == [1, 2]
    assert {"train/loss", "train/box_loss", "lr", "metrics/mAP50-95"} <= set(per_epoch[0])
    assert any(k.startswith("plots/notes") for r in rows for k in r), "the run folder's image"
    config = next(r.config for r in records if r.WhichOneof("record_type") == "config")
    assert json.loads(next(i.value_json for i in config.update if i.key == "train.epochs")) == 2
    logs = "".join(p.read_text(errors="replace") for p in (run.out / "wandb").rglob("*.log"))
    assert "127.0.0.1:9" not in logs  # the base URL it was given was never contacted


def test_overwrite_moves_the_tracker_folders_aside(tmp_path):
    """--overwrite moves the previous run's tracker folders with its other outputs: a new run's TensorBoard curves
    are not drawn over the old run's, nor its W&B and MLflow runs listed beside them."""
    from yolofuse_scale.engine.checkpoint.ownership import _move_aside

    for folder in ("tensorboard/yolofuse-scale", "mlruns/0", "wandb/offline-run-1-abc"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "data").write_text(folder)
    _move_aside(tmp_path, tmp_path / "replaced" / "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replaced"]
    old = tmp_path / "replaced" / "old"
    assert all((old / f / "data").read_text() == f for f in ("tensorboard/yolofuse-scale", "mlruns/0",
                                                            "wandb/offline-run-1-abc"))
