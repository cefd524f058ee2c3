"""``yolofuse-scale tune --space FILE``: the sweep file, read and checked (every refusal names the file and line).

The file is YAML, loaded safely (no tag builds a Python object), at most :data:`MAX_BYTES`, and describes the
experiment; the command line's training flags are every trial's base configuration::

    metric: mAP50-95          # the per-epoch validation metric trials are compared on: mAP50, mAP50-95,
                              # precision, recall, fitness (higher is better) or val_loss (the validation's
                              # box + cls + dfl loss: lower is better; it moves from the first epoch on)
    scheduler: asha           # asha | median | none; or a mapping: {type: asha, grace_period: 1, reduction_factor: 2}
    num_samples: 4            # draws of the random settings (each grid point is drawn this many times)
    seed: 0                   # the draws' seed: the same file and seed give the same trials
    max_concurrent_trials: 2  # trials running at once (default: as many as the cluster holds when it starts)
    trial:                    # each trial is a Ray Train run of the loop: its workers and their resources
      workers: 2
      cpus_per_worker: 1
      gpus_per_worker: 0
      max_failures: 1
    space:                    # any training setting by its config key (lr, fusion, imgsz, seed, mosaic, ...)
      lr: {loguniform: [0.001, 0.1]}
      momentum: {uniform: [0.85, 0.95]}
      fusion: {choice: [early, mid, late]}
      seed: {grid: [0, 1]}
      recipe:                 # a bundle: a grid (or choice) of mappings, each a set of settings tried together
        grid: [{}, {mosaic: 0.0}, {hsv_h: 0.0, hsv_s: 0.0, hsv_v: 0.0}]

``grid`` values are all tried (their product over keys, times ``num_samples``); ``choice``, ``uniform`` and
``loguniform`` are drawn per trial. A key may be written ``optim.lr`` too (sections as in config.yaml). Every
value is checked as the setting's flag would be before any trial starts: a grid or choice value that the
setting refuses, a number range whose ends it refuses, an integer setting under a continuous distribution,
a setting the experiment decides itself (``output_dir``, ``resume``, ``overwrite``, ``save_on_each_node``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolofuse_scale.config import RunConfig
from yolofuse_scale.config.file import _typed, safe_yaml
from yolofuse_scale.config.sections import SECTION_OF, SECTIONS, knobs
from yolofuse_scale.errors import ConfigError

MAX_BYTES = 1 << 20  # a sweep file is a few hundred bytes; a larger one is not one
MAX_TRIALS = 10_000  # grid points x num_samples: more would only queue trials for weeks
#: the per-epoch metrics a trial reports (``report.py``) and whether higher or lower is better
METRICS = {"mAP50": "max", "mAP50-95": "max", "precision": "max", "recall": "max", "fitness": "max",
           "val_loss": "min"}
SCHEDULERS = ("asha", "median", "none")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform")
#: settings each trial's run folder and resume decide: not swept
FIXED = ("output_dir", "resume", "overwrite", "save_on_each_node")
TOP_KEYS = ("metric", "scheduler", "num_samples", "seed", "max_concurrent_trials", "trial", "space")
TRIAL_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "max_failures")


@dataclass(frozen=True)
class Dimension:
    """One swept key: a setting (``settings == (key,)``) or a bundle of settings (``bundle``)."""

    name: str  # the setting's key (lr), or the bundle's name
    kind: str  # grid, choice, uniform, loguniform
    values: tuple  # grid/choice: the values (a bundle's: mappings of key -> value); uniform/loguniform: (low, high)
    bundle: bool = False


@dataclass(frozen=True)
class Scheduler:
    kind: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file (module docstring)."""

    path: str
    dimensions: tuple[Dimension, ...]
    metric: str = "mAP50-95"
    scheduler: Scheduler = field(default_factory=Scheduler)
    num_samples: int = 1
    seed: int = 0
    max_concurrent_trials: int = 0  # 0: as many as fit
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 1

    @property
    def mode(self) -> str:
        """``max`` or ``min``: whether a higher or a lower :attr:`metric` is better."""
        return METRICS[self.metric]

    @property
    def grid_points(self) -> int:
        return math.prod(len(d.values) for d in self.dimensions if d.kind == "grid")

    @property
    def trials(self) -> int:
        return self.grid_points * self.num_samples

    def param_space(self) -> dict[str, Any]:
        """Ray Tune's ``param_space``: one entry per dimension (a bundle's values are mappings)."""
        from ray import tune

        make = {"grid": lambda v: tune.grid_search(list(v)), "choice": lambda v: tune.choice(list(v)),
                "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
        return {d.name: make[d.kind](d.values) for d in self.dimensions}


def apply_overrides(base: dict[str, dict[str, Any]], chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``base`` (``RunConfig.to_dict()``) with a trial's values set: ``{key: value}`` or ``{bundle: {key: value}}``."""
    values = {section: dict(settings) for section, settings in base.items()}
    for name, value in chosen.items():
        for key, v in (value.items() if isinstance(value, dict) else [(name, value)]):
            values[SECTION_OF[key]][key] = v
    return values


# ------------------------------------------------------------------------------------------ reading
def _load(path: str) -> tuple[dict, dict[tuple, int]]:
    """The file's mapping (safe loading) and the 1-based line of each top-level key and of each key under one."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"--space {path}: {size} bytes; a sweep file is at most {MAX_BYTES} bytes")
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"--space {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--space {path}: not a text file (UTF-8)") from None
    data, root = safe_yaml(text, path, "sweep")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with {', '.join(TOP_KEYS)} (a 'space' at least), got "
                          f"{type(data).__name__}")
    lines: dict[tuple, int] = {}
    for key, sub in root.value if isinstance(root, yaml.MappingNode) else []:
        lines[(str(key.value),)] = key.start_mark.line + 1
        for name, _ in sub.value if isinstance(sub, yaml.MappingNode) else []:
            lines[(str(key.value), str(name.value))] = name.start_mark.line + 1
    return data, lines


def _did_you_mean(name: Any, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    def __init__(self, path: str, lines: dict[tuple, int], base: dict[str, dict[str, Any]]):
        self.path, self.lines, self.base = path, lines, base

    def at(self, *key: str) -> str:
        line = self.lines.get(tuple(map(str, key))) or self.lines.get((str(key[0]),))
        return f"{self.path}:{line}" if line else self.path

    def refuse(self, key: tuple, message: str) -> ConfigError:
        return ConfigError(f"{self.at(*key)}: {message}")

    def integer(self, data: dict, key: str, low: int, default: int, where: tuple = ()) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.refuse((*where, key), f"{'.'.join((*where, key))} must be an integer >= {low}, got {value!r}")
        return value

    def number(self, data: dict, key: str, low: float, default: float, where: tuple = (), above: bool = False) -> float:
        value = data.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (above and value == low):
            raise self.refuse((*where, key), f"{'.'.join((*where, key))} must be a number {'>' if above else '>='} "
                                             f"{low}, got {value!r}")
        return float(value)

    # ---------------------------------------------------------------------------------- settings
    def setting_key(self, name: Any) -> str | None:
        """``lr`` or ``optim.lr`` -> ``lr``; None: not a setting (a bundle name, if its values are mappings)."""
        text = str(name)
        section, dot, key = text.partition(".")
        if dot:
            if section not in SECTIONS or key not in knobs(SECTIONS[section]):
                raise self.refuse(("space", text), f"unknown setting {text}{_did_you_mean(text, _all_keys())}")
            return key
        return text if text in SECTION_OF else None

    def check_value(self, key: str, value: Any, where: tuple, what: str) -> Any:
        """``value`` typed as setting ``key`` and accepted by its section's checks (with the base's other values)."""
        if key in FIXED:
            raise self.refuse(where, f"{key} is decided by the experiment for each trial; it is not swept")
        typed = _typed(value, knobs(SECTIONS[SECTION_OF[key]])[key].field, f"{self.at(*where)}: {what}")
        try:
            RunConfig.from_dict(apply_overrides(self.base, {key: typed}))
        except ConfigError as e:
            raise self.refuse(where, f"{what}: {e}") from None
        return typed

    def dimension(self, name: Any, spec: Any) -> Dimension:
        where = ("space", str(name))
        if not isinstance(spec, dict) or len(spec) != 1:
            raise self.refuse(where, f"{name}: give one distribution as a mapping, e.g. {{grid: [0, 1]}} or "
                                     f"{{loguniform: [0.001, 0.1]}} ({', '.join(DISTRIBUTIONS)}), got {spec!r}")
        (kind, values), = spec.items()
        if kind not in DISTRIBUTIONS:
            raise self.refuse(where, f"{name}: unknown distribution {kind!r}{_did_you_mean(kind, DISTRIBUTIONS)} "
                                     f"(the distributions are {', '.join(DISTRIBUTIONS)})")
        key = self.setting_key(name)
        if kind in ("grid", "choice"):
            if not isinstance(values, list) or not values:
                raise self.refuse(where, f"{name}: {kind} takes a non-empty list of values, got {values!r}")
            if key is None:  # a bundle: every value a mapping of settings
                if not all(isinstance(v, dict) for v in values):
                    raise self.refuse(where, f"unknown setting {name}{_did_you_mean(name, _all_keys())} (a bundle of "
                                             "settings takes a list of mappings)")
                return Dimension(str(name), kind, tuple(self.bundle(name, v, i) for i, v in enumerate(values)), True)
            return Dimension(key, kind, tuple(self.check_value(key, v, where, f"{name}: {kind} value {v!r}")
                                              for v in values))
        if key is None:
            raise self.refuse(where, f"unknown setting {name}{_did_you_mean(name, _all_keys())}")
        ok = (isinstance(values, list) and len(values) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))
        if not ok or values[0] >= values[1]:
            raise self.refuse(where, f"{name}: {kind} takes [low, high] with low < high, got {values!r}")
        if kind == "loguniform" and values[0] <= 0:
            raise self.refuse(where, f"{name}: loguniform needs low > 0, got {values[0]}")
        default = knobs(SECTIONS[SECTION_OF[key]])[key].field.default
        if not isinstance(default, float):
            raise self.refuse(where, f"{name}: {kind} draws real numbers but {key} takes "
                                     f"{'an integer' if isinstance(default, int) else type(default).__name__}; "
                                     f"list its values with grid or choice")
        low, high = (self.check_value(key, v, where, f"{name}: {kind} bound {v!r}") for v in values)
        return Dimension(key, kind, (low, high))

    def bundle(self, name: Any, values: dict, index: int) -> dict[str, Any]:
        where = ("space", str(name))
        out = {}
        for k, v in values.items():
            key = self.setting_key(k)
            if key is None:
                raise self.refuse(where, f"{name}: value {index + 1}: unknown setting {k}"
                                         f"{_did_you_mean(k, _all_keys())}")
            out[key] = self.check_value(key, v, where, f"{name}: value {index + 1}: {k} {v!r}")
        try:
            RunConfig.from_dict(apply_overrides(self.base, {str(name): out}))
        except ConfigError as e:  # settings that are refused together
            raise self.refuse(where, f"{name}: value {index + 1} {values!r}: {e}") from None
        return out


def _all_keys() -> list[str]:
    return list(SECTION_OF)


def read_sweep(path: str, base: RunConfig) -> SweepSpec:
    """Read and check ``path`` against the base configuration (module docstring)."""
    data, lines = _load(path)
    r = _Reader(path, lines, base.to_dict())
    for key in data:
        if key not in TOP_KEYS:
            raise r.refuse((key,), f"unknown key {key!r}{_did_you_mean(key, TOP_KEYS)} (the keys are "
                                   f"{', '.join(TOP_KEYS)})")
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise r.refuse(("space",), "space: give the settings to sweep, one per line (e.g. lr: {loguniform: [0.001, "
                                   f"0.1]}}), got {space!r}")
    dims = [r.dimension(name, spec) for name, spec in space.items()]
    seen: dict[str, str] = {}
    for d in dims:
        for key in (k for v in d.values for k in v) if d.bundle else (d.name,):
            if key in seen and seen[key] != d.name:
                raise r.refuse(("space", d.name), f"{d.name} sets {key}, which {seen[key]} sweeps too")
            seen[key] = d.name
    metric = data.get("metric", "mAP50-95")
    if not isinstance(metric, str) or metric not in METRICS:
        raise r.refuse(("metric",), f"metric {metric!r}{_did_you_mean(metric, METRICS)}: trials are compared on a "
                                    f"per-epoch validation metric: {', '.join(METRICS)}")
    scheduler = _scheduler(r, data.get("scheduler", "asha"), base)
    trial = data.get("trial") or {}
    if not isinstance(trial, dict):
        raise r.refuse(("trial",), f"trial: a mapping of {', '.join(TRIAL_KEYS)}, got {trial!r}")
    for key in trial:
        if key not in TRIAL_KEYS:
            raise r.refuse(("trial", key), f"trial.{key}: unknown{_did_you_mean(key, TRIAL_KEYS)} (trial takes "
                                           f"{', '.join(TRIAL_KEYS)})")
    spec = SweepSpec(
        path=path, dimensions=tuple(dims), metric=metric, scheduler=scheduler,
        num_samples=r.integer(data, "num_samples", 1, 1), seed=r.integer(data, "seed", 0, 0),
        max_concurrent_trials=r.integer(data, "max_concurrent_trials", 0, 0),
        workers=r.integer(trial, "workers", 1, 1, ("trial",)),
        cpus_per_worker=r.number(trial, "cpus_per_worker", 0, 1.0, ("trial",)),
        gpus_per_worker=r.number(trial, "gpus_per_worker", 0, 0.0, ("trial",)),
        max_failures=r.integer(trial, "max_failures", 0, 1, ("trial",)))
    if spec.trials > MAX_TRIALS:
        raise r.refuse(("space",), f"{spec.grid_points} grid point(s) x num_samples {spec.num_samples} = "
                                   f"{spec.trials} trials; at most {MAX_TRIALS}")
    return spec


def _scheduler(r: _Reader, value: Any, base: RunConfig) -> Scheduler:
    d = value if isinstance(value, dict) else {"type": value}
    kind = d.get("type")
    if kind not in SCHEDULERS:
        raise r.refuse(("scheduler",), f"scheduler {kind!r}{_did_you_mean(kind, SCHEDULERS)}: one of "
                                       f"{', '.join(SCHEDULERS)} (or a mapping with type, grace_period, "
                                       "reduction_factor)")
    for key in d:
        if key not in ("type", "grace_period", "reduction_factor"):
            raise r.refuse(("scheduler", key), f"scheduler.{key}: unknown (scheduler takes type, grace_period, "
                                               "reduction_factor)")
    s = Scheduler(kind, r.integer(d, "grace_period", 1, 1, ("scheduler",)),
                  r.number(d, "reduction_factor", 1, 2.0, ("scheduler",), above=True))
    if kind != "none" and not base.train.val:
        default = "" if ("scheduler",) in r.lines else " (the default)"
        raise r.refuse(("scheduler",), f"scheduler {kind}{default} compares trials epoch by epoch, but --no-val "
                                       "validates the final epoch only: drop --no-val, or use scheduler: none")
    if kind != "none" and s.grace_period > base.train.epochs:
        raise r.refuse(("scheduler",), f"scheduler.grace_period {s.grace_period} is more than --epochs "
                                       f"{base.train.epochs}: no trial could be stopped early")
    return s
