"""Where a training step's CPU time goes, ours beside Ultralytics' trainer: one cProfile run of each.

    python -m benchmarks.compare_ultralytics --out runs/cmp --train-pairs 256 --cache ram --no-hsv
    python -m benchmarks.step_profile --compare runs/cmp --out benchmarks/results/step_profile_2core_cpu

It reruns the two trainings of a finished ``compare_ultralytics`` comparison (its first run: same data,
flags and seed) under ``cProfile``, each in a fresh process at the comparison's thread count, and
splits the CPU time of the training loop into the parts both trainers have: data, forward + loss,
backward, gradient clipping, optimizer, EMA, zero_grad, and validation (per epoch, not per step).
Each part is the cumulative time of the call the loop makes for it (``PARTS``: caller -> callee,
matched by file and function), divided by the optimizer steps; ``other`` is the rest of the loop (its
own Python, logging, callbacks, the learning-rate schedule), set-up and checkpoints left out.

Times are process CPU seconds. cProfile slows Python-heavy code (a few microseconds per call), so
the parts are a map of where time goes, not a speed measurement; the speed ratio is the comparison's
own, unprofiled. Writes ``results.json`` (parts in ms per step, the top functions by own time) and
``report.md``.
"""

from __future__ import annotations

import argparse
import json
import pstats
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.compare.runs import trainer_env  # noqa: E402

SCHEMA = "step_profile/1"
# part -> (caller, callee) as "file-suffix:function"; the loop's own call for that part, per trainer.
PARTS: dict[str, dict[str, tuple[str, str]]] = {
    "ours": {
        "loop": ("yolofuse_scale/engine/trainer.py:fit", "yolofuse_scale/engine/trainer.py:_train_epoch"),
        "data": ("yolofuse_scale/engine/trainer.py:_train_epoch", "torch/utils/data/dataloader.py:__next__"),
        "forward + loss": ("yolofuse_scale/engine/trainer.py:_train_epoch", "yolofuse_scale/engine/task.py:step"),
        "backward": ("yolofuse_scale/engine/trainer.py:_train_epoch", "accelerate/accelerator.py:backward"),
        "clip": ("yolofuse_scale/engine/trainer.py:_train_epoch",
                 "yolofuse_scale/engine/strategy/accelerator.py:clip_grad_norm"),
        "optimizer": ("yolofuse_scale/engine/trainer.py:_train_epoch", "accelerate/optimizer.py:step"),
        "EMA": ("torch/utils/_contextlib.py:decorate_context", "yolofuse_scale/engine/ema.py:update"),  # no_grad
        "zero_grad": ("yolofuse_scale/engine/trainer.py:_train_epoch", "accelerate/optimizer.py:zero_grad"),
        "validation": ("yolofuse_scale/engine/trainer.py:fit", "yolofuse_scale/engine/trainer.py:_validate"),
    },
    "ultralytics": {
        "loop": ("ultralytics/engine/trainer.py:train", "ultralytics/engine/trainer.py:_do_train"),
        "data": ("ultralytics/engine/trainer.py:_do_train", "ultralytics/utils/tqdm.py:__iter__"),
        "forward + loss": ("ultralytics/engine/trainer.py:_do_train", "torch/nn/modules/module.py:_wrapped_call_impl"),
        "backward": ("ultralytics/engine/trainer.py:_do_train", "torch/_tensor.py:backward"),
        "clip": ("ultralytics/engine/trainer.py:optimizer_step", "torch/nn/utils/clip_grad.py:_no_grad_wrapper"),
        "optimizer": ("ultralytics/engine/trainer.py:optimizer_step", "torch/amp/grad_scaler.py:step"),
        "EMA": ("ultralytics/engine/trainer.py:optimizer_step", "ultralytics/utils/torch_utils.py:update"),
        "zero_grad": ("ultralytics/engine/trainer.py:optimizer_step", "torch/_compile.py:inner"),
        "validation": ("ultralytics/engine/trainer.py:_do_train", "ultralytics/engine/trainer.py:validate"),
    },
}
# Calls inside the trainer's loop function that are not steps (set-up, checkpoints, final evaluation);
# validation is a part of its own. Ours: _train_epoch holds the steps only.
NOT_STEPS = {
    "ours": (),
    "ultralytics": tuple(("ultralytics/engine/trainer.py:_do_train", f"ultralytics/engine/trainer.py:{f}") for f in
                         ("_setup_train", "validate", "save_model", "final_eval", "_clear_memory",
                          "_close_dataloader_mosaic", "save_metrics")),
}
PER_STEP = ("data", "forward + loss", "backward", "clip", "optimizer", "EMA", "zero_grad")


def _key(func: tuple[str, int, str]) -> str:
    path, _, name = func
    return f"{path.replace(chr(92), '/')}:{name}"


def _matches(func: tuple[str, int, str], pattern: str) -> bool:
    suffix, name = pattern.rsplit(":", 1)
    return func[2] == name and func[0].replace("\\", "/").endswith(suffix)


