"""One training at a time per output folder (engine/run_lock.py): two real starts into one folder,
release on every exit, takeover of a dead holder's lock (killed with SIGKILL, or a file naming a dead
pid or a silent host), one refusal per job under torchrun."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.bad_input_helpers import small_data_template  # noqa: F401 (a fixture)
from tests.helpers import BIN, ENV, ROOT, free_port
from yolofuse_scale.engine import run_lock

#: the tiny run of the working rules: 8 pairs at 64 px, 2 steps, one save at the end
TINY = ["--model", "yolov8t", "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--epochs", "1",
        "--max-steps", "2", "--no-val", "--warmup-epochs", "0"]


def _record(**changes) -> str:
    """A lock file's content, this host's unless ``changes`` say otherwise."""
    now = time.time()
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": run_lock._pid_start(os.getpid()),
           "boot_id": run_lock._boot_id(), "started": now, "heartbeat": now, "token": "planted", "command": "x"}
    return json.dumps({**rec, **changes})


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


# ------------------------------------------------------------------------------------------ in-process
def test_a_held_lock_refuses_and_is_given_back(tmp_path):
    out = tmp_path / "run"
    held = run_lock.acquire(out)
    with pytest.raises(run_lock.RunInUseError) as refused:
        run_lock.acquire(out)
    message = str(refused.value)
    assert f"--output-dir {out} is in use by another training: host {socket.gethostname()}, pid {os.getpid()}" \
        in message and "another --output-dir" in message and str(out / "run.lock") in message
    held.release()
    assert not (out / "run.lock").exists()
    run_lock.acquire(out).release()  # free again


@pytest.mark.parametrize("planted, taken_over, why", [
    (lambda: _record(pid=_dead_pid()), True, "is gone (killed or crashed)"),
    (lambda: _record(pid_start="1"), True, "is gone"),  # a live pid that started later: reused, not the holder
    (lambda: _record(host="elsewhere", boot_id="x"), False, "another host; its heartbeat is"),
    (lambda: _record(host="elsewhere", boot_id="x", heartbeat=time.time() - run_lock.STALE_AFTER_S - 5), True,
     "another host; no heartbeat for"),
    (lambda: "", False, "unreadable lock file"),  # being written
    (lambda: _record(pid=0, token="../../escaped", started="x"), False, "unreadable lock file"),
    (lambda: _record(token="../../escaped", host="h" * 600, heartbeat=1.0), True, "no heartbeat for"),
], ids=["dead-pid", "reused-pid-start", "other-host-live", "other-host-silent", "empty-new", "not-a-record",
        "odd-token-and-host"])
def test_a_planted_lock_file_is_judged_by_pid_or_heartbeat(tmp_path, planted, taken_over, why):
    out = tmp_path / "run"
    out.mkdir()
    text = planted()
    (out / "run.lock").write_text(text)
    if taken_over:
        lock = run_lock.acquire(out)
        assert lock.note and "took over the lock of" in lock.note and why in lock.note, lock.note
        assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()
        lock.release()
    else:
        with pytest.raises(run_lock.RunInUseError, match=why):
            run_lock.acquire(out)
        assert (out / "run.lock").read_text() == text  # left as it was
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["run", "run.lock"] or taken_over  # nothing else made


def test_a_dead_holders_lock_is_taken_over_by_exactly_one_of_many(tmp_path):
    """Eight starts at once find a dead holder's file: one takes it over, seven are refused by the winner."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.lock").write_text(_record(pid=_dead_pid()))
    won, refused, go = [], [], threading.Barrier(8)

    def start():
        go.wait()
        try:
            won.append(run_lock.acquire(out))
        except run_lock.RunInUseError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7, refused
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # no claim or temporary file left
    won[0].release()


