"""How busy the machine was besides the benchmark: load average, CPU steal, other processes' CPU use.

A throughput measured while something else runs on the same cores is that machine's leftover share,
not the code's speed; on a 2-core box one other busy process halves a 2-process run. The sweep
samples the machine before its first run and after its last (:func:`idle_window`: the benchmark
sleeps, so all CPU time is other processes'), around every run (:func:`sample` before and after;
the runs' own CPU time, from ``getrusage`` of the reaped children, is subtracted), and the report
warns (:func:`warnings`) when others took cores the runs needed.

    before = idle_window()             # {"wall_s", "others_cores", "steal_share", "loadavg"}
    s0 = sample(); ...one run...; usage(s0, sample())

Linux ``/proc/stat`` gives the CPU time; elsewhere only the load average is recorded (and
``others_cores`` is absent). Standard library only.
"""

from __future__ import annotations

import os
import time
from typing import Any

#: /proc/stat's first line, in order ("guest" time is already counted inside "user")
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY = ("user", "nice", "system", "irq", "softirq")  # time some process (or its interrupts) ran
#: other processes' CPU use, beyond the cores the runs leave free, as a share of the cores the runs need,
#: above which the report warns: 10% of a core per core is the size of the efficiency differences the
#: report is read for (DDP's 0.92 against a 0.90 target; ZeRO-2 at 0.88 x DDP against 0.95)
LOAD_SHARE = 0.10
#: share of CPU time the hypervisor gave to other guests (/proc/stat "steal") above which the report warns
STEAL_SHARE = 0.05
#: seconds of the idle windows before and after the runs
IDLE_WINDOW_S = 2.0


def cores_available() -> int:
    """Cores this process may run on (its affinity mask; a container's CPU set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cores_needed(devices: int, threads: int, gpu: bool, cores: int) -> int:
    """Cores one run keeps busy: a CPU process per device runs ``threads`` intra-op threads (0: torch's
    default, every core); a GPU rank needs one core to drive its GPU. Loader workers are not counted:
    they sleep once their prefetch queue is full."""
    per_rank = 1 if gpu else (threads or cores)
    return devices * per_rank


def start(max_devices: int, threads: int, gpu: bool) -> dict[str, Any]:
    """The sweep's ``load`` record, begun before its first run: the cores, what the largest run needs,
    and other processes' use over an idle window now (``during`` and ``after`` are added by the sweep)."""
    cores = cores_available()
    return {"cores": cores, "threads": threads, "gpu": gpu, "per_rank": cores_needed(1, threads, gpu, cores),
            "cores_needed": cores_needed(max_devices, threads, gpu, cores),
            "thresholds": {"load_share": LOAD_SHARE, "steal_share": STEAL_SHARE}, "before": idle_window()}


