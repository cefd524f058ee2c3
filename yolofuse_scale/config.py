"""Typed run configuration: one dataclass per concern, filled from defaults, then the command line.

One source per knob: a setting is a dataclass field, and everything else is derived from it. The
string literal right under a field is its ``--help`` line (read from the source with ``ast``, once; a
field's ``help_more`` metadata appends what is computed, not typed: ``--fusion``'s variants and sizes);
a ``Literal[...]`` type is both its argparse ``choices`` and its check; the default is shown in the
help. The flag is the field's name with dashes (``batch_size``: ``--batch-size``), and the same name
is its key in its section of ``config.yaml``. The augmentation recipe is ``data/augment.py``'s
:class:`AugmentRecipe`, held by :class:`DataConfig` and flattened into the data flags and keys.

The resolved configuration is written beside every run as ``config.yaml``; ``--config FILE`` reads
such a file back (command-line flags still win), so a run is reproducible from its own output.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import functools
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args, get_origin

import yaml

from yolofuse_scale.data.augment import AugmentRecipe
from yolofuse_scale.data.cache import CacheMode
from yolofuse_scale.data.scan import BadSamplePolicy
from yolofuse_scale.errors import ConfigError, add_debug_argument
from yolofuse_scale.model.sizes import fusion_help
from yolofuse_scale.model.variants import FAMILIES, SCALE_NAMES, SCALES, Fusion, parse_model_name

#: ``--strategy``; ``zero*`` read the packaged ``yolofuse_scale/configs/deepspeed/<name>.json``
#: (``ds_configs/`` in the checkout; see engine/strategy/deepspeed.py).
Strategy = Literal["auto", "ddp", "fsdp", "zero1", "zero2", "zero3", "zero3_offload"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass(kw_only=True)
class DataConfig:
    """The run's data section: where the paired images come from and how they are fed (the parsed
    ``data.yaml`` itself is ``data.DatasetSpec``)."""

    data: str = ""
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
            raise ConfigError(f"--imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        for name in ("mosaic", "mixup", "fliplr"):
            if not 0 <= getattr(self.recipe, name) <= 1:
                raise ConfigError(f"--{name} is a probability in [0, 1], got {getattr(self.recipe, name)}")
        _at_least(self.recipe, 0, "close_mosaic", "translate", "scale", "hsv_h", "hsv_s", "hsv_v", "ir_gain")


@dataclass(kw_only=True)
class ModelConfig:
    """Which detector is trained."""

    model: str = "yolov8n"
    """a family and scale: yolov8, yolo11 (C3k2/C2PSA) or yolo26 (end-to-end head, NMS-free capable) +
    t|n|s|m|l|x (t: tiny, for tests), e.g. yolo11s; or a model YAML (Ultralytics or YOLOFuse schema)"""
    fusion: Fusion = field(default="mid", metadata={"help_more": fusion_help})
    """where the RGB and IR streams meet (model/variants.py); not with a model YAML, which defines its own
    (refused); every run prints its model's size at start:"""
    scale: str | None = None
    """for a YAML model: which row of its `scales` table (n/s/m/l/x)"""
    pretrained: str = ""
    """start from pretrained weights: an Ultralytics checkpoint of the same family and scale (e.g. yolo11n.pt,
    RGB-trained; read without running code) or weights/*.pt of a run of that model. Every stream starts from
    it: the IR stem's first conv is the sum over the RGB input channels (1-channel IR; a gray image answers as
    in RGB), a data-level stem gets half of each, fusion convs start as the two streams' average, class layers
    are re-initialised if the class count differs; a per-stream load report is logged. Not re-applied on
    --resume"""

    def __post_init__(self) -> None:
        _check_choices(self)
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
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        for name in ("momentum", "warmup_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        _at_least(self, 0, "lrf", "weight_decay", "warmup_epochs", "warmup_min_steps", "warmup_bias_lr", "clip_grad")
        _at_least(self, 1, "nbs")


@dataclass(kw_only=True)
class TrainConfig:
    """Run length, batch, outputs and the distributed knobs the loop itself owns."""

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
    output_dir: str = "runs/train"
    """run folder: train_log.jsonl, config.yaml, metrics.json, checkpoints/, weights/"""
    resume: str = ""
    """'auto' (newest complete checkpoint in --output-dir) or a checkpoint folder"""
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
    val: bool = True
    """validate (mAP50, mAP50-95, P, R) at the end of each epoch; --no-val validates the final epoch only.
    weights/best.pt is the best validated epoch (with --no-val: the final weights)"""
    log_with: Literal["tensorboard", "wandb", "mlflow", "none"] = "none"
    """experiment tracker through Accelerate (offline): tensorboard, wandb, mlflow or none"""
    log_every: int = 10
    """print a progress line every N optimizer steps (the JSONL log gets every step)"""
    strategy: Strategy = "auto"
    """auto: as the launcher/accelerate config says; ddp; fsdp (FSDP2); zero1|zero2|zero3|zero3_offload (the
    packaged DeepSpeed JSON <name>.json, ds_configs/ in the checkout). The same loop runs under each"""
    deepspeed: str = ""
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
    channels_last: bool = True
    """feed the model channels-last (NHWC) images, the convolution layout oneDNN and cuDNN prefer: 1.10-1.22x
    per forward+backward of yolov8n on one CPU thread; one process and DDP keep the convolution weights
    channels-last too; --no-channels-last: NCHW (same maths, other rounding)"""
    # What the loop measures about itself (engine/perf.py); throughput, data wait and MFU are always logged.
    time_phases: bool = False
    """also log forward / backward / optimizer seconds per step; synchronises the GPU at each boundary (exact, a
    few % slower)"""
    measure_comm: bool = False
    """log the calls and payload bytes of every collective per step (what the scaling benchmark projects from);
    DDP reduces through an equivalent Python comm hook"""
    peak_tflops: float = 0.0
    """the device's peak TFLOP/s for the logged model FLOPs utilisation (0: H100/H200/A100/L40S/L4/A10/V100
    from a table, else none)"""
    benchmark_skip_grad_sync: bool = False
    """BENCHMARK ONLY: skip every gradient synchronisation (ranks train apart) to measure step time without
    communication (ddp, fsdp)"""

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
        _check_choices(self)
        if self.compile and self.strategy not in ("auto", "ddp"):
            raise ConfigError(f"--compile is supported with --strategy ddp (or one process), not {self.strategy}: "
                             "compiling under FSDP2/DeepSpeed has not been measured or tested here")
        if self.benchmark_skip_grad_sync and self.strategy not in ("auto", "ddp", "fsdp"):
            raise ConfigError("--benchmark-skip-grad-sync works with ddp and fsdp only (DeepSpeed has no no_sync)")


@dataclass(kw_only=True)
class RunConfig:
    """Everything a training run needs, grouped by concern."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """``{section: {key: value}}`` with one key per flag (the recipe inline in ``data``): config.yaml's layout."""
        return {section: {key: functools.reduce(getattr, knob.path, getattr(self, section))
                          for key, knob in _knobs(cls).items()} for section, cls in _SECTIONS.items()}

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
            knobs = _knobs(sub_cls)
            values: dict[str, Any] = {}
            nested: dict[str, dict[str, Any]] = {}  # the recipe's settings, by the section field holding it
            for key, value in (d.get(section) or {}).items():
                if key not in knobs:
                    raise ConfigError(f"{at(section, key)}: unknown setting {section}.{key}"
                                      f"{_did_you_mean(key, knobs)}")
                knob = knobs[key]
                typed = _typed(value, knob.field.default, f"{at(section, key)}: {section}.{key}")
                if len(knob.path) == 1:
                    values[key] = typed
                else:
                    nested.setdefault(knob.path[0], {})[knob.path[1]] = typed
            for name, sub_values in nested.items():
                values[name] = _type_hints(sub_cls)[name](**sub_values)
            kw[section] = sub_cls(**values)
        return cls(**kw)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


class _Knob(NamedTuple):
    """One setting: a flag, a key in its section of config.yaml and a dataclass field."""

    key: str  # the flag without its dashes (underscores): --hsv-h is "hsv_h"
    path: tuple[str, ...]  # attributes from the section: ("imgsz",), or ("recipe", "scale") for --aug-scale
    owner: type  # the dataclass declaring the field (whose source holds its help)
    field: dataclasses.Field


@functools.cache
def _knobs(section: type) -> dict[str, _Knob]:
    """The settings of a section by key, in field order; a field holding a dataclass (the recipe) contributes
    that dataclass's fields instead, under the names its ``flag_names`` metadata gives (else their own)."""
    out: dict[str, _Knob] = {}
    for f in dataclasses.fields(section):
        inner = _type_hints(section)[f.name]
        if not dataclasses.is_dataclass(inner):
            out[f.name] = _Knob(f.name, (f.name,), section, f)
            continue
        names = f.metadata.get("flag_names", {})
        for g in dataclasses.fields(inner):
            key = names.get(g.name, g.name)
            out[key] = _Knob(key, (f.name, g.name), inner, g)
    return out


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """The string literal right under each field of dataclass ``cls``, whitespace folded: its ``--help`` line.

    Read with ``ast`` from the class's source, once per class (a few ms at parser-build time); ``{}`` where
    the source is not installed, which tests/test_config.py would notice (every flag has help text)."""
    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    except (OSError, TypeError):
        return {}
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _allowed(hint: Any) -> tuple | None:
    """The values a ``Literal[...]`` type (or one ``| None``) admits; ``None`` for any other type."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType):
        parts = [(None,) if a is type(None) else _allowed(a) for a in get_args(hint)]
        if all(p is not None for p in parts):
            return tuple(v for p in parts for v in p)
    return None


def _flag(owner: type, name: str) -> str:
    """The flag of field ``name`` of ``owner`` (a section, or the recipe it holds): ``--aug-scale`` for the
    recipe's ``scale``, else the name with dashes."""
    keys = (k.key for cls in _SECTIONS.values() for k in _knobs(cls).values() if (k.owner, k.path[-1]) == (owner, name))
    return "--" + next(keys, name).replace("_", "-")


def _either(values: list) -> str:
    listed = ", ".join(map(str, values[:-1])) + f" or {values[-1]}" if len(values) > 1 else str(values[0])
    return f"one of {listed}" if len(values) > 3 else listed


def _check_choices(obj: Any) -> None:
    """Refuse a value that its field's ``Literal[...]`` type does not list (the flag's choices are the same)."""
    for name, hint in _type_hints(type(obj)).items():
        allowed, value = _allowed(hint), getattr(obj, name)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{_flag(type(obj), name)} must be {_either([a for a in allowed if a is not None])}, "
                              f"got {value!r}")