def test_the_heartbeat_is_rewritten_while_held(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    lock = run_lock.acquire(tmp_path / "run")
    first = json.loads((tmp_path / "run" / "run.lock").read_text())
    time.sleep(0.3)
    later = json.loads((tmp_path / "run" / "run.lock").read_text())
    lock.release()
    assert later["heartbeat"] > first["heartbeat"] and later["started"] == first["started"]


# ------------------------------------------------------------------------------------------ real processes
_HOLDER = """
import os, sys, time
from pathlib import Path
from yolofuse_scale.engine import run_lock
run_lock.acquire(Path(sys.argv[1]))
child = os.fork()  # like a DataLoader worker: it must not keep the lock alive after its parent
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def _start_holder(out: Path) -> tuple[subprocess.Popen, int]:
    # SIGINT at its default in the holder: a job started in the background by a non-interactive shell (`... &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler (the signal would do nothing)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child = int(proc.stdout.readline())
    assert (out / "run.lock").is_file()
    return proc, child


def test_a_sigkilled_holder_leaves_a_lock_that_the_next_start_takes_over(tmp_path):
    out = tmp_path / "run"
    proc, child = _start_holder(out)
    try:
        with pytest.raises(run_lock.RunInUseError, match=f"pid {proc.pid}.*its flock is held"):
            run_lock.acquire(out)
        proc.kill()  # SIGKILL: nothing runs; the kernel drops the flock (its forked child holds none)
        proc.wait()
        assert (out / "run.lock").is_file()
        lock = run_lock.acquire(out)
        assert f"pid {proc.pid} is gone" in lock.note
        lock.release()
    finally:
        proc.kill()
        os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_holder_gives_the_lock_back(tmp_path, sig):
    out = tmp_path / "run"
    proc, child = _start_holder(out)
    try:
        proc.send_signal(sig)
        proc.wait(timeout=30)
        if sig == signal.SIGTERM:
            assert proc.returncode == -signal.SIGTERM  # the signal still ends the process as before
        assert not (out / "run.lock").exists()
    finally:
        proc.kill()
        os.kill(child, signal.SIGKILL)


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", "--data", str(data / "data.yaml"), *TINY, "--output-dir", str(out), *extra]


@pytest.mark.slow
def test_two_trainings_started_together_into_one_folder(small_data_template, tmp_path):  # noqa: F811
    """Both used to exit 0 and print where their weights were; the folder held one of them. Now exactly one
    trains, the other is refused with one message, and the winner's outputs are whole. After it, the lock
    is gone and --resume auto starts; a lock file left by a dead process is taken over and said so."""
    from yolofuse_scale.engine.checkpoint import checkpoint_run_id, list_checkpoints, verify_checkpoint

    out = tmp_path / "run"
    runs = [subprocess.Popen(_train(small_data_template, out), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in runs]
    done = [(p.returncode, o, e) for p, (o, e) in zip(runs, outputs)]
    assert sorted(rc != 0 for rc, _, _ in done) == [False, True], [(rc, e[-2000:]) for rc, _, e in done]
    (_, won, _), (_, lost_out, lost_err) = sorted(done, key=lambda d: d[0] != 0)
    lost = lost_out + lost_err
    assert lost_err.count("error: ") == 1 and "Traceback" not in lost, lost[-3000:]
    assert f"error: --output-dir {out} is in use by another training: host {socket.gethostname()}, pid " in lost
    assert "done: step" not in lost and "done: step 2" in won
    # the winner's outputs, whole: each step logged once, its checkpoint complete and its own, its weights
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    (ckpt,) = list_checkpoints(out / "checkpoints")
    verify_checkpoint(ckpt)
    assert checkpoint_run_id(ckpt) == run_id
    assert (out / "weights" / "last.pt").is_file() and json.loads((out / "metrics.json").read_text())["step"] == 2
    assert not (out / "run.lock").exists()  # given back at the end

    (out / "run.lock").write_text(_record(pid=_dead_pid()))  # a holder that died without giving it back
    again = subprocess.run(_train(small_data_template, out, "--resume", "auto"), cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{out / 'run.lock'}: took over the lock of host {socket.gethostname()}" in again.stdout + again.stderr
    assert "nothing left to train at step 2" in again.stdout + again.stderr
    assert not (out / "run.lock").exists()


@pytest.mark.slow
def test_a_folder_in_use_is_refused_once_under_torchrun(small_data_template, tmp_path):  # noqa: F811
    """2 ranks: the writer is refused, every rank ends with that decision (one gather), one message."""
    out = tmp_path / "run"
    held = run_lock.acquire(out)  # this test's process is the live holder
    try:
        cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}",
               *_train(small_data_template, out)[1:]]
        proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    finally:
        held.release()
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"pid {os.getpid()}" in text, text[-3000:]
    assert text.count(f"error: --output-dir {out} is in use by another training") == 1, text[-3000:]
    assert "yolofuse_scale/" not in text, text[-3000:]  # no traceback through our code (torchrun prints its own)
    assert sorted(p.name for p in out.iterdir()) == [], "the refused job wrote nothing"
