"""A model dictionary is data, never code: checked against allow-lists before Ultralytics' parser sees it.

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
one path for all): top-level keys typed, module names from :data:`ALLOWED_MODULES`, arguments plain
literals, the activation one of :data:`ALLOWED_ACTIVATIONS`, built from its parsed form (never ``eval``).
The check walks a few hundred values: 0.2 ms for the late-fusion variant on the shared 2-core CPU, where
building even the tiny scale takes seconds.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import re
from collections.abc import Iterator
from typing import Any

from yolofuse_scale.errors import UserError

#: The layers the built-in variants use, YOLOFuse's fusion configs use (the same YOLOv8 set), Ultralytics'
#: own yolov8.yaml / yolo11.yaml use (C3k2, C2PSA), our three YOLOFuse input modules, the attention
#: modules of YOLOFuse's DEYOLO.yaml / DEFA.yaml and ``--fusion dea``'s DEAPair (attention.py), and
#: YOLOv11-RGBT's input selectors and joins (rgbt.py).
ALLOWED_MODULES = frozenset({
    "Conv", "C2f", "C3k2", "C2PSA", "SPPF", "Concat", "Detect", "nn.Upsample",
    "IdentityInput", "ModalitySelector", "ModalConcat",
    "DEA", "DEAPair", "DEFA", "C2f_BiFocus",
    "Silence", "SilenceChannel", "ADD", "ChannelToNumber", "NumberToChannel",
})

#: ``activation:`` values, written ``nn.Name(literal args)`` (``torch.nn.Name`` too).
ALLOWED_ACTIVATIONS = frozenset({
    "SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "GELU", "Mish", "ELU", "SELU", "CELU",
    "Sigmoid", "Tanh", "PReLU", "Identity",
})

#: The one parser variable a string argument may name (``Detect [nc]``); ``None``/``True``/``False`` are
#: literals written as YAML strings (YAML's null is ``null``, so ``[None, 2, "nearest"]`` holds "None").
_PARSER_NAMES = frozenset({"nc"})
_LITERAL_WORDS = frozenset({"None", "True", "False"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ModelConfigError(UserError, ValueError):
    """A model dictionary that is refused; the message names its source, the key and the value.

    A user error: a command reports it as its one message (``errors.run_entry``), not as a traceback."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_positive_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "must be a positive integer"


def _check_number(v: Any) -> str | None:
    return None if _is_number(v) and v > 0 else "must be a positive number"


