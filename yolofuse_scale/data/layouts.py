"""Which file pairs with which, and where a pair's labels are: each layout read as its users already have it.

``layout:`` in data.yaml (``config.LAYOUTS``), recognised when absent (:func:`recognise_layout`):

- ``yolofuse`` (the default): ``.../images/.../x.jpg`` pairs with ``.../imagesIR/.../x.jpg`` (the last path
  component named ``images_dir`` becomes ``ir_dir``); its label is ``.../labels/.../x.txt``.
- ``yolov11-rgbt`` (YOLOv11-RGBT's dataset layouts): ``.../visible/...`` pairs with ``.../infrared/...`` (the last
  component named ``visible``; YOLOv11-RGBT replaces the substring, which is the same for its layouts); labels
  where Ultralytics looks for them: the last ``images`` folder becomes ``labels``, and without one, the ``.txt``
  beside the image (its "labels beside the images" layout).
- ``deyolo`` (DEYOLO's ``data.yaml``: ``train``/``val`` the visible images, ``train2``/``val2`` the infrared ones):
  the i-th image of ``train`` pairs with the i-th of ``train2``, both sorted by path, as DEYOLO's loader pairs them
  (so its users train on the pairs they always did, even where the file names differ: the start-up log counts
  those); labels as Ultralytics finds them for the visible image.

And in every layout, a split entry may be a **pairs file** (``.csv`` or ``.json``): an explicit list of (RGB, IR
[, label]) paths, for rigs whose two cameras name their frames differently (FLIR ADAS v2 ships its video pairs as
``rgb_to_thermal_vid_map.json``). CSV: one pair a line, ``rgb,ir[,label]``, an optional header line naming those
columns (in any order). JSON: a list of ``{"rgb": ..., "ir": ..., "label": ...}`` objects, or one object mapping
RGB paths to IR paths (FLIR's shape). Relative paths are relative to ``pairs_dirs:`` (``rgb``, ``ir``, ``labels``
folders) or else to data.yaml's ``path:``. A label not named in the file is found by the rules above, from
``pairs_dirs: labels`` when given (the RGB path relative to its folder, ``.txt``). Every line is checked: a
missing file is named as ``FILE:LINE``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from yolofuse_scale.data.config import LAYOUTS, DataError, DatasetSpec, key_line

PAIRS_SUFFIXES = (".csv", ".json")
_COLUMNS = ("rgb", "ir", "label")


@dataclass(frozen=True)
class Listed:
    """An RGB image a split names, with where it was named (``list.txt:3``, ``pairs.csv:7``; "" for a folder), and
    its IR partner and label when the listing names them (a pairs file, DEYOLO's position); else the layout's rules
    find them (:func:`ir_of`, :func:`label_of`)."""

    rgb: Path
    origin: str
    ir: Path | None = None
    label: Path | None = None


def swap_str(path: str, old: str, new: str) -> str | None:
    """``path`` with its last component named ``old`` (nearest the file) renamed ``new``; None when there is none.
    On strings: the cached scan does this for every file, and pathlib costs ~10x more."""
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == old:
            parts[i] = new
            return os.sep.join(parts)
    return None


def ir_of(cfg: DatasetSpec, rgb: str) -> str | None:
    """The IR partner of an RGB path by the layout's naming rule (None: the path has no ``images_dir`` folder)."""
    return swap_str(rgb, cfg.images_dir, cfg.ir_dir)


def rgb_of(cfg: DatasetSpec, ir: str) -> str | None:
    """The inverse of :func:`ir_of` (what an IR file's RGB partner would be called)."""
    return swap_str(ir, cfg.ir_dir, cfg.images_dir)


def label_of(cfg: DatasetSpec, rgb: str) -> str:
    """The label file of an RGB path by the layout's rule (module docstring): never None (beside the image at
    worst: the scan then reports a missing label file as background, or no label file at all as a split error)."""
    dirs = cfg.pairs_dirs or {}
    if "labels" in dirs:
        base = str(dirs.get("rgb", cfg.root))
        rel = os.path.relpath(rgb, base)
        if not rel.startswith(".."):
            return os.path.splitext(os.path.join(str(dirs["labels"]), rel))[0] + ".txt"
    folder = cfg.images_dir if cfg.layout == "yolofuse" else "images"  # YOLOv11-RGBT, DEYOLO: Ultralytics' rule
    swapped = swap_str(rgb, folder, "labels")
    return os.path.splitext(swapped if swapped is not None else rgb)[0] + ".txt"


def label_rule(cfg: DatasetSpec) -> str:
    """:func:`label_of`'s rule in words, for messages."""
    folder = cfg.images_dir if cfg.layout == "yolofuse" else "images"
    dirs = "under pairs_dirs' labels folder for images under its rgb folder; else " if (
        cfg.pairs_dirs and "labels" in cfg.pairs_dirs) else ""
    return (f"{dirs}the last '{folder}' folder of the image path becomes 'labels', the suffix .txt (without one: "
            "beside the image)")


# ------------------------------------------------------------------------------------------ pairs files
def _resolve(raw: str, folder: Path) -> Path:
    p = Path(raw.strip())
    return p if p.is_absolute() else Path(os.path.normpath(folder / p))


def _rows_csv(path: Path, text: str) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    rows, problems = [], []
    reader = csv.reader(io.StringIO(text))
    columns = None
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        names = [f.strip().lower() for f in fields]
        if columns is None and len(fields) in (2, 3):  # the first line sets the columns: a header, or rgb,ir[,label]
            columns = _COLUMNS[: len(fields)]
            if set(names) <= set(_COLUMNS) and {"rgb", "ir"} <= set(names) and len(set(names)) == len(names):
                columns = tuple(names)
                continue
        if columns is None or len(fields) != len(columns):
            want = f"{len(columns)} fields ({','.join(columns)})" if columns else "2 or 3 fields (rgb,ir[,label])"
            problems.append(f"{path}:{line}: expected {want}, found {len(fields)}")
            continue
        row = {c: f.strip() for c, f in zip(columns, fields)}
        empty = [c for c in ("rgb", "ir") if not row[c]]
        if empty:
            problems.append(f"{path}:{line}: empty {' and '.join(empty)} field")
            continue
        rows.append((line, row))
    return rows, problems


def _line_finder(text: str):
    """Line numbers of JSON strings in a pairs file, in file order (json keeps no positions): each found after the
    previous one, so a path named twice gets its two lines."""
    pos = [0]

    def line(value: str) -> int:
        at = text.find(json.dumps(value), pos[0])
        if at < 0:
            at = text.find(value, pos[0])  # written with escapes json.dumps does not use
        if at < 0:
            return 0
        pos[0] = at + 1
        return text.count("\n", 0, at) + 1

    return line


def _rows_json(path: Path, text: str) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the parser's stack
        raise DataError(f"{path}: not valid JSON ({str(e)[:200]})") from None
    line = _line_finder(text)
    rows, problems = [], []
    if isinstance(data, dict):  # {rgb: ir}: FLIR ADAS v2's rgb_to_thermal_vid_map.json
        for rgb, ir in data.items():
            n = line(rgb)
            if not isinstance(ir, str) or not ir.strip() or not rgb.strip():
                problems.append(f"{path}:{n}: {rgb!r} must map to an IR path (a non-empty string), got {ir!r}")
            else:
                rows.append((n, {"rgb": rgb, "ir": ir}))
        return rows, problems
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{\"rgb\": ..., \"ir\": ...}} objects or an object mapping "
                        f"RGB paths to IR paths, got {type(data).__name__}")
    for i, item in enumerate(data):
        ok = isinstance(item, dict) and set(item) <= set(_COLUMNS) and all(
            isinstance(item.get(c), str) and item[c].strip() for c in ("rgb", "ir")) and all(
            isinstance(v, str) for v in item.values())
        n = line(item["rgb"]) if ok else 0
        if not ok:
            where = f"{path}: item {i + 1}"
            problems.append(f"{where}: expected {{\"rgb\": PATH, \"ir\": PATH[, \"label\": PATH]}}, got "
                            f"{json.dumps(item)[:120]}")
            continue
        rows.append((n, {k: v.strip() for k, v in item.items()}))
    return rows, problems


def read_pairs_file(entry: Path, cfg: DatasetSpec) -> tuple[list[Listed], list[str]]:
    """The pairs a ``.csv``/``.json`` split entry lists (module docstring), and one problem per bad line (a
    malformed line, an IR file paired twice). Missing files are the scan's to report (it names the line).
    Raises :class:`DataError` for a file that cannot be read as a whole."""
    try:
        text = entry.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeError) as e:
        raise DataError(f"{entry}: cannot read the pairs file ({e})") from None
    rows, problems = (_rows_json if entry.suffix.lower() == ".json" else _rows_csv)(entry, text)
    dirs = cfg.pairs_dirs or {}
    out, ir_seen = [], {}
    for n, row in rows:
        origin = f"{entry}:{n}" if n else str(entry)
        ir = _resolve(row["ir"], dirs.get("ir", cfg.root))
        if str(ir) in ir_seen:
            problems.append(f"{origin}: IR file {ir} is paired twice (also at {ir_seen[str(ir)]}); one IR frame "
                            "belongs to one RGB frame")
            continue
        ir_seen[str(ir)] = origin
        label = _resolve(row["label"], dirs.get("labels", cfg.root)) if row.get("label") else None
        out.append(Listed(_resolve(row["rgb"], dirs.get("rgb", cfg.root)), origin, ir, label))
    if not out and not problems:
        raise DataError(f"{entry}: the pairs file lists no pairs")
    return out, problems


