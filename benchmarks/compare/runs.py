"""Each trainer's run in a fresh process, on the same recipe: ours (``run_ours``), Ultralytics' or YOLOFuse's
(``run_alternative``), YOLOFuse's beside ours on its own YAML (``run_yolofuse``); a finished run is reused."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.compare.tiff import paired_yaml
from benchmarks.compare.timing import summarise_steps

YOLOFUSE_MID_YAML = "ultralytics/cfg/models/fuse/Mid-level-Feature-Fusion.yaml"
MAP_KEYS = {"mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)", "precision": "metrics/precision(B)",
            "recall": "metrics/recall(B)"}


def _run(cmd: list[str], env: dict[str, str], folder: Path, key: Any) -> tuple[int, str, dict[str, Any]]:
    """Run ``cmd`` (output in ``folder/train.log``) unless ``folder/done.json`` holds a finished run of ``key``.

    A finished run is reused, so an interrupted comparison or one re-rendered with other statistics does
    not train again; the wall time and load averages are the ones measured when it ran.
    """
    done = folder / "done.json"
    if done.is_file():
        prior = json.loads(done.read_text())
        if prior.get("key") == key:
            return 0, "", prior["run"]
    load = os.getloadavg()[0]
    proc = common.run_command(cmd, env, log=folder / "train.log")
    run = {"wall_s": round(proc.wall_s, 1), "loadavg_1min_before": load, "loadavg_1min_after": os.getloadavg()[0]}
    if proc.ok:
        done.write_text(json.dumps({"key": key, "run": run}))
    return proc.returncode, proc.output[-2500:], run


def trainer_env(threads: int, device: str = "cpu") -> dict[str, str]:
    # --device cpu on a GPU machine: neither trainer may see the GPU (ours would take it by default)
    return common.train_env(threads, OPENCV_LOG_LEVEL="ERROR", **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu"
                                                                   else {}))


def recipe_args(s: dict[str, Any]) -> dict[str, Any]:
    """The recipe both trainers get, in Ultralytics' names (Ultralytics' defaults except where stated)."""
    return {"epochs": s["epochs"], "imgsz": s["imgsz"], "batch": s["batch"], "workers": s["workers"],
            "optimizer": "SGD", "lr0": s["lr"], "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005,
            "warmup_epochs": s["warmup_epochs"], "warmup_momentum": 0.8, "warmup_bias_lr": 0.1,
            "nbs": s["batch"], "close_mosaic": s["close_mosaic"], "seed": s["seed"],
            **({"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0} if s.get("no_hsv") else {})}


def their_cache(s: dict[str, Any]) -> str | bool:
    """Ultralytics' ``cache`` for ours' ``--cache``: decoded images in RAM (per process) or on disk (.npy)."""
    return {"none": False, "ram": "ram", "disk": "disk"}[s.get("cache", "none")]


def _ours_args(s: dict[str, Any]) -> list[str]:
    r = recipe_args(s)
    return ["--imgsz", str(r["imgsz"]), "--batch-size", str(r["batch"]), "--epochs", str(r["epochs"]),
            "--workers", str(r["workers"]), "--optimizer", "sgd", "--lr", str(r["lr0"]), "--lrf", str(r["lrf"]),
            "--momentum", str(r["momentum"]), "--weight-decay", str(r["weight_decay"]),
            "--warmup-epochs", str(r["warmup_epochs"]), "--warmup-momentum", str(r["warmup_momentum"]),
            "--warmup-bias-lr", str(r["warmup_bias_lr"]), "--schedule", "linear", "--clip-grad", "10",
            "--nbs", str(r["nbs"]), "--close-mosaic", str(r["close_mosaic"]), "--seed", str(r["seed"]),
            "--val", "--keep-last", "1", "--log-every", "1000",
            "--ir-shift", "0", "--ir-scale", "0", "--ir-rotate", "0",  # Ultralytics has no IR misregistration
            *(["--cache", s["cache"]] if s.get("cache", "none") != "none" else []),
            *(["--hsv-h", "0", "--hsv-s", "0", "--hsv-v", "0"] if s.get("no_hsv") else [])]


def run_ours(data_yaml: Path, model_args: list[str], s: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Our train.py in a fresh process; throughput from train_log.jsonl, accuracy from metrics.json.

    It runs as ``-m benchmarks.compare_ultralytics --ours-child ARGS``: train.py's own parser and loop,
    with a CPU-time field added to each log record (``benchmarks/compare/children.py: ours_child``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    train_args = ["--data", str(data_yaml), *model_args, *_ours_args(s), "--output-dir", str(folder / "run")]
    cmd = [sys.executable, "-m", "benchmarks.compare_ultralytics", "--ours-child", *train_args]
    done = folder / "done.json"
    if done.is_file() and not (folder / "run" / "metrics.json").is_file():
        done.unlink()
    rc, tail, run = _run(cmd, trainer_env(s["threads"], s.get("device", "cpu")), folder, [cmd[1:], s["threads"]])
    rec: dict[str, Any] = {"command": "train.py " + " ".join(train_args), **run}
    if rc != 0:
        return {**rec, "status": "failed", "error": tail}
    steps = [{"images": r["images_per_s"] * r["step_time_s"], "step_time_s": r["step_time_s"],
              **{k: r[k] for k in ("cpu_s", "max_rss_mib") if k in r}} for r in common.read_log(folder / "run")
             if "step_time_s" in r]
    summary = common.read_metrics(folder / "run")
    m = summary.get("metrics") or {}
    return {**rec, "status": "ok", **summarise_steps(steps, s["skip_steps"]),
            **{k: m.get(k) for k in MAP_KEYS}, "params": summary["params"], "threads": s["threads"],
            "run_dir": str(folder / "run")}


def run_alternative(kind: str, spec_args: dict[str, Any], s: dict[str, Any], folder: Path,
                    checkout: Path | None = None, model_yaml: Path | None = None) -> dict[str, Any]:
    """Ultralytics' (``kind="ultralytics"``) or YOLOFuse's trainer in a fresh process, timed by callbacks."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"kind": kind, "threads": s["threads"], "train_args": spec_args, "result": str(folder / "child.json"),
            "checkout": str(checkout) if checkout else None, "model_yaml": str(model_yaml) if model_yaml else None}
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    cmd = [sys.executable, "-m", "benchmarks.compare_ultralytics", "--child", str(folder / "spec.json")]
    if not (folder / "child.json").is_file():
        (folder / "done.json").unlink(missing_ok=True)
    rc, tail, run = _run(cmd, trainer_env(s["threads"], s.get("device", "cpu")), folder, spec)
    rec: dict[str, Any] = {**run, "train_args": spec_args}
    if rc != 0:
        return {**rec, "status": "failed", "error": tail}
    child = json.loads((folder / "child.json").read_text())
    last = child["results_csv_last"] or child["epoch_metrics"]
    return {**rec, "status": "ok", **summarise_steps(child["steps"], s["skip_steps"]),
            **{k: last.get(v) for k, v in MAP_KEYS.items()},
            "best_pt": {k: child["best_pt_metrics"].get(v) for k, v in MAP_KEYS.items()},
            "params": child["params"], "threads": child["threads"], "version": child["version"],
            "package": child["package"], "workers_used": 0, "run_dir": child["save_dir"]}


