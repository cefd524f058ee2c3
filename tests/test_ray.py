"""``train --engine ray`` and ``tune`` on a real local Ray cluster (the module's ``ray_cluster``, 2 CPUs): Ray Train
workers run the same loop as torchrun ranks, bit for bit; a run resumes from Ray's latest checkpoint, and a killed
worker is restarted by Ray and the run ends as an uninterrupted one; bad input in a worker ends the run without
retries; a Tune sweep stops a trial early on the per-epoch metric and writes its table and a best config that
reruns bit for bit. The torchrun references are the session's cached runs (test_ddp.py, test_fault_tolerance.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import BASE_ARGS, ROOT, launch

pytestmark = pytest.mark.slow

STEPS = ["--max-steps", "3", "--no-val", "--no-ema"]  # test_ddp.py's runs: the torchrun reference is shared
RUN = ["--no-val", "--save-every-steps", "4", "--epochs", "2", "--augment"]  # test_fault_tolerance.py's


def ray_train(data, out, cluster, *extra: str) -> list[str]:
    return [sys.executable, "-m", "yolofuse_scale", "train", "--data", str(data), *BASE_ARGS, "--grad-accum", "1",
            "--no-plots", "--output-dir", str(out), *extra, "--engine", "ray", "--ray-workers", "2",
            "--ray-address", cluster.address]


def run(cmd: list[str], cluster, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=timeout)


def log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights" / "last.pt", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_ray_run_equals_torchrun_and_resumes_from_rays_latest_checkpoint(train_run, tiny_data, ray_cluster,
                                                                         tmp_path):
    """2 Ray Train workers = 2 torchrun ranks (losses and weights, BatchNorm statistics included, bit for bit).
    The run is stopped after step 2 and the same command run again: Ray restores its record of the run from the
    run folder and the workers resume from its latest checkpoint, ending exactly where torchrun's 3 steps do."""
    reference = train_run("torchrun", 2, 1, *STEPS)
    out = tmp_path / "ray_run"
    first = run(ray_train(tiny_data, out, ray_cluster, "--max-steps", "2", "--no-val", "--no-ema"), ray_cluster)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "2 process(es) on cpu (ddp: MULTI_CPU" in first.stdout
    assert [r["loss"] for r in log(out)] == [r["loss"] for r in reference.log[:2]]
    snapshot = json.loads((out / "checkpoint_manager_snapshot.json").read_text())  # Ray Train's own record
    assert snapshot["latest_checkpoint_result"]["checkpoint_dir_name"] == "checkpoints/step_2"

    second = run(ray_train(tiny_data, out, ray_cluster, *STEPS), ray_cluster)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]
    assert f"Ray Train restarted the run (its latest checkpoint: {out / 'checkpoints' / 'step_2'})" in output
    assert f"resumed from {out / 'checkpoints' / 'step_2'} at step 2" in output
    assert [(r["step"], r["loss"], r["lr"]) for r in log(out)] == [(r["step"], r["loss"], r["lr"]) for r in
                                                                   reference.log]
    assert_same_weights(weights(reference.out), weights(out))


