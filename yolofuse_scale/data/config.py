"""``data.yaml``'s typed record: where the pairs are, what the classes are called, how IR is fed and read
(:class:`IRMapping`, :class:`IRRead`), what the labels hold (``task``) and, when the IR image has labels of its own,
which labels each split uses (``labels_ir``, ``label_policy``); and the checks of a dataset against a run's task and
a model's classes. ``data_yaml.py`` parses a file into it (:func:`~yolofuse_scale.data.data_yaml.load_data_config`).
"""

from __future__ import annotations

import math
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
#: ``registration:``: how well the IR image is registered to RGB's. ``aligned`` (the default: pixel for pixel, as
#: LLVIP, FLIR's aligned subset, M3FD) or ``loose`` (off by pixels or percent, varying from pair to pair: cheap
#: rigs, a drifting calibration, parallax; KAIST and DroneVehicle are known for it). A ``loose`` set trains the
#: fusions that gain from it with the IR misregistration augmentation unless its bounds are set or the training
#: boxes are the IR image's own (data/augment.py; ``RunConfig.training_recipe``).
REGISTRATIONS = ("aligned", "loose")
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
            ok = mode in IR_MAPPINGS and (mode in ("minmax", "shift8")
                                          or (finite_number(lo) and finite_number(hi) and lo < hi))
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
    #: ``registration:`` (``REGISTRATIONS``): aligned or loose pairs; decides the misregistration's default
    registration: str = "aligned"

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


def names_brief(names: dict[int, str], shown: int = 8) -> str:
    """The first ``shown`` class names, and how many more (for a message)."""
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(list(names.values())[:shown]) + more


def key_line(text: str, key: str) -> str:
    """``:LINE`` of top-level ``key`` in a YAML text (1-based), or "" when it cannot be found."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ""
    for k, _ in root.value if isinstance(root, yaml.MappingNode) else []:
        if k.value == key:
            return f":{k.start_mark.line + 1}"
    return ""


def finite_number(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (a YAML ``true`` is no number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_task(spec: DatasetSpec, task: str | None, flag: str = "--task") -> str:
    """The task a run trains or scores: ``task`` (the run's ``--task``, or a weights file's) must be the dataset's
    (``task:`` in data.yaml, ``detect`` when absent), refused otherwise; None: the dataset's."""
    if task is None or task == spec.task:
        return spec.task
    try:
        text = spec.yaml_path.read_text()
    except OSError:
        text = ""
    line = key_line(text, "task")
    stated = f"says 'task: {spec.task}'" if line else "has no 'task:' key (so its labels are 'detect' rows)"
    raise DataError(f"{spec.yaml_path}{line}: {flag} {task} but the dataset {stated}: the label files hold one kind "
                    f"of box; train with {flag} {spec.task}, or use a dataset whose data.yaml says 'task: {task}'")


def check_classes(spec: DatasetSpec, names: dict[int, str], weights: str) -> str | None:
    """Whether data labelled by ``spec`` can be scored with a model whose classes are ``names`` (read
    from the weights file ``weights``): another class count is refused (a label id the model cannot
    predict would be scored, and averaged over, as a class of its own); the same count under other names
    is returned as one warning line (ids are what is scored; a renamed class may be intended)."""
    if spec.nc != len(names):
        raise DataError(f"{spec.yaml_path} names {spec.nc} class(es) ({names_brief(spec.names)}) but {weights} was "
                        f"trained on {len(names)} ({names_brief(names)}): evaluate with the data.yaml it was trained "
                        "on, or one with the same classes")
    differ = [f"{i}: {name!r} here, {names.get(i)!r} in the weights" for i, name in spec.names.items()
              if name != names.get(i)]
    if not differ:
        return None
    return (f"{spec.yaml_path}: class names differ from {weights}'s (same count, {spec.nc}) for id(s) "
            f"{'; '.join(differ)}; scored by id, reported under the weights' names")
