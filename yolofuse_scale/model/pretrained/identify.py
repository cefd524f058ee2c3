"""What a model dictionary is, by structure: :func:`recognise` (a built-in variant's, as family, scale and
fusion), :func:`identify` (a file's single-stream dictionary in words: its rows against each family's, its scale
row against the family's scales, Ultralytics 8.3's older ``depth_multiple``/``width_multiple`` keys read as the
scale they build), :func:`first_difference` (the first structural difference of two, for a warning or a refusal)
and :func:`target_name` (what a run builds, in the same words). Nothing here reads a file or a tensor.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import torch

from yolofuse_scale.model.variants import FAMILIES, FUSIONS, SCALE_NAMES, TASKS, derive_fusion, family_yaml, head_task


def plain(d: Any) -> Any:
    """JSON's view of a value (tuples as lists, keys as strings), so stored and derived dicts compare."""
    return json.loads(json.dumps(d))


def recognise(model_yaml: Any) -> tuple[str, str, str, dict[str, Any]] | None:
    """(family, scale, fusion, single-stream dict) of a built-in variant's model dictionary (of either task: the
    single-stream dict is then the family's ``-obb`` one), else None.

    Structural, not by name: the dictionary must be exactly what ``derive_fusion`` gives for it."""
    if not isinstance(model_yaml, dict) or not isinstance(model_yaml.get("scale"), str):
        return None
    want = plain({k: v for k, v in model_yaml.items() if k != "nc"})
    rows = [r for k in ("backbone", "head") if isinstance(model_yaml.get(k), list) for r in model_yaml[k]]
    last = rows[-1] if rows else None
    task = head_task(str(last[2])) if isinstance(last, (list, tuple)) and len(last) == 4 else None
    for family in FAMILIES:
        try:
            base = family_yaml(family, model_yaml["scale"], task or "detect")
        except ValueError:
            continue
        for fusion in FUSIONS:
            derived = derive_fusion(base, fusion, 1)
            if plain({k: v for k, v in derived.items() if k != "nc"}) == want:
                return family, model_yaml["scale"], fusion, base
    return None


def rows_of(d: dict[str, Any]) -> list[list[Any]]:
    """A model dictionary's rows, each ``[from, repeats, module, args]`` (a malformed one of a file's as
    ``[None, None, "?", []]``: compared, never built)."""
    rows = []
    for section in ("backbone", "head"):
        v = d.get(section)
        for r in v if isinstance(v, list) else []:
            ok = isinstance(r, (list, tuple)) and len(r) == 4 and isinstance(r[3], (list, tuple))
            rows.append(list(r) if ok else [None, None, "?", []])
    return rows


def _scale_row(d: dict[str, Any]) -> tuple[list[Any] | None, bool]:
    """The [depth, width, max_channels] a single-stream dict builds with, as Ultralytics' parser reads it: its
    ``scales`` row (``scale``, else the first), else the older ``depth_multiple`` / ``width_multiple`` keys
    (Ultralytics 8.3 still writes them into some checkpoints; no channel cap: None). Second: whether the old
    keys said it."""
    scales = d.get("scales")
    if isinstance(scales, dict) and scales:
        row = scales.get(d.get("scale"), next(iter(scales.values())))
        return (list(row) if isinstance(row, (list, tuple)) else None), False
    if "depth_multiple" in d or "width_multiple" in d:
        return [d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0), None], True
    return None, False


def effective_scale(d: dict[str, Any]) -> list[Any] | None:
    """:func:`_scale_row` as the shapes see it: the channel cap only where it binds (at most the widest
    width a row asks for), so ``depth_multiple: 0.33, width_multiple: 0.25`` (no cap) is yolov8's scale n
    ``[0.33, 0.25, 1024]``, and an uncapped ``[1.0, 1.0]`` is not scale l ``[1.0, 1.0, 512]``."""
    row, _ = _scale_row(d)
    if row is None or len(row) != 3:
        return row
    widest = max([r[3][0] for r in rows_of(d)[:-1] if r[3] and isinstance(r[3][0], int)
                  and not isinstance(r[3][0], bool)] or [0])
    cap = row[2]
    return [row[0], row[1], widest if cap is None or (isinstance(cap, (int, float)) and cap > widest) else cap]


