"""Side by side with the alternative users have today: Ultralytics' own trainer (and YOLOFuse's) next to ours.

    python -m benchmarks.compare_ultralytics --out runs/compare --threads 1 2     # the committed run
    python -m benchmarks.compare_ultralytics --out DIR --data data.yaml --model yolov8s --imgsz 640 --epochs 10
    python -m benchmarks.compare_ultralytics --out DIR --yolofuse ~/src/YOLOFuse    # + YOLOFuse's own trainer

**Ultralytics.** Data-level fusion (RGB and IR stacked as input channels into one YOLOv8) is the one fusion
Ultralytics can train itself: in 8.4 a data YAML may say ``channels: 4`` and its loader then reads
every image with ``cv2.IMREAD_UNCHANGED`` (``ultralytics/data/base.py``), which for a ``.tiff`` keeps every
band (``ultralytics/utils/patches.py: imread``). The paired dataset is converted once into such TIFFs
(:func:`write_tiff_dataset`: R, G, B, IR; Ultralytics swaps channels only for 3-channel images, so its
model sees the same channel order as ours). Our ``--fusion data`` model and Ultralytics'
``yolov8?.yaml`` built with ``ch=4`` have the same layers and parameter count (checked per run).

Both trainers run in fresh processes, one after the other, with the same data, image size, batch,
epochs, workers, seed, thread count and recipe: SGD, lr, momentum, weight decay, warm-up, linear
decay, EMA, gradient clipping at 10, the YOLOv8 augmentation with Ultralytics' defaults and the same
``close_mosaic``, validation after every epoch. ``nbs`` is set to the batch in both, so every batch is
one optimizer step (and one EMA update) in both; at Ultralytics' default ``nbs`` 64 it would accumulate
64 / batch batches per step, a different update rule and fewer optimizer/EMA steps per image.

**Timing.** A step is timed from the end of the previous step to the end of this one, so it contains
the data loading, forward, loss, backward, clipping, optimizer and EMA, and nothing of validation or
checkpointing: ours from ``train_log.jsonl`` (``step_time_s``), Ultralytics' with its own callbacks
(``on_train_epoch_start`` and ``on_train_batch_end``; ``on_train_batch_start`` to ``..._end`` is kept
too, as compute without the loader). The first ``skip_steps`` steps (allocator and cache warm-up) are
left out; images/s is the batch over the median step time, with the 10th..90th percentile spread.
Each step's process CPU time is taken over the same boundaries (ours: train.py run through
``--ours-child``, whose trainer callback :class:`CpuClock` adds ``cpu_s`` to each log record): on a
machine shared with other jobs, wall time measures the neighbours too, CPU time at one thread hardly.

**Accuracy.** mAP50 and mAP50-95 of each run's EMA weights after the last epoch, on the same val set,
each with its own validator (conf 0.001, NMS IoU 0.7, max 300 detections in both): ours from
``metrics.json``, Ultralytics' from its ``results.csv`` row of the last epoch (not its ``best.pt``).

**YOLOFuse** (``yolofuse=PATH``, a local checkout of WangQvQ/YOLOFuse, a fork of Ultralytics 8.3.74):
its own trainer (``YOLO(yaml).train(..., ch=6)``, as its ``train_dual.py``) on its
``ultralytics/cfg/models/fuse/Mid-level-Feature-Fusion.yaml``, with the checkout's ``ultralytics``
package first on ``sys.path``, beside ours on the same YAML (``--model PATH/...yaml``), IR as 3 channels
as YOLOFuse reads it (a fork whose cfg has no ``ch`` gets ``channels: 6`` in the data YAML instead).
Untested against a real checkout (none here): run only through a stand-in, stock Ultralytics under
that path, which fails at the first forward as expected (it cannot read pairs). Without a checkout the
result says "not run".

**More than one device.** Ultralytics trains one process on CPU: ``engine/trainer.py`` sets
``world_size = 0`` for a CPU device (lines 186-190 in 8.4.190) and its DDP set-up binds every rank to a
``cuda`` (or npu/xpu) device (``_setup_ddp``, line 284). The result states this instead of leaving the
multi-device cell blank; YOLOFuse inherits the same trainer.

**Where each part lives** (``benchmarks/compare/``, one concern each): ``tiff.py`` the 4-channel copy and the
paired YAML; ``timing.py`` the step summary and both trainers' timers; ``runs.py`` each trainer's run in a
fresh process on the same recipe; ``children.py`` what those processes run; ``report.py`` the Markdown
section; ``seeds.py`` the multi-seed summary. This file: the comparison itself and its command line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.compare.children import alternative_child, ours_child  # noqa: E402
from benchmarks.compare.report import markdown  # noqa: E402
from benchmarks.compare.runs import (  # noqa: E402
    ratio,
    recipe_args,
    run_alternative,
    run_ours,
    run_yolofuse,
    their_cache,
)
from benchmarks.compare.seeds import seed_markdown, seed_summary  # noqa: E402
from benchmarks.compare.tiff import paired_yaml, write_tiff_dataset  # noqa: E402

SCHEMA = "compare_ultralytics/1"
ULTRALYTICS_SCALES = ("n", "s", "m", "l", "x")  # the rows of Ultralytics' yolov8.yaml (ours adds a tiny "t")
MULTI_DEVICE_NOTE = (
    "Ultralytics cannot train on more than one device on CPU: its trainer sets world_size = 0 for a CPU "
    "device (ultralytics/engine/trainer.py:186-190, 8.4.190) and its DDP set-up binds each rank to a CUDA "
    "(or NPU/XPU) device (_setup_ddp, trainer.py:284); YOLOFuse inherits that trainer. Multi-device "
    "columns have no Ultralytics or YOLOFuse entry on CPU for that reason."
)
YOLOFUSE_NOT_GIVEN = "not run: no --yolofuse checkout given"


# ---------------------------------------------------------------------------------------------- compare
def machine(label: str | None = None, env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's machine line, from the environment record ``env`` (:func:`benchmarks.common.environment`)."""
    import cv2
    import torch

    env = env or common.environment()
    return {"label": label or f"{env['cpu_cores']}-core CPU", "cpu_count": env["cpu_cores"],
            "affinity": env["cpu_affinity"], "processor": platform.processor() or platform.machine(),
            "platform": env["platform"], "python": env["python"], "torch": env["versions"]["torch"],
            "ultralytics": env["versions"]["ultralytics"], "opencv": cv2.__version__,
            "cuda_available": torch.cuda.is_available()}


