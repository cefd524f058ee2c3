"""Ultralytics' command line on ours: ``key=value`` arguments and Ultralytics' model file names.

``yolofuse-scale train data=data.yaml model=yolo11n epochs=100 imgsz=640 batch=16 device=0,1`` is rewritten,
before argparse sees it, into our flags (:func:`rewrite_train_args`), so everything after (``--config`` files,
checks, help) is the one flag parser's. ``key=value`` and ``--flags`` mix in one command. The rules:

- A key is one of Ultralytics' train settings whose meaning is the same here (:data:`SAME` and
  :data:`CONVERTED`: ``lr0`` is ``--lr``, ``scale`` the augmentation's ``--aug-scale``, ``cos_lr=True``
  ``--schedule cosine``, ``amp`` ``--mixed-precision``, ``cache=True`` ``--cache ram``, ...), or one of our own
  settings by its name (``fusion=mid``, ``batch_size=8``, ``output_dir=runs/x``; ``scale`` is Ultralytics').
- ``batch`` is Ultralytics' total over the job, as its DDP splits it: per-device ``--batch-size`` is
  ``batch`` / the number of processes (``device=`` here, else the launcher's ``WORLD_SIZE``), refused when it
  does not divide. ``--batch-size`` stays per device.
- Values as Ultralytics writes them: ``True``/``False`` (any case), ``device=0,1`` or ``[0,1]``, ``None``
  (leaves the setting at its default).
- An Ultralytics key without a setting here (``cls=0.5``, ``rect=True``, ``save_period=5``) is refused with
  what is closest here, whatever its value: nothing is silently ignored. An unknown key or flag gets the
  nearest name ("did you mean").
- One setting set twice, by a key and a flag, by two keys (``lr0=`` and ``lr=``) or one key twice, is
  refused, naming both: which one was meant cannot be guessed. (A flag given twice keeps argparse's rule:
  the last wins.)

Ultralytics' boolean keys also stand alone for True (``resume``, ``val``, ``exist_ok``, ...), and its resume
command, ``train resume model=<run>/weights/last.pt``, continues that run with the settings it was started with:
``--config <run>/config.yaml --output-dir <run> --resume auto`` (other arguments still win).

The model's Ultralytics file names are the other half: ``model_file.py``.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
from collections.abc import Callable

from yolofuse_scale.config.model_file import run_of_weights
from yolofuse_scale.config.sections import SECTION_OF, SECTIONS, knobs
from yolofuse_scale.devices import Devices, parse_devices
from yolofuse_scale.errors import ConfigError

#: Ultralytics' key -> our setting, the same meaning and value (a number, a path, True/False)
SAME = {
    "data": "data", "model": "model", "epochs": "epochs", "patience": "patience", "imgsz": "imgsz",
    "workers": "workers", "project": "project", "name": "name", "exist_ok": "exist_ok", "seed": "seed",
    "val": "val", "lr0": "lr", "lrf": "lrf", "momentum": "momentum", "weight_decay": "weight_decay",
    "warmup_epochs": "warmup_epochs", "warmup_momentum": "warmup_momentum", "warmup_bias_lr": "warmup_bias_lr",
    "nbs": "nbs", "close_mosaic": "close_mosaic", "mosaic": "mosaic", "mixup": "mixup", "degrees": "degrees",
    "translate": "translate", "scale": "aug_scale", "shear": "shear", "perspective": "perspective",
    "fliplr": "fliplr", "hsv_h": "hsv_h", "hsv_s": "hsv_s", "hsv_v": "hsv_v", "compile": "compile",
    "channels_last": "channels_last",
}

#: Ultralytics' train keys with no setting here: why, and what is closest (the refusal's text)
UNSUPPORTED = {
    "time": "a time limit in hours; closest: --max-steps (optimizer steps) or --epochs",
    "save_period": "checkpoints every N epochs; every epoch end writes one here (checkpoints/step_<n>, the newest "
                   "--keep-last kept); closest: --save-every-steps N (optimizer steps)",
    "save": "checkpoints are always written here; closest: --keep-last",
    "fraction": "training on a fraction of the set; list the pairs to train on in data.yaml (a .txt list of images)",
    "rect": "rectangular training batches; batches are square here (--imgsz)",
    "single_cls": "one class for all labels; write the labels (or data.yaml's names) with one class",
    "deterministic": "runs here are seeded (--seed) and resume exactly, without torch's deterministic-algorithms "
                     "mode; closest: --seed",
    "freeze": "frozen layers; every layer trains here",
    "multi_scale": "multi-scale training; one --imgsz per run",
    "cfg": "Ultralytics' flat settings file; closest: --config FILE (the config.yaml a run writes, in sections)",
    "box": "the loss gains are Ultralytics' defaults (box 7.5, cls 0.5, dfl 1.5) and not settings here",
    "cls": "the loss gains are Ultralytics' defaults (box 7.5, cls 0.5, dfl 1.5) and not settings here",
    "dfl": "the loss gains are Ultralytics' defaults (box 7.5, cls 0.5, dfl 1.5) and not settings here",
    "cls_pw": "class weighting is not supported here",
    "flipud": "the recipe has no vertical flip; closest: --fliplr",
    "bgr": "the recipe has no channel swap (RGB and IR are fed as they are)",
    "cutmix": "the recipe has no cutmix; closest: --mixup",
    "copy_paste": "copy-paste needs masks (segmentation); closest: --mixup",
    "auto_augment": "a classification setting",
    "erasing": "a classification setting",
    "dropout": "a classification setting",
    "plots": "training writes no plots here; `yolofuse-scale val` draws the PR/F1 curves and confusion matrices",
    "split": "validation during training uses data.yaml's val split; `yolofuse-scale val --split` evaluates another",
    "conf": "a val/predict setting: `yolofuse-scale val --conf`, `predict --conf`",
    "iou": "a val/predict setting: `yolofuse-scale val --iou`, `predict --iou`",
    "max_det": "a val/predict setting: `yolofuse-scale val --max-det`",
    "save_json": "a val setting; `yolofuse-scale val` writes metrics.json",
    "half": "closest: amp=True or --mixed-precision fp16/bf16",
    "quantize": "closest: amp=True or --mixed-precision fp16/bf16",
    "task": "this trains detection (RGB+IR) only: drop task=",
    "mode": "the mode is the command: `yolofuse-scale train`",
    "verbose": "the console prints a line every --log-every steps; closest: --log-every",
    "profile": "closest: --time-phases (forward/backward/optimizer times per step)",
    "cls_remap": "--pretrained keeps the class layers when the class count matches and re-initialises them otherwise",
    "distill_model": "distillation is not supported here",
    "dis": "distillation is not supported here",
}

# a key that became one of our settings (by its own name) is that setting, no longer refused
UNSUPPORTED = {key: why for key, why in UNSUPPORTED.items() if key not in SECTION_OF}

#: our optimizers by Ultralytics' names (case-insensitive)
OPTIMIZERS = {"sgd": "sgd", "adamw": "adamw"}


def rewrite_train_args(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` of ``train`` with every ``key=value`` replaced by our flags and every flag written in full (argparse's
    unique prefixes resolved). ConfigError for a key or flag that cannot be honoured (see the module docstring)."""
    options = _options(parser)
    tokens = _tokens(argv, options)
    devices = _devices(tokens)
    resuming = any((kind, name) == ("flag", "--resume") or (kind, name) == ("key", "resume") and
                   str(value).lower() != "false" for kind, name, value in tokens)
    out: list[str] = []
    set_by: dict[str, list[tuple[str, bool]]] = {}  # dest -> how the command set it: ("epochs=3", key?), ...

    for kind, token, value in tokens:
        run = run_of_weights(value) if resuming and (kind, token) in (("key", "model"), ("flag", "--model")) else None
        if run is not None:  # Ultralytics' `train resume model=<run>/weights/last.pt`: that run, its own settings
            out += ["--config", str(run / "config.yaml"), "--output-dir", str(run)]
            for dest in ("config", "checkpoint.output_dir"):
                set_by.setdefault(dest, []).append((f"{token}={value}" if kind == "key" else token, True))
        elif kind == "flag":
            set_by.setdefault(options[token].dest, []).append((token, False))
            out += [token] if value is None else [token, value]
        elif kind == "raw":
            out.append(token)
        else:
            out += convert_key(token, value, devices)
            set_by.setdefault(_dest_of_key(token), []).append((f"{token}={value}", True))
    for dest, ways in set_by.items():
        if len(ways) > 1 and any(is_key for _, is_key in ways):
            (first, _), (second, _) = ways[:2]
            raise ConfigError(f"{first} and {second} both set {_flag_of(dest, options)}: give one of them")
    return out


