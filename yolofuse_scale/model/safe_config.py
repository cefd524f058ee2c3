"""A model dictionary is data, never code: checked against allow-lists and a budget before anything uses it.

Ultralytics' ``parse_model`` (8.4) trusts its dictionary: it ``eval``s the ``activation`` string, looks a
module name up in its module's globals and calls what it finds with the row's arguments (there,
``torch_safe_load`` unpickles any file with ``weights_only=False``; ``check_requirements`` pip-installs),
and replaces a string argument with the parser's local variable of that name (else ``ast.literal_eval``).
A weights file loads with ``torch.load(weights_only=True)``, so its tensors are safe, but its
``model_yaml`` is plain data that reaches that parser; without this check a weights file, a checkpoint's
``run_meta.json`` or a ``--model FILE.yaml`` could run any Python expression when read.

Ultralytics 8.4.190 has an opt-in restricted mode (``ULTRALYTICS_SAFE_LOAD``, private ``_SafeLoad``): it
parses the activation and requires module names to be ``nn.Module`` classes, but still accepts every
``nn.Module`` the parser's namespace holds, is off unless set before Ultralytics is imported, and is
a private API. So every dictionary is checked here, whatever its origin (the built-in variants too,
one path for all), in two steps:

:func:`check_model_dict`, before anything copies, serialises (``json.dumps``) or parses the dictionary:

- **a budget on its shape**, walked without recursion: at most :data:`MAX_NODES` values, counting a
  value each time it is reached (a list holding the same list twice, nested 30 times, is a 300-byte
  pickle or a 2 KB YAML with anchors but 2^30 values to anything that walks or serialises it), nested
  at most :data:`MAX_DEPTH` deep, strings of at most :data:`MAX_STRING` characters, numbers finite (an
  ``inf`` or ``nan`` width or scale ends in Ultralytics' ``math.ceil``), only dicts, lists, strings,
  numbers, booleans and None;
- top-level keys typed and bounded, module names from :func:`allowed_modules`, arguments plain literals,
  the activation one of :data:`ALLOWED_ACTIVATIONS`, built from its parsed form (never ``eval``);
- **a bound on every number**, so that nothing is sized by a number nobody means (Ultralytics builds
  ``repeats`` copies of a block and a ``nn.PReLU(n)`` activation holds n parameters):

  ============================  ==========  ===================================================================
  what                          bound       why
  ============================  ==========  ===================================================================
  ``nc``, a head's class count  100,000     LVIS has 1,203 classes, ImageNet-21k 21,841: room for any real set;
                                            a 100,000-class Detect head at scale x is ~100M parameters
  ``reg_max``                   64          Ultralytics uses 16 (1 for YOLO26); the box head is 4 x reg_max wide
  ``ch`` / ``channels``         64          input channels (ours: 4 or 6; multispectral stacks stay far below)
  depth/width multiples         (0, 4]      Ultralytics' largest: depth 1.33 (YOLOv5x), width 1.5 (YOLO11x)
  ``max_channels``              65,536      a cap on widths (Ultralytics: 512-2048); only keeps it finite
  rows                          1,024       YOLOv9e late fusion has ~90; DEYOLO ~80
  a row's ``repeats``           64          Ultralytics ships at most 9 (18 in a YOLOv11-RGBT file)
  a row's ``from`` entries      64          Concat/Detect read a handful of layers
  any other numeric argument    4,096       twice the largest Ultralytics ships (2,048: HGBlock, AIFI)
  ``kpt_shape``                 4,096 x 2-3 keypoints x (x, y[, visibility]); COCO: 17 x 3
  ============================  ==========  ===================================================================

  The walk costs a few milliseconds for the largest real model (0.2 ms for the late-fusion variant) and
  refuses a pathological file after :data:`MAX_NODES` values, in milliseconds.

:func:`check_model_size`, where the model is built, once the rows are rewritten for Ultralytics' parser:
**the parameters implied**. Ultralytics' own parser builds the model on PyTorch's ``meta`` device (shapes
only, no memory), so the count is exact for every block, whatever its internal structure; global
registration hooks count the modules and parameters as they are created and stop the construction as soon
as :data:`MAX_PARAMS` (2 billion: 8 GB of fp32 weights, 7x the largest real two-stream model, YOLOv6x's
~280M) or :data:`MAX_MODULES` module registrations (10,000; YOLOv9e as a two-stream model, the largest
real one, makes ~3,600) is passed. The convolution, pooling, padding and upsampling layers built are then
held to :data:`MAX_WIDTH` channels (3x the widest real one, the 5,120-channel 1x1 conv in RT-DETR-x's
HGBlock), kernels, strides, paddings and dilations of at most :data:`MAX_SPATIAL`, upsampling by at most
:data:`MAX_UPSAMPLE` per layer and fixed output sizes of at most :data:`MAX_OUTPUT_SIZE`. It costs one
construction without memory: ~20 ms for a tiny model, ~100 ms at scale x, next to seconds for the real
build (the first one in a process also imports PyTorch's meta kernels, ~1 s, which the training and
inference commands have imported already); past the module budget it stops within ~0.5 s.
Not bounded: the memory of the activations, which grows with the image size and with chains of
upsampling layers (each one within its bound); a model within these bounds can still need more memory
than a machine has, as a real model at a large enough image size does.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import math
import re
import reprlib
from collections.abc import Iterator
from typing import Any

from yolofuse_scale.errors import UserError

# --------------------------------------------------------------------------------------------- budget
MAX_NODES = 20_000  #: values in one dictionary, a shared value counted each time it is reached
MAX_DEPTH = 8  #: nesting: dict > backbone > row > args > a list argument > ...; real ones reach 5
MAX_STRING = 4096  #: characters of any string (a ``yaml_file`` path is the longest real one)
MAX_WORD = 64  #: characters of a module name, a key, a word argument
MAX_INT = 2**63 - 1  #: any integer at all (tighter bounds follow for each key and argument)
MAX_NC = 100_000
MAX_REG_MAX = 64
MAX_INPUT_CHANNELS = 64
MAX_MULTIPLE = 4.0
MAX_CAP = 65_536  #: a scale's max_channels
MAX_ROWS = 1024
MAX_REPEATS = 64
MAX_FROM = 64
MAX_ARGS = 32  #: arguments of one row
MAX_ARG = 4096  #: magnitude of any other numeric argument
MAX_SCALES = 16
MAX_PARAMS = 2_000_000_000
MAX_MODULES = 10_000  #: module registrations while it is built
MAX_WIDTH = 16_384  #: channels of any convolution's input or output (a class-count output aside)
MAX_SPATIAL = 64  #: kernel size, stride, padding, dilation
MAX_UPSAMPLE = 8  #: an upsampling layer's scale factor
MAX_OUTPUT_SIZE = 4096  #: a fixed output size (nn.Upsample(size=...), adaptive pooling)

#: Our own YAML modules: YOLOFuse's input modules (fusion.py), the attention modules of YOLOFuse's DEYOLO.yaml /
#: DEFA.yaml and ``--fusion dea``'s DEAPair (attention.py), and YOLOv11-RGBT's input selectors and joins (rgbt.py).
OUR_MODULES = frozenset({
    "IdentityInput", "ModalitySelector", "ModalConcat",
    "DEA", "DEAPair", "DEFA", "C2f_BiFocus", "FlowAlign",
    "Silence", "SilenceChannel", "ADD", "ChannelToNumber", "NumberToChannel",
})
#: Blocks Ultralytics' parser builds that are refused anyway, and why. Every other block it builds was
#: reviewed for downloads, file reads and code it runs: none of theirs does any of these at construction.
REFUSED_MODULES = {
    "TorchVision": "it builds a torchvision network by name and its 'weights' argument (default 'DEFAULT') "
                   "downloads pretrained weights from the internet and reads them, at build time; its size is "
                   "not stated by the row either",
}
#: torch.nn layers the parser sizes right (its explicit ConvTranspose2d and BatchNorm2d branches); every
#: other ``nn.*`` it treats as keeping its input's width, true only of the families in
#: :data:`_TORCH_SAME_WIDTH` (pooling, padding, upsampling) and Identity.
_TORCH_PARSER_LAYERS = ("ConvTranspose2d", "BatchNorm2d", "Identity")
_TORCH_SAME_WIDTH = ("torch.nn.modules.pooling", "torch.nn.modules.padding", "torch.nn.modules.upsampling")

#: ``activation:`` values, written ``nn.Name(literal args)`` (``torch.nn.Name`` too).
ALLOWED_ACTIVATIONS = frozenset({
    "SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "GELU", "Mish", "ELU", "SELU", "CELU",
    "Sigmoid", "Tanh", "PReLU", "Identity",
})

#: The parser variables a string argument may name (``Detect [nc]``, ``Pose [nc, kpt_shape]``), both
#: top-level keys checked here; ``None``/``True``/``False`` are literals written as YAML strings (YAML's
#: null is ``null``, so ``[None, 2, "nearest"]`` holds "None").
_PARSER_NAMES = frozenset({"nc", "kpt_shape"})
_LITERAL_WORDS = frozenset({"None", "True", "False"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ModelConfigError(UserError, ValueError):
    """A model dictionary that is refused; the message names its source, the key and the value.

    A user error: a command reports it as its one message (``errors.run_entry``), not as a traceback."""


# ------------------------------------------------------------------------------------ allowed modules
@functools.cache
def ultralytics_blocks() -> dict[str, type]:
    """The blocks Ultralytics' parser builds by name: the ``nn.Module`` classes ``ultralytics.nn.modules``
    exports that its ``parse_model`` finds in its namespace (``ultralytics.nn.tasks``), derived from the
    installed package (not whole models such as ``DetectionModel``, nor anything else that namespace holds)."""
    from torch import nn
    from ultralytics.nn import modules, tasks

    exported = set(modules.__all__)
    return {name: obj for name, obj in vars(tasks).items()
            if name in exported and isinstance(obj, type) and issubclass(obj, nn.Module)}


@functools.cache
def head_modules() -> frozenset[str]:
    """Ultralytics' heads (Detect, Segment, Classify, RTDETRDecoder...): their first argument is a class count."""
    return frozenset(n for n, c in ultralytics_blocks().items() if c.__module__ == "ultralytics.nn.modules.head")


