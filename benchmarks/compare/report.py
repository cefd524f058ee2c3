"""A comparison's report section: the table of both trainers, the speed verdict, accuracy, YOLOFuse's table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPEED_TARGET = 1.1  # ours / Ultralytics, images per CPU-second, same model doing the same work (issue 15)



def _f(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _row(name: str, r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        err = (r.get("error") or r.get("reason") or "").strip().splitlines()[-1:] or [""]
        return f"| {name} | {r.get('status', 'failed')}: {err[0][:150]} |" + " |" * 10
    return (f"| {name} | {_f(r['images_per_s'], '.1f')} ({_f(r['images_per_s_p10'], '.1f')}..."
            f"{_f(r['images_per_s_p90'], '.1f')}) | {_f(r['step_time_s_median'], '.3f')} | "
            f"{_f(r['images_per_s_aggregate'], '.1f')} | {_f(r.get('images_per_cpu_s'), '.1f')} | "
            f"{_f(100 * r['slow_steps_fraction'], '.0f')} % | "
            f"{_f(r.get('mAP50'))} | {_f(r.get('mAP50-95'))} | "
            f"{r.get('params', 0):,} | {_f(r.get('wall_s'), '.0f')} | {_f(r.get('loadavg_1min_before'), '.1f')}, "
            f"{_f(r.get('loadavg_1min_after'), '.1f')} |")


def _ratio_line(what: str, r: dict[str, Any], target: float) -> str:
    """The speed verdict: ``target`` applies to images per CPU-second (the measure other tenants of a
    shared machine hardly disturb at one thread); the wall-time ratios are printed beside it."""
    ratio, cpu = r.get("ratio_images_per_s"), r.get("ratio_images_per_cpu_s")
    if ratio is None:
        return f"**Ratio ours / {what}** (train-phase images/s): not available (a run failed, see the table)."
    line = f"**Ratio ours / {what}** (median train-phase images/s): **{ratio:.2f}x**"
    if cpu is not None:
        line += (f"; images per CPU-second: **{cpu:.3f}x**, target >= {target:.1f}x: "
                 f"**{'met' if cpu >= target else 'not met'}**")
    if r.get("ratio_images_per_s_p90") is not None:
        line += f" (fast-decile rates: {r['ratio_images_per_s_p90']:.2f}x)"
    return line + "."


def markdown(result: dict[str, Any]) -> str:
    """Render a report section (tables + notes) from a ``benchmarks.compare_ultralytics.compare`` result."""
    s, m = result["settings"], result["machine"]
    head = ("| trainer | images/s median (p10...p90) | step s (median) | images/s aggregate | images/CPU-s "
            "| slow steps | mAP50 | mAP50-95 | params | process wall s | load before, after |\n" + "|---" * 11 + "|")
    lines = [
        f"### Ours vs Ultralytics' own trainer: {s['model']} data-level fusion (RGB+IR as 4 input channels)",
        "",
        f"{m['label']} ({m['processor']}, {m['cpu_count']} CPUs), {s['threads']} thread(s) per process; "
        f"{s['data']}; {s['imgsz']} px, batch {s['batch']}, {s['epochs']} epochs, workers {s['workers']}, "
        f"SGD lr {s['lr']}, warm-up {s['warmup_epochs']} epoch(s), close_mosaic {s['close_mosaic']}, seed {s['seed']}; "
        f"torch {m['torch']}, Ultralytics {m['ultralytics']}.",
        "",
        head,
        _row(f"ours (`train.py --fusion data --model {s['model']}`)", result["ours"]),
        _row(f"Ultralytics {result['ultralytics'].get('version', '')} `DetectionTrainer` ({s['model']}.yaml, "
             "4-ch TIFF)", result["ultralytics"]),
        "",
        _ratio_line("Ultralytics", result, SPEED_TARGET),
    ]
    o, u = result["ours"], result["ultralytics"]
    if o.get("mAP50") is not None and u.get("mAP50") is not None:
        lines.append(f"**Accuracy at equal budget**: mAP50 ours {o['mAP50']:.3f} vs Ultralytics {u['mAP50']:.3f} "
                     f"({o['mAP50'] - u['mAP50']:+.3f}); mAP50-95 {o['mAP50-95']:.3f} vs {u['mAP50-95']:.3f} "
                     f"({o['mAP50-95'] - u['mAP50-95']:+.3f}).")
    if o.get("peak_rss_mib") is not None and u.get("peak_rss_mib") is not None:
        lines.append(f"**Peak resident memory** of the training process (with workers 0 it is the loader too, "
                     f"decoded images kept included): ours {o['peak_rss_mib']:.0f} MiB, Ultralytics "
                     f"{u['peak_rss_mib']:.0f} MiB.")
    lines += ["", f"**More than one device**: {result['multi_device']['note']}", ""]
    yf = result["yolofuse"]
    if yf.get("status") == "not run":
        lines.append(f"**YOLOFuse (Mid-level-Feature-Fusion.yaml)**: {yf['reason']}.")
    else:
        lines += [f"**YOLOFuse (`{Path(yf.get('yaml', '')).name}`, scale {yf.get('scale') or 'first'})**:", "",
                  head, _row("ours (`train.py --model <that yaml>`)", yf.get("ours", {})),
                  _row(f"YOLOFuse trainer (ultralytics fork {yf.get('yolofuse', {}).get('version', '')})",
                       yf.get("yolofuse", {})), "",
                  _ratio_line("YOLOFuse", yf, SPEED_TARGET)]
        lines += [f"- {n}" for n in yf.get("notes", [])]
    lines += ["", "Notes:"] + [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"