# ------------------------------------------------------------------------------------------------ the argument list
def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}  # argparse keeps no public map


def _tokens(argv: list[str], options: dict[str, argparse.Action]) -> list[tuple[str, str, str | None]]:
    """(kind, name, value): ("flag", "--epochs", "3"), ("flag", "--no-val", None), ("key", "epochs", "3"),
    ("raw", token, None) for what argparse alone must judge (a flag's value, ``-h``, after ``--``)."""
    out: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out += [("raw", t, None) for t in argv[i - 1:]]
            break
        if token.startswith("-") and len(token) > 1 and not _number(token):
            name, eq, inline = token.partition("=")
            full = _resolve_option(name, options)
            action = options[full]
            if action.nargs == 0:
                if eq:
                    raise ConfigError(f"{token}: {full} takes no value (write {full}, or the key form "
                                      f"{full.lstrip('-').replace('-', '_')}=True/False)")
                out.append(("flag", full, None))
            elif eq:
                out.append(("flag", full, inline))
            elif i < len(argv):
                out.append(("flag", full, argv[i]))
                i += 1
            else:
                out.append(("raw", full, None))  # argparse says "expected one argument"
            continue
        key, eq, value = token.partition("=")
        if not eq and (token in _bare_keys() or token in UNSUPPORTED):  # Ultralytics' bare switch: `yolo train resume`
            out.append(("key", token, "True"))
            continue
        if not eq or not key:
            raise ConfigError(f"{token!r}: not a setting; write key=value (Ultralytics' form, e.g. epochs=3) or "
                              "--flag value (e.g. --epochs 3); the settings are listed by --help")
        key = key.strip()
        if not value.strip():
            raise ConfigError(f"{token}: {key}= needs a value")
        out.append(("key", key, value.strip()))
    return out