def test_killed_ray_worker_is_restarted_by_ray_and_the_run_ends_identically(train_run, tiny_data, ray_cluster,
                                                                            tmp_path):
    """SIGKILL rank 0 (the holder of the run folder's lock) after the step-4 checkpoint: Ray Train's failure
    handling (--ray-max-failures) restarts the worker group, whose rank 0 takes over the dead holder's lock and
    resumes; the run ends with the weights of torchrun's uninterrupted run (augmentation on), bit for bit."""
    reference = train_run("torchrun", 2, 1, *RUN)
    out = tmp_path / "ray_kill"
    with open(tmp_path / "driver.log", "w") as fh:
        job = subprocess.Popen(ray_train(tiny_data, out, ray_cluster, *RUN, "--ray-max-failures", "2"), cwd=ROOT,
                               env=ray_cluster.env, stdout=fh, stderr=subprocess.STDOUT)
    killed = None
    deadline = time.monotonic() + 600
    try:
        while job.poll() is None and time.monotonic() < deadline:
            if killed is None and (out / "checkpoints" / "step_4" / "COMPLETE").exists():
                killed = json.loads((out / "run.lock").read_text())["pid"]  # the lock's holder: rank 0
                os.kill(killed, signal.SIGKILL)  # no clean-up, like a lost node
            time.sleep(0.05)
        job.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    text = (tmp_path / "driver.log").read_text()
    assert killed is not None, "the run ended before a worker could be killed\n" + text[-3000:]
    assert job.returncode == 0, text[-5000:]
    assert f"took over the lock of host {os.uname().nodename}, pid {killed}" in text
    assert "Ray Train restarted the run" in text or "restarted the worker group before its first checkpoint" in text
    b = torch.load(out / "weights" / "last.pt", weights_only=True)
    assert b["step"] == 16
    assert_same_weights(weights(reference.out), b["model"])


def test_bad_input_in_a_worker_ends_the_ray_run_without_retries(tiny_data, ray_cluster, tmp_path):
    """A user error a worker finds (here: another training holds the run folder) is no failure to retry: the run
    ends at once with the worker's one message and exit code 1, though --ray-max-failures allows 3 restarts."""
    from yolofuse_scale.engine import run_lock

    out = tmp_path / "busy"
    holder = run_lock.acquire(out)
    try:
        proc = run(ray_train(tiny_data, out, ray_cluster, *STEPS, "--ray-max-failures", "3"), ray_cluster)
    finally:
        holder.release()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert len(errors) == 1 and f"--output-dir {out} is in use by another training" in errors[0], proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("Started training worker group") == 1, "the group was started again"
    assert not (out / "train_log.jsonl").exists()


def test_tune_stops_a_trial_early_and_its_best_config_reruns_bit_for_bit(tiny_data, ray_cluster, tmp_path):
    """Two trials of 2 workers each, one at a time, ASHA on the per-epoch validation loss: the lr-1e-5 trial is
    worse after epoch 1 and stopped; the table and best/config.yaml name the other, and `train --config` of that
    file under torchrun (2 ranks, as the trial's 2 workers) ends with the trial's weights, bit for bit."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("metric: val_loss\nscheduler: {type: asha, grace_period: 1, reduction_factor: 2}\n"
                     "max_concurrent_trials: 1\ntrial: {workers: 2, cpus_per_worker: 1, max_failures: 0}\n"
                     "space:\n  lr: {grid: [0.02, 1.0e-5]}\n")
    out = tmp_path / "sweep"
    proc = run([sys.executable, "-m", "yolofuse_scale", "tune", "--space", str(sweep), "--data", str(tiny_data),
                *BASE_ARGS, "--epochs", "2", "--no-plots", "--output-dir", str(out), "--ray-address",
                ray_cluster.address], ray_cluster)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    import csv

    rows = {float(r["lr"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert rows[0.02]["status"] == "done" and rows[0.02]["epochs"] == "2", rows
    assert rows[1e-5]["status"] == "stopped by asha after epoch 1" and rows[1e-5]["epochs"] == "1", rows
    assert float(rows[0.02]["val_loss"]) < float(rows[1e-5]["val_loss"])
    assert f"| {rows[0.02]['trial']} **best** | done | 0.02 | 2 |" in (out / "results.md").read_text()
    trial_run = out / "runs" / rows[0.02]["trial"]
    assert log(trial_run)[-1]["step"] == 16 and (trial_run / "checkpoint_manager_snapshot.json").is_file()

    best = out / "best" / "config.yaml"
    rerun = launch("torchrun", 2, ["train.py", "--config", str(best)], out / "best")
    assert f"weights in {out / 'best' / 'weights'}" in rerun.output
    assert_same_weights(weights(trial_run), weights(out / "best"))
