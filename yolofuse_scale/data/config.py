"""``data.yaml``: where the pairs are, what the classes are called, how IR is fed."""

from __future__ import annotations

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


def load_data_config(path: str | Path) -> DatasetSpec:
    """Parse and check a ``data.yaml`` (``yaml.safe_load``).

    ``path:`` relative to the yaml's folder (the folder itself when absent); split entries relative to
    ``path:``. Raises :class:`DataError` naming the file for a missing key, bad ``names``, a split
    entry that does not exist or an ``ir_channels`` other than 1 or 3.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"{path}: data config not found")
    try:
        d = yaml.safe_load(path.read_text())
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

    def entries(key: str) -> list[Path]:
        raw = d[key]
        out = []
        for item in raw if isinstance(raw, list) else [raw]:
            p = Path(str(item))
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise DataError(f"{path}: '{key}' entry {item!r} -> {p} does not exist")
            out.append(p)
        return out

    raw_ch = d.get("ir_channels", 3)
    if raw_ch not in (1, 3) or isinstance(raw_ch, bool):  # True == 1 in Python; reject it anyway
        raise DataError(f"{path}: 'ir_channels' must be 1 or 3, got {raw_ch!r}")
    extra = {k: entries(k) for k in ("test",) if d.get(k)}
    return DatasetSpec(
        yaml_path=path,
        root=root,
        train=entries("train"),
        val=entries("val"),
        names=_names(d["names"], path),
        ir_dir=str(d.get("ir_dir") or "imagesIR"),
        images_dir=str(d.get("images_dir") or "images"),
        ir_channels=int(raw_ch),
        extra_splits=extra or None,
    )