@functools.cache
def torch_layers() -> frozenset[str]:
    """The ``nn.*`` names allowed in a row (see :data:`_TORCH_PARSER_LAYERS`)."""
    from torch import nn

    names = {n for n, c in vars(nn).items() if isinstance(c, type) and issubclass(c, nn.Module)
             and c.__module__ in _TORCH_SAME_WIDTH and not n.endswith(("1d", "3d"))}  # maps are 2-D
    return frozenset(f"nn.{n}" for n in names | set(_TORCH_PARSER_LAYERS))


@functools.cache
def allowed_modules() -> frozenset[str]:
    """Every module name a row may use: Ultralytics' blocks (less :data:`REFUSED_MODULES`), the
    :func:`torch_layers`, and :data:`OUR_MODULES`."""
    return frozenset(set(ultralytics_blocks()) - set(REFUSED_MODULES)) | torch_layers() | OUR_MODULES


# ------------------------------------------------------------------------------------------- values
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(low: int, high: int):
    def check(v: Any) -> str | None:
        return None if _is_int(v) and low <= v <= high else f"must be an integer from {low} to {high}"
    return check


def _multiple(v: Any) -> str | None:
    return None if _is_number(v) and 0 < v <= MAX_MULTIPLE else f"must be a number in (0, {MAX_MULTIPLE:g}]"


