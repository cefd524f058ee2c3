"""Typed run configuration: one dataclass per concern, filled from defaults, then the command line.

The resolved configuration is written beside every run as ``config.yaml``; ``--config FILE`` reads
such a file back (command-line flags still win), so a run is reproducible from its own output.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.model.variants import FUSIONS, SCALES

#: Strategies ``--strategy`` names; ``zero*`` read ``ds_configs/<name>.json`` (see engine/strategy.py).
STRATEGIES = ("auto", "ddp", "fsdp", "zero1", "zero2", "zero3", "zero3_offload")


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
            raise ValueError(f"--cache must be none, ram or disk, got {self.cache!r}")
        if self.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"--on-bad-sample must be error or skip, got {self.on_bad_sample!r}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"--imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        for name in ("mosaic", "mixup", "fliplr"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name} is a probability in [0, 1], got {getattr(self, name)}")


@dataclass(kw_only=True)
class ModelConfig:
    """Which detector is trained."""

    model: str = "yolov8n"  #: yolov8{t,n,s,m,l,x} (t = tiny, tests only) or an Ultralytics/YOLOFuse YAML file
    fusion: str = "mid"  #: data | early | mid | late | rgb | ir (ignored for a YAML file)
    scale: str | None = None  #: row of a YAML file's `scales` table (default: its first)

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"--fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")


@dataclass(kw_only=True)
class OptimConfig:
    """The optimisation recipe. Defaults are Ultralytics' YOLOv8 ones (SGD, lr0 0.01, nbs 64).

    Gradient semantics, defined once (see ``engine/task.py``): every optimizer step applies
    ``nbs`` x the mean, over the step's micro-batches on all ranks, of the gradient of the per-batch
    detection loss. With ``nbs`` images per step that is exactly Ultralytics' update (its loss is a
    sum over the batch, accumulated to 64 images); with any other world size x accumulation the step
    size does not silently change. ``--scale-lr linear`` multiplies lr and weight decay by
    (images per step / nbs), which is Ultralytics' behaviour for a non-nominal batch.
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
    scale_lr: str = "none"  #: none | linear (see above)
    ema: bool = True  #: keep an EMA of the weights (decay 0.9999, 2000-step ramp); validate/save it

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"--schedule must be cosine or linear, got {self.schedule!r}")
        if self.scale_lr not in ("none", "linear"):
            raise ValueError(f"--scale-lr must be none or linear, got {self.scale_lr!r}")


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
    val: bool = True  #: validate at each epoch end
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
            raise ValueError(
                f"--global-batch-size {self.global_batch_size} is not a multiple of --batch-size {self.batch_size} x "
                f"{world_size} process(es) = {per_pass}"
            )
        self.grad_accum = self.global_batch_size // per_pass

    def __post_init__(self) -> None:
        if self.global_batch_size < 0:
            raise ValueError(f"--global-batch-size must be >= 0, got {self.global_batch_size}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.overwrite and self.resume == "auto":
            raise ValueError("--overwrite starts a new run in --output-dir and --resume auto continues the one there: "
                             "pass one of them")
        if self.log_with not in ("tensorboard", "wandb", "mlflow", "none"):
            raise ValueError(f"--log-with must be tensorboard, wandb, mlflow or none, got {self.log_with!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.compile and self.strategy not in ("auto", "ddp"):
            raise ValueError(f"--compile is supported with --strategy ddp (or one process), not {self.strategy}: "
                             "compiling under FSDP2/DeepSpeed has not been measured or tested here")
        if self.benchmark_skip_grad_sync and self.strategy not in ("auto", "ddp", "fsdp"):
            raise ValueError("--benchmark-skip-grad-sync works with ddp and fsdp only (DeepSpeed has no no_sync)")


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
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(d) - set(sections)
        if unknown:
            raise ValueError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        kw = {}
        for f in dataclasses.fields(cls):
            sub_cls = f.default_factory  # type: ignore[misc]
            kw[f.name] = sub_cls(**(d.get(f.name) or {}))
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
    "model": "yolov8t|n|s|m|l|x (t: tiny, for tests) or a model YAML (Ultralytics or YOLOFuse schema)",
    "fusion": "data (stacked input), early (two stems, fused at P2), mid (two backbones, fused P3-P5), "
    "late (two branches, one Detect), "
    "rgb or ir (single-modality baselines)",
    "scale": "for a YAML model: which row of its `scales` table (n/s/m/l/x)",
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
    "scale_lr": "linear: multiply lr and weight decay by images-per-step / nbs",
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
    "val": "validate (mAP50, mAP50-95, P, R) at the end of each epoch",
    "log_with": "experiment tracker through Accelerate (offline): tensorboard, wandb, mlflow or none",
    "log_every": "print a progress line every N optimizer steps",
    "strategy": "auto: as the launcher/accelerate config says; ddp; fsdp (FSDP2); zero1|zero2|zero3|zero3_offload "
    "(ds_configs/<name>.json). The same loop runs under each",
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
            "cache": ["none", "ram", "disk"]}.get(name)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config FILE``, then explicit flags."""
    base: dict[str, dict[str, Any]] = {}
    if getattr(args, "config", ""):
        with open(args.config) as fh:
            base = yaml.safe_load(fh) or {}
        if not isinstance(base, dict):
            raise ValueError(f"{args.config}: expected a mapping of sections (data, model, optim, train)")
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            base.setdefault(section, {})[name] = value
    return RunConfig.from_dict(base)


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
