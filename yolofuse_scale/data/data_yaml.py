"""``data.yaml`` parsed and checked into a :class:`~yolofuse_scale.data.config.DatasetSpec`: its keys, each refused
with its file and line when wrong (the layout and ``pairs_dirs:`` by ``layouts.py``, ``ir_mapping:`` and
``ir_homography:`` by ``ir_read.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from yolofuse_scale.data.config import (
    LABEL_POLICIES,
    REGISTRATIONS,
    TASKS,
    UNION_IOU,
    DataError,
    DatasetSpec,
    IRRead,
    key_line,
    names_brief,
)
from yolofuse_scale.data.ir_read import parse_homography, parse_ir_mapping
from yolofuse_scale.data.layouts import parse_pairs_dirs, recognise_layout


def _names(raw: Any, where: Path) -> dict[int, str]:
    """Class names as ``{0: name, 1: ...}`` from a list or a mapping; ids must be 0..n-1."""
    if isinstance(raw, list):
        names = dict(enumerate(raw))
    elif isinstance(raw, dict):
        try:
            names = {int(k): v for k, v in raw.items()}
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: 'names' keys must be class ids 0..n-1 ({e})") from e
    else:
        kind = type(raw).__name__
        raise DataError(f"{where}: 'names' must be a list or a mapping of class id to name, got {kind}")
    if not names or sorted(names) != list(range(len(names))):
        ids = sorted(names)
        raise DataError(f"{where}: 'names' must number the classes 0..n-1 without gaps, got ids {ids}")
    return {k: str(v) for k, v in sorted(names.items())}


def _check_nc(d: dict, names: dict[int, str], path: Path, text: str) -> None:
    """``nc:`` is optional (the count is ``names``'); when given it must be that count: a file whose
    ``nc`` says 3 and ``names`` lists 2 was edited halfway, and which of the two is right is not ours to guess."""
    if "nc" not in d:
        return
    nc = d["nc"]
    if isinstance(nc, int) and not isinstance(nc, bool) and nc == len(names):
        return
    raise DataError(f"{path}{key_line(text, 'nc')}: 'nc' is {nc!r} but 'names' lists {len(names)} class(es) "
                    f"({names_brief(names)}); make them agree, or remove 'nc' ('names' alone gives the count)")


def _choice(d: dict, path: Path, text: str, key: str, choices: tuple[str, ...], why: str) -> str:
    """``d[key]`` (default: the first choice), refused with its line when it is none of ``choices``."""
    value = d.get(key, choices[0])
    if value not in choices:
        raise DataError(f"{path}{key_line(text, key)}: '{key}' must be {why}, got {value!r}")
    return value


def _task(d: dict, path: Path, text: str) -> str:
    return _choice(d, path, text, "task", TASKS, f"one of {', '.join(TASKS)} (what the label files hold: detect "
                   "'cls xc yc w h', obb 'cls x1 y1 x2 y2 x3 y3 x4 y4')")


def _labels_ir(d: dict, path: Path, text: str, images_dir: str, ir_dir: str) -> str | None:
    """``labels_ir:``: one folder name (no path), which is none of the other roles' names."""
    raw = d.get("labels_ir")
    if raw is None:
        return None
    where = f"{path}{key_line(text, 'labels_ir')}"
    if not isinstance(raw, str) or not raw.strip() or raw != Path(raw).name or raw in (".", ".."):
        raise DataError(f"{where}: 'labels_ir' names the folder of the IR images' labels, one folder name that "
                        f"takes the place of '{images_dir}' in an image's path as 'labels' does (e.g. labelsIR), "
                        f"got {raw!r}")
    taken = {"labels": "the RGB labels'", images_dir: "the RGB images'", ir_dir: "the IR images'"}
    if raw in taken:
        raise DataError(f"{where}: 'labels_ir' is {raw!r}, which is already {taken[raw]} folder name; the IR labels "
                        "need a folder of their own (e.g. labelsIR)")
    return raw


def _label_policy(d: dict, path: Path, text: str, labels_ir: str | None) -> dict[str, str]:
    """``label_policy:``: one of ``LABEL_POLICIES`` for every split, or a mapping split -> policy."""
    raw = d.get("label_policy")
    if raw is None:
        return {}
    where = f"{path}{key_line(text, 'label_policy')}"
    forms = (f"one of {', '.join(LABEL_POLICIES)} for every split, or a mapping such as {{train: union, val: ir}} "
             "(splits train, val, test)")
    per_split = {k: raw for k in ("train", "val", "test")} if isinstance(raw, str) else raw
    if not isinstance(per_split, dict) or not per_split or not set(map(str, per_split)) <= {"train", "val", "test"} \
            or not all(v in LABEL_POLICIES for v in per_split.values()):
        raise DataError(f"{where}: 'label_policy' must be {forms}; got {raw!r}")
    if labels_ir is None and any(v != "rgb" for v in per_split.values()):
        raise DataError(f"{where}: 'label_policy' {raw!r} needs the IR images' own labels: name their folder with "
                        "'labels_ir' (e.g. labels_ir: labelsIR); without it both images share the labels/ files")
    return {str(k): str(v) for k, v in per_split.items()}


def _union_iou(d: dict, path: Path, text: str) -> float:
    raw = d.get("label_union_iou", UNION_IOU)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw <= 1:
        raise DataError(f"{path}{key_line(text, 'label_union_iou')}: 'label_union_iou' must be a number in (0, 1] "
                        f"(the rotated IoU at which an RGB box and an IR box are one object), got {raw!r}")
    return float(raw)


def _registration(d: dict, path: Path, text: str) -> str:
    return _choice(d, path, text, "registration", REGISTRATIONS, "aligned (IR registered to RGB pixel for pixel) or "
                   "loose (off by pixels or percent from pair to pair)")


def load_data_config(path: str | Path, splits: Iterable[str] = ("train", "val")) -> DatasetSpec:
    """Parse and check a ``data.yaml`` (``yaml.safe_load``).

    ``path:`` relative to the yaml's folder (the folder itself when absent); split entries relative to
    ``path:``. ``splits``: the splits the command reads (training: train and val; ``val --split
    test``: test). Raises :class:`DataError` naming the file for a missing key, bad ``names``, an
    ``nc`` that disagrees with ``names`` (and its line), an entry of one of ``splits`` that does not
    exist or is not in the file, an ``ir_channels`` other than 1 or 3, or a bad ``task``, ``labels_ir``,
    ``label_policy``, ``label_union_iou`` or ``registration`` (with their lines). A missing entry of another split
    is not an error (nothing reads it): it becomes one line of ``warnings``.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"{path}: data config not found")
    try:
        text = path.read_text()
        d = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a mapping with keys path, train, val, names")
    missing = [k for k in ("train", "val", "names") if d.get(k) in (None, "", [])]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    root = Path(str(d.get("path") or path.parent))
    root = (root if root.is_absolute() else path.parent / root).resolve()
    if not root.is_dir():
        raise DataError(f"{path}: 'path' {root} is not a folder")

    used = tuple(splits)
    warnings: list[str] = []

    def entries(key: str, split: str | None = None) -> list[Path]:
        raw = d[key]
        out = []
        for item in raw if isinstance(raw, list) else [raw]:
            p = Path(str(item))
            p = p if p.is_absolute() else root / p
            if not p.exists():
                what = f"{path}: '{key}' entry {item!r} -> {p} does not exist"
                if (split or key) in used:
                    raise DataError(what)
                # e.g. a test set not shipped with this copy: training never reads it (checked by val --split test)
                warnings.append(f"{what} (not used here: this command reads {', '.join(used)})")
            out.append(p)
        return out

    raw_ch = d.get("ir_channels", 3)
    if raw_ch not in (1, 3) or isinstance(raw_ch, bool):  # True == 1 in Python; reject it anyway
        raise DataError(f"{path}: 'ir_channels' must be 1 or 3, got {raw_ch!r}")
    names = _names(d["names"], path)
    _check_nc(d, names, path, text)
    extra = {k: entries(k) for k in ("test",) if d.get(k)}
    layout, layout_why = recognise_layout(d, path, text, root)
    rgbt = layout == "yolov11-rgbt"  # its visible/ and infrared/ folders take the place of images/ and imagesIR/
    images_dir = str(d.get("images_dir") or ("visible" if rgbt else "images"))
    ir_dir = str(d.get("ir_dir") or ("infrared" if rgbt else "imagesIR"))
    labels_ir = _labels_ir(d, path, text, images_dir, ir_dir)
    missrate = d.get("missrate")
    if missrate is not None and (not isinstance(missrate, str) or not missrate.strip()):
        raise DataError(f"{path}{key_line(text, 'missrate')}: 'missrate' names the KAIST annotation file "
                        f"(e.g. kaist_annotations.json, relative to 'path'), got {missrate!r}")
    ir_splits = None
    if layout == "deyolo":
        ir_splits = {}
        for k in ("train", "val", "test"):
            if d.get(k + "2"):
                ir_splits[k] = entries(k + "2", k)
            elif d.get(k) and (k in used or k != "test"):
                raise DataError(f"{path}: layout deyolo pairs '{k}' (RGB) with '{k}2' (IR), and '{k}2' is missing")
    spec = DatasetSpec(
        yaml_path=path,
        root=root,
        train=entries("train"),
        val=entries("val"),
        names=names,
        ir_dir=ir_dir,
        images_dir=images_dir,
        ir_channels=int(raw_ch),
        extra_splits=extra or None,
        warnings=tuple(warnings),
        missrate=(root / missrate).resolve() if missrate else None,
        task=_task(d, path, text),
        labels_ir=labels_ir,
        label_policy=_label_policy(d, path, text, labels_ir),
        union_iou=_union_iou(d, path, text),
        registration=_registration(d, path, text),
        layout=layout,
        layout_why=layout_why,
        ir_splits=ir_splits,
        pairs_dirs=parse_pairs_dirs(d, path, text, root),
        ir_read=IRRead(parse_ir_mapping(d.get("ir_mapping"), f"{path}{key_line(text, 'ir_mapping')}"),
                       parse_homography(d.get("ir_homography"), f"{path}{key_line(text, 'ir_homography')}")),
    )
    for name in used:
        spec.split(name)  # a split the command reads but the file lacks: named with those it has
    return spec