def _at_least(obj: Any, low: float, *names: str) -> None:
    """Refuse fields of ``obj`` below ``low``: a negative count or gain is a typo, not a setting."""
    for name in names:
        if getattr(obj, name) < low:
            raise ConfigError(f"{_flag(type(obj), name)} must be >= {low}, got {getattr(obj, name)}")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (``--batch-size`` for ``batch_size``), grouped by section, helped by the
    field's docstring, with the default shown and a ``Literal`` type's values as the choices."""
    parser.add_argument("--config", default="", help="YAML written by an earlier run (config.yaml); flags win")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_debug_argument(parser)
    for section, cls in _SECTIONS.items():
        group = parser.add_argument_group(section)
        for key, knob in _knobs(cls).items():
            flag, dest, default = "--" + key.replace("_", "-"), f"{section}.{key}", knob.field.default
            help_text = _field_docs(knob.owner).get(knob.path[-1], "")
            if "help_more" in knob.field.metadata:  # what the docstring cannot hold: text computed from the code
                help_text += " " + knob.field.metadata["help_more"]()
            help_text = help_text.replace("%", "%%")  # argparse %-formats
            if isinstance(default, bool):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                   help=f"{help_text} (default: {'on' if default else 'off'})")
                continue
            allowed = _allowed(_type_hints(knob.owner)[knob.path[-1]])
            group.add_argument(flag, dest=dest, type=type(default) if default is not None else str, default=None,
                               help=f"{help_text} (default: {default})",
                               choices=[a for a in allowed if a is not None] if allowed else None)


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
    out = Path(cfg.train.output_dir)
    for folder in (out, *out.parents):  # the first that exists must be a folder (mkdir would raise later)
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                kind = "a file" if folder.exists() else "a broken symbolic link"
                where = "is" if folder == out else f"lies under {folder}, which is"
                raise ConfigError(f"--output-dir {out}: {where} {kind}, not a folder (the run writes its logs, "
                                  "checkpoints and weights into a folder; name a new or existing folder)")
            break
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
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "add_train_arguments",
    "config_from_args",
]