def _check_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _check_str(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _check_name(v: Any) -> str | None:
    return None if isinstance(v, str) and 0 < len(v) <= MAX_WORD else f"must be a name of 1 to {MAX_WORD} characters"


def _check_scales(v: Any) -> str | None:
    if not isinstance(v, dict) or not 0 < len(v) <= MAX_SCALES:
        return f"must be a mapping of scale name -> [depth, width, max_channels] (1 to {MAX_SCALES} of them)"
    for name, row in v.items():
        if _check_name(name) or not (isinstance(row, list) and len(row) == 3 and all(map(_is_number, row))):
            return f"entry {_short(name)}: {_short(row)} is not [depth, width, max_channels] numbers"
        if _multiple(row[0]) or _multiple(row[1]) or not 0 < row[2] <= MAX_CAP:
            return (f"entry {name!r}: {_short(row)} is out of bounds (depth and width in (0, {MAX_MULTIPLE:g}], "
                    f"max_channels in (0, {MAX_CAP}])")
    return None


def _check_rows(v: Any) -> str | None:
    return None if isinstance(v, list) else "must be a list of [from, repeats, module, args] rows"


def _check_kpt_shape(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and 0 < v[0] <= MAX_ARG and v[1] in (2, 3)
    return None if ok and _is_int(v[1]) else f"must be [keypoints (1 to {MAX_ARG}), 2 or 3]"


#: Every top-level key the parser (or this package) reads, with its check; any other key is refused
#: (a typo such as ``activaton`` would otherwise be ignored silently). ``activation`` is checked apart.
#: ``text_model`` names YOLOE's text encoder, which only Ultralytics' YOLOE model class reads (and
#: downloads): accepted as the label it is here, never read.
_KEYS = {
    "nc": _int_in(1, MAX_NC), "ch": _int_in(1, MAX_INPUT_CHANNELS), "channels": _int_in(1, MAX_INPUT_CHANNELS),
    "scales": _check_scales, "scale": _check_name, "backbone": _check_rows, "head": _check_rows,
    "depth_multiple": _multiple, "width_multiple": _multiple, "reg_max": _int_in(1, MAX_REG_MAX),
    "end2end": _check_bool, "inplace": _check_bool, "yaml_file": _check_str, "activation": _check_str,
    "kpt_shape": _check_kpt_shape, "text_model": _check_name,
}


# -------------------------------------------------------------------------------------------- check
def check_model_dict(d: Any, source: str) -> None:
    """Raise :class:`ModelConfigError` unless ``d`` is a model dictionary built only from allowed parts and
    within the budget (module docstring). Walks ``d`` without recursion and copies nothing.

    ``source`` starts the message (``"best.pt: model_yaml"``, ``"model.yaml"``).
    """
    if not isinstance(d, dict):
        raise ModelConfigError(f"{source}: expected a mapping (nc, scales, backbone, head), got {type(d).__name__}")
    check_budget(d, source)
    for key, value in d.items():
        check = _KEYS.get(key)
        if check is None:
            raise ModelConfigError(f"{source}: unknown key {_short(key)} (known: {', '.join(sorted(_KEYS))})")
        problem = check(value)
        if problem:
            raise ModelConfigError(f"{source}: {key} {_short(value)} {problem}")
    if "scale" in d and "scales" in d and d["scale"] not in d["scales"]:
        raise ModelConfigError(f"{source}: scale {d['scale']!r} is not in its scales table ({', '.join(d['scales'])})")
    if "activation" in d:
        parse_activation(d["activation"], source, build=False)
    rows = list(d.get("backbone", [])) + list(d.get("head", []))
    if not rows:
        raise ModelConfigError(f"{source}: no layers (expected 'backbone' and/or 'head' rows)")
    if len(rows) > MAX_ROWS:
        raise ModelConfigError(f"{source}: {len(rows)} layers; at most {MAX_ROWS} (the largest real models have ~100)")
    n_backbone = len(d.get("backbone", []))
    for i, row in enumerate(rows):
        where = f"backbone[{i}]" if i < n_backbone else f"head[{i - n_backbone}] (layer {i})"
        _check_row(row, f"{source}: {where}")


def check_budget(d: Any, source: str) -> None:
    """Refuse ``d`` past the shape budget (module docstring): too many values (shared ones counted each
    time they are reached: a cycle never ends), too deep, a long string, an odd type, a non-finite number.
    Iterative: a 20,000-deep list costs no recursion; it stops at the first value past a bound."""
    count = 1
    stack: list[tuple[Any, int, str]] = [(d, 1, "")]
    while stack:
        v, depth, where = stack.pop()
        at = f" {where}:" if where else ""
        if isinstance(v, (dict, list, tuple)):
            if depth >= MAX_DEPTH and len(v):
                raise ModelConfigError(f"{source}:{at} nested more than {MAX_DEPTH} levels deep (a model "
                                       "dictionary: mapping > backbone/head > row > args > a list argument)")
            count += len(v)
            if count > MAX_NODES:
                raise ModelConfigError(
                    f"{source}:{at} more than {MAX_NODES} values (a value reached twice counts twice: shared "
                    "references such as YAML anchors/aliases or a pickle's repeated objects make this dictionary "
                    "exponentially large to anything that reads it; a real model has ~1,000)")
            if isinstance(v, dict):
                for k, x in v.items():
                    if not isinstance(k, str) or len(k) > MAX_WORD:
                        raise ModelConfigError(f"{source}:{at} key {_short(k)} is not a name of at most "
                                               f"{MAX_WORD} characters")
                    stack.append((x, depth + 1, f"{where}.{k}" if where else k))
            else:
                stack.extend((x, depth + 1, f"{where}[{j}]") for j, x in enumerate(v))
        elif isinstance(v, str):
            if len(v) > MAX_STRING:
                raise ModelConfigError(f"{source}:{at} a string of {len(v)} characters (at most {MAX_STRING})")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ModelConfigError(f"{source}:{at} {v!r} is not a finite number")
        elif isinstance(v, int) and not isinstance(v, bool):
            if abs(v) > MAX_INT:  # not even printed: Python refuses to format an int of 4,300+ digits
                raise ModelConfigError(f"{source}:{at} an integer of {v.bit_length()} bits (at most 63)")
        elif not (v is None or isinstance(v, (bool, int))):
            raise ModelConfigError(f"{source}:{at} a {type(v).__name__}; a model dictionary holds only mappings, "
                                   "lists, strings, numbers, booleans and null")


def _check_row(row: Any, where: str) -> None:
    if not (isinstance(row, list) and len(row) == 4):
        raise ModelConfigError(f"{where}: {_short(row)} is not a [from, repeats, module, args] row")
    f, n, m, args = row
    froms = f if isinstance(f, list) else [f]
    if not (froms and len(froms) <= MAX_FROM and all(_is_int(x) and abs(x) <= MAX_ROWS for x in froms)):
        raise ModelConfigError(f"{where}: from {_short(f)} must be a layer index or a list of 1 to {MAX_FROM} of them")
    if not (_is_int(n) and 0 < n <= MAX_REPEATS):
        raise ModelConfigError(f"{where}: repeats {_short(n)} must be an integer from 1 to {MAX_REPEATS}")
    if not isinstance(m, str) or m not in allowed_modules():
        if isinstance(m, str) and m in REFUSED_MODULES:
            raise ModelConfigError(f"{where}: module {m!r} is refused: {REFUSED_MODULES[m]}")
        raise ModelConfigError(f"{where}: module {_short(m)} is not an allowed module (allowed: the blocks "
                               "Ultralytics' parser builds, torch.nn's 2-D pooling, padding and upsampling layers, "
                               "nn.Identity, nn.BatchNorm2d, nn.ConvTranspose2d, and ours: "
                               f"{', '.join(sorted(OUR_MODULES))}; see yolofuse_scale/model/safe_config.py)")
    if not isinstance(args, list) or len(args) > MAX_ARGS:
        raise ModelConfigError(f"{where}: args {_short(args)} must be a list of at most {MAX_ARGS} arguments")
    for j, a in enumerate(args):
        bound = MAX_NC if j == 0 and m in head_modules() else MAX_ARG  # a head's class count
        problem = _literal_problem(a, bound)
        if problem:
            raise ModelConfigError(f"{where} {m} argument {j}: {_short(a)} {problem}")
    if m == "ModalitySelector" and not (args == [] or (len(args) == 1 and _is_int(args[0]) and args[0] in (1, 2))):
        raise ModelConfigError(f"{where}: ModalitySelector {_short(args)}: its argument is the modality, "
                               "[1] (RGB) or [2] (IR)")
    if m == "IdentityInput" and args:
        raise ModelConfigError(f"{where}: IdentityInput takes no arguments, got {_short(args)}")


def _literal_problem(a: Any, bound: int = MAX_ARG) -> str | None:
    """Why an argument is refused (None: a plain literal the parser passes on unchanged, or a parser name).
    Called after :func:`check_budget`, so its recursion is at most :data:`MAX_DEPTH` deep."""
    if a is None or isinstance(a, bool):
        return None
    if isinstance(a, (int, float)):
        return None if abs(a) <= bound else f"is out of bounds (at most {bound} in magnitude)"
    if isinstance(a, list):
        return next(filter(None, (_literal_problem(x) for x in a)), None)
    if isinstance(a, str):
        # The parser swaps a string for the parser variable of that name, else for ast.literal_eval of it;
        # a plain word that is not a parser variable (an interpolation mode such as "nearest") stays a string.
        if a in _PARSER_NAMES or a in _LITERAL_WORDS:
            return None
        if len(a) <= MAX_WORD and _WORD.fullmatch(a) and a not in _parser_variables():
            return None
        return ("is not a literal argument (numbers, lists, None/True/False, nc, kpt_shape or a plain word; "
                "nothing is evaluated)")
    return f"is a {type(a).__name__}, not a literal argument"


@functools.cache
def _parser_variables() -> frozenset[str]:
    """The local names of Ultralytics' ``parse_model``, which a string argument would be replaced by."""
    from ultralytics.nn.tasks import parse_model

    code = parse_model.__code__
    return frozenset(code.co_varnames + code.co_cellvars + code.co_freevars) - _PARSER_NAMES


def _activation_value(node: ast.AST) -> Any:
    """A literal argument of an activation: a number (a negative one too: LeakyReLU(-0.1)) or a bool."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
        if not (isinstance(node, ast.Constant) and _is_number(node.value)):
            raise ValueError("not a number")
    if not isinstance(node, ast.Constant) or not isinstance(node.value, (int, float, bool)):
        raise ValueError("not a literal")
    v = node.value
    if _is_number(v) and not (math.isfinite(v) and abs(v) <= MAX_ARG):
        raise ValueError("out of bounds")
    return sign * v if _is_number(v) else v


def parse_activation(spec: Any, source: str, build: bool = True):
    """``"nn.SiLU()"``, ``"nn.LeakyReLU(0.1)"``... -> a new module instance, from the parsed call, never ``eval``
    (``build=False``: only check it). Arguments are literal numbers or booleans of magnitude at most
    :data:`MAX_ARG` (``nn.PReLU(n)`` holds n parameters)."""
    allowed = f"allowed: {', '.join(f'nn.{a}()' for a in sorted(ALLOWED_ACTIVATIONS))}, with literal arguments"
    refusal = ModelConfigError(f"{source}: activation {_short(spec)} is not an allowed activation ({allowed}, "
                               f"numbers of magnitude at most {MAX_ARG})")
    if not isinstance(spec, str) or len(spec) > 256:
        raise refusal
    try:
        call = ast.parse(spec.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise refusal from None
    if not isinstance(call, ast.Call):
        raise refusal
    dotted = []
    node = call.func
    while isinstance(node, ast.Attribute):
        dotted.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise refusal
    dotted.insert(0, node.id)
    if dotted[:-1] not in (["nn"], ["torch", "nn"]) or dotted[-1] not in ALLOWED_ACTIVATIONS:
        raise refusal
    if any(k.arg is None for k in call.keywords):  # **kwargs
        raise refusal
    try:
        args = [_activation_value(a) for a in call.args]
        kwargs = {k.arg: _activation_value(k.value) for k in call.keywords}
    except ValueError:
        raise refusal from None
    from torch import nn

    try:
        with _on_meta(not build):
            act = getattr(nn, dotted[-1])(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelConfigError(f"{source}: activation {_short(spec)}: {e}") from None
    return act if build else None


@contextlib.contextmanager
def _on_meta(on: bool) -> Iterator[None]:
    """Build on PyTorch's ``meta`` device (shapes, no memory) when ``on``."""
    if not on:
        yield
        return
    import torch

    with torch.device("meta"):
        yield


@contextlib.contextmanager
def default_activation(act) -> Iterator[None]:
    """Make ``act`` the activation of every ``Conv`` built inside (what ``activation:`` means to Ultralytics).

    Ultralytics keeps it in the class attribute ``Conv.default_act`` (process-wide; its parser sets and
    restores it the same way); ``None`` leaves it alone.
    """
    from ultralytics.nn.modules import Conv

    if act is None:
        yield
        return
    before = Conv.default_act
    Conv.default_act = act
    try:
        yield
    finally:
        Conv.default_act = before


# ----------------------------------------------------------------------------------------------- size
class _OverBudget(Exception):
    """Raised from a registration hook to stop a construction that passed the budget."""


#: What Ultralytics' parser (or a block's constructor) raises on rows that do not fit together.
BUILD_ERRORS = (TypeError, ValueError, IndexError, KeyError, AttributeError, RuntimeError, AssertionError,
                ZeroDivisionError, OverflowError)


def check_model_size(d: dict[str, Any], ch: int, act: Any, source: str) -> int:
    """Refuse a model whose construction passes :data:`MAX_PARAMS` parameters or :data:`MAX_MODULES`
    modules, or whose layers pass :data:`MAX_WIDTH` / :data:`MAX_SPATIAL` / :data:`MAX_UPSAMPLE`; return
    its parameter count. ``d`` is the dictionary as Ultralytics' parser gets it (checked by
    :func:`check_model_dict`, its rows rewritten, no ``activation`` key; ``act`` the parsed activation).

    Builds it with Ultralytics' parser on the ``meta`` device: exact, allocates nothing, and the hooks
    stop it at the first module or parameter past the budget.
    """
    import torch
    from torch.nn.modules import module as torch_module
    from ultralytics.nn.tasks import parse_model

    if "nc" in d and _KEYS["nc"](d["nc"]):
        raise ModelConfigError(f"{source}: nc {_short(d['nc'])} {_KEYS['nc'](d['nc'])}")
    tally = {"modules": 0, "params": 0}

    def count_module(parent, name, child):
        tally["modules"] += 1
        if tally["modules"] > MAX_MODULES:
            raise _OverBudget(f"more than {MAX_MODULES} modules (the largest real two-stream models have ~3,600)")

    def count_params(parent, name, param):
        if param is not None:
            tally["params"] += param.numel()
            if tally["params"] > MAX_PARAMS:
                raise _OverBudget(f"more than {MAX_PARAMS:,} parameters implied (the largest real two-stream "
                                  "models have ~300 million); refused before anything was allocated")

    hooks = [torch_module.register_module_module_registration_hook(count_module),
             torch_module.register_module_parameter_registration_hook(count_params)]
    try:
        with torch.device("meta"), default_activation(act):
            layers, _ = parse_model(copy.deepcopy(d), ch, verbose=False)
    except _OverBudget as e:
        raise ModelConfigError(f"{source}: {e}") from None
    except BUILD_ERRORS as e:
        raise ModelConfigError(f"{source}: Ultralytics cannot build this model ({type(e).__name__}: "
                               f"{_first_line(e)})") from None
    finally:
        for h in hooks:
            h.remove()
    _check_layers(layers, source)
    return sum(p.numel() for p in layers.parameters())


#: Layer attributes bounded by :func:`_check_layers`: (bound, what).
_SPATIAL_ATTRS = {"kernel_size": MAX_SPATIAL, "stride": MAX_SPATIAL, "padding": MAX_SPATIAL,
                  "dilation": MAX_SPATIAL, "output_padding": MAX_SPATIAL, "scale_factor": MAX_UPSAMPLE,
                  "size": MAX_OUTPUT_SIZE, "output_size": MAX_OUTPUT_SIZE}


def _check_layers(layers, source: str) -> None:
    from torch import nn

    heads = head_modules()
    for i, layer in enumerate(layers):
        in_head = type(layer).__name__ in heads  # a head's class convolutions are as wide as the class count
        for name, m in layer.named_modules():
            if not type(m).__module__.startswith("torch.nn.modules"):
                continue
            where = f"{source}: layer {i} ({type(layer).__name__}){' ' + name if name else ''}: {type(m).__name__}"
            if isinstance(m, nn.modules.conv._ConvNd):
                widths = (m.in_channels,) if in_head else (m.in_channels, m.out_channels)
                if max(widths) > MAX_WIDTH:
                    raise ModelConfigError(f"{where} is {m.in_channels} -> {m.out_channels} channels wide; at most "
                                           f"{MAX_WIDTH} (3x the widest real one, RT-DETR-x's 5120)")
            for attr, bound in _SPATIAL_ATTRS.items():
                value = vars(m).get(attr)
                values = value if isinstance(value, (tuple, list)) else [value]
                if any(_is_number(v) and abs(v) > bound for v in values):
                    raise ModelConfigError(f"{where} has {attr} {_short(value)}; at most {bound}")


# ------------------------------------------------------------------------------------------- messages
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 6, 6, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 80, 40, 60


def _short(v: Any, limit: int = 120) -> str:
    """A bounded ``repr`` (a few levels, a few items): safe on a huge, deep or self-referencing value."""
    text = _REPR.repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines or [type(e).__name__])[0][:300]
