"""The results of benchmarks/gpu_session.sh, rewritten after every step so a cut session keeps them.

    python -m benchmarks.gpu_session_report --out OUT --work WORK --mode run

Reads what the steps left (OUT/steps.tsv, OUT/env.txt, OUT/junit_gpu.xml, WORK/<sweep>/results.json,
WORK/notes/*.txt) and writes into OUT, flat: ``report.md``, ``sweeps.json`` (every sweep's
results.json as it stands, the steps and the notes) and ``sweeps.png`` (images/s per configuration).
Then it holds OUT to a small flat folder: at most 8 plain files, each under 16 MiB;
what does not fit is trimmed or dropped, and the report says so. Standard library only (matplotlib
for the plot if it is there): it must run on a machine whose dependencies failed to install.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

MAX_FILES = 8
MAX_BYTES = 16 * 2**20
#: every file the session writes into OUT (at most MAX_FILES); anything else there is not ours
OUR_FILES = ("report.md", "sweeps.json", "sweeps.png", "steps.tsv", "env.txt", "junit_gpu.xml", "session.log",
             "logs.tar.gz")
SWEEPS = ("scaling_strategies", "scaling_n", "scaling_s")


def read_steps(out: Path) -> list[dict[str, str]]:
    path = out / "steps.tsv"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, code, seconds, command = (line.split("\t") + [""] * 5)[:5]
        rows.append({"step": name, "status": status, "exit": code, "seconds": seconds, "command": command.strip()})
    return rows


def read_sweep(folder: Path) -> dict[str, Any] | None:
    """A sweep's results.json as it stands (the benchmark rewrites it after every configuration)."""
    path = folder / "results.json"
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"error": f"{path.name} unreadable: {e}", "runs": []}
    results["planned"] = planned_configurations(results.get("config", {}))
    return results


def planned_configurations(config: dict[str, Any]) -> int | None:
    """How many configurations the sweep meant to measure (None if its plan cannot be rebuilt here)."""
    try:
        from yolofuse_scale.bench.plan import plan
        from yolofuse_scale.bench.sweep import build_parser

        args = build_parser().parse_args([])
        vars(args).update(config)
        return len(plan(args))
    except Exception:  # an older or newer benchmark: the count is a courtesy, not a requirement
        return None


def card_name(env: str, mode: str) -> str:
    m = re.search(r"^device (.+?) sm_", env, re.M) or re.search(r"^name.*\n(.+?),", env, re.M)
    if not m:
        return f"{mode}_nocuda"
    return re.sub(r"[^a-z0-9]+", "_", m.group(1).lower().replace("nvidia", "")).strip("_")


def junit_summary(path: Path) -> list[str]:
    if not path.exists():
        return []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return ["", f"## tests/test_gpu.py: {path.name} unreadable ({e})"]
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return []
    a = suite.attrib
    lines = ["", f"## tests/test_gpu.py: {a.get('tests')} tests, {a.get('failures')} failed, {a.get('errors')} "
             f"errors, {a.get('skipped')} skipped ({float(a.get('time', 0)):.0f} s)", ""]
    for case in suite.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, message = tag, (el.get("message") or "").split("\n")[0][:200]
        lines.append(f"- {outcome}: `{case.get('name')}` ({float(case.get('time', 0)):.1f} s) {message}")
    return lines


def _mib(n: float | None) -> str:
    return "-" if not n else f"{n / 2**20:.0f} MiB"


def sweep_lines(name: str, results: dict[str, Any] | None, step: dict[str, str] | None) -> list[str]:
    lines = ["", f"## {name}", ""]
    if results is None:
        status = step["status"] if step else "not run"
        return lines + [f"No results.json ({status}); see logs.tar.gz: logs/{name}.log."]
    runs = results.get("runs", [])
    planned = results.get("planned")
    done = f"{len(runs)} of {planned}" if planned else str(len(runs))
    cut = " (the step was cut: the rest was not measured)" if step and step["status"] == "timeout" else ""
    cfg = results.get("config", {})
    lines += [f"{done} configurations measured{cut}. {cfg.get('model')} {cfg.get('fusion')} fusion, "
              f"{cfg.get('imgsz')} px, batch {cfg.get('batch_size')}/device, {cfg.get('workers')} loader workers, "
              f"{cfg.get('warmup')} warm-up + {cfg.get('steps')} timed steps.", ""]
    if "error" in results:
        lines += [f"- {results['error']}", ""]
    if not runs:
        return lines
    lines += ["| configuration | images/s | vs first | step ms | data % | peak memory | error |",
              "|---|---|---|---|---|---|---|"]
    first = next((r for r in runs if "error" not in r), None)
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['label']} | - | - | - | - | - | {r['error'][:200].replace('|', '/')} |")
            continue
        ips = r["images_per_s"]["median"]
        peak = r.get("peak_memory_max") or {}
        mem = peak.get("cuda_max_allocated_bytes") or peak.get("rss_bytes")
        lines.append(f"| {r['label']} | {ips:.1f} | {ips / first['images_per_s']['median']:.2f} | "
                     f"{r['step_s'] * 1e3:.0f} | {r['data_share'] * 100:.0f} | {_mib(mem)} | |")
    return lines


