"""Typed run configuration: one dataclass per concern, filled from defaults, then the command line.

The resolved configuration is written beside every run as ``config.yaml``; ``--config FILE`` reads
such a file back (command-line flags still win), so a run is reproducible from its own output.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.errors import ConfigError, add_debug_argument
from yolofuse_scale.model.variants import FAMILIES, FUSIONS, SCALE_NAMES, SCALES, parse_model_name

#: Strategies ``--strategy`` names; ``zero*`` read the packaged ``yolofuse_scale/configs/deepspeed/<name>.json``
#: (``ds_configs/`` in the checkout; see engine/strategy/deepspeed.py).
STRATEGIES = ("auto", "ddp", "fsdp", "zero1", "zero2", "zero3", "zero3_offload")


def _at_least(obj: Any, low: float, *names: str) -> None:
    """Refuse fields of ``obj`` below ``low``: a negative count or gain is a typo, not a setting."""
    for name in names:
        if getattr(obj, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(obj, name)}")


@dataclass(kw_only=True)
class DataSettings:  # not data.DataConfig (a parsed data.yaml): these are the run's data flags
    """Where the paired images come from and how they are fed."""

    data: str = ""  #: data.yaml (YOLOFuse layout); empty: synthesise a small dataset into the output dir
    imgsz: int = 640  #: square training/validation size (letterboxed), a multiple of 32
    workers: int = 2  #: DataLoader worker processes per rank
    augment: bool = True  #: the YOLOv8 recipe below (training only); False: letterbox only, like validation
    shuffle: bool = True  #: seeded per-epoch shuffle; the order is a function of (seed, epoch) only
    on_bad_sample: str = "error"  #: error | skip: what the start-up scan does with bad pairs and labels
    cache: str = "none"  #: none | ram | disk: decoded training pairs in one memory-mapped file per node
    # The augmentation recipe: Ultralytics' YOLOv8 defaults (data/augment.py), plus the IR gain.
    mosaic: float = 1.0  #: probability of a 4-pair mosaic
    mixup: float = 0.0  #: probability of blending with a second sample
    degrees: float = 0.0  #: rotation, +/- degrees
    translate: float = 0.1  #: translation, +/- fraction of the size
    aug_scale: float = 0.5  #: zoom, 1 +/- aug_scale (Ultralytics' `scale`; --scale is the model's)
    shear: float = 0.0  #: shear, +/- degrees
    perspective: float = 0.0  #: perspective factor (0: affine)
    fliplr: float = 0.5  #: probability of a horizontal flip
    hsv_h: float = 0.015  #: hue gain, RGB only
    hsv_s: float = 0.7  #: saturation gain, RGB only
    hsv_v: float = 0.4  #: value gain, RGB only
    ir_gain: float = 0.0  #: IR intensity gain, 1 +/- ir_gain, IR only
    close_mosaic: int = 10  #: no mosaic (nor mixup) in the last N epochs

    def augment_recipe(self) -> AugmentRecipe:
        """The recipe these flags describe."""
        names = {f.name for f in dataclasses.fields(AugmentRecipe)} - {"scale"}
        return AugmentRecipe(scale=self.aug_scale, **{n: getattr(self, n) for n in names})

    def __post_init__(self) -> None:
        if self.cache not in ("none", "ram", "disk"):
            raise ConfigError(f"--cache must be none, ram or disk, got {self.cache!r}")
        if self.on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"--on-bad-sample must be error or skip, got {self.on_bad_sample!r}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ConfigError(f"--imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        for name in ("mosaic", "mixup", "fliplr"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name} is a probability in [0, 1], got {getattr(self, name)}")
        _at_least(self, 0, "close_mosaic", "translate", "aug_scale", "hsv_h", "hsv_s", "hsv_v", "ir_gain")


@dataclass(kw_only=True)
class ModelConfig:
    """Which detector is trained."""

    model: str = "yolov8n"  #: {yolov8,yolo11,yolo26}{t,n,s,m,l,x} (t = tiny, tests only) or a model YAML file
    fusion: str = "mid"  #: data | early | mid | dea | late | rgb | ir (unused for a YAML file; the flag is refused)
    scale: str | None = None  #: row of a YAML file's `scales` table (default: its first)
    pretrained: str = ""  #: Ultralytics checkpoint (yolo11n.pt) or our weights file: every stream starts from it

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"--fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if _is_model_file(self.model):
            return
        named = parse_model_name(self.model)
        if not named or named[1] not in SCALE_NAMES:
            raise ConfigError(f"--model must be {{{','.join(FAMILIES)}}}{{{','.join(SCALE_NAMES)}}} (e.g. yolo11n) "
                              f"or a model YAML file (.yaml), got {self.model!r}")
        if self.scale is not None and self.scale not in SCALE_NAMES:
            raise ConfigError(f"--scale must be one of {', '.join(SCALE_NAMES)} for --model {self.model}, "
                              f"got {self.scale!r}")


@dataclass(kw_only=True)
class OptimConfig:
    """The optimisation recipe. Defaults are Ultralytics' YOLOv8 ones (SGD, lr0 0.01, nbs 64).

    Gradient semantics, defined once (see ``engine/task.py``): every optimizer step applies
    ``nbs`` x the mean, over the step's micro-batches on all ranks, of the gradient of the per-batch
    detection loss. With ``nbs`` images per step that is exactly Ultralytics' update (its loss is a
    sum over the batch, accumulated to 64 images); with any other world size x accumulation the step
    size does not silently change. ``--scale-lr`` then sets the peak lr for ``f`` = images per step /
    nbs: ``linear`` lr x f, ``sqrt`` lr x sqrt(f); weight decay is never scaled, because both SGD and
    AdamW decay by lr x wd per step (``engine/optim.py:effective_lr_wd`` gives the reasons). For SGD,
    ``linear`` is Ultralytics' update for a batch of f x nbs images (Goyal et al.'s linear rule).
    """

    optimizer: str = "sgd"  #: sgd (momentum, nesterov) | adamw
    lr: float = 0.01  #: peak learning rate (lr0)
    lrf: float = 0.01  #: final lr = lr * lrf
    momentum: float = 0.937  #: SGD momentum / Adam beta1
    weight_decay: float = 5e-4  #: applied to conv/linear weights only (not BN, not biases)
    warmup_epochs: float = 3.0  #: linear warm-up length (at least 100 optimizer steps, as Ultralytics)
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    schedule: str = "cosine"  #: cosine | linear, over --epochs (not --max-steps)
    clip_grad: float = 10.0  #: max gradient norm (Ultralytics clips at 10)
    nbs: int = 64  #: nominal batch size the recipe's hyper-parameters assume
    scale_lr: str = "none"  #: none | linear | sqrt: peak lr x f or x sqrt(f), f = images/step / nbs; wd fixed
    ema: bool = True  #: keep an EMA of the weights (decay 0.9999, 2000-step ramp); validate/save it

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear"):
            raise ConfigError(f"--schedule must be cosine or linear, got {self.schedule!r}")
        if self.scale_lr not in ("none", "linear", "sqrt"):
            raise ConfigError(f"--scale-lr must be none, linear or sqrt, got {self.scale_lr!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        for name in ("momentum", "warmup_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        _at_least(self, 0, "lrf", "weight_decay", "warmup_epochs", "warmup_bias_lr", "clip_grad")
        _at_least(self, 1, "nbs")


@dataclass(kw_only=True)
class TrainConfig:
    """Run length, batch, outputs and the distributed knobs the loop itself owns."""

    epochs: int = 100  #: fixes the LR schedule
    max_steps: int = 0  #: stop after this many optimizer steps (0: run all epochs); schedule unchanged
    batch_size: int = 16  #: per device (per process) micro-batch
    grad_accum: int = 1  #: micro-batches per optimizer step on each rank
    global_batch_size: int = 0  #: images per optimizer step; if set, grad_accum = G / (batch x processes)
    seed: int = 0
    output_dir: str = "runs/train"
    resume: str = ""  #: "auto" (newest checkpoint in output_dir) or a checkpoint folder
    overwrite: bool = False  #: a new run into an output_dir holding another run: move that run into replaced/
    save_every_steps: int = 0  #: also checkpoint every N optimizer steps (0: epoch ends only)
    keep_last: int = 3  #: keep the newest K checkpoints (0: keep all)
    save_on_each_node: bool = False  #: output_dir is node-local: each node's local main writes its own copy
    val: bool = True  #: validate at each epoch end (off: the final epoch only); best.pt: best validated epoch
    log_with: str = "none"  #: tensorboard | wandb | mlflow | none (trackers run offline)
    log_every: int = 10  #: print a progress line every N steps (the JSONL log gets every step)
    strategy: str = "auto"  #: auto | ddp | fsdp | zero1 | zero2 | zero3 | zero3_offload
    deepspeed: str = ""  #: DeepSpeed JSON config (or use `accelerate launch --config_file ...`)
    activation_checkpointing: bool = False  #: recompute backbone/neck blocks in backward (less memory)
    mixed_precision: str | None = None  #: no | fp16 | bf16 (default: the launcher's / Accelerate's)
    sync_bn: bool = False  #: SyncBatchNorm across ranks (CUDA only; ignored with a message elsewhere)
    dist_timeout: int = 300  #: seconds a collective may wait before the job fails (a dead/hung rank)
    compile: bool = False  #: torch.compile the model (inductor); DDP and single-process runs only
    # What the loop measures about itself (engine/perf.py); throughput, data wait and MFU are always logged.
    time_phases: bool = False  #: log forward/backward/optimizer time per step (syncs the GPU at each)
    measure_comm: bool = False  #: log calls and bytes of every collective per step
    peak_tflops: float = 0.0  #: the device's peak TFLOP/s for MFU (0: known GPUs from a table, else no MFU)
    benchmark_skip_grad_sync: bool = False  #: BENCHMARK ONLY: never synchronise gradients (ranks diverge)

    def resolve_grad_accum(self, world_size: int) -> None:
        """Derive ``grad_accum`` from ``global_batch_size`` for this world size (no-op when unset)."""
        if not self.global_batch_size:
            return
        per_pass = self.batch_size * world_size
        if self.global_batch_size % per_pass:
            raise ConfigError(
                f"--global-batch-size {self.global_batch_size} is not a multiple of --batch-size {self.batch_size} x "
                f"{world_size} process(es) = {per_pass}"
            )
        self.grad_accum = self.global_batch_size // per_pass

    def __post_init__(self) -> None:
        if self.global_batch_size < 0:
            raise ConfigError(f"--global-batch-size must be >= 0, got {self.global_batch_size}")
        _at_least(self, 0, "max_steps", "save_every_steps", "keep_last", "peak_tflops")
        _at_least(self, 1, "log_every", "dist_timeout")
        if self.deepspeed and self.strategy != "auto":
            raise ConfigError(f"--deepspeed {self.deepspeed} and --strategy {self.strategy} both choose the strategy "
                              f"(--strategy zeroN means ds_configs/zeroN.json): give one of them")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.overwrite and self.resume == "auto":
            raise ConfigError("--overwrite starts a new run in --output-dir and --resume auto continues the one there: "
                              "pass one of them")
        if self.log_with not in ("tensorboard", "wandb", "mlflow", "none"):
            raise ConfigError(f"--log-with must be tensorboard, wandb, mlflow or none, got {self.log_with!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.compile and self.strategy not in ("auto", "ddp"):
            raise ConfigError(f"--compile is supported with --strategy ddp (or one process), not {self.strategy}: "
                             "compiling under FSDP2/DeepSpeed has not been measured or tested here")
        if self.benchmark_skip_grad_sync and self.strategy not in ("auto", "ddp", "fsdp"):
            raise ConfigError("--benchmark-skip-grad-sync works with ddp and fsdp only (DeepSpeed has no no_sync)")


@dataclass(kw_only=True)
class RunConfig:
    """Everything a training run needs, grouped by concern."""

    data: DataSettings = field(default_factory=DataSettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config", lines: dict[tuple, int] | None = None) -> RunConfig:
        """Build from ``{section: {setting: value}}``; every key and type is checked (``where``/``lines``:
        the file and the line of each key, for the messages)."""
        lines = lines or {}

        def at(*key: str) -> str:
            return f"{where}:{lines[key]}" if key in lines else where

        for section, values in d.items():
            if section not in _SECTIONS:
                raise ConfigError(f"{at(section)}: unknown section {section!r}{_did_you_mean(section, _SECTIONS)} "
                                  f"(the sections are {', '.join(_SECTIONS)})")
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"{at(section)}: section {section!r} must be a mapping of settings, "
                                  f"got {type(values).__name__} {values!r}")
        kw = {}
        for section, sub_cls in _SECTIONS.items():
            fields = {f.name: f for f in dataclasses.fields(sub_cls)}
            values = {}
            for name, value in (d.get(section) or {}).items():
                if name not in fields:
                    raise ConfigError(f"{at(section, name)}: unknown setting {section}.{name}"
                                      f"{_did_you_mean(name, fields)}")
                values[name] = _typed(value, fields[name].default, f"{at(section, name)}: {section}.{name}")
            kw[section] = sub_cls(**values)
        return cls(**kw)


_SECTIONS = {"data": DataSettings, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
_HELP = {
    # One line a flag, written for the person at the terminal; defaults are appended by argparse.
    "data": "data.yaml in the YOLOFuse layout (images/, imagesIR/, labels/); omit to train on a synthetic set",
    "imgsz": "square input size in pixels (multiple of 32)",
    "workers": "DataLoader worker processes per rank",
    "augment": "training augmentation: the YOLOv8 recipe (mosaic, perspective, mixup, flip: the same geometry for "
    "RGB and IR; HSV on RGB; IR gain); off: letterbox only",
    "cache": "decode the training pairs once into one memory-mapped file per node, read by every rank and "
    "worker: ram (/dev/shm) or disk (the dataset folder, else the run folder); none: decode every time",
    "mosaic": "probability of a 4-pair mosaic (same tiles for RGB and IR)",
    "mixup": "probability of blending a sample with another one",
    "degrees": "random rotation range, +/- degrees",
    "translate": "random translation range, +/- fraction of the image size",
    "aug_scale": "random zoom range, 1 +/- this (Ultralytics' `scale`)",
    "shear": "random shear range, +/- degrees",
    "perspective": "random perspective factor (0: affine only)",
    "fliplr": "probability of a horizontal flip",
    "hsv_h": "hue augmentation gain (RGB only)",
    "hsv_s": "saturation augmentation gain (RGB only)",
    "hsv_v": "value (brightness) augmentation gain (RGB only)",
    "ir_gain": "IR intensity augmentation: multiply IR by a gain in 1 +/- this (IR only)",
    "close_mosaic": "turn mosaic and mixup off for the last N epochs",
    "shuffle": "shuffle each epoch with a permutation seeded by (seed, epoch)",
    "on_bad_sample": "error: stop before the first step listing every bad pair/label (FILE:LINE); "
    "skip: train without the pairs concerned and log the list",
    "model": "a family and scale: yolov8, yolo11 (C3k2/C2PSA) or yolo26 (end-to-end head, NMS-free capable) + "
    "t|n|s|m|l|x (t: tiny, for tests), e.g. yolo11s; or a model YAML (Ultralytics or YOLOFuse schema)",
    "fusion": "data (stacked input), early (two stems, fused at P2), mid (two backbones, fused P3-P5), "
    "dea (mid with cross-modal channel + spatial attention, DEYOLO's DEA, on each P3-P5 pair before its fusion), "
    "late (two branches, one Detect), "
    "rgb or ir (single-modality baselines); not with a model YAML, which defines its own (refused)",
    "scale": "for a YAML model: which row of its `scales` table (n/s/m/l/x)",
    "pretrained": "start from pretrained weights: an Ultralytics checkpoint of the same family and scale (e.g. "
    "yolo11n.pt, RGB-trained; read without running code) or weights/*.pt of a run of that model. Every stream "
    "starts from it: the IR stem's first conv is the sum over the RGB input channels (1-channel IR; a gray image "
    "answers as in RGB), a data-level stem gets half of each, fusion convs start as the two streams' average, "
    "class layers are re-initialised if the class count differs; a per-stream load report is logged. "
    "Not re-applied on --resume",
    "optimizer": "sgd or adamw; BN weights and biases get no weight decay",
    "lr": "peak learning rate after warm-up",
    "lrf": "final learning rate as a fraction of --lr",
    "momentum": "SGD momentum / AdamW beta1",
    "weight_decay": "weight decay of conv weights",
    "warmup_epochs": "linear warm-up, in epochs (at least 100 steps)",
    "warmup_momentum": "momentum at the start of warm-up",
    "warmup_bias_lr": "bias learning rate at the start of warm-up",
    "schedule": "cosine or linear decay over --epochs",
    "clip_grad": "clip the global gradient norm to this value (0: off)",
    "nbs": "nominal batch size of the recipe: a step's gradient is nbs x the mean micro-batch gradient",
    "scale_lr": "scale the peak lr with f = images-per-step / nbs: linear lr x f (SGD: Goyal et al., "
    "Ultralytics' update at f x nbs images), sqrt lr x sqrt(f) (common for AdamW); none: lr as given. "
    "Weight decay is not scaled: SGD and AdamW both decay by lr x wd per step, so it follows lr",
    "ema": "keep an exponential moving average of the weights, used for validation and weights/",
    "epochs": "number of epochs; fixes the LR schedule",
    "max_steps": "stop after this many optimizer steps (0: no limit); does not change the schedule",
    "batch_size": "micro-batch per device; the global batch is batch-size x processes x grad-accum",
    "grad_accum": "micro-batches accumulated per optimizer step on each process",
    "global_batch_size": "images per optimizer step at any world size: sets --grad-accum to G / (batch-size x "
    "processes), so a run resumed on another number of devices consumes the same micro-batches",
    "seed": "seeds Python, NumPy and torch on every rank, the shuffle and the augmentation",
    "output_dir": "run folder: train_log.jsonl, config.yaml, metrics.json, checkpoints/, weights/",
    "resume": "'auto' (newest complete checkpoint in --output-dir) or a checkpoint folder",
    "overwrite": "a fresh run (or --resume PATH of another run) into an --output-dir that holds another run's "
    "checkpoints or log: move that run's outputs into <output-dir>/replaced/<run id>-<time>/ first (without it: "
    "refused; --resume auto continues the run there)",
    "save_every_steps": "also write a checkpoint every N optimizer steps (0: only at epoch ends)",
    "keep_last": "keep only the newest K checkpoints (0: keep all)",
    "save_on_each_node": "--output-dir is node-local storage: every node's first process writes its own copy of "
    "logs, checkpoints and weights, and resumes from it; off: one writer per job (storage all nodes share)",
    "val": "validate (mAP50, mAP50-95, P, R) at the end of each epoch; --no-val validates the final epoch only. "
    "weights/best.pt is the best validated epoch (with --no-val: the final weights)",
    "log_with": "experiment tracker through Accelerate (offline): tensorboard, wandb, mlflow or none",
    "log_every": "print a progress line every N optimizer steps",
    "strategy": "auto: as the launcher/accelerate config says; ddp; fsdp (FSDP2); zero1|zero2|zero3|zero3_offload "
    "(the packaged DeepSpeed JSON <name>.json, ds_configs/ in the checkout). The same loop runs under each",
    "activation_checkpointing": "recompute C2f/SPPF blocks in backward: less activation memory, ~20-30%% more "
    "compute (for large scales and high resolutions)",
    "deepspeed": "DeepSpeed JSON config (ds_configs/*.json); the deepspeed launcher passes this",
    "mixed_precision": "no, fp16 or bf16 (default: the accelerate config's choice, else no)",
    "sync_bn": "convert BatchNorm to SyncBatchNorm before wrapping (CUDA only; on CPU it says so and goes on)",
    "dist_timeout": "seconds a collective may block before the job fails (dead or hung rank)",
    "compile": "torch.compile the model (inductor) after wrapping; the first steps pay the compile "
    "(minutes on CPU); DDP or one process",
    "time_phases": "also log forward / backward / optimizer seconds per step; synchronises the GPU at each "
    "boundary (exact, a few %% slower)",
    "measure_comm": "log the calls and payload bytes of every collective per step (what the scaling "
    "benchmark projects from); DDP reduces through an equivalent Python comm hook",
    "peak_tflops": "the device's peak TFLOP/s for the logged model FLOPs utilisation (0: H100/H200/A100/"
    "L40S/L4/A10/V100 from a table, else none)",
    "benchmark_skip_grad_sync": "BENCHMARK ONLY: skip every gradient synchronisation (ranks train apart) "
    "to measure step time without communication (ddp, fsdp)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field (``--batch-size`` for ``batch_size``), grouped by section."""
    parser.add_argument("--config", default="", help="YAML written by an earlier run (config.yaml); flags win")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_debug_argument(parser)
    for section, cls in _SECTIONS.items():
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            default = f.default
            kind = type(default) if default is not None else str
            help_text = _HELP.get(f.name, "")
            if kind is bool:
                group.add_argument(
                    flag,
                    dest=f"{section}.{f.name}",
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=f"{help_text} (default: {'on' if default else 'off'})",
                )
            else:
                group.add_argument(
                    flag,
                    dest=f"{section}.{f.name}",
                    type=kind,
                    default=None,
                    help=f"{help_text} (default: {default})",
                    choices=_choices(f.name),
                )


