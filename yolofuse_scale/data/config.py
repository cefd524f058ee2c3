"""``data.yaml``: where the pairs are, what the classes are called, how IR is fed, what the labels hold (``task``)
and, when the IR image has labels of its own, which labels each split uses (``labels_ir``, ``label_policy``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolofuse_scale.errors import UserError


class DataError(UserError, ValueError):
    """Bad input data. The message names the file (and line) and says what is wrong."""


#: ``task:``: what a dataset's label files hold (``data/labels.py`` knows each kind's rows): ``detect``, the
#: axis-aligned ``cls xc yc w h``; ``obb``, oriented boxes as Ultralytics writes them, ``cls x1 y1 ... x4 y4``.
TASKS = ("detect", "obb")
#: ``label_policy:``: which labels a split trains on or is scored against when the IR image has its own
#: (``labels_ir:``): the RGB image's, the IR image's, or their union (``data/modality.py``).
LABEL_POLICIES = ("rgb", "ir", "union")
#: The policy of a split that data.yaml does not name: the IR labels when there are IR labels (what the
#: DroneVehicle papers train and score on: docs/data.md), else the one label set there is.
DEFAULT_POLICY_WITH_IR = "ir"
UNION_IOU = 0.5  #: ``label_union_iou:``'s default: two boxes of one object overlap at least this much
#: ``layout:``: how a split's files pair up and where their labels are (``data/layouts.py``); recognised when absent.
LAYOUTS = ("yolofuse", "yolov11-rgbt", "deyolo")
#: ``ir_mapping:``'s modes: how an IR frame deeper than 8 bits becomes the model's 8-bit pixels (``decode.map_depth``).
IR_MAPPINGS = ("minmax", "shift8", "range", "percentile")


@dataclass(frozen=True)
class IRMapping:
    """``ir_mapping:``: how a radiometric IR frame (16-bit, or float) becomes 8 bits; 8-bit IR is used as it is.

    ``minmax``: each frame's own min..max to 0..255 (the default, what every release before did: the same
    temperature gets another value in every frame); ``shift8``: ``raw >> 8`` (``floor(raw / 256)``, what Ultralytics
    does to 16-bit files); ``range``: raw ``lo``..``hi`` to 0..255, clipped, the same in every frame (data.yaml may
    give the range in degrees, converted to raw here); ``percentile``: ``range`` with ``lo``/``hi`` the raw levels
    at ``percentiles`` of the training set's IR frames, resolved once at start (``data/levels.py``).
    """

    mode: str = "minmax"
    lo: float | None = None  #: raw value mapped to 0 (range; percentile once resolved)
    hi: float | None = None  #: raw value mapped to 255
    percentiles: tuple[float, float] | None = None  #: percentile: (p_lo, p_hi) in 0..100
    stated: str = "minmax (per frame; the default)"  #: as data.yaml states it, for the start-up log
    chosen: bool = False  #: data.yaml names it (else the default, warned about when IR is deeper than 8 bits)

    @property
    def resolved(self) -> bool:
        """Whether the mapping can be applied (a percentile mapping needs its levels first)."""
        return self.mode != "percentile" or (self.lo is not None and self.hi is not None)

    def key(self) -> str:
        """What the mapped pixels depend on (the pair cache's key; the run's record)."""
        if self.mode in ("minmax", "shift8"):
            return self.mode
        return f"{self.mode}:{self.lo!r}:{self.hi!r}"

    def describe(self) -> str:
        if self.mode == "percentile" and self.resolved:
            return f"{self.stated} -> raw {self.lo:g}..{self.hi:g}"
        return self.stated

    def record(self) -> dict[str, Any]:
        """As the run records it (``run_meta.json``, weights files): plain values."""
        return {"mode": self.mode, "lo": self.lo, "hi": self.hi,
                "percentiles": list(self.percentiles) if self.percentiles else None, "stated": self.stated}

    @classmethod
    def from_record(cls, rec: Any, where: str) -> IRMapping:
        """The mapping a weights file records (:meth:`record`; None: the default a run without one used)."""
        if rec is None:
            return cls()
        try:
            mode, lo, hi, pct = rec["mode"], rec.get("lo"), rec.get("hi"), rec.get("percentiles")
            ok = mode in IR_MAPPINGS and (mode in ("minmax", "shift8") or (_number(lo) and _number(hi) and lo < hi))
            pct = tuple(float(v) for v in pct) if pct is not None else None
        except (TypeError, KeyError, AttributeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{where}: its ir_mapping record is not one this version reads: {rec!r}")
        return cls(mode, lo, hi, pct, str(rec.get("stated") or mode), chosen=True)

    def same_rule(self, other: IRMapping) -> bool:
        """Whether two mappings state the same rule (a percentile's levels aside: they come from the data)."""
        if self.mode != other.mode:
            return False
        if self.mode == "percentile":
            return self.percentiles == other.percentiles
        return self.mode != "range" or (self.lo, self.hi) == (other.lo, other.hi)


@dataclass(frozen=True)
class IRRead:
    """How a pair's IR file is read beyond decoding: the depth mapping, and an unaligned rig's registration.

    ``homography``: ``ir_homography:``, the 3x3 matrix that maps an IR pixel ``(x, y, 1)`` (as displayed, pixel
    centres at integer coordinates, OpenCV's convention) to its RGB pixel; the IR frame is warped into RGB's frame at
    RGB's size when the pair is read (``decode.register_ir``), so labels stay in RGB's frame."""

    mapping: IRMapping = field(default_factory=IRMapping)
    homography: tuple[tuple[float, float, float], ...] | None = None

    def key(self) -> str:
        h = "" if self.homography is None else "|H:" + ",".join(repr(v) for row in self.homography for v in row)
        return self.mapping.key() + h


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``data.yaml``. Paths are absolute.

    ``train`` and ``val`` hold the split entries as written (folders, ``.txt`` lists of images or
    single images), resolved against ``root``; ``extra_splits`` holds optional ones such as ``test``.
    Only the entries of the splits the command reads are known to exist; ``warnings`` names the
    missing entries of the others (one line each, for the start-up log).
    """

    yaml_path: Path
    root: Path
    train: list[Path]
    val: list[Path]
    names: dict[int, str]
    ir_dir: str = "imagesIR"
    images_dir: str = "images"
    ir_channels: int = 3
    extra_splits: dict[str, list[Path]] | None = None
    warnings: tuple[str, ...] = ()
    #: ``missrate:``: KAIST ground truth with occlusion and ignore labels (``data/kaist_gt.py``, written by
    #: ``convert kaist``); ``val`` then reports KAIST's log-average miss rate beside mAP. None: mAP only.
    missrate: Path | None = None
    #: ``task:`` (``TASKS``): the kind of label rows; a run's ``--task`` must agree (:func:`check_task`)
    task: str = "detect"
    #: ``labels_ir:``: the folder name of the IR image's own labels (as ``labels`` for RGB's, same file names);
    #: None: one label set for both images
    labels_ir: str | None = None
    #: ``label_policy:`` per split (``train``, ``val``, ``test``): ``LABEL_POLICIES``; see :meth:`policy`
    label_policy: dict[str, str] = field(default_factory=dict)
    #: ``label_union_iou:``: the rotated IoU at which an RGB and an IR box are one object (policy ``union``)
    union_iou: float = UNION_IOU

    def policy(self, split: str) -> str:
        """Which labels ``split`` trains on or is scored against: ``rgb`` (``labels/``), ``ir`` (``labels_ir``) or
        ``union``; ``rgb`` when the IR image has no labels of its own."""
        if self.labels_ir is None:
            return "rgb"
        return self.label_policy.get(split, DEFAULT_POLICY_WITH_IR)
    #: ``layout:`` (``LAYOUTS``): how files pair and where labels are (``data/layouts.py``); recognised when absent
    layout: str = "yolofuse"
    #: how the layout was decided, for the start-up log ("stated", or what was recognised)
    layout_why: str = "stated"
    #: DEYOLO: the IR entries of each split (``train2``, ``val2``, ``test2``), paired with ``train`` ... by position
    ir_splits: dict[str, list[Path]] | None = None
    #: ``pairs_dirs:``: what the relative paths of a pairs file (a ``.csv``/``.json`` split entry) are relative to,
    #: per column (``rgb``, ``ir``, ``labels``); absent: ``root``
    pairs_dirs: dict[str, Path] | None = None
    #: ``ir_mapping:`` and ``ir_homography:``
    ir_read: IRRead = field(default_factory=IRRead)

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def split(self, name: str) -> list[Path]:
        """The entries of split ``name`` (``train``, ``val`` or an extra split such as ``test``)."""
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        if self.extra_splits and name in self.extra_splits:
            return self.extra_splits[name]
        known = ", ".join(["train", "val", *(self.extra_splits or {})])
        raise DataError(f"{self.yaml_path}: no split {name!r} (has {known})")


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


def _brief(names: dict[int, str], shown: int = 8) -> str:
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(list(names.values())[:shown]) + more


def _key_line(text: str, key: str) -> str:
    """``:LINE`` of top-level ``key`` in a YAML text (1-based), or "" when it cannot be found."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ""
    for k, _ in root.value if isinstance(root, yaml.MappingNode) else []:
        if k.value == key:
            return f":{k.start_mark.line + 1}"
    return ""


def _check_nc(d: dict, names: dict[int, str], path: Path, text: str) -> None:
    """``nc:`` is optional (the count is ``names``'); when given it must be that count: a file whose
    ``nc`` says 3 and ``names`` lists 2 was edited halfway, and which of the two is right is not ours to guess."""
    if "nc" not in d:
        return
    nc = d["nc"]
    if isinstance(nc, int) and not isinstance(nc, bool) and nc == len(names):
        return
    raise DataError(f"{path}{_key_line(text, 'nc')}: 'nc' is {nc!r} but 'names' lists {len(names)} class(es) "
                    f"({_brief(names)}); make them agree, or remove 'nc' ('names' alone gives the count)")


def _task(d: dict, path: Path, text: str) -> str:
    task = d.get("task", "detect")
    if task not in TASKS:
        raise DataError(f"{path}{_key_line(text, 'task')}: 'task' must be one of {', '.join(TASKS)} (what the label "
                        f"files hold: detect 'cls xc yc w h', obb 'cls x1 y1 x2 y2 x3 y3 x4 y4'), got {task!r}")
    return task


def _labels_ir(d: dict, path: Path, text: str, images_dir: str, ir_dir: str) -> str | None:
    """``labels_ir:``: one folder name (no path), which is none of the other roles' names."""
    raw = d.get("labels_ir")
    if raw is None:
        return None
    where = f"{path}{_key_line(text, 'labels_ir')}"
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
    where = f"{path}{_key_line(text, 'label_policy')}"
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
        raise DataError(f"{path}{_key_line(text, 'label_union_iou')}: 'label_union_iou' must be a number in (0, 1] "
                        f"(the rotated IoU at which an RGB box and an IR box are one object), got {raw!r}")
    return float(raw)


def check_task(spec: DatasetSpec, task: str | None, flag: str = "--task") -> str:
    """The task a run trains or scores: ``task`` (the run's ``--task``, or a weights file's) must be the dataset's
    (``task:`` in data.yaml, ``detect`` when absent), refused otherwise; None: the dataset's."""
    if task is None or task == spec.task:
        return spec.task
    try:
        text = spec.yaml_path.read_text()
    except OSError:
        text = ""
    line = _key_line(text, "task")
    stated = f"says 'task: {spec.task}'" if line else "has no 'task:' key (so its labels are 'detect' rows)"
    raise DataError(f"{spec.yaml_path}{line}: {flag} {task} but the dataset {stated}: the label files hold one kind "
                    f"of box; train with {flag} {spec.task}, or use a dataset whose data.yaml says 'task: {task}'")
# ------------------------------------------------------------------------------------ layouts, IR reading
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


def _layout(d: dict, path: Path, text: str, root: Path) -> tuple[str, str]:
    """(layout, why) of a data.yaml: ``layout:`` when stated, else recognised from the peers' own keys and folders
    (DEYOLO's ``train2``/``val2``; YOLOv11-RGBT's ``visible``/``infrared`` twins), else YOLOFuse's."""
    if "layout" in d:
        layout = d["layout"]
        if layout not in LAYOUTS:
            raise DataError(f"{path}{_key_line(text, 'layout')}: 'layout' must be one of {', '.join(LAYOUTS)}, "
                            f"got {layout!r}")
        return layout, "stated (layout:)"
    if any(k in d for k in ("train2", "val2")):
        return "deyolo", "recognised: 'train2'/'val2' name the IR images, as DEYOLO's data.yaml does"
    if "ir_dir" not in d and "images_dir" not in d and _looks_like_rgbt(d, root):
        return "yolov11-rgbt", "recognised: 'visible' folders with 'infrared' twins, as YOLOv11-RGBT's layout"
    return "yolofuse", "the default"


def _pairs_dirs(d: dict, path: Path, text: str, root: Path) -> dict[str, Path] | None:
    raw = d.get("pairs_dirs")
    if raw is None:
        return None
    where = f"{path}{_key_line(text, 'pairs_dirs')}"
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


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _two(raw: Any) -> tuple[float, float] | None:
    """``[a, b]`` of two finite numbers with a < b, else None."""
    if isinstance(raw, list) and len(raw) == 2 and all(_number(v) for v in raw) and raw[0] < raw[1]:
        return float(raw[0]), float(raw[1])
    return None


MAPPING_FORMS = ("minmax | shift8 | {range: [lo, hi]} (raw values) | {range: [lo, hi], raw_per_degree: K, "
                 "raw_at_zero: Z} (degrees: raw = Z + K * T) | {percentile: [p_lo, p_hi]}")


def parse_ir_mapping(raw: Any, where: str) -> IRMapping:
    """``ir_mapping:`` of a data.yaml (``where``: ``FILE:LINE`` for messages); None: the default (``minmax``)."""
    if raw is None:
        return IRMapping()
    if raw == "minmax":
        return IRMapping("minmax", stated="minmax (per frame)", chosen=True)
    if raw == "shift8":
        return IRMapping("shift8", stated="shift8 (raw >> 8)", chosen=True)
    if not isinstance(raw, dict):
        raise DataError(f"{where}: 'ir_mapping' must be one of {MAPPING_FORMS}; got {raw!r}")
    modes = [k for k in ("range", "percentile") if k in raw]
    unknown = sorted(set(map(str, raw)) - {"range", "percentile", "raw_per_degree", "raw_at_zero"})
    if unknown or len(modes) != 1:
        what = f"unknown key(s) {', '.join(unknown)}" if unknown else "exactly one of range, percentile is needed"
        raise DataError(f"{where}: 'ir_mapping': {what}; the forms are {MAPPING_FORMS}")
    if modes == ["percentile"]:
        pct = _two(raw["percentile"])
        if pct is None or pct[0] < 0 or pct[1] > 100 or len(raw) > 1:
            raise DataError(f"{where}: 'ir_mapping' percentile must be [p_lo, p_hi] with 0 <= p_lo < p_hi <= 100 "
                            f"(and nothing else), got {raw!r}")
        return IRMapping("percentile", percentiles=pct, stated=f"percentile [{pct[0]:g}, {pct[1]:g}] of the "
                         "training set's IR", chosen=True)
    rng = _two(raw["range"])
    if rng is None:
        raise DataError(f"{where}: 'ir_mapping' range must be [lo, hi], two numbers with lo < hi, got {raw['range']!r}")
    if "raw_per_degree" not in raw and "raw_at_zero" not in raw:
        return IRMapping("range", rng[0], rng[1], stated=f"range raw [{rng[0]:g}, {rng[1]:g}]", chosen=True)
    k, z = raw.get("raw_per_degree"), raw.get("raw_at_zero", 0)
    if not _number(k) or k <= 0 or not _number(z):
        raise DataError(f"{where}: 'ir_mapping' degrees: raw_per_degree must be a positive number and raw_at_zero a "
                        f"number (raw = raw_at_zero + raw_per_degree * T; FLIR's centi-Kelvin files in degrees "
                        f"Celsius: 100 and 27315), got raw_per_degree={k!r}, raw_at_zero={z!r}")
    lo, hi = z + k * rng[0], z + k * rng[1]
    return IRMapping("range", lo, hi, chosen=True, stated=f"range [{rng[0]:g}, {rng[1]:g}] degrees "
                     f"(raw = {z:g} + {k:g} * T: raw {lo:g}..{hi:g})")


def _homography(raw: Any, where: str) -> tuple[tuple[float, float, float], ...] | None:
    """``ir_homography:``: 3 rows of 3 finite numbers, invertible (``yolofuse-scale register`` writes one)."""
    if raw is None:
        return None
    ok = isinstance(raw, list) and len(raw) == 3 and all(
        isinstance(r, list) and len(r) == 3 and all(_number(v) for v in r) for r in raw)
    if not ok:
        raise DataError(f"{where}: 'ir_homography' must be a 3x3 matrix, 3 rows of 3 numbers (IR pixel -> RGB "
                        f"pixel; `yolofuse-scale register` writes one), got {raw!r}")
    (a, b, c), (e, f, g), (h, i, j) = raw
    det = a * (f * j - g * i) - b * (e * j - g * h) + c * (e * i - f * h)
    scale = max(abs(v) for r in raw for v in r)
    if abs(det) <= 1e-12 * scale**3:
        raise DataError(f"{where}: 'ir_homography' is singular (determinant {det:g}): it maps the IR frame onto a "
                        "line or a point, not onto RGB's frame")
    return tuple(tuple(float(v) for v in r) for r in raw)


def load_data_config(path: str | Path, splits: Iterable[str] = ("train", "val")) -> DatasetSpec:
    """Parse and check a ``data.yaml`` (``yaml.safe_load``).

    ``path:`` relative to the yaml's folder (the folder itself when absent); split entries relative to
    ``path:``. ``splits``: the splits the command reads (training: train and val; ``val --split
    test``: test). Raises :class:`DataError` naming the file for a missing key, bad ``names``, an
    ``nc`` that disagrees with ``names`` (and its line), an entry of one of ``splits`` that does not
    exist or is not in the file, an ``ir_channels`` other than 1 or 3, or a bad ``task``, ``labels_ir``,
    ``label_policy`` or ``label_union_iou`` (with their lines). A missing entry of another split is not an
    error (nothing reads it): it becomes one line of ``warnings``.
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
    layout, layout_why = _layout(d, path, text, root)
    rgbt = layout == "yolov11-rgbt"  # its visible/ and infrared/ folders take the place of images/ and imagesIR/
    images_dir = str(d.get("images_dir") or ("visible" if rgbt else "images"))
    ir_dir = str(d.get("ir_dir") or ("infrared" if rgbt else "imagesIR"))
    labels_ir = _labels_ir(d, path, text, images_dir, ir_dir)
    missrate = d.get("missrate")
    if missrate is not None and (not isinstance(missrate, str) or not missrate.strip()):
        raise DataError(f"{path}{_key_line(text, 'missrate')}: 'missrate' names the KAIST annotation file "
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
        layout=layout,
        layout_why=layout_why,
        ir_splits=ir_splits,
        pairs_dirs=_pairs_dirs(d, path, text, root),
        ir_read=IRRead(parse_ir_mapping(d.get("ir_mapping"), f"{path}{_key_line(text, 'ir_mapping')}"),
                       _homography(d.get("ir_homography"), f"{path}{_key_line(text, 'ir_homography')}")),
    )
    for name in used:
        spec.split(name)  # a split the command reads but the file lacks: named with those it has
    return spec


def check_classes(spec: DatasetSpec, names: dict[int, str], weights: str) -> str | None:
    """Whether data labelled by ``spec`` can be scored with a model whose classes are ``names`` (read
    from the weights file ``weights``): another class count is refused (a label id the model cannot
    predict would be scored, and averaged over, as a class of its own); the same count under other names
    is returned as one warning line (ids are what is scored; a renamed class may be intended)."""
    if spec.nc != len(names):
        raise DataError(f"{spec.yaml_path} names {spec.nc} class(es) ({_brief(spec.names)}) but {weights} was "
                        f"trained on {len(names)} ({_brief(names)}): evaluate with the data.yaml it was trained "
                        "on, or one with the same classes")
    differ = [f"{i}: {name!r} here, {names.get(i)!r} in the weights" for i, name in spec.names.items()
              if name != names.get(i)]
    if not differ:
        return None
    return (f"{spec.yaml_path}: class names differ from {weights}'s (same count, {spec.nc}) for id(s) "
            f"{'; '.join(differ)}; scored by id, reported under the weights' names")