def _proc_stat() -> dict[str, int] | None:
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:  # not Linux
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:1 + len(FIELDS)]]
    return dict(zip(FIELDS, values + [0] * (len(FIELDS) - len(values))))


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (a launcher's reaped workers included)."""
    import resource  # Unix only; without /proc/stat (the only user of this number) nothing is compared

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def sample() -> dict[str, Any]:
    """The machine's counters now: monotonic time, load average, /proc/stat, this process tree's CPU time."""
    clk = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return {"t": time.monotonic(), "loadavg": _loadavg(), "stat": _proc_stat(), "clk_tck": clk,
            "own_cpu_s": _own_cpu_s()}


def usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What other processes used between samples ``a`` and ``b``: ``others_cores`` (CPU seconds per
    second, this process tree's own subtracted), ``steal_share`` and the 1/5/15-minute load average at ``b``."""
    wall = max(b["t"] - a["t"], 1e-9)
    out: dict[str, Any] = {"wall_s": round(wall, 3), "loadavg": b["loadavg"]}
    if a["stat"] and b["stat"]:
        d = {k: b["stat"][k] - a["stat"][k] for k in FIELDS}
        busy_s = sum(d[k] for k in BUSY) / a["clk_tck"]
        total = sum(d.values())
        own = b["own_cpu_s"] - a["own_cpu_s"]
        out["others_cores"] = round(max(0.0, busy_s - own) / wall, 3)
        out["steal_share"] = round(d["steal"] / total, 4) if total else 0.0
    return out


def idle_window(seconds: float = IDLE_WINDOW_S) -> dict[str, Any]:
    """Other processes' use over ``seconds`` while the benchmark sleeps (before its first run, after its last)."""
    a = sample()
    time.sleep(seconds)
    return usage(a, sample())


# ------------------------------------------------------------------------------------- the warnings
def contention(others_cores: float, needed: int, cores: int) -> float:
    """Cores other processes took from the runs: what they used beyond the cores the runs leave free."""
    return max(0.0, others_cores - max(0, cores - needed))


def warnings(record: dict[str, Any] | None, runs: list[dict[str, Any]]) -> list[str]:
    """The report's warnings about a loaded machine, from ``results.json``'s ``load`` record and each
    repeat's ``load`` (see the module docstring and docs/benchmarks.md for the thresholds)."""
    if not record:
        return ["**Machine load not recorded** (this results.json predates the load check): nothing says "
                "whether other processes shared the cores; rerun to know."]
    cores, needed = record["cores"], record["cores_needed"]
    out = []
    if needed > cores:
        out.append(f"**Oversubscribed**: the largest run keeps {needed} cores busy ({record['per_rank']} per device), "
                   f"the benchmark may use {cores}: its processes take turns on the cores, so efficiency at that "
                   "device count measures the sharing, not the scaling. Use fewer devices or `--threads`.")
    limit = LOAD_SHARE * min(needed, cores)
    seen = []
    for when in ("before", "during", "after"):
        u = record.get(when) or {}
        if "others_cores" in u and contention(u["others_cores"], needed, cores) > limit:
            seen.append(f"{u['others_cores']:.2f} cores {when} the runs")
    la = (record.get("before") or {}).get("loadavg")
    high_load = f"the 1-minute load average was {la[0]:.2f} before them" if (
        la and contention(la[0], needed, cores) > limit) else ""
    loaded_runs = []
    for r in runs:
        n = cores_needed(r["devices"], record["threads"], record["gpu"], cores)
        for k, rep in enumerate(r.get("repeats", [])):
            u = rep.get("load") or {}
            if "others_cores" in u and contention(u["others_cores"], n, cores) > LOAD_SHARE * min(n, cores):
                loaded_runs.append(f"{r['label']} rep{k} ({u['others_cores']:.2f})")
    if seen or high_load or loaded_runs:
        parts = [f"other processes used {', '.join(seen)}"] if seen else []
        parts += [high_load] if high_load else []
        if loaded_runs:
            more = f" and {len(loaded_runs) - 8} more" if len(loaded_runs) > 8 else ""
            parts.append(f"runs that shared their cores (other processes' cores during them): "
                         f"{', '.join(loaded_runs[:8])}{more}")
        out.append(f"**Loaded machine**: other processes took more than {LOAD_SHARE:.0%} of the cores the runs "
                   f"need ({limit:.2f} of {min(needed, cores)}, beyond the {max(0, cores - needed)} the runs leave "
                   f"free): {'; '.join(parts)}. Those numbers are the share this machine left over, not the "
                   "code's speed: rerun on an idle machine.")
    steal = [(when, (record.get(when) or {}).get("steal_share", 0.0)) for when in ("before", "during", "after")]
    stolen = [f"{s:.0%} {when}" for when, s in steal if s > STEAL_SHARE]
    if stolen:
        out.append(f"**CPU steal**: the hypervisor gave {', '.join(stolen)} of this VM's CPU time to other guests "
                   f"(threshold {STEAL_SHARE:.0%}): the VM's cores were not all its own.")
    return out