def call_seconds(stats: pstats.Stats, caller: str, callee: str) -> tuple[float, int]:
    """Cumulative seconds and calls of ``callee`` when called from ``caller`` (patterns "file-suffix:function")."""
    seconds, calls = 0.0, 0
    for func, (_, _, _, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if not _matches(func, callee):
            continue
        for who, (_, nc, _, ct) in callers.items():
            if _matches(who, caller):
                seconds, calls = seconds + ct, calls + nc
    return seconds, calls


def split(stats: pstats.Stats, trainer: str, steps: int) -> dict[str, Any]:
    """The loop's parts in ms per optimizer step (validation: ms per call), from one profile."""
    parts = {name: call_seconds(stats, *where) for name, where in PARTS[trainer].items()}
    loop_s = parts.pop("loop")[0] - sum(call_seconds(stats, *where)[0] for where in NOT_STEPS[trainer])
    val_s, val_calls = parts.pop("validation")
    per_step = {name: round(1000 * parts[name][0] / steps, 2) for name in PER_STEP}
    per_step["other"] = round(1000 * loop_s / steps - sum(per_step.values()), 2)
    top = sorted(((v[2], _key(f)) for f, v in stats.stats.items()), reverse=True)[:15]  # type: ignore[attr-defined]
    return {"steps": steps, "loop_ms_per_step": round(1000 * loop_s / steps, 2), "ms_per_step": per_step,
            "validation_ms_per_call": round(1000 * val_s / max(val_calls, 1), 1), "validation_calls": val_calls,
            "top_own_time": [{"function": k, "s": round(t, 3)} for t, k in top]}


def profile_run(module_args: list[str], threads: int, prof: Path, log: Path) -> pstats.Stats:
    """``python -m benchmarks.compare_ultralytics MODULE_ARGS`` in a fresh process under cProfile, timed in
    process CPU seconds (``-m cProfile`` times wall seconds, which other tenants of a shared machine inflate)."""
    full = [sys.executable, "-m", "benchmarks.step_profile", "--profiled", str(prof), *module_args]
    proc = common.run_command(full, trainer_env(threads), log=log)
    if not proc.ok:
        raise SystemExit(f"error: the profiled run failed ({proc.returncode}); see {log}:\n{proc.output[-1500:]}")
    return pstats.Stats(str(prof))


def markdown(result: dict[str, Any]) -> str:
    o, u = result["ours"], result["ultralytics"]
    lines = [f"### Where a step's CPU time goes: ours vs Ultralytics ({result['settings']['model']} data-level, "
             f"{result['settings']['imgsz']} px, batch {result['settings']['batch']}, "
             f"{result['settings']['threads']} thread(s), under cProfile)", "",
             "| part | ours ms/step | Ultralytics ms/step | ours - theirs |", "|---|---|---|---|"]
    for name in (*PER_STEP, "other"):
        a, b = o["ms_per_step"][name], u["ms_per_step"][name]
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    lines.append(f"| **loop** | **{o['loop_ms_per_step']:.2f}** | **{u['loop_ms_per_step']:.2f}** | "
                 f"**{o['loop_ms_per_step'] - u['loop_ms_per_step']:+.2f}** |")
    lines.append(f"| validation (per epoch) | {o['validation_ms_per_call']:.0f} | {u['validation_ms_per_call']:.0f} "
                 f"| {o['validation_ms_per_call'] - u['validation_ms_per_call']:+.0f} |")
    lines += ["", f"{o['steps']} optimizer steps each; machine: {result['environment']['cpu']} "
              f"({result['settings'].get('label') or 'unlabelled'}). Parts are the cumulative time of the loop's "
              "own call for each (benchmarks/step_profile.py: PARTS); cProfile inflates Python-heavy parts, so this "
              "is a map, not a speed measurement (see the comparison's own ratio)."]
    return "\n".join(lines) + "\n"


def _profiled(prof: str, module_args: list[str]) -> int:
    """Internal: run benchmarks.compare_ultralytics with ``module_args`` under a CPU-time cProfile."""
    import cProfile
    import runpy
    import time

    sys.argv = ["benchmarks.compare_ultralytics", *module_args]
    profiler = cProfile.Profile(time.process_time)
    code = 0
    profiler.enable()
    try:
        runpy.run_module("benchmarks.compare_ultralytics", run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        profiler.disable()
        profiler.dump_stats(prof)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled"]:
        return _profiled(argv[1], argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", required=True, help="a finished compare_ultralytics --out folder (its first run)")
    p.add_argument("--out", required=True, help="folder for results.json and report.md")
    p.add_argument("--label", default=None, help="machine label written with the numbers")
    args = p.parse_args(argv)
    runs = json.loads((Path(args.compare) / "results.json").read_text())["runs"]
    run = runs[0]
    if run["ours"].get("status") != "ok" or run["ultralytics"].get("status") != "ok":
        raise SystemExit(f"error: {args.compare}/results.json: its first comparison did not finish in both trainers")
    s, threads = run["settings"], run["settings"]["threads"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)  # a fresh profile of fresh runs
    work.mkdir()
    ours_args = shlex.split(run["ours"]["command"])[1:]  # "train.py ARGS"
    ours_args[ours_args.index("--output-dir") + 1] = str(work / "ours_run")
    spec = json.loads((Path(run["ultralytics"]["run_dir"]).parent / "spec.json").read_text())
    spec["train_args"]["project"], spec["result"] = str(work / "ultralytics"), str(work / "ul_child.json")
    (work / "ul_spec.json").write_text(json.dumps(spec))
    ours = profile_run(["--ours-child", *ours_args], threads, work / "ours.prof", work / "ours.log")
    theirs = profile_run(["--child", str(work / "ul_spec.json")], threads, work / "ul.prof", work / "ul.log")
    steps_ours = call_seconds(ours, *PARTS["ours"]["forward + loss"])[1]
    steps_theirs = call_seconds(theirs, *PARTS["ultralytics"]["backward"])[1]
    result = {"schema": SCHEMA, "settings": {**s, "label": args.label, "compare": str(args.compare)},
              "ours": split(ours, "ours", steps_ours), "ultralytics": split(theirs, "ultralytics", steps_theirs),
              "environment": common.environment(threads=threads, machine_label=args.label)}
    common.write_results(out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