def _number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _resolve_option(name: str, options: dict[str, argparse.Action]) -> str:
    """The option ``name`` stands for: itself, or the one option it is a unique prefix of (argparse's rule)."""
    if name in options:
        return name
    if name.startswith("--"):
        matches = [o for o in options if o.startswith(name) and o.startswith("--")]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"{name}: ambiguous, could be {', '.join(sorted(matches))}")
    longs = [o for o in options if o.startswith("--")]
    close = difflib.get_close_matches(name, longs, n=1) or difflib.get_close_matches(
        "--" + name.lstrip("-").replace("_", "-"), longs, n=1)
    key = name.lstrip("-").replace("-", "_")
    as_key = f" (or the key {key}=...)" if key in SAME or key in UNSUPPORTED else ""
    raise ConfigError(f"unknown flag {name}" + (f" (did you mean {close[0]}?)" if close else "") + as_key
                      + "; the flags are listed by --help")


def _devices(tokens: list[tuple[str, str, str | None]]) -> Devices | None:
    """What device= / --device asks for (None: not given; the launcher's WORLD_SIZE processes, or one)."""
    for kind, name, value in tokens:
        if (kind, name) in (("key", "device"), ("flag", "--device")) and value is not None \
                and value.strip().lower() != "none":
            return parse_devices(value)
    return None


