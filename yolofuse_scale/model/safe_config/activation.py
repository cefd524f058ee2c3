"""The ``activation:`` of a model dictionary: one of :data:`ALLOWED_ACTIVATIONS`, written ``nn.Name(literal
args)``, checked and built from its parsed form (never ``eval``, which Ultralytics' parser applies to it), and
handed to Ultralytics' ``Conv`` while a model is built (:func:`default_activation`).
"""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Iterator
from typing import Any

from yolofuse_scale.model.safe_config.limits import MAX_ARG, ModelConfigError, is_number, short

#: ``activation:`` values, written ``nn.Name(literal args)`` (``torch.nn.Name`` too).
ALLOWED_ACTIVATIONS = frozenset({
    "SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "GELU", "Mish", "ELU", "SELU", "CELU",
    "Sigmoid", "Tanh", "PReLU", "Identity",
})


def _activation_value(node: ast.AST) -> Any:
    """A literal argument of an activation: a number (a negative one too: LeakyReLU(-0.1)) or a bool."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
        if not (isinstance(node, ast.Constant) and is_number(node.value)):
            raise ValueError("not a number")
    if not isinstance(node, ast.Constant) or not isinstance(node.value, (int, float, bool)):
        raise ValueError("not a literal")
    v = node.value
    if is_number(v) and not (math.isfinite(v) and abs(v) <= MAX_ARG):
        raise ValueError("out of bounds")
    return sign * v if is_number(v) else v


def parse_activation(spec: Any, source: str, build: bool = True):
    """``"nn.SiLU()"``, ``"nn.LeakyReLU(0.1)"``... -> a new module instance, from the parsed call, never ``eval``
    (``build=False``: only check it). Arguments are literal numbers or booleans of magnitude at most
    :data:`MAX_ARG` (``nn.PReLU(n)`` holds n parameters)."""
    allowed = f"allowed: {', '.join(f'nn.{a}()' for a in sorted(ALLOWED_ACTIVATIONS))}, with literal arguments"
    refusal = ModelConfigError(f"{source}: activation {short(spec)} is not an allowed activation ({allowed}, "
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
        raise ModelConfigError(f"{source}: activation {short(spec)}: {e}") from None
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
