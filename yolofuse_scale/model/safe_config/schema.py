"""The first step of the check, :func:`check_model_dict`, before anything copies, serialises (``json.dumps``)
or parses a model dictionary: its shape budget (``budget.py``), then the top-level keys typed and bounded
(:data:`_KEYS`; any other key is refused), module names from :func:`allowed_modules`, arguments plain
literals, the activation one of ``activation.py``'s, every number within its bound (``limits.py``).

The module allow-list is derived from the installed Ultralytics: the blocks its parser builds by name
(less :data:`REFUSED_MODULES`), torch.nn's 2-D pooling, padding and upsampling layers with the few others
its parser sizes right (:func:`torch_layers`), and :data:`OUR_MODULES`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from yolofuse_scale.model.safe_config.activation import parse_activation
from yolofuse_scale.model.safe_config.budget import check_budget
from yolofuse_scale.model.safe_config.limits import (
    MAX_ARG,
    MAX_ARGS,
    MAX_CAP,
    MAX_FLOW_REACH,
    MAX_FROM,
    MAX_INPUT_CHANNELS,
    MAX_MULTIPLE,
    MAX_NC,
    MAX_REG_MAX,
    MAX_REPEATS,
    MAX_ROWS,
    MAX_SCALES,
    MAX_WORD,
    ModelConfigError,
    int_in,
    is_int,
    is_number,
    short,
)

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

#: The parser variables a string argument may name (``Detect [nc]``, ``Pose [nc, kpt_shape]``), both
#: top-level keys checked here; ``None``/``True``/``False`` are literals written as YAML strings (YAML's
#: null is ``null``, so ``[None, 2, "nearest"]`` holds "None").
_PARSER_NAMES = frozenset({"nc", "kpt_shape"})
_LITERAL_WORDS = frozenset({"None", "True", "False"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def _multiple(v: Any) -> str | None:
    return None if is_number(v) and 0 < v <= MAX_MULTIPLE else f"must be a number in (0, {MAX_MULTIPLE:g}]"


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
        if _check_name(name) or not (isinstance(row, list) and len(row) == 3 and all(map(is_number, row))):
            return f"entry {short(name)}: {short(row)} is not [depth, width, max_channels] numbers"
        if _multiple(row[0]) or _multiple(row[1]) or not 0 < row[2] <= MAX_CAP:
            return (f"entry {name!r}: {short(row)} is out of bounds (depth and width in (0, {MAX_MULTIPLE:g}], "
                    f"max_channels in (0, {MAX_CAP}])")
    return None


def _check_rows(v: Any) -> str | None:
    return None if isinstance(v, list) else "must be a list of [from, repeats, module, args] rows"


def _check_kpt_shape(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and is_int(v[0]) and 0 < v[0] <= MAX_ARG and v[1] in (2, 3)
    return None if ok and is_int(v[1]) else f"must be [keypoints (1 to {MAX_ARG}), 2 or 3]"


#: Every top-level key the parser (or this package) reads, with its check; any other key is refused
#: (a typo such as ``activaton`` would otherwise be ignored silently). ``activation`` is checked apart.
#: ``text_model`` names YOLOE's text encoder, which only Ultralytics' YOLOE model class reads (and
#: downloads): accepted as the label it is here, never read.
_KEYS = {
    "nc": int_in(1, MAX_NC), "ch": int_in(1, MAX_INPUT_CHANNELS), "channels": int_in(1, MAX_INPUT_CHANNELS),
    "scales": _check_scales, "scale": _check_name, "backbone": _check_rows, "head": _check_rows,
    "depth_multiple": _multiple, "width_multiple": _multiple, "reg_max": int_in(1, MAX_REG_MAX),
    "end2end": _check_bool, "inplace": _check_bool, "yaml_file": _check_str, "activation": _check_str,
    "kpt_shape": _check_kpt_shape, "text_model": _check_name,
}


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
            raise ModelConfigError(f"{source}: unknown key {short(key)} (known: {', '.join(sorted(_KEYS))})")
        problem = check(value)
        if problem:
            raise ModelConfigError(f"{source}: {key} {short(value)} {problem}")
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


def _check_row(row: Any, where: str) -> None:
    if not (isinstance(row, list) and len(row) == 4):
        raise ModelConfigError(f"{where}: {short(row)} is not a [from, repeats, module, args] row")
    f, n, m, args = row
    froms = f if isinstance(f, list) else [f]
    if not (froms and len(froms) <= MAX_FROM and all(is_int(x) and abs(x) <= MAX_ROWS for x in froms)):
        raise ModelConfigError(f"{where}: from {short(f)} must be a layer index or a list of 1 to {MAX_FROM} of them")
    if not (is_int(n) and 0 < n <= MAX_REPEATS):
        raise ModelConfigError(f"{where}: repeats {short(n)} must be an integer from 1 to {MAX_REPEATS}")
    if not isinstance(m, str) or m not in allowed_modules():
        if isinstance(m, str) and m in REFUSED_MODULES:
            raise ModelConfigError(f"{where}: module {m!r} is refused: {REFUSED_MODULES[m]}")
        raise ModelConfigError(f"{where}: module {short(m)} is not an allowed module (allowed: the blocks "
                               "Ultralytics' parser builds, torch.nn's 2-D pooling, padding and upsampling layers, "
                               "nn.Identity, nn.BatchNorm2d, nn.ConvTranspose2d, and ours: "
                               f"{', '.join(sorted(OUR_MODULES))}; see yolofuse_scale/model/safe_config/schema.py)")
    if not isinstance(args, list) or len(args) > MAX_ARGS:
        raise ModelConfigError(f"{where}: args {short(args)} must be a list of at most {MAX_ARGS} arguments")
    for j, a in enumerate(args):
        bound = MAX_NC if j == 0 and m in head_modules() else MAX_ARG  # a head's class count
        problem = _literal_problem(a, bound)
        if problem:
            raise ModelConfigError(f"{where} {m} argument {j}: {short(a)} {problem}")
    if m == "ModalitySelector" and not (args == [] or (len(args) == 1 and is_int(args[0]) and args[0] in (1, 2))):
        raise ModelConfigError(f"{where}: ModalitySelector {short(args)}: its argument is the modality, "
                               "[1] (RGB) or [2] (IR)")
    if m == "IdentityInput" and args:
        raise ModelConfigError(f"{where}: IdentityInput takes no arguments, got {short(args)}")
    if m == "FlowAlign":
        _check_flow_align(args, where)


def _check_flow_align(args: list[Any], where: str) -> None:
    """``FlowAlign`` (align.py): ``[width, hidden, reach]``, the last two optional. Each would otherwise build: a
    hidden width of 0 silently meant the default, and a reach of 0 divides by zero in every forward (NaN offsets)."""
    usage = (f"FlowAlign's arguments are [width, hidden width (1 to {MAX_ARG}, or null: width / 4), reach (cells, "
             f"above 0 and at most {MAX_FLOW_REACH:g})]")
    if len(args) > 3:
        raise ModelConfigError(f"{where}: FlowAlign {short(args)}: {usage}")
    if len(args) > 1 and not (args[1] is None or (is_int(args[1]) and 0 < args[1] <= MAX_ARG)):
        raise ModelConfigError(f"{where}: FlowAlign hidden width {short(args[1])}: {usage}")
    if len(args) > 2 and not (is_number(args[2]) and 0 < args[2] <= MAX_FLOW_REACH):
        raise ModelConfigError(f"{where}: FlowAlign reach {short(args[2])}: {usage}")


def _literal_problem(a: Any, bound: int = MAX_ARG) -> str | None:
    """Why an argument is refused (None: a plain literal the parser passes on unchanged, or a parser name).
    Called after :func:`check_budget`, so its recursion is at most ``budget.MAX_DEPTH`` deep."""
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
