"""A budget on a model dictionary's shape, walked without recursion before anything copies, serialises
(``json.dumps``) or parses it: at most :data:`MAX_NODES` values, counting a value each time it is reached
(a list holding the same list twice, nested 30 times, is a 300-byte pickle or a 2 KB YAML with anchors but
2^30 values to anything that walks or serialises it), nested at most :data:`MAX_DEPTH` deep, strings of at
most :data:`MAX_STRING` characters, numbers finite (an ``inf`` or ``nan`` width or scale ends in
Ultralytics' ``math.ceil``), only dicts, lists, strings, numbers, booleans and None.

The walk costs a few milliseconds for the largest real model (0.2 ms for the late-fusion variant) and
refuses a pathological file after :data:`MAX_NODES` values, in milliseconds.
"""

from __future__ import annotations

import math
from typing import Any

from yolofuse_scale.model.safe_config.limits import MAX_WORD, ModelConfigError, short

MAX_NODES = 20_000  #: values in one dictionary, a shared value counted each time it is reached
MAX_DEPTH = 8  #: nesting: dict > backbone > row > args > a list argument > ...; real ones reach 5
MAX_STRING = 4096  #: characters of any string (a ``yaml_file`` path is the longest real one)
MAX_INT = 2**63 - 1  #: any integer at all (tighter bounds follow for each key and argument)


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
                        raise ModelConfigError(f"{source}:{at} key {short(k)} is not a name of at most "
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
