"""DDP's gradient all-reduce on CPU (engine/strategy/grad_reduce.py): through shared memory among one machine's
processes, with gloo's numbers, chunked when a bucket outgrows the segment, and gloo when the ranks cannot share."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import BIN, ENV, ROOT, free_port

STEPS = ["--max-steps", "3", "--no-val", "--no-ema"]  # tests/test_ddp.py's run: shared with it

# Three ranks of a real gloo group, each scenario in turn; each rank writes what it saw to <out>/<scenario>-<rank>.pt.
SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from yolofuse_scale.engine import perf
    from yolofuse_scale.engine.strategy import grad_reduce

    class Log:
        def __init__(self):
            self.lines = []
        def info(self, msg):
            self.lines.append(msg)

    def model_and_grads(seed):
        torch.manual_seed(0)  # the same weights on every rank, as DDP broadcasts them
        model = torch.nn.Sequential(torch.nn.Linear(7, 300), torch.nn.Tanh(), torch.nn.Linear(300, 5))
        torch.manual_seed(100 + seed)  # this rank's batch
        x = torch.randn(4, 7)
        return model, x

    def step(model, x):
        model(x).square().sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    shm_dir = Path(sys.argv[2])  # on /dev/shm's tmpfs, this test's own

    def scenario(name, out, rank, world):
        log, meter = Log(), perf.CommMeter().install()
        if name == "two_hosts":  # what each rank would report on its own machine
            grad_reduce._host_key = lambda: f"host-{rank}"
        if name == "one_rank_fails":  # rank 1 cannot create its segment: everyone falls back, nothing left behind
            grad_reduce.SHM_DIR = shm_dir if rank != 1 else Path(out) / "missing"
        model, x = model_and_grads(rank)
        local = step(model, x)  # this rank's own gradient, before any reduction
        model.zero_grad()
        ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.004)  # several buckets
        path = grad_reduce.attach_grad_reduce(ddp, "auto", log, meter)
        step(ddp, x)  # DDP's first step: one bucket; from the second, buckets of bucket_cap_mb
        ddp.zero_grad()
        meter.take()
        reduced = step(ddp, x)  # no optimizer: the same weights, so the same local gradients again
        mine = sorted(p.name for p in shm_dir.iterdir())  # a folder of this test's own: no other run's segments
        torch.save({"path": path, "local": local, "reduced": reduced, "log": log.lines, "comm": meter.take(),
                    "shm_files": mine}, Path(out) / f"{name}-{rank}.pt")
        grad_reduce.SHM_DIR = shm_dir

    def main():
        dist.init_process_group("gloo")
        rank, world, out = dist.get_rank(), dist.get_world_size(), sys.argv[1]
        grad_reduce.SHM_DIR = shm_dir
        grad_reduce.MAX_SEGMENT_BYTES = 1000  # buckets of ~4 KB: each is reduced in several chunks
        host_key = grad_reduce._host_key
        for name in ("shm", "two_hosts", "one_rank_fails"):
            scenario(name, out, rank, world)
            grad_reduce._host_key = host_key
            dist.barrier()
        # Everything is written: leave without tearing the process group down. Its teardown under load once
        # aborted a rank ("terminate called without an active exception") after the results were saved.
        sys.stdout.flush()
        os._exit(0)

    main()
""")


@pytest.fixture(scope="session")  # not module: an xdist worker may interleave other modules' tests, which
def three_ranks(tmp_path_factory):  # would tear a module fixture down and run the three ranks again
    out = tmp_path_factory.mktemp("grad_reduce")
    (out / "script.py").write_text(SCRIPT)
    shm_dir = Path("/dev/shm") / f"yolofuse-test-{uuid.uuid4().hex[:8]}"
    shm_dir.mkdir()
    try:
        proc = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=3", f"--master_port={free_port()}",
                               str(out / "script.py"), str(out), str(shm_dir)], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=240)
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return lambda name: [torch.load(out / f"{name}-{r}.pt") for r in range(3)]