def _choices(name: str) -> list[str] | None:
    return {"strategy": list(STRATEGIES), "fusion": list(FUSIONS), "schedule": ["cosine", "linear"],
            "optimizer": ["sgd", "adamw"], "on_bad_sample": ["error", "skip"],
            "cache": ["none", "ram", "disk"], "scale_lr": ["none", "linear", "sqrt"]}.get(name)


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _typed(value: Any, default: Any, what: str) -> Any:
    """``value`` as the type of the field's ``default``, or a :class:`ConfigError` saying what was expected.

    YAML guesses types: ``1e-3`` is a string to PyYAML (it wants ``1.0e-3``) and is accepted for a
    number, as the flag would be; ``no``/``off`` are booleans and are refused for a text setting.
    """
    if value is None and default is None:
        return None
    kind = type(default) if default is not None else str
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[kind]
    hint = " (YAML reads yes/no/on/off as booleans: quote the value)" if kind is str and isinstance(value, bool) else ""
    raise ConfigError(f"{what} must be {expected}, got {value!r}{hint}")


def _read_config_file(path: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """A ``--config`` YAML (safe loading: tags that would build Python objects are refused) and the
    1-based line of every section and setting in it."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        d = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{line}: not a valid config YAML ({problem})") from None
    if d is None:
        return {}, {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {type(d).__name__}")
    lines: dict[tuple, int] = {}
    for key, sub in root.value if isinstance(root, yaml.MappingNode) else []:
        lines[(key.value,)] = key.start_mark.line + 1
        for name, _ in sub.value if isinstance(sub, yaml.MappingNode) else []:
            lines[(key.value, name.value)] = name.start_mark.line + 1
    return d, lines


def _from_file(error: ConfigError, d: dict, where: str, lines: dict[tuple, int], flags: set) -> ConfigError:
    """Name the file and line of the setting a check refused, when the file (not a flag) set it.

    The checks name the flag (``--imgsz must be ...``), which is also the setting's name.
    """
    m = re.match(r"--([a-z0-9-]+)", str(error))
    name = m.group(1).replace("-", "_") if m else ""
    for section, values in d.items():
        if name in (values or {}) and (section, name) not in flags:
            line = f":{lines[(section, name)]}" if (section, name) in lines else ""
            return ConfigError(f"{where}{line}: {section}.{name}: {error}")
    return error


def _is_model_file(model: str) -> bool:
    return Path(model).suffix in (".yaml", ".yml")


def check_paths(cfg: RunConfig) -> None:
    """The files the flags name exist: found now, not after the process group and the model are built."""
    if cfg.data.data and not Path(cfg.data.data).is_file():
        raise ConfigError(f"--data {cfg.data.data}: no such file (a data.yaml; omit --data to train on a "
                          "synthetic set)")
    if _is_model_file(cfg.model.model) and not Path(cfg.model.model).is_file():
        raise ConfigError(f"--model {cfg.model.model}: no such model YAML file")
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_file():
        raise ConfigError(f"--pretrained {cfg.model.pretrained}: no such file (an Ultralytics checkpoint such as "
                          "yolo11n.pt, or weights/last.pt of a run)")
    if cfg.train.deepspeed and not Path(cfg.train.deepspeed).is_file():
        raise ConfigError(f"--deepspeed {cfg.train.deepspeed}: no such file")
    resume = cfg.train.resume
    if resume and resume != "auto" and Path(resume).is_file():
        raise ConfigError(f"--resume {resume}: a file, not a checkpoint folder (give checkpoints/step_<n>, or "
                          "'auto' for the newest one in --output-dir)")
    if resume and resume != "auto" and not Path(resume).exists():
        raise ConfigError(f"--resume {resume}: no such checkpoint folder (give checkpoints/step_<n>, or 'auto' for "
                          "the newest one in --output-dir)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config FILE``, then explicit flags; every value checked, every named file present."""
    base: dict[str, Any] = {}
    lines: dict[tuple, int] = {}
    where = getattr(args, "config", "") or ""
    if where:
        base, lines = _read_config_file(where)
    flags = set()
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            if not isinstance(base.get(section) or {}, dict):
                break  # from_dict names the file's bad section
            base[section] = {**(base.get(section) or {}), name: value}
            flags.add((section, name))
    try:
        cfg = RunConfig.from_dict(base, where or "config", lines)
    except ConfigError as e:
        raise _from_file(e, base, where, lines, flags) if where else e from None
    if ("model", "fusion") in flags and _is_model_file(cfg.model.model):
        raise ConfigError(f"--fusion {cfg.model.fusion} with --model {cfg.model.model}: a model YAML defines its own "
                          "fusion (its layers); drop --fusion, or use --model yolov8n/yolo11n/yolo26n to pick a fusion")
    check_paths(cfg)
    return cfg


__all__ = [
    "SCALES",
    "DataSettings",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "add_train_arguments",
    "config_from_args",
]
