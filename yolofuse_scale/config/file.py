"""config.yaml, read back: ``--config FILE``'s values, each checked and located (file and line).

The file is YAML, loaded safely (a tag that would build a Python object is refused). Its layout:
``version: 2`` then one mapping per section (``sections.py``); a value is the type of its field (YAML's
guesses are corrected where a flag would be: ``1e-3`` is text to PyYAML and accepted as a number;
``no``/``off`` are booleans and refused for a text setting, with a hint). Every refusal names the file,
the line and the key as the file writes it.

Version 1, every file without ``version`` (runs before the sections were split), had one ``train``
section holding what is now ``train``, ``checkpoint``, ``parallel`` and ``log``: its keys are read into
their sections (a message still names ``train.keep_last`` where the file says so), and its
``benchmark_skip_grad_sync: false`` is dropped (that switch is no setting any more; ``true`` is refused:
the benchmark sets it itself). The other sections did not change. The new sections are accepted in a file
without ``version`` too, so a hand-written file need not declare one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from yolofuse_scale.config.sections import CONFIG_VERSION, SECTION_OF, SECTIONS, field_type, knobs
from yolofuse_scale.errors import ConfigError

#: version 1's ``train`` keys that are no setting any more, with why
DROPPED_V1 = {"benchmark_skip_grad_sync": "the scaling benchmark's no-sync runs set it themselves, bench/no_sync.py"}


class ConfigFile(NamedTuple):
    """A ``--config`` file's settings in today's layout, typed, and where each one was written."""

    values: dict[str, dict[str, Any]]  # {section: {key: value}}
    where: dict[tuple[str, str], str]  # (section, key) -> "FILE:LINE: train.keep_last" (as the file names it)


def read_config_file(path: str) -> ConfigFile:
    """Read ``path`` (see the module docstring): unknown sections and keys, wrong types and a key set twice
    are refused with the file and line; the values' ranges are the sections' checks (``flags.py``)."""
    data, lines = _load(path)
    version = data.pop("version", 1)
    if version not in (1, CONFIG_VERSION) or isinstance(version, bool):
        raise ConfigError(f"{_at(path, lines, 'version')}: version {version!r}: this yolofuse-scale reads config "
                          f"versions 1 and {CONFIG_VERSION} (a newer one wrote the file?)")
    values: dict[str, dict[str, Any]] = {}
    where: dict[tuple[str, str], str] = {}
    for section, settings in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{_at(path, lines, section)}: unknown section {section!r}"
                              f"{_did_you_mean(section, SECTIONS)} (the sections are {', '.join(SECTIONS)})")
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(f"{_at(path, lines, section)}: section {section!r} must be a mapping of settings, "
                              f"got {type(settings).__name__} {settings!r}")
        for key, value in (settings or {}).items():
            at, name = _at(path, lines, section, key), f"{section}.{key}"
            home = _home(section, key, version)
            if home is None and version == 1 and section == "train" and key in DROPPED_V1:
                if value is not False:
                    raise ConfigError(f"{at}: {name}: {value!r} is not a setting any more ({DROPPED_V1[key]}); "
                                      "remove the line")
                continue
            if home is None:
                raise ConfigError(f"{at}: unknown setting {name}{_elsewhere(section, key)}")
            if home in where:
                raise ConfigError(f"{at}: {name} sets {'.'.join(home)} again ({where[home]} set it already)")
            knob = knobs(SECTIONS[home[0]])[key]
            values.setdefault(home[0], {})[key] = _typed(value, knob.field, f"{at}: {name}")
            where[home] = f"{at}: {name}"
    return ConfigFile(values, where)


def _home(section: str, key: str, version: int) -> tuple[str, str] | None:
    """Where a file's ``section.key`` lives today: (section, key), or None for an unknown one."""
    if key in knobs(SECTIONS[section]):
        return section, key
    if version == 1 and section == "train" and key in SECTION_OF:  # version 1's train held four sections
        return SECTION_OF[key], key
    return None


def _elsewhere(section: str, key: str) -> str:
    if key in SECTION_OF:
        return f" (it belongs in the {SECTION_OF[key]} section)"
    return _did_you_mean(key, knobs(SECTIONS[section]))


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _at(path: str, lines: dict[tuple, int], *key: str) -> str:
    return f"{path}:{lines[key]}" if key in lines else path


def _load(path: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """The file's mapping (safe loading) and the 1-based line of every section and setting in it."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    d, root = safe_yaml(text, path, "config")
    if d is None:
        return {}, {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(d).__name__}")
    lines: dict[tuple, int] = {}
    for key, sub in root.value if isinstance(root, yaml.MappingNode) else []:
        lines[(key.value,)] = key.start_mark.line + 1
        for name, _ in sub.value if isinstance(sub, yaml.MappingNode) else []:
            lines[(key.value, name.value)] = name.start_mark.line + 1
    return d, lines


def safe_yaml(text: str, path: str | Path, what: str) -> tuple[Any, Any]:
    """``text`` loaded safely (no tag builds an object) and composed (its nodes carry the lines), for a ``what``
    file (config, sweep): a YAML error is one ConfigError naming the file, its line and the problem, and so is a
    file nested past Python's recursion limit."""
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not a valid {what} YAML ({getattr(e, 'problem', None) or e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None


def _typed(value: Any, f: dataclasses.Field, what: str) -> Any:
    """``value`` as the type of setting ``f`` (``sections.field_type``), or a :class:`ConfigError` saying what was
    expected.

    YAML guesses types: ``1e-3`` is a string to PyYAML (it wants ``1.0e-3``) and is accepted for a
    number, as the flag would be; ``no``/``off`` are booleans and are refused for a text setting.
    """
    if value is None and f.default is None:
        return None
    kind = field_type(f)
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[kind]
    hint = " (YAML reads yes/no/on/off as booleans: quote the value)" if kind is str and isinstance(value, bool) else ""
    raise ConfigError(f"{what} must be {expected}, got {value!r}{hint}")
