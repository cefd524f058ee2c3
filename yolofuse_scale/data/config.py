"""``data.yaml``: where the pairs are, what the classes are called, how IR is fed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolofuse_scale.errors import UserError


class DataError(UserError, ValueError):
    """Bad input data. The message names the file (and line) and says what is wrong."""


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
    #: ``task:`` (``TASKS``): the kind of label rows; a run's ``--task`` must agree (:func:`check_task`).
    #: MINIMAL OBB PATH (t2x-obbcore, issue 26): the data side (t2x-obbdata) replaces this with its own.
    task: str = "detect"

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


# MINIMAL OBB PATH (t2x-obbcore, issue 26): ``task:`` and its check, as the model side needs them; the data side
# (t2x-obbdata) owns them and replaces these.
#: ``task:``: what the label files hold: ``detect`` rows ``cls xc yc w h``; ``obb`` rows ``cls x1 y1 ... x4 y4``.
TASKS = ("detect", "obb")


def _task(d: dict, path: Path, text: str) -> str:
    task = d.get("task", "detect")
    if task not in TASKS:
        raise DataError(f"{path}{_key_line(text, 'task')}: 'task' must be one of {', '.join(TASKS)} (what the label "
                        f"files hold: detect 'cls xc yc w h', obb 'cls x1 y1 x2 y2 x3 y3 x4 y4'), got {task!r}")
    return task


def check_task(spec: DatasetSpec, task: str | None, flag: str = "--task") -> str:
    """The task a run trains: ``task`` (the run's ``--task``) must be the dataset's (``task:`` in data.yaml, detect
    when absent), refused otherwise; None: the dataset's."""
    if task is None or task == spec.task:
        return spec.task
    text = spec.yaml_path.read_text() if spec.yaml_path.is_file() else ""
    line = _key_line(text, "task")
    stated = f"says 'task: {spec.task}'" if line else "has no 'task:' key (so its labels are 'detect' rows)"
    raise DataError(f"{spec.yaml_path}{line}: {flag} {task} but the dataset {stated}: the label files hold one kind "
                    f"of box; train with {flag} {spec.task}, or use a dataset whose data.yaml says 'task: {task}'")


def load_data_config(path: str | Path, splits: Iterable[str] = ("train", "val")) -> DatasetSpec:
    """Parse and check a ``data.yaml`` (``yaml.safe_load``).

    ``path:`` relative to the yaml's folder (the folder itself when absent); split entries relative to
    ``path:``. ``splits``: the splits the command reads (training: train and val; ``val --split
    test``: test). Raises :class:`DataError` naming the file for a missing key, bad ``names``, an
    ``nc`` that disagrees with ``names`` (and its line), an entry of one of ``splits`` that does not
    exist or is not in the file, or an ``ir_channels`` other than 1 or 3. A missing entry of another
    split is not an error (nothing reads it): it becomes one line of ``warnings``.
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

    def entries(key: str) -> list[Path]:
        raw = d[key]
        out = []
        for item in raw if isinstance(raw, list) else [raw]:
            p = Path(str(item))
            p = p if p.is_absolute() else root / p
            if not p.exists():
                what = f"{path}: '{key}' entry {item!r} -> {p} does not exist"
                if key in used:
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
    missrate = d.get("missrate")
    if missrate is not None and (not isinstance(missrate, str) or not missrate.strip()):
        raise DataError(f"{path}{_key_line(text, 'missrate')}: 'missrate' names the KAIST annotation file "
                        f"(e.g. kaist_annotations.json, relative to 'path'), got {missrate!r}")
    spec = DatasetSpec(
        yaml_path=path,
        root=root,
        train=entries("train"),
        val=entries("val"),
        names=names,
        ir_dir=str(d.get("ir_dir") or "imagesIR"),
        images_dir=str(d.get("images_dir") or "images"),
        ir_channels=int(raw_ch),
        extra_splits=extra or None,
        warnings=tuple(warnings),
        missrate=(root / missrate).resolve() if missrate else None,
        task=_task(d, path, text),
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