# ------------------------------------------------------------------------------------------ DEYOLO
def pair_by_position(cfg: DatasetSpec, split: str, rgb: list[Listed], ir: list[Path]) -> tuple[list[Listed], int]:
    """DEYOLO's pairing: the i-th RGB image with the i-th IR image, both sorted by path (its loader sorts the path
    strings); returns the pairs and how many of them have different file names. Refused: different counts."""
    rgb = sorted(rgb, key=lambda it: str(it.rgb))
    ir = sorted(ir, key=str)
    if len(rgb) != len(ir):
        extra = (rgb[len(ir)].rgb if len(rgb) > len(ir) else ir[len(rgb)])
        raise DataError(f"{cfg.yaml_path}: split '{split}': '{split}' lists {len(rgb)} RGB image(s) and '{split}2' "
                        f"{len(ir)} IR image(s); DEYOLO's layout pairs them by position in sorted order, so the counts "
                        f"must match (the first without a partner: {extra})")
    pairs = [Listed(r.rgb, r.origin, i) for r, i in zip(rgb, ir)]
    return pairs, sum(r.rgb.name != i.name for r, i in zip(rgb, ir))


# ------------------------------------------------------------ data.yaml's layout: stated or recognised
def _first_listed(entry: Path, root: Path) -> Path | None:
    """The first image a ``.txt`` split list names (what the layout is recognised from), or None."""
    try:
        with open(entry, encoding="utf-8-sig", errors="replace") as fh:
            for _, line in zip(range(1000), fh):  # a list that starts with 1000 comments is not worth more
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    return p if p.is_absolute() else root / p
    except OSError:
        return None
    return None


