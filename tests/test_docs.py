"""The README's layout ("Layout: one file for each concern") names every module of the package, so a newcomer
finds the one file for each concern there; a module added without its line fails here.

A module is named when the block holds its path (``yolofuse_scale/data/cache.py``, or ``engine/runlog.py`` in
another module's line), when its package's line (``yolofuse_scale/bench/``) names it (``sweep``), or when a
line of a module beside it names its file (``plots.py`` in ``engine/outputs.py``'s line). A package's
``__init__.py`` is named by its package's line or by its modules' lines.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "yolofuse_scale"


def _layout_entries() -> dict[str, str]:
    """Path -> its text (first line and continuation lines), in the README's layout block."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout: one file for each concern", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    path = None
    for line in block.splitlines():
        if line.strip() and not line[0].isspace():
            path, _, rest = line.partition(" ")
            entries[path] = rest
        elif path is not None:
            entries[path] += " " + line.strip()
    return entries


def _named(module: Path, entries: dict[str, str]) -> bool:
    rel = module.relative_to(ROOT).as_posix()  # yolofuse_scale/data/cache.py
    folder = rel.rpartition("/")[0] + "/"
    inner = rel.removeprefix("yolofuse_scale/")  # data/cache.py
    if module.name == "__init__.py":
        return rel in entries or any(p.startswith(folder) for p in entries)
    everything = " ".join(f"{p} {t}" for p, t in entries.items())
    if re.search(rf"(?<![\w/.])(yolofuse_scale/)?{re.escape(inner)}(?!\w)", everything):
        return True
    word = rf"(?<![\w/.]){re.escape(module.stem)}(?![\w/])"
    if folder in entries and re.search(word, entries[folder]):
        return True
    siblings = [t for p, t in entries.items() if p.startswith(folder) and p.count("/") == folder.count("/")]
    return any(re.search(rf"(?<![\w/.]){re.escape(module.name)}(?!\w)", t) for t in siblings)


def test_the_readme_layout_names_every_module_of_the_package():
    entries = _layout_entries()
    assert "yolofuse_scale/engine/strategy/" in entries and "train.py" in entries  # the block was read
    missing = sorted(p.relative_to(ROOT).as_posix() for p in PKG.rglob("*.py") if not _named(p, entries))
    assert missing == [], f"README.md's layout block names no line for: {missing}"


def test_the_layout_names_no_module_that_is_not_there():
    """Every path the block starts a line with exists (a moved or removed module leaves no stale line)."""
    stale = sorted(p for p in _layout_entries() if not (ROOT / p).exists())
    assert stale == [], stale