def loader_lines(work: Path, step: dict[str, str] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The loader step's JSON (both pipelines side by side) and its table for report.md."""
    path = work / "loader" / "loader.json"
    if not path.is_file():
        return None, ([] if step is None else ["", f"## loader: no results ({step['status']})"])
    result = json.loads(path.read_text())
    s = result.get("settings", {})
    lines = ["", f"## loader: CPU recipe vs --loader device ({result.get('device', '?')}; batch {s.get('batch')}, "
             f"{s.get('imgsz')} px, {result.get('dataset', {}).get('frame_hw')} frames)", "",
             "| pipeline | workers | device | pairs/s | images/s | PSS MiB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['workers']} | {r.get('device', 'cpu')} | {r['pairs_per_s']:.1f} | "
              f"{r.get('images_per_s', 2 * r['pairs_per_s']):.1f} | {r['pss_mib']:.0f} |" for r in result["rows"]]
    return result, lines


def compare_lines(work: Path, step: dict[str, str] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The trainer comparison's result (ours vs Ultralytics on this GPU) and its table for report.md."""
    path = work / "compare" / "results.json"
    if not path.is_file():
        return None, ([] if step is None else ["", f"## compare: no results ({step['status']})"])
    run = json.loads(path.read_text())["runs"][0]
    s = run["settings"]
    lines = ["", f"## compare: ours vs Ultralytics' trainer ({s.get('device')}; {s.get('model')} data-level, "
             f"{s.get('imgsz')} px, batch {s.get('batch')}, {s.get('epochs')} epochs, cache {s.get('cache')}, "
             f"HSV {'off' if s.get('no_hsv') else 'on'})", "",
             "| trainer | status | images/s median | images/CPU-s | mAP50-95 |", "|---|---|---|---|---|"]
    for name in ("ours", "ultralytics"):
        r = run.get(name, {})
        lines.append(f"| {name} | {r.get('status')} | {_num(r.get('images_per_s'))} | "
                     f"{_num(r.get('images_per_cpu_s'))} | {_num(r.get('mAP50-95'), '.3f')} |")
    lines.append(f"\nratio ours / Ultralytics, images/s: {_num(run.get('ratio_images_per_s'), '.2f')}")
    return run, lines


def _num(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def memory_lines(env: str) -> list[str]:
    """Where the loader's shared memory and the RAM cache would come from (env.txt's memory section)."""
    shm = re.search(r"^shm_bytes: (\d+)", env, re.M)
    total = re.search(r"^MemTotal:\s+(\d+) kB", env, re.M)
    avail = re.search(r"^MemAvailable:\s+(\d+) kB", env, re.M)
    out = []
    if total:
        out.append(f"- memory: {int(total.group(1)) / 2**20:.0f} GiB total, "
                   f"{int(avail.group(1)) / 2**20 if avail else 0:.0f} GiB available")
    if shm:
        size = int(shm.group(1))
        warn = (" (small: DataLoader workers pass batches through /dev/shm, and cache=ram puts the decoded set "
                "there; failures of those runs may be this)") if size < 2**30 else ""
        out.append(f"- /dev/shm: {size / 2**30:.2f} GiB{warn}")
    return out


def plot(sweeps: dict[str, Any], path: Path) -> bool:
    rows = {n: [r for r in s.get("runs", []) if "error" not in r] for n, s in sweeps.items() if s}
    rows = {n: r for n, r in rows.items() if r}
    if not rows:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 1.2 + 0.35 * sum(map(len, rows.values())) + len(rows)),
                             squeeze=False)
    for ax, (name, runs) in zip(axes[:, 0], rows.items()):
        ax.barh([r["label"] for r in runs][::-1], [r["images_per_s"]["median"] for r in runs][::-1])
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("images/s (train phase, median of the timed steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def hold_to_limits(out: Path) -> list[str]:
    """Trim or drop what does not fit the flat-folder limit; return what was done, for the report."""
    notes = []
    for p in sorted(out.iterdir()):
        if p.is_dir() or p.is_symlink():
            notes.append(f"{p.name}/ in the results folder is not ours and will not come back (not a plain file)")
        elif p.stat().st_size >= MAX_BYTES:
            if p.name == "session.log":  # the end says most about a cut session
                tail = p.read_bytes()[-(MAX_BYTES // 4):]
                p.write_bytes(b"[... trimmed to its last 4 MiB by gpu_session_report ...]\n" + tail)
                notes.append(f"session.log was over {MAX_BYTES >> 20} MiB: trimmed to its last 4 MiB")
            elif p.name in OUR_FILES:
                size = p.stat().st_size
                p.unlink()
                notes.append(f"{p.name} was {size / 2**20:.0f} MiB (limit {MAX_BYTES >> 20} MiB): dropped")
            else:
                notes.append(f"{p.name} ({p.stat().st_size / 2**20:.0f} MiB) is not ours and over the size limit")
    files = [p.name for p in out.iterdir() if p.is_file()]
    if len(files) > MAX_FILES:
        extra = sorted(set(files) - set(OUR_FILES))
        notes.append(f"{len(files)} files in the results folder (limit {MAX_FILES}); not ours: {', '.join(extra)}")
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="the results folder (flat)")
    p.add_argument("--work", required=True, type=Path, help="the session's work folder (step logs, sweep outputs)")
    p.add_argument("--mode", default="run")
    p.add_argument("--budget-s", type=int, default=0)
    args = p.parse_args(argv)
    out, work = args.out, args.work
    env = (out / "env.txt").read_text(errors="replace") if (out / "env.txt").exists() else ""
    steps = read_steps(out)
    by_step = {s["step"]: s for s in steps}
    sweeps = {name: read_sweep(work / name) for name in SWEEPS}
    notes = [line for f in sorted((work / "notes").glob("*.txt")) for line in f.read_text().splitlines() if line]
    card = card_name(env, args.mode)
    loader, loader_table = loader_lines(work, by_step.get("loader"))
    trainers, compare_table = compare_lines(work, by_step.get("compare"))

    summary = {"schema_version": 1, "mode": args.mode, "card": card, "budget_s": args.budget_s, "steps": steps,
               "notes": notes, "sweeps": {n: s for n, s in sweeps.items() if s is not None}}
    if loader is not None:
        summary["loader"] = {k: loader.get(k) for k in ("rows", "settings", "dataset", "device", "machine")}
    if trainers is not None:
        summary["compare"] = {k: trainers.get(k) for k in ("settings", "ours", "ultralytics", "ratio_images_per_s",
                                                            "ratio_images_per_cpu_s", "machine", "notes")}
    text = json.dumps(summary, indent=1)
    if len(text.encode()) >= MAX_BYTES:  # the per-repeat details go first: the medians are the result
        for s in summary["sweeps"].values():
            for r in s.get("runs", []):
                r.pop("repeats", None)
        text = json.dumps(summary, indent=1)
        notes.append("sweeps.json: per-repeat details left out to stay under 16 MiB (they are in logs.tar.gz)")
    tmp = out / ".sweeps.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "sweeps.json")
    plotted = plot(sweeps, out / "sweeps.png")
    notes += hold_to_limits(out)

    lines = [f"# GPU session: {card}", "",
             f"Copy these files to `benchmarks/results/{card}_gpu_session/` and commit them; logs.tar.gz holds "
             "each step's log and each sweep's own report.md, results.json and per-run logs.", ""]
    lines += [f"- {line}" for line in env.splitlines()
              if line.startswith(("date:", "mode:", "commit:", "tree sha256:", "device ", "torch "))]
    lines += memory_lines(env)
    lines += ["", "| step | status | exit | seconds | command |", "|---|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['exit']} | {s['seconds']} | "
              f"`{s['command'][:200].replace('|', '/')}` |" for s in steps]
    lines += junit_summary(out / "junit_gpu.xml")
    for name in SWEEPS:
        if name in by_step or sweeps[name] is not None:
            lines += sweep_lines(name, sweeps[name], by_step.get(name))
    lines += loader_table
    lines += compare_table
    if plotted:
        lines += ["", "sweeps.png: images/s of every measured configuration."]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "report.md")
    print(f"report: {out / 'report.md'} (card {card}; {sum(1 for s in sweeps.values() if s)} sweep(s) with results)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