def ratio(ours: dict, other: dict, key: str = "images_per_s") -> float | None:
    if ours.get("status") == "ok" and other.get("status") == "ok" and other.get(key):
        return ours[key] / other[key]
    return None


def run_yolofuse(checkout: Path, data_yaml: Path, s: dict[str, Any], work: Path) -> dict[str, Any]:
    """YOLOFuse's trainer on its Mid-level-Feature-Fusion.yaml beside ours on the same YAML."""
    import yaml

    checkout = checkout.resolve()
    found = [checkout / YOLOFUSE_MID_YAML] if (checkout / YOLOFUSE_MID_YAML).is_file() else sorted(
        checkout.glob("ultralytics/cfg/**/Mid-level-Feature-Fusion.yaml"))
    if not (checkout / "ultralytics" / "__init__.py").is_file() or not found:
        return {"status": "not run", "reason": f"not run: {checkout} has no ultralytics/ package with "
                f"{YOLOFUSE_MID_YAML} (is it a YOLOFuse checkout?)"}
    mid = found[0]
    scales = list((yaml.safe_load(mid.read_text()) or {}).get("scales") or {})
    scale = s["model"][-1] if s["model"][-1] in scales else (scales[0] if scales else "")
    # Ultralytics takes a YAML's scale from its file name ("yolov8n..."), else the first row of `scales`
    # with a warning: a copy named for the scale makes YOLOFuse build the same row ours gets with --scale.
    named = work / f"yolov8{scale}-Mid-level-Feature-Fusion.yaml" if scale else work / mid.name
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mid, named)
    from yolofuse_scale.data import load_data_config

    cfg = load_data_config(data_yaml)
    notes = []
    if "images" in str(cfg.root):  # YOLOFuse pairs by str.replace("images", "imagesIR") on the whole path
        notes.append(f"the dataset path {cfg.root} contains 'images': YOLOFuse's str.replace pairing may "
                     "rewrite it (its IR paths would not exist)")
    yf_data = work / "yolofuse_data.yaml"
    # `channels` for forks that read it from the data YAML; those that take `ch=6` (its train_dual.py) ignore it
    yf_data.write_text(yaml.safe_dump({"path": str(cfg.root), "train": [str(p) for p in cfg.train],
                                       "val": [str(p) for p in cfg.val], "nc": cfg.nc, "names": dict(cfg.names),
                                       "channels": 6}, sort_keys=False))
    args = {**recipe_args(s), "data": str(yf_data), "ch": 6, "device": "cpu", "pretrained": False, "amp": False,
            "plots": False, "val": True, "cache": their_cache(s), "project": str(work / "yolofuse"), "name": "train",
            "exist_ok": True, "verbose": False}
    theirs = run_alternative("yolofuse", args, s, work / "yolofuse", checkout=checkout, model_yaml=named)
    ours_data = paired_yaml(data_yaml, work / "ours_data_ir3.yaml", ir_channels=3)  # YOLOFuse reads IR as 3 ch
    model_args = ["--model", str(mid), *(["--scale", scale] if scale else [])]
    ours = run_ours(ours_data, model_args, s, work / "ours_mid_yaml")
    return {"status": "ok" if theirs["status"] == ours["status"] == "ok" else "failed", "yaml": str(mid),
            "scale": scale, "yolofuse": theirs, "ours": ours, "ratio_images_per_s": ratio(ours, theirs),
            "ratio_images_per_s_p90": ratio(ours, theirs, "images_per_s_p90"),
            "ratio_images_per_cpu_s": ratio(ours, theirs, "images_per_cpu_s"),
            "params_equal": theirs.get("params") == ours.get("params") if theirs.get("params") else None,
            "notes": notes}