def _swapped(p: Path, old: str, new: str) -> Path | None:
    parts = list(p.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == old:
            parts[i] = new
            return Path(*parts)
    return None


def _looks_like_rgbt(d: dict, root: Path) -> bool:
    """YOLOv11-RGBT's layout: every train/val entry (or a list's first image) has a ``visible`` folder whose
    ``infrared`` twin exists, and no ``imagesIR`` twin of an ``images`` folder (YOLOFuse's) does."""
    seen = False
    for key in ("train", "val"):
        raw = d.get(key)
        for item in raw if isinstance(raw, list) else [raw]:
            p = Path(str(item))
            p = p if p.is_absolute() else root / p
            if p.suffix == ".txt" and p.is_file():
                p = _first_listed(p, root) or p
            rgbt, ours = _swapped(p, "visible", "infrared"), _swapped(p, "images", "imagesIR")
            if rgbt is None or not rgbt.exists() or (ours is not None and ours.exists()):
                return False
            seen = True
    return seen


def recognise_layout(d: dict, path: Path, text: str, root: Path) -> tuple[str, str]:
    """(layout, why) of a data.yaml: ``layout:`` when stated, else recognised from the peers' own keys and folders
    (DEYOLO's ``train2``/``val2``; YOLOv11-RGBT's ``visible``/``infrared`` twins), else YOLOFuse's."""
    if "layout" in d:
        layout = d["layout"]
        if layout not in LAYOUTS:
            raise DataError(f"{path}{key_line(text, 'layout')}: 'layout' must be one of {', '.join(LAYOUTS)}, "
                            f"got {layout!r}")
        return layout, "stated (layout:)"
    if any(k in d for k in ("train2", "val2")):
        return "deyolo", "recognised: 'train2'/'val2' name the IR images, as DEYOLO's data.yaml does"
    if "ir_dir" not in d and "images_dir" not in d and _looks_like_rgbt(d, root):
        return "yolov11-rgbt", "recognised: 'visible' folders with 'infrared' twins, as YOLOv11-RGBT's layout"
    return "yolofuse", "the default"


def parse_pairs_dirs(d: dict, path: Path, text: str, root: Path) -> dict[str, Path] | None:
    raw = d.get("pairs_dirs")
    if raw is None:
        return None
    where = f"{path}{key_line(text, 'pairs_dirs')}"
    if not isinstance(raw, dict) or not raw or not set(raw) <= {"rgb", "ir", "labels"}:
        raise DataError(f"{where}: 'pairs_dirs' maps rgb, ir and/or labels to folders (relative to 'path'), "
                        f"got {raw!r}")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str) or not v.strip():
            raise DataError(f"{where}: 'pairs_dirs' {k}: expected a folder, got {v!r}")
        p = Path(v) if Path(v).is_absolute() else root / v
        if not p.is_dir():
            raise DataError(f"{where}: 'pairs_dirs' {k}: {p} is not a folder")
        out[k] = p
    return out
