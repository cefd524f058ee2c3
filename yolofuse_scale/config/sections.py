"""The settings of a training run: one dataclass per concern, each field with its docstring and its checks.

A setting is a dataclass field and everything else is derived from it: its flag is the field's name with
dashes (``batch_size``: ``--batch-size``), the same name is its key in its section of ``config.yaml``, the
string literal right under it is its ``--help`` line (``flags.py``), a ``Literal[...]`` type is both its
choices and its check. The augmentation recipe is ``data/augment.py``'s :class:`AugmentRecipe`, held by
:class:`DataConfig` and flattened into the data flags and keys.

The sections, one concern each: ``data`` (the pairs and how they are fed), ``model``, ``optim`` (the recipe),
``train`` (run length and batch: how long, how many images per step, seed, validation), ``checkpoint`` (the
run folder, its checkpoints, resume), ``parallel`` (strategy, precision, process group, compile, memory
layout) and ``log`` (what the run logs and measures of itself). ``train`` kept its name for the settings
that were always its core, so ``cfg.train.epochs`` and an old file's ``train: epochs`` mean what they did;
config.yaml's ``version: 2`` tells the new layout from the old one (``file.py`` reads both).

A check refuses a value with a :class:`ConfigError` whose ``settings`` name the keys it refuses (a
cross-field check names each), so ``flags.py`` can say which line of a ``--config`` file set them without
reading the message. A benchmark-only switch is no setting: the scaling benchmark passes it to the
Trainer itself (``bench/no_sync.py``).

Why one module of ~500 lines: it is one schema, long by nature. Each setting is a field with its help text (the
``--help`` itself), and ``flags.py``, ``file.py`` and ``ultralytics.py`` read the sections as one table
(:data:`SECTIONS`, :func:`knobs`); the checks at the end name a refused setting by its flag through that table
(the recipe's renamed keys), so the table and the sections cannot sit in two modules without importing each other,
and seven section modules would scatter what a reader compares side by side. Adding a setting stays one field here.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn, get_args, get_origin

import yaml

from yolofuse_scale.data.augment import MISREGISTRATION, AugmentRecipe
from yolofuse_scale.data.cache import CacheMode
from yolofuse_scale.data.config import DatasetSpec
from yolofuse_scale.data.scan.records import BadSamplePolicy
from yolofuse_scale.errors import ConfigError
from yolofuse_scale.model.sizes import fusion_help
from yolofuse_scale.model.variants import (
    FAMILIES,
    SCALE_NAMES,
    Fusion,
    misregistration_default,
    model_name_task,
    parse_model_name,
    reads_both_modalities,
)

#: ``--strategy``; ``zero*`` read the packaged ``yolofuse_scale/configs/deepspeed/<name>.json``
#: (``ds_configs/`` in the checkout; see engine/strategy/deepspeed.py).
Strategy = Literal["auto", "ddp", "fsdp", "zero1", "zero2", "zero3", "zero3_offload"]
#: config.yaml's layout: 2 = the sections below; 1 (files without ``version``) = one ``train`` section
#: holding today's train, checkpoint, parallel and log settings (``file.py`` maps it).
CONFIG_VERSION = 2
#: ``--help`` placeholders (metavar) that a type cannot give: numbers read N or the key (``--lr LR``).
FILE, DIR = {"metavar": "FILE"}, {"metavar": "DIR"}


@dataclass(kw_only=True)
class DataConfig:
    """The paired images and how they are fed: where they come from, their size, workers, augmentation, cache.

    The parsed ``data.yaml`` itself is ``data.DatasetSpec``."""

    data: str = field(default="", metadata=FILE)
    """data.yaml in the YOLOFuse layout (images/, imagesIR/, labels/); omit to train on a synthetic set"""
    imgsz: int = 640
    """square input size in pixels (multiple of 32)"""
    workers: int = 2
    """DataLoader worker processes per rank"""
    augment: bool = True
    """training augmentation: the YOLOv8 recipe (mosaic, perspective, mixup, flip: the same geometry for RGB
    and IR; HSV on RGB; IR gain); off: letterbox only"""
    shuffle: bool = True
    """shuffle each epoch with a permutation seeded by (seed, epoch)"""
    on_bad_sample: BadSamplePolicy = "error"
    """error: stop before the first step listing every bad pair/label (FILE:LINE); skip: train without the
    pairs concerned and log the list"""
    cache: CacheMode = "none"
    """decode the training pairs once into one memory-mapped file per node, read by every rank and worker: ram
    (/dev/shm) or disk (the dataset folder, else the run folder); none: decode every time"""
    loader: Literal["cpu", "device"] = "cpu"
    """where training pairs are decoded and augmented: cpu (the DataLoader workers, OpenCV) or device (workers
    only read the files, or with --cache the decoded pairs, and draw the recipe's random parameters; the training
    device decodes, warps and applies them per batch, with the same draws and boxes; pixels differ by interpolation
    only); validation follows it (device: the device decodes and letterboxes the val pairs too)"""
    recipe: AugmentRecipe = field(default_factory=AugmentRecipe, metadata={"flag_names": {"scale": "aug_scale"}})
    """the augmentation recipe (used with --augment): one flag and one data key per field (its help is the
    field's docstring in data/augment.py); ``scale`` is ``--aug-scale``, ``--scale`` being the model's"""

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_choices(self.recipe)
        if self.imgsz < 32 or self.imgsz % 32:
            _refuse(self, "imgsz", f"--imgsz must be a positive multiple of 32, got {self.imgsz}")
        _at_least(self, 0, "workers")
        for name in ("mosaic", "mixup", "fliplr"):
            if not 0 <= getattr(self.recipe, name) <= 1:
                _refuse(self.recipe, name, f"--{name} is a probability in [0, 1], got {getattr(self.recipe, name)}")
        _at_least(self.recipe, 0, "close_mosaic", "translate", "scale", "hsv_h", "hsv_s", "hsv_v", "ir_gain",
                  *(k for k in MISREGISTRATION if getattr(self.recipe, k) is not None))  # unset: a default
        for name, high, why in (("ir_shift", 1, "a fraction of the image size"),
                                ("ir_rotate", 180, "degrees either way")):
            if (getattr(self.recipe, name) or 0) > high:
                _refuse(self.recipe, name, f"{_flag(self.recipe, name)} is {why}, at most {high}, "
                                           f"got {getattr(self.recipe, name)}")
        if (self.recipe.ir_scale or 0) >= 1:
            _refuse(self.recipe, "ir_scale", f"--ir-scale must be below 1 (IR is zoomed by 1 +/- it), "
                                             f"got {self.recipe.ir_scale}")


@dataclass(kw_only=True)
class ModelConfig:
    """Which detector is trained."""

    model: str = "yolov8n"
    """a family and scale: yolov8, yolo11 (C3k2/C2PSA) or yolo26 (end-to-end head, NMS-free capable) +
    t|n|s|m|l|x (t: tiny, for tests), e.g. yolo11s, with -obb for oriented boxes (yolo11s-obb: --task obb); or a
    model YAML (Ultralytics or YOLOFuse schema). Ultralytics' file names mean their family and scale: yolo11n.yaml
    (unless such a file is here), yolo11n.pt (a file here, also taken as --pretrained; nothing is downloaded)"""
    task: Literal["detect", "obb"] | None = None
    """detect: axis-aligned boxes; obb: oriented boxes (centre, size, angle; the family's -obb model: OBB head,
    v8OBBLoss, rotated NMS and IoU, labels 'cls x1 y1 x2 y2 x3 y3 x4 y4'). Default: the --model name's (-obb: obb),
    else the dataset's (data.yaml 'task:', detect when absent), which must agree with it; a model YAML's head must
    be the task's. Recorded in the weights: val, predict and export follow it; a resume refuses another task"""
    fusion: Fusion = field(default="mid", metadata={"help_more": fusion_help})
    """where the RGB and IR streams meet (model/variants.py); not with a model YAML, which defines its own
    (refused); every run prints its model's size at start:"""
    scale: str | None = None
    """for a YAML model: which row of its `scales` table (n/s/m/l/x)"""
    pretrained: str = field(default="", metadata=FILE)
    """start from pretrained weights: an Ultralytics checkpoint of the same family and scale (e.g. yolo11n.pt,
    RGB-trained; read without running code) or weights/*.pt of a run of that model. Every stream starts from
    it: the IR stem's first conv is the sum over the RGB input channels (1-channel IR; a gray image answers as
    in RGB), a data-level stem gets half of each, fusion convs start as the two streams' average, class layers
    are re-initialised if the class count differs (a warning if their names differ); a per-stream load report
    is logged. A model YAML (YOLOFuse, DEYOLO, YOLOv11-RGBT) takes the RGB checkpoint its layers are written
    for, matched by structure, or weights/*.pt of a run of the same YAML. Not re-applied on --resume"""

    def __post_init__(self) -> None:
        _check_choices(self)
        if is_model_file(self.model):
            return
        named = parse_model_name(self.model)
        if not named or named[1] not in SCALE_NAMES:
            _refuse(self, "model", f"--model must be {{{','.join(FAMILIES)}}}{{{','.join(SCALE_NAMES)}}}[-obb] (e.g. "
                                   f"yolo11n, yolo11n-obb) or a model YAML file (.yaml), got {self.model!r}")
        said = model_name_task(self.model)  # yolo11n-obb: obb; the name and --task must agree
        if said is not None and self.task not in (None, said):
            _refuse(self, ("task", "model"), f"--task {self.task} with --model {self.model}, an {said.upper()} model: "
                                             f"drop --task, or use --model {self.model.removesuffix('-obb')}")
        self.task = said or self.task  # None: the dataset's (data.yaml 'task:'), resolved when the data is read
        if self.scale is not None and self.scale not in SCALE_NAMES:
            _refuse(self, "scale", f"--scale must be one of {', '.join(SCALE_NAMES)} for --model {self.model}, "
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

    optimizer: Literal["sgd", "adamw"] = "sgd"
    """sgd (momentum, nesterov) or adamw; BN weights and biases get no weight decay"""
    lr: float = 0.01
    """peak learning rate after warm-up (Ultralytics' lr0)"""
    lrf: float = 0.01
    """final learning rate as a fraction of --lr"""
    momentum: float = 0.937
    """SGD momentum / AdamW beta1"""
    weight_decay: float = 5e-4
    """weight decay of conv/linear weights (not BN, not biases)"""
    warmup_epochs: float = 3.0
    """linear warm-up, in epochs: at least --warmup-min-steps, at most epochs - 1 epochs (a 1-epoch run has none)"""
    warmup_min_steps: int = 100
    """the warm-up's floor in optimizer steps (Ultralytics <= 8.3: 100; 0: Ultralytics 8.4's rule, no floor)"""
    warmup_momentum: float = 0.8
    """momentum at the start of warm-up"""
    warmup_bias_lr: float = 0.1
    """bias learning rate at the start of warm-up"""
    schedule: Literal["cosine", "linear"] = "cosine"
    """cosine or linear decay over --epochs (not --max-steps)"""
    decay_every: Literal["step", "epoch"] = "step"
    """evaluate the decay at every optimizer step (the same curve without steps) or hold it for a whole epoch
    (Ultralytics' per-epoch scheduler; for like-for-like comparisons and the ablation)"""
    clip_grad: float = 10.0
    """clip the global gradient norm to this value (0: off)"""
    nbs: int = 64
    """nominal batch size of the recipe: a step's gradient is nbs x the mean micro-batch gradient"""
    scale_lr: Literal["none", "linear", "sqrt"] = "none"
    """scale the peak lr with f = images-per-step / nbs: linear lr x f (SGD: Goyal et al., Ultralytics' update
    at f x nbs images), sqrt lr x sqrt(f) (common for AdamW); none: lr as given. Weight decay is not scaled: SGD
    and AdamW both decay by lr x wd per step, so it follows lr"""
    ema: bool = True
    """keep an exponential moving average of the weights (decay 0.9999, 2000-step ramp), used for validation
    and weights/"""

    def __post_init__(self) -> None:
        _check_choices(self)
        if not self.lr > 0:
            _refuse(self, "lr", f"--lr must be > 0, got {self.lr}")
        for name in ("momentum", "warmup_momentum"):
            if not 0 <= getattr(self, name) < 1:
                _refuse(self, name, f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        _at_least(self, 0, "lrf", "weight_decay", "warmup_epochs", "warmup_min_steps", "warmup_bias_lr", "clip_grad")
        _at_least(self, 1, "nbs")


@dataclass(kw_only=True)
class TrainConfig:
    """Run length and batch: how long the run trains, on how many images per step, its seed and validation."""

    epochs: int = 100
    """number of epochs; fixes the LR schedule. On --resume another value extends (or shortens) the run from the
    resume step: the decay continues from its lr there to lrf x lr at the new end, no new warm-up
    (docs/checkpoints.md)"""
    max_steps: int = 0
    """stop after this many optimizer steps (0: no limit); does not change the schedule"""
    batch_size: int = 16
    """micro-batch per device; the global batch is batch-size x processes x grad-accum"""
    grad_accum: int = 1
    """micro-batches accumulated per optimizer step on each process"""
    global_batch_size: int = 0
    """images per optimizer step at any world size: sets --grad-accum to G / (batch-size x processes), so a run
    resumed on another number of devices consumes the same micro-batches"""
    seed: int = 0
    """seeds Python, NumPy and torch on every rank, the shuffle and the augmentation; on --resume it may change at an
    epoch boundary only"""
    val: bool = True
    """validate (mAP50, mAP50-95, P, R) at the end of each epoch; --no-val validates the final epoch only.
    weights/best.pt is the best validated epoch (with --no-val: the final weights)"""
    patience: int = 100
    """early stopping (Ultralytics' patience): end the run once N validated epochs have passed since the fitness
    (mAP50-95) last improved, as a finished run ends (weights, metrics.json); 0: off. Its count is saved in every
    checkpoint, so a resumed run stops where an uninterrupted one does; with --no-val it never stops early"""

    def resolve_grad_accum(self, world_size: int) -> None:
        """Derive ``grad_accum`` from ``global_batch_size`` for this world size (no-op when unset)."""
        if not self.global_batch_size:
            return
        per_pass = self.batch_size * world_size
        if self.global_batch_size % per_pass:
            _refuse(self, ("global_batch_size", "batch_size"),
                    f"--global-batch-size {self.global_batch_size} is not a multiple of --batch-size "
                    f"{self.batch_size} x {world_size} process(es) = {per_pass}")
        self.grad_accum = self.global_batch_size // per_pass

    def __post_init__(self) -> None:
        _at_least(self, 0, "global_batch_size", "max_steps", "patience")
        _at_least(self, 1, "epochs", "batch_size", "grad_accum")


@dataclass(kw_only=True)
class CheckpointConfig:
    """The run folder and its checkpoints: where the run writes, how often and how many it keeps, resume."""

    output_dir: str = field(default="", metadata=DIR)
    """run folder: train_log.jsonl, results.csv, config.yaml, metrics.json, checkpoints/, weights/, plots (default: a
    new folder <project>/<name>, numbered as Ultralytics numbers its runs: runs/train, runs/train-2, ...)"""
    project: str = field(default="runs", metadata=DIR)
    """without --output-dir: the folder that holds the runs (Ultralytics' project)"""
    name: str = field(default="train", metadata={"metavar": "NAME"})
    """without --output-dir: the run's folder in --project; when it exists, the next number after the highest
    (NAME-2, NAME-3, ...); --resume auto takes the newest of them that holds a checkpoint instead"""
    exist_ok: bool = False
    """without --output-dir: write into <project>/<name> itself, never a new numbered folder (the folder's own
    rules still hold: another run there is refused without --resume auto or --overwrite)"""
    resume: str = field(default="", metadata={"metavar": "auto|DIR"})
    """'auto' (newest complete checkpoint in --output-dir; without it, in the newest run of --project/--name) or a
    checkpoint folder (without --output-dir the run continues in the folder that holds it)"""
    overwrite: bool = False
    """a fresh run (or --resume PATH of another run) into an --output-dir that holds another run's checkpoints
    or log: move that run's outputs into <output-dir>/replaced/<run id>-<time>/ first (without it: refused;
    --resume auto continues the run there)"""
    save_every_steps: int = 0
    """also write a checkpoint every N optimizer steps (0: only at epoch ends)"""
    keep_last: int = 3
    """keep only the newest K checkpoints (0: keep all)"""
    save_on_each_node: bool = False
    """--output-dir is node-local storage: every node's first process writes its own copy of logs, checkpoints
    and weights, and resumes from it; off: one writer per job (storage all nodes share)"""

    def __post_init__(self) -> None:
        _at_least(self, 0, "save_every_steps", "keep_last")
        if not self.name.strip() or self.name in (".", ".."):
            _refuse(self, "name", f"--name must name a folder, got {self.name!r}")
        if self.overwrite and self.resume == "auto":
            _refuse(self, ("overwrite", "resume"), "--overwrite starts a new run in --output-dir and --resume auto "
                                                   "continues the one there: pass one of them")


@dataclass(kw_only=True)
class ParallelConfig:
    """How the model runs on the devices: strategy, precision, process group, compilation, memory layout."""

    strategy: Strategy = "auto"
    """auto: as the launcher/accelerate config says; ddp; fsdp (FSDP2); zero1|zero2|zero3|zero3_offload (the
    packaged DeepSpeed JSON <name>.json, ds_configs/ in the checkout). The same loop runs under each"""
    deepspeed: str = field(default="", metadata=FILE)
    """DeepSpeed JSON config (ds_configs/*.json); the deepspeed launcher passes this (or use `accelerate launch
    --config_file ...`)"""
    activation_checkpointing: bool = False
    """recompute the backbone and neck blocks and the attentions in backward (model/units.py): less activation
    memory, ~20-30% more compute (for large scales and high resolutions)"""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """no, fp16 or bf16 (default: the accelerate config's choice, else no)"""
    sync_bn: bool = False
    """convert BatchNorm to SyncBatchNorm before wrapping (CUDA only; on CPU it says so and goes on)"""
    dist_timeout: int = 300
    """seconds a collective may block before the job fails (dead or hung rank)"""
    compile: bool = False
    """torch.compile the model (inductor) after wrapping; the first steps pay the compile (minutes on CPU); DDP
    or one process"""
    cpu_allreduce: Literal["auto", "gloo"] = "auto"
    """DDP on CPU: auto averages the gradients through shared memory (/dev/shm) when every process runs on this
    machine (2.8x faster than gloo's loopback sockets here; the same sums), gloo otherwise; gloo: always gloo
    (engine/strategy/grad_reduce.py). GPUs use NCCL either way"""
    channels_last: bool = True
    """feed the model channels-last (NHWC) images, the convolution layout oneDNN and cuDNN prefer: 1.10-1.22x
    per forward+backward of yolov8n on one CPU thread; one process and DDP keep the convolution weights
    channels-last too; --no-channels-last: NCHW (same maths, other rounding)"""

    def __post_init__(self) -> None:
        _at_least(self, 1, "dist_timeout")
        if self.deepspeed and self.strategy != "auto":
            _refuse(self, ("deepspeed", "strategy"),
                    f"--deepspeed {self.deepspeed} and --strategy {self.strategy} both choose the strategy "
                    "(--strategy zeroN means ds_configs/zeroN.json): give one of them")
        _check_choices(self)
        if self.compile and self.strategy not in ("auto", "ddp"):
            _refuse(self, ("compile", "strategy"),
                    f"--compile is supported with --strategy ddp (or one process), not {self.strategy}: "
                    "compiling under FSDP2/DeepSpeed has not been measured or tested here")


#: ``--log-with``'s trackers (engine/trackers.py), in the order its message lists them.
TRACKER_NAMES = ("tensorboard", "wandb", "mlflow")


@dataclass(kw_only=True)
class LogConfig:
    """What the run logs and measures of itself (engine/perf.py); throughput, data wait and MFU are always logged."""

    log_with: str = field(default="none", metadata={"metavar": "TRACKERS"})
    """experiment trackers, comma-separated (tensorboard,mlflow): TensorBoard event files, an MLflow file store, a W&B
    offline run, each inside --output-dir (engine/trackers.py); they record every epoch's losses and metrics, the
    config and the final plots; none: no tracker. A tracker's package missing is refused at start (pip install
    'yolofuse-scale[trackers]')"""
    plots: bool = True
    """write the run folder's pictures: results.png, labels.jpg, train_batch0-2.jpg (RGB | IR with their boxes) and
    the final validation's PR/F1/P/R curves and confusion matrices; --no-plots: results.csv, labels.json and the
    per-class table only"""
    log_every: int = 0
    """when the output is not a terminal (a redirected log, a Slurm .out): a progress line every N optimizer steps;
    0: automatic, the first step and each quarter of an epoch (at least every 5 minutes). On a terminal a live bar
    shows every step instead. Each epoch ends with a summary line either way"""
    time_phases: bool = False
    """also log forward / backward / optimizer seconds per step; synchronises the GPU at each boundary (exact, a
    few % slower)"""
    measure_comm: bool = False
    """log the calls and payload bytes of every collective per step (what the scaling benchmark projects from);
    DDP reduces through an equivalent Python comm hook"""
    peak_tflops: float = 0.0
    """the device's peak TFLOP/s for the logged model FLOPs utilisation (0: H100/H200/A100/L40S/L4/A10/V100
    from a table, else none)"""

    def __post_init__(self) -> None:
        _check_choices(self)
        _at_least(self, 0, "peak_tflops", "log_every")
        names = [n.strip() for n in str(self.log_with).split(",")]
        unknown = [n for n in names if n not in (*TRACKER_NAMES, "none")]
        if unknown or not names or ("none" in names and len(names) > 1):
            _refuse(self, "log_with", f"--log-with must be {_either([*TRACKER_NAMES, 'none'])}, or several "
                                      f"trackers comma-separated (tensorboard,mlflow), got {self.log_with!r}")
        self.log_with = ",".join(dict.fromkeys(names))  # as written in config.yaml: no spaces, each name once

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers ``--log-with`` names, in its order; () for none."""
        return () if self.log_with == "none" else tuple(self.log_with.split(","))


@dataclass(kw_only=True)
class RunConfig:
    """Everything a training run needs, one section per concern (config.yaml has one mapping per section)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def training_recipe(self, data: DatasetSpec) -> AugmentRecipe:
        """The recipe the training pairs of ``data`` are augmented with: ``data.recipe`` with each IR misregistration
        bound the user left unset set to its default (``AugmentRecipe.for_fusion``): on for a data.yaml that says
        ``registration: loose`` and a variant that declares ``misregistration``, when the training boxes are in RGB's
        frame; off otherwise (an aligned set, another variant, a model YAML, or a training split whose
        ``label_policy`` is ``ir`` or ``union``: boxes drawn on IR, which the transform would move IR away from, as
        it keeps the boxes where RGB has them); never for a model that reads one modality (``--fusion rgb|ir``:
        ``AugmentRecipe.for_one_modality``)."""
        if not reads_both_modalities(self.model.model, self.model.fusion):
            return self.data.recipe.for_one_modality()
        tolerates = misregistration_default(self.model.model, self.model.fusion)
        return self.data.recipe.for_fusion(tolerates and data.registration == "loose" and data.policy("train") == "rgb")

    def misregistration_line(self, data: DatasetSpec) -> str:
        """What the training recipe's IR misregistration is in this run, and where that comes from (the run's log)."""
        recipe, fusion = self.training_recipe(data), f"--fusion {self.model.fusion}"
        if not reads_both_modalities(self.model.model, self.model.fusion):
            return f"IR misregistration off: {fusion} reads one modality"
        if any(getattr(self.data.recipe, k) is None for k in MISREGISTRATION):
            model = "a model YAML" if is_model_file(self.model.model) else fusion
            whose = f"the default for {model} on a registration: {data.registration} set, docs/data.md"
            if data.registration == "loose" and data.policy("train") != "rgb":
                whose = (f"the default for a set whose training boxes include the IR image's own (label_policy: "
                         f"{data.policy('train')}): the transform moves IR and keeps the boxes in RGB's frame, "
                         "docs/data.md")
        else:
            whose = "as set"
        if not recipe.misregisters:
            return f"IR misregistration off ({whose})"
        return (f"IR misregistration: IR moved against RGB by up to {recipe.ir_shift:g} of the image, zoomed by "
                f"1 +/- {recipe.ir_scale:g}, rotated by up to {recipe.ir_rotate:g} deg ({whose})")

    def to_dict(self) -> dict[str, Any]:
        """``{section: {key: value}}`` with one key per flag (the recipe inline in ``data``): config.yaml's layout."""
        return {section: {key: functools.reduce(getattr, knob.path, getattr(self, section))
                          for key, knob in knobs(cls).items()} for section, cls in SECTIONS.items()}

    def save(self, path: str | Path) -> None:
        """Write config.yaml: its layout version, then the sections (``--config`` reads it back, ``file.py``)."""
        Path(path).write_text(yaml.safe_dump({"version": CONFIG_VERSION, **self.to_dict()}, sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, Any]]) -> RunConfig:
        """Build from ``{section: {key: value}}`` (values of the fields' types: ``file.py`` checks a file's); every
        section's checks run. Missing keys keep their defaults."""
        kw = {}
        for section, sub_cls in SECTIONS.items():
            values: dict[str, Any] = {}
            nested: dict[str, dict[str, Any]] = {}  # the recipe's settings, by the section field holding it
            for key, value in (d.get(section) or {}).items():
                if key not in knobs(sub_cls):
                    raise ConfigError(f"unknown setting {section}.{key}", settings=(key,))
                path = knobs(sub_cls)[key].path
                if len(path) == 1:
                    values[key] = value
                else:
                    nested.setdefault(path[0], {})[path[1]] = value
            for name, sub_values in nested.items():
                values[name] = type_hints(sub_cls)[name](**sub_values)
            kw[section] = sub_cls(**values)
        return cls(**kw)


class Knob(NamedTuple):
    """One setting: a flag, a key in its section of config.yaml and a dataclass field."""

    key: str  # the flag without its dashes (underscores): --hsv-h is "hsv_h"
    path: tuple[str, ...]  # attributes from the section: ("imgsz",), or ("recipe", "scale") for --aug-scale
    owner: type  # the dataclass declaring the field (whose source holds its help)
    field: dataclasses.Field


@functools.cache
def knobs(section: type) -> dict[str, Knob]:
    """The settings of a section by key, in field order; a field holding a dataclass (the recipe) contributes
    that dataclass's fields instead, under the names its ``flag_names`` metadata gives (else their own)."""
    out: dict[str, Knob] = {}
    for f in dataclasses.fields(section):
        inner = type_hints(section)[f.name]
        if not dataclasses.is_dataclass(inner):
            out[f.name] = Knob(f.name, (f.name,), section, f)
            continue
        names = f.metadata.get("flag_names", {})
        for g in dataclasses.fields(inner):
            key = names.get(g.name, g.name)
            out[key] = Knob(key, (f.name, g.name), inner, g)
    return out


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


SECTIONS: dict[str, type] = {f.name: type_hints(RunConfig)[f.name] for f in dataclasses.fields(RunConfig)}
#: every setting's section, by key (a key is a flag, so it is unique across sections)
SECTION_OF: dict[str, str] = {key: section for section, cls in SECTIONS.items() for key in knobs(cls)}


def field_type(f: dataclasses.Field) -> type:
    """The type a setting's flag and config value take: its default's (``float`` for ``0.02``), or the one its
    metadata names where the default is ``None`` with a meaning (the IR misregistration bounds: unset is the
    fusion's default); ``str`` otherwise."""
    return f.metadata.get("type") or (type(f.default) if f.default is not None else str)


def allowed(hint: Any) -> tuple | None:
    """The values a ``Literal[...]`` type (or one ``| None``) admits; ``None`` for any other type."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType):
        parts = [(None,) if a is type(None) else allowed(a) for a in get_args(hint)]
        if all(p is not None for p in parts):
            return tuple(v for p in parts for v in p)
    return None


def _key(owner: type, name: str) -> str:
    """The key (and flag) of field ``name`` of ``owner`` (a section, or the recipe it holds): ``aug_scale`` for
    the recipe's ``scale``, else the name itself."""
    return next((k.key for cls in SECTIONS.values() for k in knobs(cls).values() if (k.owner, k.path[-1]) ==
                 (owner, name)), name)


def _flag(obj: Any, name: str) -> str:
    return "--" + _key(type(obj), name).replace("_", "-")


def _refuse(obj: Any, names: str | tuple[str, ...], message: str) -> NoReturn:
    """Raise the :class:`ConfigError` of a check on ``obj``, naming the settings it refuses (fields of ``obj``)."""
    names = (names,) if isinstance(names, str) else names
    raise ConfigError(message, settings=tuple(_key(type(obj), n) for n in names))


def _either(values: list) -> str:
    listed = ", ".join(map(str, values[:-1])) + f" or {values[-1]}" if len(values) > 1 else str(values[0])
    return f"one of {listed}" if len(values) > 3 else listed


def _check_choices(obj: Any) -> None:
    """Refuse a value that its field's ``Literal[...]`` type does not list (the flag's choices are the same)."""
    for name, hint in type_hints(type(obj)).items():
        choices, value = allowed(hint), getattr(obj, name)
        if choices is not None and value not in choices:
            _refuse(obj, name, f"{_flag(obj, name)} must be {_either([a for a in choices if a is not None])}, "
                               f"got {value!r}")


def _at_least(obj: Any, low: float, *names: str) -> None:
    """Refuse fields of ``obj`` below ``low``: a negative count or gain is a typo, not a setting."""
    for name in names:
        if getattr(obj, name) < low:
            _refuse(obj, name, f"{_flag(obj, name)} must be >= {low}, got {getattr(obj, name)}")


def is_model_file(model: str) -> bool:
    return Path(model).suffix in (".yaml", ".yml")