def _signature(d: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A single-stream dict's rows (module names without ``nn.``, YAML's None/True/False as words) and
    the meta entries that change shapes (its effective scale row, reg_max, end2end)."""
    words = {None: "None", True: "True", False: "False"}
    rows = [[f, n, str(m).rpartition(".")[2], [words.get(a, a) if a is None or isinstance(a, bool) else a
                                                for a in args]]
            for f, n, m, args in rows_of(d)]
    meta = {"scale": effective_scale(d), "reg_max": d.get("reg_max", 16), "end2end": bool(d.get("end2end", False))}
    return plain(rows), plain(meta)


@functools.cache
def _family_tables() -> tuple[tuple[str, str, str], ...]:
    """(family, scale, its signature as JSON) for every built-in family, task and scale (the family files, read
    once); an oriented-box family is named with its file's suffix (``yolo11-obb``)."""
    out = []
    for family in FAMILIES:
        for task in TASKS:
            for scale in SCALE_NAMES:
                try:
                    sig = json.dumps(_signature(family_yaml(family, scale, task)), sort_keys=True)
                except ValueError:  # a scale the family's file does not list
                    continue
                out.append((family + ("-obb" if task == "obb" else ""), scale, sig))
    return tuple(out)


def identify(single: dict[str, Any]) -> str:
    """What a single-stream model dictionary is, in words: ``yolov8 scale s`` (``yolov8-obb scale s`` for an
    oriented-box one) when its rows are a built-in family's and its (effective) scale row one of that family's,
    else what the file says of itself."""
    rows, meta = _signature(single)
    row, old = _scale_row(single)
    how = f" (from depth_multiple {row[0]}, width_multiple {row[1]})" if old and row else ""
    family = None
    for fam, scale, sig in _family_tables():
        theirs = json.loads(sig)
        if theirs[0] == rows and {k: v for k, v in theirs[1].items() if k != "scale"} == {
                k: v for k, v in meta.items() if k != "scale"}:
            family = fam
            if theirs[1]["scale"] == meta["scale"]:
                return f"{fam} scale {scale}{how}"
    if family is not None:
        return f"{family} at scale {meta['scale']} [depth, width, max_channels], none of {family}'s scales{how}"
    named = str(single.get("yaml_file", ""))
    named = Path(named).name[:60] if re.fullmatch(r"[\w./ -]{1,4096}", named) else ""
    said = single.get("scale") if isinstance(single.get("scale"), str) and len(single["scale"]) < 8 else None
    return (f"{named + ' ' if named else 'a model '}(not a {'/'.join(FAMILIES)} model)"
            + (f", scale {said}" if said else f", scale {row}" if row else "") + how)


def first_difference(src: dict[str, Any], dst: dict[str, Any], dst_name: str, heads: bool = True) -> str | None:
    """The first structural difference between two single-stream dicts, in words (None: the same); ``heads``
    False: their last layers (heads of two tasks, the report says so itself) are not compared."""
    (sr, sm), (dr, dm) = _signature(src), _signature(dst)
    if not heads:
        sr, dr = sr[:-1], dr[:-1]
    for key in ("scale", "reg_max", "end2end"):
        if sm[key] != dm[key]:
            what = "[depth, width, max_channels]" if key == "scale" else key
            return f"{what} {sm[key]} in the checkpoint, {dm[key]} in {dst_name}"
    for i, (a, b) in enumerate(zip(sr, dr)):
        if a != b:
            return f"layer {i} is {a[2]} {a[3]} in the checkpoint, {b[2]} {b[3]} in {dst_name}"
    if len(sr) != len(dr):
        return f"{len(sr)} layers in the checkpoint, {len(dr)} in {dst_name}"
    return None


def target_name(model: torch.nn.Module) -> tuple[str, str]:
    """(how the report names the model, what it builds in words): a model YAML's file name and scale (a
    built-in variant as :func:`identify` says it)."""
    found = recognise(getattr(model, "yaml", None))
    if found is not None:
        return f"{found[0]}{found[1]} fusion={found[2]}", f"{found[0]} scale {found[1]} (fusion={found[2]})"
    source = getattr(model, "yaml_source", None)
    name = Path(source).name if isinstance(source, str) and source.endswith((".yaml", ".yml")) else "the model YAML"
    d = getattr(model, "yaml", None) or {}
    scale = d.get("scale")
    row = effective_scale(d)
    return (f"{name}{f' scale {scale}' if scale else ''}",
            f"{name}{f' at scale {scale}' if scale else ''}{f' {row}' if row else ''}")
