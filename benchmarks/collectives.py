"""All-reduce timings over the launched ranks, for fitting the projection's alpha and beta.

    torchrun --nproc_per_node 2 -m benchmarks.collectives --out allreduce.json

Backend: NCCL on GPUs, gloo on CPU (what training uses). Each size: 3 warm-up calls, then the median
of ``--repeats`` calls, each timed between barriers on rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

SIZES = (4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file written by rank 0")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
