"""A YOLO label file parsed and checked row by row, as data.yaml's ``task:`` says (``detect``: ``cls xc yc w h``;
``obb``: four corners, see ``_obb_row_problem``): class ids, finite normalised numbers, boxes with an area, corners
in order; a duplicate row dropped (the pair kept), a file of the other task's rows named once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from yolofuse_scale.data.scan.listing import read_text
from yolofuse_scale.data.scan.records import Problem

#: How far outside the image an oriented box's corner may lie (fraction of the side): Ultralytics' own tolerance
#: when it checks label files (a box that touches the border is often annotated a pixel or two beyond it).
OBB_TOLERANCE = 0.01
_FORMS = {"detect": "'cls xc yc w h'", "obb": "'cls x1 y1 x2 y2 x3 y3 x4 y4'"}
COLUMNS = {"detect": 5, "obb": 9}


def parse_label_file(path: Path, nc: int, problems: list[Problem], rgb: str | None = None,
                     task: str = "detect") -> np.ndarray:
    """Parse one YOLO label file into (n, 5) float32 rows (``task`` ``obb``: (n, 9)); append a :class:`Problem`
    per bad row.

    A duplicate row (LLVIP's official converter appends, so a rerun duplicates every row) is reported
    but only the row is dropped: the pair keeps its one copy of the box. Rows of the other task's field count (an
    axis-aligned file in an oriented-box dataset, or the reverse) are one problem per file, naming the first.
    """
    columns = COLUMNS[task]
    rows: list[tuple[float, ...]] = []
    first_seen: dict[tuple[float, ...], int] = {}
    try:
        text = read_text(path)
    except (OSError, UnicodeError) as e:
        problems.append(Problem(f"{path}: unreadable label file ({e})", rgb, kind="unreadable label file"))
        return np.zeros((0, columns), np.float32)
    other_kind: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != columns and len(fields) in COLUMNS.values():
            other_kind.append(lineno)
            continue
        why = _row_problem(fields, nc) if task == "detect" else _obb_row_problem(fields, nc)
        if why:
            problems.append(Problem(f"{where}: {why}", rgb, kind="bad label row"))
            continue
        row = tuple(float(x) for x in fields)
        if row in first_seen:
            problems.append(Problem(f"{where}: duplicate of line {first_seen[row]}", rgb, drops_pair=False,
                                    kind="duplicate label row"))
            continue
        first_seen[row] = lineno
        rows.append(row)
    if other_kind:
        problems.append(Problem(_other_kind_message(path, other_kind, task), rgb, kind="label rows of another task"))
    return np.array(rows, dtype=np.float32).reshape(-1, columns)


def _other_kind_message(path: Path, lines: list[int], task: str) -> str:
    more = f" (and {len(lines) - 1} more row(s) of this file)" if len(lines) > 1 else ""
    if task == "obb":
        return (f"{path}:{lines[0]}: 5 fields {_FORMS['detect']}, an axis-aligned box{more}, in an oriented-box dataset"
                f" (data.yaml 'task: obb'): its rows are {_FORMS['obb']}, the four corners normalised")
    return (f"{path}:{lines[0]}: 9 fields {_FORMS['obb']}, an oriented box{more}, in an axis-aligned dataset: if the "
            f"labels are oriented boxes, say 'task: obb' in data.yaml (and train with --task obb)")


def _numbers_problem(fields: list[str], nc: int) -> tuple[list[float] | None, str | None]:
    try:
        values = [float(x) for x in fields]
    except ValueError:
        return None, f"non-numeric value in {' '.join(fields)!r}"
    if not all(math.isfinite(v) for v in values):
        return None, f"NaN or infinite value in {' '.join(fields)!r}"
    c = values[0]
    if not c.is_integer() or not 0 <= c < nc:
        return None, f"class id {fields[0]} is not an integer in 0..{nc - 1} (data.yaml names)"
    return values, None


def _row_problem(fields: list[str], nc: int) -> str | None:
    if len(fields) != 5:
        return f"expected 5 fields {_FORMS['detect']}, found {len(fields)}"
    values, why = _numbers_problem(fields, nc)
    if why:
        return why
    _, xc, yc, w, h = values
    eps = 1e-6
    if w <= 0 or h <= 0:
        return f"box size w={fields[3]} h={fields[4]} is zero or negative"
    if not all(-eps <= v <= 1 + eps for v in (xc, yc, w, h)):
        return f"box {' '.join(fields[1:])} is outside [0, 1] (coordinates must be normalised)"
    return None


def _obb_row_problem(fields: list[str], nc: int) -> str | None:
    """What is wrong with an oriented box's row: its count and numbers, a corner outside the image (beyond
    :data:`OBB_TOLERANCE`), no area (repeated or collinear corners), or corners out of order (the outline crosses
    itself: a 'bow tie' that ``cv2.minAreaRect`` would turn into some other box)."""
    if len(fields) != 9:
        return f"expected 9 fields {_FORMS['obb']}, found {len(fields)}"
    values, why = _numbers_problem(fields, nc)
    if why:
        return why
    pts = [(values[k], values[k + 1]) for k in (1, 3, 5, 7)]
    for n, (x, y) in enumerate(pts, 1):
        if not (-OBB_TOLERANCE <= x <= 1 + OBB_TOLERANCE and -OBB_TOLERANCE <= y <= 1 + OBB_TOLERANCE):
            return (f"corner {n} ({fields[2 * n - 1]}, {fields[2 * n]}) is outside the image by more than "
                    f"{OBB_TOLERANCE:.0%} of its side (corners must be normalised to [0, 1])")
    if _crosses(pts[0], pts[1], pts[2], pts[3]) or _crosses(pts[1], pts[2], pts[3], pts[0]):
        return (f"corners {' '.join(fields[1:])} are not in order around the box (its outline crosses itself); "
                "write them in order, clockwise or counter-clockwise")
    area = 0.5 * abs(sum(pts[k][0] * pts[k - 3][1] - pts[k - 3][0] * pts[k][1] for k in range(4)))
    if area < 1e-9:
        return f"corners {' '.join(fields[1:])} enclose no area (repeated or collinear corners)"
    return None


def _crosses(a, b, c, d) -> bool:
    """Whether segments ab and cd cross at a point inside both (touching ends do not count)."""
    def side(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0
