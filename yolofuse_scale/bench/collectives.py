"""The measured link: all-reduce timings over launched ranks, fitted to the projection's alpha and beta.

    torchrun --nproc_per_node 2 -m yolofuse_scale.bench.collectives --out allreduce.json   # the timing
    fit_measured_link(n=2, threads=1, out=folder)                                          # launch + fit

Backend: NCCL on GPUs, gloo on CPU (what training uses). Each size: 3 warm-up calls, then the median
of ``--repeats`` calls, each timed between barriers on rank 0. torch is imported by the timing only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from yolofuse_scale.bench import launch
from yolofuse_scale.bench.projection import fit_link

#: seconds the timing run may take (five sizes, 13 calls each: seconds, unless a rank hangs)
TIMEOUT_S = 300

SIZES = (4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file written by rank 0")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda") if cuda else torch.device("cpu")
    n = dist.get_world_size()
    points = []
    for size in SIZES:
        x = torch.ones(size // 4, dtype=torch.float32, device=device)
        times = []
        for i in range(3 + args.repeats):
            dist.barrier()
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            if cuda:
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        points.append([n, size, statistics.median(times)])
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps({"backend": dist.get_backend(), "points": points}, indent=1))
    dist.destroy_process_group()
    return 0


def fit_measured_link(n: int, threads: int | None, out: Path) -> dict[str, Any]:
    """All-reduce timings over ``n`` processes launched by torchrun -> fitted alpha/beta (or ``error``)."""
    target = out / "allreduce.json"
    cmd = launch.module_command(launch.launcher_command("torchrun", n), "yolofuse_scale.bench.collectives",
                                "--out", str(target))
    run = launch.run_command(cmd, launch.train_env(threads), timeout=TIMEOUT_S)
    if not run.ok:
        return {"error": run.error(TIMEOUT_S) if run.timed_out else run.output[-1500:]}
    data = json.loads(target.read_text())
    link = fit_link([tuple(p) for p in data["points"]])
    return {"backend": data["backend"], "devices": n, "points": data["points"], "alpha_s": link.alpha_s,
            "beta_bytes_per_s": link.beta_bytes_per_s}


if __name__ == "__main__":
    raise SystemExit(main())
