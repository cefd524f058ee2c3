"""Loader benchmark: RGB+IR pairs per second, per worker and in total, for four pipelines.

    python benchmarks/loader.py                       # synthetic LLVIP-like JPEG pairs, 640 px, 0/1/2 workers
    python benchmarks/loader.py --data data.yaml --workers 0 2 4 8 --cache ram --out loader.json
    python benchmarks/loader.py --model yolov8n --fusion mid   # + what one training step consumes
    python benchmarks/loader.py --modes mosaic device --device cuda   # the recipe on CPU workers vs the device

Pipelines: ``decode`` (read both files at full size, stack; or read the cache), ``letterbox`` (the
validation / ``--no-augment`` item, collated), ``mosaic`` (the full training recipe as the trainer
builds it through ``data/loaders.py``: 4 pairs per sample, reduced JPEG decode, affine, HSV, flip; collated),
once per ``--partners`` value: ``pool`` (the default recipe: partners from the sample's micro-batch and as many
other pairs, at most 2 decodes per sample with the per-process buffer of decoded pairs, ``data/buffer.py``),
``dataset`` (3 partners from the whole set: 4 decodes per sample unless the set fits the buffer) and/or
``micro_batch`` (partners from the sample's micro-batch, ~1 decode per sample); rows of the non-default ones are
named ``mosaic_<partners>``. ``device`` (``--loader device``): the same recipe and partners, the workers only read
the files and draw the parameters, and the main process decodes and renders each batch on ``--device`` (timed to
the end of the batch: synchronised on CUDA); ``device_<partners>`` likewise; with ``--cache`` its workers ship the
cached decoded pairs instead of the files, and the device skips decode and resize. Batches come from the training
sampler, so each worker builds whole micro-batches. ``images_per_s`` is 2 x pairs/s (an RGB and an IR image a pair).
The buffer of decoded pairs persists across repeats in each (persistent) worker: a set that fits it
(``decoded_pair_buffer_bytes_per_process`` in the JSON) is decoded once per worker, and its later passes measure
the recipe without decoding, as in training from the second epoch on.
``--ultralytics`` adds Ultralytics' own ``YOLODataset`` (its v8 recipe) on the same pairs stacked
into 4-channel TIFFs; note that it keeps up to min(n, 8 x batch, 1000) decoded images in a per-worker
buffer, so on a set smaller than that it stops decoding after the first pass.

Each cell: the first batch is warm-up (worker start, page cache), then the
median of ``--repeats`` timed passes of ``--batches`` batches. ``per worker`` is total / workers
(the main process counts as one worker at 0). Memory: resident (RSS) and proportional (PSS: shared
pages split between the processes that map them, so a shared cache is counted once) of the main
process and its workers, sampled at the end of each cell. Every number comes with the machine's CPU
count, the library versions and the settings, in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import typing
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # libtiff warns about every 4-channel TIFF it reads

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import yolofuse_scale  # noqa: E402,F401  (offline Ultralytics before anything imports it)
from benchmarks import common  # noqa: E402
from yolofuse_scale.data import (  # noqa: E402
    PairedRGBIRDataset,
    collate_pairs,
    load_data_config,
    scan_split,
    write_synthetic_dataset,
)
from yolofuse_scale.data.augment import AugmentRecipe, MosaicPartners  # noqa: E402
from yolofuse_scale.data.buffer import BUFFER_BYTES  # noqa: E402
from yolofuse_scale.data.loaders import training_feed  # noqa: E402
from yolofuse_scale.data.sampler import StepShardedBatchSampler  # noqa: E402


class DecodeOnly(Dataset):
    """Just the two decodes and the stack (or the cache read) of a pair."""

    def __init__(self, ds: PairedRGBIRDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> int:
        if self.ds.cache is None:
            pair, _ = self.ds.load_pair(i)
        else:  # the cache hands out a view of its mapping: copy it, so the bytes are actually read
            pair = np.array(self.ds.cache.get(i)[0])
        return pair.shape[0]


def _count(batch: list) -> int:
    return len(batch)


def synthetic_jpeg_set(root: Path, n: int, frame: int) -> Path:
    """The synthetic generator's pairs re-encoded as JPEG (quality 95), like LLVIP's files."""
    data = write_synthetic_dataset(root, n_train=n, n_val=1, imgsz=frame, seed=0)
    for png in sorted(root.glob("images*/*/*.png")):
        im = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(png.with_suffix(".jpg")), im, [cv2.IMWRITE_JPEG_QUALITY, 95])
        png.unlink()
    return data


def memory(proc: psutil.Process) -> dict[str, float]:
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20}


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cell(ds: Dataset, collate, workers: int, batch: int, batches: int, repeats: int, post=None,
              device: torch.device | None = None) -> dict:
    """``post``: what the training process does to each batch before a step can use it (``--loader device``)."""
    # the training loop's sampler: workers build whole micro-batches, as in training
    sampler = StepShardedBatchSampler(len(ds), batch, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    rates = []
    mem = {}
    for epoch in range(repeats):
        sampler.set_epoch(epoch)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        it = iter(loader)
        b = next(it)  # warm-up: worker start-up, first reads (and the device's first kernels)
        if post is not None:
            post(b)
        _sync(device)
        t0, n = time.perf_counter(), 0
        for _ in range(batches):
            try:
                b = next(it)
            except StopIteration:
                break
            b = post(b) if post is not None else b
            n += b if isinstance(b, int) else len(b["img"])
        _sync(device)
        rates.append(n / (time.perf_counter() - t0))
        mem = memory(psutil.Process())
        del it
    total = statistics.median(rates)
    return {"pairs_per_s": total, "images_per_s": 2 * total, "per_worker": total / max(workers, 1),
            "repeats": rates, **mem}


def ultralytics_mosaic_dataset(samples, root: Path, imgsz: int, nc: int, cache: str) -> Dataset:
    """Ultralytics' own training dataset (``YOLODataset``, the v8 recipe) on the same pairs, each stacked
    into one 4-channel TIFF (B, G, R, IR) as Ultralytics reads multispectral input (``channels: 4``)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    for d in ("images", "labels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for s in samples:
        bgr = cv2.imread(str(s.rgb), cv2.IMREAD_COLOR)
        ir = cv2.imread(str(s.ir), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / "images" / f"{s.rgb.stem}.tiff"), np.dstack([bgr, ir]))
        rows = "".join(f"{int(b[0])} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}\n" for b in s.boxes)
        (root / "labels" / f"{s.rgb.stem}.txt").write_text(rows)
    hyp = get_cfg()  # Ultralytics' defaults: mosaic 1.0, translate 0.1, scale 0.5, fliplr 0.5, HSV ...
    return YOLODataset(img_path=str(root / "images"), imgsz=imgsz, augment=True, hyp=hyp, batch_size=16,
                       cache={"none": False}.get(cache, cache), data={"names": {i: str(i) for i in range(nc)},
                                                                     "channels": 4}, task="detect")


