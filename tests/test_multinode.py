"""Two "nodes" on one machine: two launcher processes on 127.0.0.1 with distinct node ranks, one worker
each (gloo), for accelerate launch, the DeepSpeed launcher (--no_ssh) and torchrun (c10d rendezvous, a
node lost and rejoined). Each job must end with the weights of the 2-process single-node run.

Budget: the single-node runs are the ones tests/test_ddp.py and tests/test_deepspeed.py launch (same
keys, so a full session launches them once). The three 2-node jobs run at the same time: their
launchers mostly wait on each other (an accelerate job uses ~18 s of CPU in 30-40 s of wall time).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.helpers import BASE_ARGS, BIN, ENV, ROOT, Run, free_port
from yolofuse_scale.config import CheckpointConfig, ParallelConfig, RunConfig
from yolofuse_scale.engine.checkpoint import folder as ckpt  # resolve_resume and what it calls
from yolofuse_scale.engine.strategy.accelerator import build_accelerator
from yolofuse_scale.engine.strategy.deepspeed import deepspeed_config
from yolofuse_scale.errors import DistributedSetupError

STEPS = ["--max-steps", "3", "--no-val", "--no-ema"]  # as test_ddp/test_deepspeed: their runs are shared
ZERO2 = ["--deepspeed", "ds_configs/zero2.json"]
JOB_TIMEOUT = 300  # a hung rendezvous fails the test instead of blocking CI


def _node_cmd(launcher: str, node: int, port: int, hostfile: Path | None = None) -> list[str]:
    """The launcher command line of node ``node`` of a 2-node job whose rank-0 node is 127.0.0.1:port."""
    if launcher == "accelerate":
        return [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "configs/accelerate/ddp.yaml"),
                "--num_machines=2", f"--machine_rank={node}", "--main_process_ip=127.0.0.1",
                f"--main_process_port={port}", "--num_processes=2"]
    if launcher == "deepspeed":
        return [str(BIN / "deepspeed"), f"--hostfile={hostfile}", "--no_ssh", f"--node_rank={node}",
                "--master_addr=127.0.0.1", f"--master_port={port}"]
    if launcher == "torchrun":
        # is_host: node 0's launcher hosts the rendezvous store, so losing node 1 keeps it alive.
        return [str(BIN / "torchrun"), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
                "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=multinode_test",
                f"--rdzv_conf=is_host={int(node == 0)}", "--max-restarts=1"]
    raise ValueError(launcher)


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train.py", "--data", str(data), *BASE_ARGS, "--grad-accum", "1", "--output-dir", str(out), *extra]


def _start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launcher and every process under it, like a lost node. torchrun and DeepSpeed start
    workers in sessions of their own, so the launcher's process group alone would leave them running."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in [proc, *tree]:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _wait_all(procs: list[subprocess.Popen], deadline: float) -> list[int | None]:
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    return [p.poll() for p in procs]


def _params(path: Path, buffers: bool = False) -> dict[str, torch.Tensor]:
    sd = torch.load(path, weights_only=True)["model"]
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in sd.items() if buffers or not k.endswith(stats)}


def _rel_diff(a: dict, b: dict) -> float:  # for the failure message
    va = torch.cat([a[k].flatten().double() for k in a])
    vb = torch.cat([b[k].flatten().double() for k in a])
    return float((va - vb).norm() / va.norm())


class Job:
    """One 2-node job: its two launchers (node 1's replaced when it is killed), logs and output dirs."""

    def __init__(self, name: str, root: Path, procs: list[subprocess.Popen]):
        self.name, self.root, self.procs = name, root, procs
        self.codes: list[int | None] = []
        self.killed_after: list[str] | None = None  # node 1's checkpoints when it was killed

    def log(self, node: int, attempt: str = "") -> str:
        return (self.root / f"node{node}{attempt}.log").read_text()

    def failure(self) -> str:
        logs = sorted(self.root.glob("node*.log"))
        tails = "\n".join(f"{p.name}:\n{p.read_text()[-3000:]}" for p in logs)
        return f"{self.name}: exit codes {self.codes}\n{tails}"


@pytest.fixture(scope="module")
def jobs(tiny_data, tmp_path_factory) -> dict[str, Job]:
    """Three 2-node jobs started together (their launchers mostly wait on each other, so they overlap):

    - ``accelerate``: DDP, shared output dir;
    - ``deepspeed``: ZeRO-2, the DeepSpeed launcher with --no_ssh, shared output dir;
    - ``torchrun``: c10d rendezvous, node-local output dirs (``--save-on-each-node``), checkpoints
      every step; node 1 (launcher and worker) is SIGKILLed once its step-1 checkpoint is complete, and
      its launcher started again.
    """
    root = tmp_path_factory.mktemp("multinode")
    hostfile = root / "hostfile"
    # A hostfile cannot name one host twice: 127.0.0.1 and localhost are the two "nodes".
    hostfile.write_text("127.0.0.1 slots=1\nlocalhost slots=1\n")
    # Without the agent's shared store every rendezvous round gets a fresh store (see
    # strategy.init_elastic_process_group): the rejoined launcher's restart count starts at 0 again.
    elastic_env = {**ENV, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    elastic = ["--save-every-steps", "1", "--resume", "auto", "--save-on-each-node"]
    ports = {name: free_port() for name in ("accelerate", "deepspeed", "torchrun")}

    def node(name: str, n: int, attempt: str = "") -> subprocess.Popen:
        cwd = root / name
        cwd.mkdir(exist_ok=True)
        if name == "torchrun":  # node-local storage: each "node" has its own output dir
            args = _train_args(tiny_data, cwd / f"node{n}", *STEPS, *elastic)
        else:
            args = _train_args(tiny_data, cwd / "run", *STEPS, *(ZERO2 if name == "deepspeed" else []))
        env = elastic_env if name == "torchrun" else ENV
        return _start([*_node_cmd(name, n, ports[name], hostfile), *args], cwd / f"node{n}{attempt}.log", env)

    out = {name: Job(name, root / name, [node(name, 0), node(name, 1)]) for name in ports}
    torchrun = out["torchrun"]
    first = torchrun.root / "node1" / "checkpoints" / "step_1" / "COMPLETE"
    deadline = time.monotonic() + JOB_TIMEOUT
    try:
        while not first.exists() and torchrun.procs[1].poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if first.exists():
            _kill_tree(torchrun.procs[1])
            torchrun.killed_after = sorted(p.name for p in (torchrun.root / "node1" / "checkpoints").iterdir())
            torchrun.procs[1] = node("torchrun", 1, "_rejoined")
        for job in out.values():
            job.codes = _wait_all(job.procs, deadline)
    finally:
        for job in out.values():
            for p in job.procs:
                if p.poll() is None:
                    _kill_tree(p)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate", "deepspeed"])
def test_two_nodes_train_like_one_node(train_run, jobs, launcher):
    job = jobs[launcher]
    assert job.codes == [0, 0], job.failure()
    single = train_run(launcher if launcher == "deepspeed" else "torchrun", 2, 1, *STEPS,
                       *(ZERO2 if launcher == "deepspeed" else []))
    run = Run(job.root / "run", None)
    # The same global batch and data shards: 2 processes x 8 images, the same micro-batches per step
    # (identical losses), and the same LR at every step.
    assert "batch 8/device x 2 x accumulation 1 = 16 images/step" in job.log(0), job.failure()
    assert "done: step 3" not in job.log(1), "one writer per job on shared storage: node 1 logs nothing"
    assert [r["step"] for r in run.log] == [1, 2, 3], "train_log.jsonl written once, by one process"
    assert [(r["loss"], r["lr"]) for r in run.log] == [(r["loss"], r["lr"]) for r in single.log]
    # DDP, and ZeRO-2 against ZeRO-2 on one node, reduce two ranks' gradients in the same order
    # whether the peer is on this node or another: bit for bit (measured so for both).
    a, b = _params(single.out / "weights" / "last.pt"), _params(run.out / "weights" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), f"relative difference {_rel_diff(a, b):.2e}"


@pytest.mark.slow
def test_torchrun_node_lost_and_rejoined_resumes_from_node_local_checkpoints(train_run, jobs):
    """torchrun c10d, node-local output dirs: node 1 is SIGKILLed after its step-1 checkpoint; node 0's
    worker fails on its next collective and its launcher (--max-restarts 1) waits in the rendezvous;
    node 1's launcher is started again and both resume from their own copy of the newest checkpoint
    complete on both. The result must equal the single-node run, on both nodes."""
    job = jobs["torchrun"]
    assert job.killed_after is not None, "node 1 never wrote its step-1 checkpoint\n" + job.failure()
    assert "step_3" not in job.killed_after, "node 1 was killed mid-run"
    assert job.codes == [0, 0], job.failure()
    assert job.log(0).count("2 process(es) on cpu") == 2, "node 0's launcher restarted its worker once"
    assert "batch 8/device x 2 x accumulation 1 = 16 images/step" in job.log(1, "_rejoined")
    single = train_run("torchrun", 2, 1, *STEPS)
    reference = _params(single.out / "weights" / "last.pt", buffers=True)
    for n, log in ((0, job.log(0)), (1, job.log(1, "_rejoined"))):
        out = job.root / f"node{n}"
        assert f"resumed from {out / 'checkpoints' / 'step_'}" in log, log[-3000:]
        # Each node's copy holds the same model (BatchNorm statistics included: rank 0's, as DDP
        # defines them) and its log the same per-step losses, the resumed steps logged again.
        weights = _params(out / "weights" / "last.pt", buffers=True)
        assert all(torch.equal(reference[k], weights[k]) for k in reference), f"node {n}"
        losses = {r["step"]: r["loss"] for r in Run(out, None).log}  # the last record of each step
        assert losses == {r["step"]: r["loss"] for r in single.log}, f"node {n}"
        assert (out / "checkpoints" / "step_3" / "manifest.json").is_file()


def test_slurm_script_starts_one_torchrun_per_node(tmp_path):
    """Run scripts/slurm/train_multinode.sbatch as Slurm would, with scontrol and srun replaced by
    stubs; the launcher command it hands srun must be one torchrun's own parser accepts, aimed at the
    first node."""
    from torch.distributed.run import get_args_parser

    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "scontrol").write_text('#!/bin/sh\n[ "$*" = "show hostnames gpu-a[07-08]" ] || exit 3\n'
                                    'printf "gpu-a07\\ngpu-a08\\n"\n')
    (stubs / "srun").write_text('#!/bin/sh\necho "$TORCH_DISABLE_SHARE_RDZV_TCP_STORE"\n'
                                'for a in "$@"; do echo "$a"; done\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-a[07-08]",
           "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(ROOT), "GPUS_PER_NODE": "4"}
    proc = subprocess.run(["bash", "scripts/slurm/train_multinode.sbatch", "--data", "d.yaml", "--epochs", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("nodes: gpu-a[07-08]; rendezvous: gpu-a07:29500")
    shared_store_off, *srun_args = lines[1:]
    assert shared_store_off == "1"
    launcher = srun_args.index(str(ROOT / ".venv" / "bin" / "torchrun"))
    assert "--kill-on-bad-exit=0" in srun_args[:launcher] and "--ntasks-per-node=1" in srun_args[:launcher]
    args = get_args_parser().parse_args(srun_args[launcher + 1 :])
    assert (args.nnodes, args.nproc_per_node, args.rdzv_backend) == ("2", "4", "c10d")
    assert (args.rdzv_endpoint, args.rdzv_id, args.max_restarts) == ("gpu-a07:29500", "4242", 3)
    assert [args.training_script, *args.training_script_args] == [
        "train.py", "--data", "d.yaml", "--epochs", "3", "--resume", "auto"]


# ------------------------------------------------------------------- node-local storage, in-process
def test_node_local_storage_reaches_deepspeed_and_refuses_fsdp():
    ds = deepspeed_config(str(ROOT / "ds_configs" / "zero2.json"),
                          RunConfig(checkpoint=CheckpointConfig(save_on_each_node=True)), world_size=2)
    assert ds["checkpoint"] == {"use_node_local_storage": True}  # each node's local rank 0 writes model states
    assert "checkpoint" not in deepspeed_config(str(ROOT / "ds_configs" / "zero2.json"), RunConfig(), world_size=2)
    with pytest.raises(DistributedSetupError, match="--save-on-each-node with FSDP"):
        build_accelerator(RunConfig(parallel=ParallelConfig(strategy="fsdp"),
                                    checkpoint=CheckpointConfig(save_on_each_node=True)))


class _Ranks:
    """Stands in for an Accelerator of two processes whose nodes see different checkpoint lists."""

    num_processes = 2


def _complete(root: Path, *steps: int) -> None:
    for step in steps:
        (root / f"step_{step}").mkdir(parents=True)
        (root / f"step_{step}" / ckpt.COMPLETE_MARKER).write_text(f"{step}\n")


def test_resume_auto_takes_the_newest_step_complete_on_every_node(tmp_path, monkeypatch):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    _complete(node0, 1, 2, 3)
    _complete(node1, 1, 2)  # killed between node 0's publication of step 3 and its own
    monkeypatch.setattr(ckpt, "verify_checkpoint", lambda folder: None)
    monkeypatch.setattr(ckpt, "gather_object", lambda mine: [[1, 2, 3], [1, 2]])
    assert ckpt.resolve_resume("auto", node0, _Ranks()) == node0 / "step_2"
    assert ckpt.resolve_resume("auto", node0) == node0 / "step_3"  # one process: its own newest
    monkeypatch.setattr(ckpt, "gather_object", lambda mine: [[1, 2, 3], []])  # a node's disk was replaced
    shared_none = r"share no complete checkpoint \(steps per rank: \[\[1, 2, 3\], \[\]\]\)"
    with pytest.raises(ckpt.CheckpointError, match=shared_none):
        ckpt.resolve_resume("auto", node0, _Ranks())
    monkeypatch.setattr(ckpt, "gather_object", lambda mine: [[], []])
    assert ckpt.resolve_resume("auto", tmp_path / "fresh", _Ranks()) is None  # a first start