def _check_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _check_str(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _check_scales(v: Any) -> str | None:
    if not isinstance(v, dict) or not v:
        return "must be a mapping of scale name -> [depth, width, max_channels]"
    for name, row in v.items():
        if not isinstance(name, str) or not (isinstance(row, list) and len(row) == 3 and all(map(_is_number, row))):
            return f"entry {name!r}: {row!r} is not [depth, width, max_channels] numbers"
    return None


def _check_rows(v: Any) -> str | None:
    return None if isinstance(v, list) else "must be a list of [from, repeats, module, args] rows"


#: Every top-level key the parser (or this package) reads, with its check; any other key is refused
#: (a typo such as ``activaton`` would otherwise be ignored silently). ``activation`` is checked apart.
_KEYS = {
    "nc": _check_positive_int, "ch": _check_positive_int, "channels": _check_positive_int,
    "scales": _check_scales, "scale": _check_str, "backbone": _check_rows, "head": _check_rows,
    "depth_multiple": _check_number, "width_multiple": _check_number, "reg_max": _check_positive_int,
    "end2end": _check_bool, "inplace": _check_bool, "yaml_file": _check_str, "activation": _check_str,
}


def check_model_dict(d: Any, source: str) -> None:
    """Raise :class:`ModelConfigError` unless ``d`` is a model dictionary built only from allowed parts.

    ``source`` starts the message (``"best.pt: model_yaml"``, ``"model.yaml"``).
    """
    if not isinstance(d, dict):
        raise ModelConfigError(f"{source}: expected a mapping (nc, scales, backbone, head), got {type(d).__name__}")
    for key, value in d.items():
        check = _KEYS.get(key)
        if check is None:
            raise ModelConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
        problem = check(value)
        if problem:
            raise ModelConfigError(f"{source}: {key} {_short(value)} {problem}")
    if "scale" in d and "scales" in d and d["scale"] not in d["scales"]:
        raise ModelConfigError(f"{source}: scale {d['scale']!r} is not in its scales table ({', '.join(d['scales'])})")
    if "activation" in d:
        parse_activation(d["activation"], source)
    rows = list(d.get("backbone", [])) + list(d.get("head", []))
    if not rows:
        raise ModelConfigError(f"{source}: no layers (expected 'backbone' and/or 'head' rows)")
    n_backbone = len(d.get("backbone", []))
    for i, row in enumerate(rows):
        where = f"backbone[{i}]" if i < n_backbone else f"head[{i - n_backbone}] (layer {i})"
        _check_row(row, f"{source}: {where}")


def _check_row(row: Any, where: str) -> None:
    if not (isinstance(row, list) and len(row) == 4):
        raise ModelConfigError(f"{where}: {_short(row)} is not a [from, repeats, module, args] row")
    f, n, m, args = row
    if not (_is_int(f) or (isinstance(f, list) and f and all(map(_is_int, f)))):
        raise ModelConfigError(f"{where}: from {_short(f)} must be a layer index or a list of them")
    if not (_is_int(n) and n > 0):
        raise ModelConfigError(f"{where}: repeats {_short(n)} must be a positive integer")
    if not isinstance(m, str) or m not in ALLOWED_MODULES:
        raise ModelConfigError(f"{where}: module {_short(m)} is not an allowed module "
                               f"(allowed: {', '.join(sorted(ALLOWED_MODULES))})")
    if not isinstance(args, list):
        raise ModelConfigError(f"{where}: args {_short(args)} must be a list")
    for j, a in enumerate(args):
        problem = _literal_problem(a)
        if problem:
            raise ModelConfigError(f"{where} {m} argument {j}: {_short(a)} {problem}")


def _literal_problem(a: Any) -> str | None:
    """Why an argument is refused (None: a plain literal the parser passes on unchanged, or ``nc``)."""
    if a is None or isinstance(a, (bool, int, float)):
        return None
    if isinstance(a, list):
        return next(filter(None, map(_literal_problem, a)), None)
    if isinstance(a, str):
        # The parser swaps a string for the parser variable of that name, else for ast.literal_eval of it;
        # a plain word that is not a parser variable (an interpolation mode such as "nearest") stays a string.
        if a in _PARSER_NAMES or a in _LITERAL_WORDS:
            return None
        if _WORD.fullmatch(a) and a not in _parser_variables():
            return None
        return "is not a literal argument (numbers, lists, None/True/False, nc or a plain word; nothing is evaluated)"
    return f"is a {type(a).__name__}, not a literal argument"


@functools.cache
def _parser_variables() -> frozenset[str]:
    """The local names of Ultralytics' ``parse_model``, which a string argument would be replaced by."""
    from ultralytics.nn.tasks import parse_model

    code = parse_model.__code__
    return frozenset(code.co_varnames + code.co_cellvars + code.co_freevars) - _PARSER_NAMES


def parse_activation(spec: Any, source: str):
    """``"nn.SiLU()"``, ``"nn.LeakyReLU(0.1)"``... -> a new module instance, from the parsed call, never ``eval``."""
    from torch import nn

    allowed = f"allowed: {', '.join(f'nn.{a}()' for a in sorted(ALLOWED_ACTIVATIONS))}, with literal arguments"
    refusal = ModelConfigError(f"{source}: activation {_short(spec)} is not an allowed activation ({allowed})")
    try:
        call = ast.parse(str(spec).strip(), mode="eval").body
    except SyntaxError:
        raise refusal from None
    if not isinstance(call, ast.Call) or not isinstance(spec, str):
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
    values = [*call.args, *(k.value for k in call.keywords)]
    if any(not isinstance(v, ast.Constant) or not isinstance(v.value, (int, float, bool)) for v in values):
        raise refusal
    if any(k.arg is None for k in call.keywords):  # **kwargs
        raise refusal
    try:
        return getattr(nn, dotted[-1])(*(a.value for a in call.args), **{k.arg: k.value.value for k in call.keywords})
    except (TypeError, ValueError) as e:
        raise ModelConfigError(f"{source}: activation {_short(spec)}: {e}") from None


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


def _short(v: Any, limit: int = 120) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