def model_rate(args, ds: PairedRGBIRDataset, nc: int, ir_channels: int) -> dict:
    """Images per second one training step (forward, loss, backward, SGD step) consumes at --batch."""
    from yolofuse_scale.engine.task import DetectionTask
    from yolofuse_scale.model import build_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(args.model, args.fusion, nc=nc, ir_channels=ir_channels).to(device).train()
    task = DetectionTask(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = collate_pairs([ds[i % len(ds)] for i in range(args.batch)])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> None:
        with amp:
            loss, _ = task.step(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    rates = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.model_steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(args.model_steps * args.batch / (time.perf_counter() - t0))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"images_per_s": statistics.median(rates), "repeats": rates, "device": name, "model": args.model,
            "fusion": args.fusion, "bf16": args.bf16}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="", help="data.yaml (default: a synthetic JPEG set written to a temp folder)")
    p.add_argument("--pairs", type=int, default=96, help="synthetic pairs to write (default: 96)")
    p.add_argument("--frame", type=int, default=512, help="synthetic frame height; width is 1.25x (default: 512)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", default=["decode", "letterbox", "mosaic"],
                   choices=["decode", "letterbox", "mosaic", "device"],
                   help="device: the mosaic recipe with --loader device, rendered on --device")
    p.add_argument("--cache", choices=["none", "ram", "disk"], default="none")
    p.add_argument("--partners", nargs="+", default=[AugmentRecipe().mosaic_partners],
                   choices=typing.get_args(MosaicPartners),
                   help="mosaic partner draws to time side by side (--mosaic-partners; default: the recipe's, "
                   f"{AugmentRecipe().mosaic_partners})")
    p.add_argument("--buffer-mib", type=int, default=None,
                   help="budget of the CPU loader's buffer of decoded pairs per process (default: the library's, "
                   f"{BUFFER_BYTES >> 20} MiB); 0 keeps only the partner pool, as on a set far larger than the budget")
    p.add_argument("--batches", type=int, default=4, help="timed batches per pass (default: 4)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ultralytics", action="store_true",
                   help="also time Ultralytics' own mosaic pipeline on the same pairs as 4-channel TIFFs")
    p.add_argument("--no-hsv", action="store_true",
                   help="mosaic without HSV: the work Ultralytics does on a 4-channel image (its RandomHSV "
                   "skips any image that is not 3-channel)")
    p.add_argument("--model", default="", help="also time a training step of this model (yolov8n, ...)")
    p.add_argument("--fusion", default="mid")
    p.add_argument("--device", default="", help="for --model and the device pipeline (default: cuda if available)")
    p.add_argument("--bf16", action="store_true", help="for --model: bf16 autocast")
    p.add_argument("--model-steps", type=int, default=10)
    p.add_argument("--out", default="loader_benchmark.json")
    argv_used = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv_used)

    tmp = tempfile.TemporaryDirectory(prefix="loader_bench_")
    data = Path(args.data) if args.data else synthetic_jpeg_set(Path(tmp.name), args.pairs, args.frame)
    cfg = load_data_config(data)
    samples = scan_split(cfg, "train")
    rows = []
    cache_info = {}
    cells = [(m, p) for m in args.modes for p in (args.partners if m in ("mosaic", "device") else ["dataset"])]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for mode, partners in cells:
        recipe = AugmentRecipe(hsv_h=0, hsv_s=0, hsv_v=0) if args.no_hsv else AugmentRecipe()
        recipe = replace(recipe, mosaic_partners=partners)
        # decode and letterbox draw no partners: their name carries none
        plain = mode not in ("mosaic", "device") or partners == AugmentRecipe().mosaic_partners
        name = mode if plain else f"{mode}_{partners}"
        for w in args.workers:
            # a fresh feed per cell (the trainer's own seam: dataset, collate, to_device; partner pools from
            # --batch), so no cell starts with the pairs an earlier one decoded into its process's buffer
            t0 = time.perf_counter()
            feed = training_feed("device" if mode == "device" else "cpu", samples, imgsz=args.imgsz,
                                 ir_channels=cfg.ir_channels, device=device, augment=mode in ("mosaic", "device"),
                                 recipe=recipe, batch_size=args.batch, cache=args.cache,
                                 cache_folders=[Path(tmp.name) / "cache"], log=lambda _m: None)
            ds = feed.dataset
            if getattr(ds, "buffer", None) is not None and args.buffer_mib is not None:
                ds.buffer.budget = args.buffer_mib * 2**20  # before the workers fork: each starts with this budget
            if args.cache != "none" and not cache_info:  # the device pipeline reads the same cache (cached frames)
                cache_info = {"mode": args.cache, "file": str(ds.cache.data_path), "gib": ds.cache.nbytes / 2**30,
                              "open_or_build_s": time.perf_counter() - t0}
            post = feed.to_device if mode == "device" else None
            target = DecodeOnly(ds) if mode == "decode" else ds
            collate = _count if mode == "decode" else feed.collate
            cell = time_cell(target, collate, w, args.batch, args.batches, args.repeats, post,
                             device if post is not None else None)
            rows.append({"mode": name, "workers": w, **cell, "device": str(device) if post is not None else "cpu"})
            print(f"{name:>9} {w:>2} workers: {cell['pairs_per_s']:8.1f} pairs/s total, {cell['per_worker']:7.1f} "
                  f"per worker, RSS {cell['rss_mib']:7.0f} MiB, PSS {cell['pss_mib']:7.0f} MiB", flush=True)
    result = {
        "rows": rows,
        "cache": cache_info,
        # without --cache the CPU loader keeps decoded pairs per process (data/buffer.py): its memory shows in RSS/PSS
        "decoded_pair_buffer_bytes_per_process": 0 if args.cache != "none" else BUFFER_BYTES
        if args.buffer_mib is None else args.buffer_mib * 2**20,
        "settings": {k: v for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dataset": {"data": str(data), "pairs": len(samples), "ir_channels": cfg.ir_channels,
                    "frame_hw": list(cv2.imread(str(samples[0].rgb)).shape[:2])},
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "python": platform.python_version(),
                    "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                    "threads": torch.get_num_threads(), "platform": platform.platform()},
        "environment": common.environment(threads=torch.get_num_threads(),
                                          command=[sys.executable, "benchmarks/loader.py", *argv_used]),
    }
    if args.ultralytics:
        from ultralytics.data.dataset import YOLODataset

        ul = ultralytics_mosaic_dataset(samples, Path(tmp.name) / "ultralytics", args.imgsz, cfg.nc, args.cache)
        for w in args.workers:
            cell = time_cell(ul, YOLODataset.collate_fn, w, args.batch, args.batches, args.repeats)
            rows.append({"mode": "ultralytics_mosaic_4ch", "workers": w, **cell})
            print(f"ultralytics mosaic (4-ch TIFF) {w} workers: {cell['pairs_per_s']:8.1f} pairs/s total, "
                  f"{cell['per_worker']:7.1f} per worker", flush=True)
    if args.model:
        ds = PairedRGBIRDataset(samples, args.imgsz, augment=False, ir_channels=cfg.ir_channels)
        result["model_step"] = m = model_rate(args, ds, cfg.nc, cfg.ir_channels)
        best = max((r["pairs_per_s"] for r in rows if r["mode"] == "mosaic"), default=0.0)
        result["loader_to_model_ratio"] = best / m["images_per_s"]
        print(f"model step ({m['model']} {m['fusion']}, {m['device']}): {m['images_per_s']:.1f} images/s; "
              f"best mosaic loader / model = {result['loader_to_model_ratio']:.2f}")
    print()
    print(f"{'pipeline':>22} {'workers':>7} {'pairs/s':>9} {'images/s':>9} {'/worker':>8} {'RSS MiB':>8} "
          f"{'PSS MiB':>8}")
    for r in rows:
        print(f"{r['mode']:>22} {r['workers']:>7} {r['pairs_per_s']:9.1f} {r['images_per_s']:9.1f} "
              f"{r['per_worker']:8.1f} {r['rss_mib']:8.0f} {r['pss_mib']:8.0f}")
    if cache_info and not args.data:  # a cache of the temporary set: never reused, and /dev/shm is RAM
        Path(cache_info["file"]).unlink(missing_ok=True)
        Path(cache_info["file"]).with_suffix(".json").unlink(missing_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
