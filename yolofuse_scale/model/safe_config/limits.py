"""What a model dictionary may hold, number by number, and how a refusal says so.

A bound on every number, so that nothing is sized by a number nobody means (Ultralytics builds
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
``FlowAlign``'s ``reach``     (0, 64]     cells of its map: a P5 map of a 2,048 px image is 64 wide; 0 divides by 0
============================  ==========  ===================================================================

Every refusal is one :class:`ModelConfigError` that names the source, the key and the value, the value quoted
by :func:`short` (a bounded ``repr``: safe on a huge, deep or self-referencing value).
"""

from __future__ import annotations

import reprlib
from typing import Any

from yolofuse_scale.errors import UserError

MAX_WORD = 64  #: characters of a module name, a key, a word argument
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
MAX_FLOW_REACH = 64.0  #: FlowAlign's largest offset, in cells of its map (align.py)
MAX_SCALES = 16


class ModelConfigError(UserError, ValueError):
    """A model dictionary that is refused; the message names its source, the key and the value.

    A user error: a command reports it as its one message (``errors.run_entry``), not as a traceback."""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_in(low: int, high: int):
    def check(v: Any) -> str | None:
        return None if is_int(v) and low <= v <= high else f"must be an integer from {low} to {high}"
    return check


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 6, 6, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 80, 40, 60


def short(v: Any, limit: int = 120) -> str:
    """A bounded ``repr`` (a few levels, a few items): safe on a huge, deep or self-referencing value."""
    text = _REPR.repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines or [type(e).__name__])[0][:300]