@functools.cache
def _bare_keys() -> frozenset[str]:
    """Keys Ultralytics accepts alone for True (its boolean settings; ours by their names)."""
    ours = {key for key in SECTION_OF if isinstance(knobs(SECTIONS[SECTION_OF[key]])[key].field.default, bool)}
    return frozenset({"resume", "val", "exist_ok", "cos_lr", "amp", "cache", "compile", "channels_last"} | ours)


# ---------------------------------------------------------------------------------------------------------- keys
def _dest_of_key(key: str) -> str:
    """The parser's dest a key sets (``lr0`` -> ``optim.lr``; ``batch`` -> ``train.batch_size``)."""
    ours = CONVERTED_DEST.get(key) or SAME.get(key) or key
    return ours if ours == "device" else f"{SECTION_OF[ours]}.{ours}"


def _flag_of(dest: str, options: dict[str, argparse.Action]) -> str:
    return next((o for o, a in options.items() if a.dest == dest and o.startswith("--")), dest)


def convert_key(key: str, value: str, devices: Devices | None = None) -> list[str]:
    """Our flags for ``key=value`` (see the module docstring); ``devices``: the job's process count, if known."""
    if value.lower() == "none":
        if key in CONVERTED or key in SAME or key in SECTION_OF:
            return []  # Ultralytics' None: the default
    if key in CONVERTED:
        return CONVERTED[key](value, devices)
    ours = SAME.get(key)
    if ours is None and key in SECTION_OF:
        ours = key  # one of our own settings by its name
    if ours is None:
        raise ConfigError(_unknown_key(key, value))
    return _flag_for(ours, value, f"{key}={value}")


def _flag_for(ours: str, value: str, what: str) -> list[str]:
    """``--our-flag VALUE`` with the value checked against the setting's type, named as the user wrote it."""
    knob = knobs(SECTIONS[SECTION_OF[ours]])[ours]
    default, flag = knob.field.default, "--" + ours.replace("_", "-")
    if isinstance(default, bool):
        return [flag if _bool(value, what) else "--no-" + ours.replace("_", "-")]
    if isinstance(default, int):
        try:
            return [flag, str(int(value))]
        except ValueError:
            raise ConfigError(f"{what}: expected an integer") from None
    if isinstance(default, float):
        try:
            return [flag, repr(float(value))]
        except ValueError:
            raise ConfigError(f"{what}: expected a number") from None
    return [flag, value]


def _bool(value: str, what: str) -> bool:
    low = value.lower()
    if low not in ("true", "false"):
        raise ConfigError(f"{what}: expected True or False")
    return low == "true"


