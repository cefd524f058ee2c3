"""Which runs a sweep makes, and the training flags of each: weak and strong scaling, the no-sync
baseline, and the options measured one at a time (``--vary``).

A run is a :class:`RunSpec`; its label (``weak_ddp_n2_b16``, ``option_ddp_n1_b16_precision-bf16``)
names its folder under ``runs/`` and its row in ``results.json``.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from yolofuse_scale.bench.launch import NO_SYNC_MODULE, TRAIN_MODULE
from yolofuse_scale.errors import ConfigError

#: ``--vary`` names that are not train flags of the same name
VARY_FLAGS = {"precision": "--mixed-precision"}


@dataclass
class RunSpec:
    strategy: str
    devices: int
    batch_size: int
    scaling: str  # weak | strong | option | no_sync
    option: str = ""  # "name=value" for --vary runs
    extra: list[str] = field(default_factory=list)
    module: tuple[str, ...] = TRAIN_MODULE  # the launched program (no_sync: launch.NO_SYNC_MODULE)

    @property
    def label(self) -> str:
        tail = f"_{self.option.replace('=', '-')}" if self.option else ""
        return f"{self.scaling}_{self.strategy}_n{self.devices}_b{self.batch_size}{tail}"


def parse_vary(text: str) -> list[tuple[str, str]]:
    """``"batch_size=32,64 compile=on"`` -> [("batch_size", "32"), ("batch_size", "64"), ("compile", "on")]."""
    out = []
    for item in text.split():
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--vary item {item!r}: expected NAME=V1[,V2...]")
        out += [(name, v) for v in values.split(",")]
    return out


def vary_args(name: str, value: str) -> list[str]:
    flag = VARY_FLAGS.get(name, "--" + name.replace("_", "-"))
    if value in ("on", "off"):
        return [flag if value == "on" else "--no-" + flag[2:]]
    return [flag, value]


def device_counts(text: str) -> list[int]:
    """``--devices "1,2,8"`` -> [1, 2, 8] (sorted, each once)."""
    try:
        counts = sorted({int(d) for d in text.split(",")})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise ConfigError(f"--devices {text!r}: expected a comma list of device counts >= 1, e.g. 1,2,4,8")
    return counts


def plan(args: argparse.Namespace) -> list[RunSpec]:
    strategies = args.strategies.split(",")
    devices = device_counts(args.devices)
    specs: list[RunSpec] = []
    if args.scaling in ("weak", "both"):
        specs += [RunSpec(s, n, args.batch_size, "weak") for s in strategies for n in devices]
    if args.scaling in ("strong", "both"):
        g = args.global_batch_size or args.batch_size * max(devices)
        for s in strategies:
            for n in devices:
                if g % n:
                    raise ConfigError(f"--global-batch-size {g} is not divisible by {n} devices")
                specs.append(RunSpec(s, n, g // n, "strong"))
    if args.no_sync_baseline:  # step time without gradient communication (DDP, FSDP only)
        specs += [RunSpec(s, n, args.batch_size, "no_sync", module=NO_SYNC_MODULE)
                  for s in strategies if s in ("ddp", "fsdp") for n in devices if n > 1]
    for name, value in parse_vary(args.vary):  # one-factor-at-a-time, first strategy, fewest devices
        bs = int(value) if name == "batch_size" else args.batch_size
        extra = [] if name == "batch_size" else vary_args(name, value)
        specs.append(RunSpec(strategies[0], devices[0], bs, "option", f"{name}={value}", extra))
    return specs


def pairs_needed(args: argparse.Namespace, specs: list[RunSpec]) -> int:
    """Training pairs for every run of the plan to reach its last step within its first epoch."""
    return max(s.batch_size * s.devices for s in specs) * (args.warmup + args.steps)


def train_args(spec: RunSpec, args: argparse.Namespace, data_yaml: Path, out: Path) -> list[str]:
    """The ``yolofuse-scale train`` flags of one run: ``--warmup + --steps`` steps, timed phases and
    measured collectives, no validation but the final one (after the timed steps), no pictures (labels.jpg, the
    batch previews, results.png and the final curves cost rank 0 seconds and matplotlib's memory, which the memory
    columns would count; with ``--warmup`` under 3 the previews fell inside timed steps), one checkpoint (deleted
    after the run), output in ``out``."""
    steps = args.warmup + args.steps
    return ["--data", str(data_yaml), "--model", args.model, "--fusion", args.fusion, "--imgsz", str(args.imgsz),
            "--batch-size", str(spec.batch_size), "--epochs", "1", "--max-steps", str(steps), "--no-val",
            "--no-plots", "--workers", str(args.workers), "--strategy", spec.strategy, "--time-phases",
            "--measure-comm", "--keep-last", "1", "--log-every", str(steps), "--output-dir", str(out),
            *shlex.split(args.train_args), *spec.extra]