@pytest.mark.slow  # three processes under torchrun (~10 s, once for the module's three tests)
def test_shared_memory_reduce_is_the_rank_ordered_mean_on_every_rank(three_ranks):
    """Three ranks, buckets of ~4 KB reduced in 1000-byte chunks: every rank ends with the same gradient, the mean
    summed in rank order ((g0/3 + g1/3) + g2/3, bit for bit), which is gloo's mean up to the order of additions;
    each bucket is counted once by the communication meter; no segment is left behind."""
    ranks = three_ranks("shm")
    assert [r["path"] for r in ranks] == ["shm"] * 3
    assert "DDP gradient all-reduce: shared memory (3 ranks on this machine" in ranks[0]["log"][0], ranks[0]["log"]
    g = [r["local"] for r in ranks]
    assert not torch.equal(g[0], g[1]), "each rank has its own batch"
    expected = (g[0] / 3 + g[1] / 3) + g[2] / 3
    for r in ranks:
        assert torch.equal(r["reduced"], expected)
    torch.testing.assert_close(expected, (g[0] + g[1] + g[2]) / 3, rtol=1e-6, atol=1e-7)
    calls, payload = ranks[0]["comm"]["all_reduce"]
    grad_bytes = g[0].numel() * 4
    assert calls > 1 and payload == grad_bytes, (calls, payload, grad_bytes)  # several buckets, every byte once
    assert all(not r["shm_files"] for r in ranks), [r["shm_files"] for r in ranks]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["two_hosts", "one_rank_fails"])
def test_ranks_that_cannot_share_memory_reduce_with_gloo(three_ranks, scenario):
    """Ranks on two machines, or one rank unable to create its segment: every rank takes gloo (no rank left
    waiting in a barrier the others never reach), the log says why, the mean is gloo's, and no segment stays."""
    ranks = three_ranks(scenario)
    assert [r["path"] for r in ranks] == ["gloo"] * 3
    why = {"two_hosts": "gloo (ranks on 3 machines)", "one_rank_fails": "gloo (another rank could not reserve"}
    assert why[scenario] in ranks[0]["log"][0], ranks[0]["log"]
    if scenario == "one_rank_fails":
        assert "missing/yolofuse-allreduce-" in ranks[1]["log"][0], ranks[1]["log"]  # the rank that failed names it
    g = [r["local"] for r in ranks]
    for r in ranks:
        torch.testing.assert_close(r["reduced"], (g[0] + g[1] + g[2]) / 3, rtol=1e-6, atol=1e-7)
        assert torch.equal(r["reduced"], ranks[0]["reduced"])
    assert ranks[0]["comm"]["all_reduce"][1] == g[0].numel() * 4  # the gloo path is counted too
    assert all(not r["shm_files"] for r in ranks), [r["shm_files"] for r in ranks]


@pytest.mark.slow
def test_ddp_training_through_shared_memory_equals_one_process_accumulation(train_run):
    """A real 2-process torchrun training reduces through shared memory and says so, and ends with the losses and
    weights of one process accumulating the same two micro-batches, bit for bit (two ranks: g0/2 + g1/2 in either
    order). Both runs are tests/test_ddp.py's, so no training is added; the gloo path trains in the three-rank
    script above."""
    shm = train_run("torchrun", 2, 1, *STEPS)
    ref = train_run("python", 1, 2, *STEPS)
    assert "DDP gradient all-reduce: shared memory (2 ranks on this machine" in shm.output, shm.output[-3000:]
    assert "DDP gradient all-reduce" not in ref.output, ref.output[-3000:]
    assert [r["loss"] for r in shm.log] == [r["loss"] for r in ref.log] and len(shm.log) == 3
    ws, wr = (load_file(sorted((r.out / "checkpoints").glob("step_*"))[-1] / "model.safetensors") for r in (shm, ref))
    stats = ("running_mean", "running_var", "num_batches_tracked")  # rank 0's under DDP, both batches' in one process
    params = [k for k in ws if not k.endswith(stats)]
    assert ws.keys() == wr.keys() and params and all(torch.equal(ws[k], wr[k]) for k in params)