def _batch(value: str, devices: Devices | None) -> list[str]:
    try:
        total = int(value)
    except ValueError:
        total = 0
    if total < 1:
        raise ConfigError(f"batch={value}: give the images per step as a positive integer (Ultralytics' AutoBatch, "
                          "batch=-1 or a memory fraction, is not supported here)")
    n = devices.nproc if devices else int(os.environ.get("WORLD_SIZE", "1"))
    if total % n:
        raise ConfigError(f"batch={total} is the total over {n} processes (as Ultralytics splits it under DDP) and "
                          f"does not divide by {n}; give a multiple of {n}, or --batch-size (per device)")
    return ["--batch-size", str(total // n)]


def _device(value: str, devices: Devices | None) -> list[str]:
    parse_devices(value)  # refused here, with the key's spelling
    return ["--device", value.strip("[]()").replace(" ", "")]


def _cache(value: str, devices: Devices | None) -> list[str]:
    mode = {"true": "ram", "ram": "ram", "disk": "disk", "false": "none"}.get(value.lower())
    if mode is None:
        raise ConfigError(f"cache={value}: expected True (ram), ram, disk or False")
    return ["--cache", mode]


def _amp(value: str, devices: Devices | None) -> list[str]:
    low = value.lower()
    if low in ("false", "fp32", "no"):
        return ["--mixed-precision", "no"]
    if low == "bf16":
        return ["--mixed-precision", "bf16"]
    if low not in ("true", "fp16"):
        raise ConfigError(f"amp={value}: expected True (fp16 on GPUs), False, fp16, bf16 or fp32")
    # Ultralytics' AMP: fp16 on a GPU, off on the CPU (its AMP check turns it off there too)
    return ["--mixed-precision", "fp16" if _gpus(devices) else "no"]


def _gpus(devices: Devices | None) -> bool:
    """Whether this job trains on GPUs: device= says so, else whether torch sees one (nothing then changes which
    devices this process sees, so asking CUDA now is harmless)."""
    if devices is not None:
        return devices.kind == "cuda"
    import torch

    return torch.cuda.is_available()


def _optimizer(value: str, devices: Devices | None) -> list[str]:
    ours = OPTIMIZERS.get(value.lower())
    if ours is None:
        why = ("Ultralytics' auto picks AdamW or SGD and their lr from the run's length; here the optimizer and "
               "--lr are given" if value.lower() == "auto" else f"{value} is not available here")
        raise ConfigError(f"optimizer={value}: {why}; choose optimizer=SGD (the default, lr0=0.01) or optimizer=AdamW")
    return ["--optimizer", ours]


def _cos_lr(value: str, devices: Devices | None) -> list[str]:
    return ["--schedule", "cosine" if _bool(value, f"cos_lr={value}") else "linear"]


def _resume(value: str, devices: Devices | None) -> list[str]:
    low = value.lower()
    if low == "false":
        return []
    return ["--resume", "auto" if low == "true" else value]


def _pretrained(value: str, devices: Devices | None) -> list[str]:
    low = value.lower()
    if low == "true":  # Ultralytics' default: a .pt model's own weights, which model=NAME.pt gives here too
        return []
    return ["--pretrained", "" if low == "false" else value]


#: Ultralytics' keys whose value is converted: key -> (value, devices) -> our flags
CONVERTED: dict[str, Callable[[str, Devices | None], list[str]]] = {
    "batch": _batch, "device": _device, "cache": _cache, "amp": _amp, "optimizer": _optimizer, "cos_lr": _cos_lr,
    "resume": _resume, "pretrained": _pretrained,
}
#: the setting each converted key sets (its parser dest's key; ``device`` is the launch's, no setting)
CONVERTED_DEST = {"batch": "batch_size", "device": "device", "cache": "cache", "amp": "mixed_precision",
                  "optimizer": "optimizer", "cos_lr": "schedule", "resume": "resume", "pretrained": "pretrained"}


def _unknown_key(key: str, value: str) -> str:
    if key in UNSUPPORTED:
        return f"{key}={value}: Ultralytics' {key} has no setting here: {UNSUPPORTED[key]}"
    if key in _ultralytics_keys():
        return (f"{key}={value}: Ultralytics' {key} has no setting in yolofuse-scale train (the settings are listed by "
                "--help)")
    known = sorted({*SAME, *CONVERTED, *SECTION_OF, *UNSUPPORTED})
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}=?)" if close else ""
    return f"{key}={value}: unknown setting{hint}; the settings are listed by --help"


@functools.cache
def _ultralytics_keys() -> frozenset[str]:
    """Every key of the installed Ultralytics' default settings (read for a refusal's wording only)."""
    import importlib.resources

    import yaml

    try:
        text = importlib.resources.files("ultralytics.cfg").joinpath("default.yaml").read_text()
        return frozenset(yaml.safe_load(text) or {})
    except (OSError, ModuleNotFoundError, yaml.YAMLError):
        return frozenset()