def compare(
    out_dir: str | Path,
    *,
    model: str = "yolov8n",
    imgsz: int = 128,
    batch: int = 8,
    epochs: int = 3,
    workers: int = 0,
    threads: int = 1,
    data: str | Path | None = None,
    yolofuse: str | Path | None = None,
    train_pairs: int = 800,
    val_pairs: int = 64,
    lr: float = 0.08,
    warmup_epochs: float = 1.0,
    close_mosaic: int = 1,
    seed: int = 0,
    skip_steps: int = 5,
    label: str | None = None,
    scene: str = "easy",
    cache: str = "none",
    no_hsv: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train our data-level fusion model and Ultralytics' own trainer on the same data and budget; compare.

    ``lr`` 0.08 with ``nbs`` = ``batch`` = 8 is the step our defaults take (lr 0.01 on 64/8 x the batch's
    loss at nbs 64); Ultralytics' default lr 0.01 at nbs 64 would give each image 1/8 of that weight.
    ``data``: a paired data.yaml (default: a synthetic set of ``train_pairs`` / ``val_pairs`` written under
    ``out_dir``). ``yolofuse``: a YOLOFuse checkout to also compare on its Mid-level-Feature-Fusion.yaml.
    Runs, logs and the converted TIFF set go under ``out_dir/work``. Returns a JSON-serialisable dict:

    - ``schema``: ``"compare_ultralytics/1"``; ``settings``: every knob above; ``machine``: CPU, versions;
      ``environment``: the record every benchmark writes (:func:`benchmarks.common.environment`);
    - ``ours`` / ``ultralytics``: ``status`` (``ok`` | ``failed`` + ``error``), ``images_per_s`` (median
      over timed steps), ``images_per_s_p10`` / ``_p90``, ``images_per_s_aggregate`` (images / seconds),
      ``step_time_s_median``, ``steps``, ``steps_timed``, ``mAP50``, ``mAP50-95``, ``precision``, ``recall``,
      ``params``, ``threads``, ``wall_s`` (whole process, validation and start-up included),
      ``slow_steps_fraction`` (steps 25 % slower than the fast decile), ``loadavg_1min_before`` / ``_after``,
      ``cpu_s_per_step_median`` and ``images_per_cpu_s`` (process CPU time over the same step boundaries);
      ``peak_rss_mib`` (the training process's peak resident memory: with workers 0, the loader's too);
    - ``ratio_images_per_s``: ours / Ultralytics of the medians (None if either failed);
      ``ratio_images_per_s_p90``: of the fast-decile rates, which other tenants' load on a shared machine
      disturbs least; ``ratio_images_per_cpu_s``: of images per CPU-second, which it hardly disturbs at
      one thread (at more threads, spinning OpenMP threads count too); ``params_equal``;
    - ``yolofuse``: ``{"status": "not run", "reason": ...}`` or ``{"status", "yolofuse", "ours",
      "ratio_images_per_s", "params_equal", "yaml", "scale", "notes"}``;
    - ``multi_device``: why Ultralytics has no multi-device entry on CPU; ``notes``: list of strings.
    """
    scale = model.removeprefix("yolov8")
    if not model.startswith("yolov8") or scale not in ULTRALYTICS_SCALES:
        raise ValueError(f"model must be yolov8{{{','.join(ULTRALYTICS_SCALES)}}} (a scale Ultralytics ships), "
                         f"got {model!r}")
    out = Path(out_dir).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    s = {"model": model, "fusion": "data", "imgsz": imgsz, "batch": batch, "epochs": epochs, "workers": workers,
         "threads": threads, "lr": lr, "warmup_epochs": warmup_epochs, "close_mosaic": close_mosaic, "seed": seed,
         "skip_steps": skip_steps, "nbs": batch, "schedule": "linear", "optimizer": "SGD",
         "scene": scene if data is None else None, "cache": cache, "no_hsv": no_hsv, "device": device}
    if data is None:
        from yolofuse_scale.data import write_synthetic_dataset

        data_yaml = write_synthetic_dataset(work / "data", train_pairs, val_pairs, imgsz, seed=0, scene=scene)
        s["data"] = (f"synthetic set (yolofuse-scale synth --scene {scene}), {train_pairs} train / {val_pairs} val "
                     f"pairs, {imgsz}x{int(round(imgsz * 1.25 / 2) * 2)} px, 1-channel IR, seed 0")
    else:
        data_yaml = Path(data).resolve()
        s["data"] = str(data_yaml)
    t0 = time.monotonic()
    tiff_yaml = write_tiff_dataset(data_yaml, work / "tiff4")
    ours_yaml = paired_yaml(data_yaml, work / "ours_data.yaml", ir_channels=1)  # 3 + 1 = the TIFF's 4 channels
    s["conversion_s"] = round(time.monotonic() - t0, 1)

    ul_args = {**recipe_args(s), "model": f"{model}.yaml", "data": str(tiff_yaml),
               "device": "cpu" if device == "cpu" else "0",
               "pretrained": False, "amp": False, "plots": False, "val": True, "cache": their_cache(s),
               "project": str(work / "ultralytics"), "name": "train", "exist_ok": True, "verbose": False}
    ultra = run_alternative("ultralytics", ul_args, s, work / "ultralytics")
    ours = run_ours(ours_yaml, ["--model", model, "--fusion", "data"], s, work / "ours_data")
    notes = [
        "Step = data loading + forward + loss + backward + clip + optimizer + EMA (validation and checkpoints "
        f"excluded); first {skip_steps} steps left out; images/s = batch / median step time.",
        f"Threads: OMP_NUM_THREADS=MKL_NUM_THREADS={threads} for both processes; Ultralytics' select_device "
        f"overrides it with torch.set_num_threads(min(8, cpus - 1)) (utils/torch_utils.py:363-364), so its "
        f"child sets {threads} again at every epoch start and records what torch reports (ultralytics.threads). "
        "Both import Ultralytics, which sets cv2.setNumThreads(0).",
        f"nbs = batch = {batch} in both, so every batch is one optimizer step and one EMA update in both "
        "(Ultralytics' default nbs 64 would accumulate 64/batch batches per step).",
        "Differences that remain: Ultralytics applies the LR decay per epoch, ours per step (same linear "
        "curve); " + ("HSV off in both (--no-hsv); " if no_hsv else "Ultralytics' RandomHSV skips 4-channel "
                      "images, ours applies HSV to the RGB channels (more work for ours); ")
        + "Ultralytics validates with rectangular batches, ours letterboxes to a square; ours warms up for at "
        "least 100 steps (--warmup-min-steps, Ultralytics <= 8.3's floor; within epochs - 1 epochs), "
        "Ultralytics 8.4 for warmup_epochs epochs only; "
        + (f"decoded-image cache '{cache}' in both." if cache != "none" else
           "no cache: both keep decoded images per process: Ultralytics the last min(n, 8 x batch, 1000) "
           "images, its mosaic partners drawn from them; ours up to 256 MiB of decoded pairs (data/buffer.py), "
           "partners drawn by the seeded RNG from the sample's micro-batch and as many other pairs "
           "(--mosaic-partners pool: at most 2 decodes per sample, none once the set fits the buffer)."),
        (f"On {device}: both load with {workers} DataLoader workers; fp32 in both (Ultralytics amp=False)."
         if device != "cpu" else "Ultralytics forces workers=0 on CPU (engine/trainer.py:178-179): "
         + ("both load in the main process (workers=0)." if workers == 0
           else f"ours used {workers} DataLoader workers, Ultralytics 0 whatever was asked.")),
        "mAP: EMA weights after the last epoch, same val pairs, conf 0.001 / IoU 0.7 in both (Ultralytics: its "
        "results.csv row of the last epoch; its best.pt re-validation is kept under ultralytics.best_pt).",
    ]
    params_equal = ultra.get("params") == ours.get("params") if ultra.get("params") else None
    if params_equal is not None and ours.get("params"):
        notes.append(f"Parameters: ours {ours.get('params'):,} vs Ultralytics {ultra.get('params'):,} "
                     f"({'equal: same architecture' if params_equal else 'DIFFERENT'}).")
    env = common.environment(threads=threads, machine_label=label or "")
    result = {
        "schema": SCHEMA,
        "settings": s,
        "machine": machine(label, env),
        "environment": env,
        "ours": ours,
        "ultralytics": ultra,
        "ratio_images_per_s": ratio(ours, ultra),
        "ratio_images_per_s_p90": ratio(ours, ultra, "images_per_s_p90"),
        "ratio_images_per_cpu_s": ratio(ours, ultra, "images_per_cpu_s"),
        "params_equal": params_equal,
        "yolofuse": ({"status": "not run", "reason": YOLOFUSE_NOT_GIVEN} if yolofuse is None
                     else run_yolofuse(Path(yolofuse), data_yaml, s, work / "yolofuse_compare")),
        "multi_device": {"ultralytics": "cannot run on CPU", "note": MULTI_DEVICE_NOTE},
        "notes": notes,
    }
    return result


# -------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Writes OUT/results.json and OUT/report.md; runs under OUT/threads_N/work "
                                "(a finished run there is reused when the same comparison is run again).")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one trainer run in a fresh process
    p.add_argument("--out", help="folder for results.json, report.md and work/")
    p.add_argument("--data", default=None, help="paired data.yaml (default: a synthetic set)")
    p.add_argument("--yolofuse", default=None, help="a local YOLOFuse checkout: also compare its own trainer")
    p.add_argument("--model", default="yolov8n", help="yolov8n|s|m|l|x (default: yolov8n)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="one comparison per thread count")
    p.add_argument("--train-pairs", type=int, default=800, help="synthetic train pairs (default: 800)")
    p.add_argument("--val-pairs", type=int, default=64, help="synthetic val pairs (default: 64)")
    p.add_argument("--cache", choices=["none", "ram", "disk"], default="none",
                   help="decoded-image cache of both trainers (ours --cache, Ultralytics' cache=): with 'ram' neither "
                   "decodes an image twice, so their speeds compare the same work (default: none)")
    p.add_argument("--no-hsv", action="store_true",
                   help="HSV augmentation off in both (Ultralytics skips it on a 4-channel image anyway; ours "
                   "applies it to the RGB channels): the like-for-like speed setting")
    p.add_argument("--scene", choices=["easy", "hard"], default="easy",
                   help="synthetic set's generator setting (yolofuse-scale synth --scene; default: easy)")
    p.add_argument("--lr", type=float, default=0.08,
                   help="peak lr of both (default: 0.08: at nbs = batch 8 the same step as our default lr 0.01 at "
                   "nbs 64, which backpropagates 64/8 x the batch's loss)")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--close-mosaic", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="training seeds (same data for all): one comparison each, then mean, spread and the "
                   "paired difference per seed (default: 0)")
    p.add_argument("--skip-steps", type=int, default=5, help="first steps left out of the timing (default: 5)")
    p.add_argument("--label", default=None, help="machine label written with the numbers")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where both train: cpu (the GPU hidden from both), or cuda (the first GPU; fp32 in both, "
                   "Ultralytics' amp off, ours --mixed-precision no)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ours-child"]:  # internal: our train.py with CPU time per step, in a fresh process
        return ours_child(argv[1:])
    args = p.parse_args(argv)
    if args.child:
        return alternative_child(args.child)
    if not args.out:
        p.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, summaries, report = [], [], []
    for n in args.threads:
        per_seed = []
        for seed in args.seeds:  # one seed: the folder layout of before (threads_N)
            where = out / f"threads_{n}" / (f"seed_{seed}" if len(args.seeds) > 1 else "")
            r = compare(where, model=args.model, imgsz=args.imgsz,
                        batch=args.batch, epochs=args.epochs, workers=args.workers, threads=n, data=args.data,
                        yolofuse=args.yolofuse, train_pairs=args.train_pairs, val_pairs=args.val_pairs, lr=args.lr,
                        warmup_epochs=args.warmup_epochs, close_mosaic=args.close_mosaic, seed=seed,
                        skip_steps=args.skip_steps, label=args.label, scene=args.scene, cache=args.cache,
                        no_hsv=args.no_hsv, device=args.device)
            per_seed.append(r)
            report.append(markdown(r))
            print(report[-1], flush=True)
        results += per_seed
        if len(args.seeds) > 1:
            summary = {"threads": n, **seed_summary(per_seed)}
            summaries.append(summary)
            report.insert(len(report) - len(per_seed), seed_markdown(summary, per_seed[0]["settings"]))
            print(report[len(report) - len(per_seed) - 1], flush=True)
    # one compare() dict per (thread count, seed); with several seeds, their summary per thread count
    (out / "results.json").write_text(json.dumps({"runs": results, "seed_summaries": summaries}, indent=1))
    (out / "report.md").write_text("\n".join(report))
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
