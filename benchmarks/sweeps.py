"""A study (variants x seeds, arms x seeds) as one Ray Tune experiment: ``--engine ray`` of fusion_study.py and
recipe_ablation.py.

The sequential runners train one run after another on this machine. Here every (variant, seed) is a Tune trial
and every trial a Ray Train run of the same loop (``yolofuse-scale tune``'s machinery, ``cluster/tune.py``), so
on a cluster the study's runs train side by side; no scheduler stops any of them. The study is written as a
sweep file (``<work>/sweep.yaml``, a grid per swept setting; a grid of mappings for an arm that changes several
settings at once), which ``yolofuse-scale tune --space <work>/sweep.yaml`` with the same flags runs too. With
one worker per trial the numbers are those of the sequential runner for the same seeds (each trial trains as
``python train.py`` does, bit for bit: tests/test_fusion_study.py); with N workers, those of
``--launch "torchrun --nproc_per_node N"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def flags_to_overrides(flags: list[str]) -> dict[str, Any]:
    """The settings ``flags`` set (``--lr 0.01`` -> ``{"lr": 0.01}``), typed as the train command parses them."""
    from yolofuse_scale.cli import build_train_parser

    args = build_train_parser().parse_args(flags)
    return {dest.split(".", 1)[1]: value for dest, value in vars(args).items() if "." in dest and value is not None}


def run_study(base_flags: list[str], grid: dict[str, list], work: Path, *, workers: int = 1, threads: int = 1,
              address: str | None = None) -> list[dict[str, Any]]:
    """Train every point of ``grid`` (setting -> values; a value may be a mapping of settings) over ``base_flags``
    as one Tune experiment in ``work/sweep``; the results' rows (``cluster/tune.py``), one per trial."""
    from yolofuse_scale.cli import build_train_parser
    from yolofuse_scale.cluster.space import read_sweep
    from yolofuse_scale.cluster.tune import run_experiment
    from yolofuse_scale.config import config_from_args

    work.mkdir(parents=True, exist_ok=True)
    sweep = work / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "metric": "mAP50-95", "scheduler": "none",
        "trial": {"workers": workers, "cpus_per_worker": threads, "max_failures": 1},
        "space": {name: {"grid": list(values)} for name, values in grid.items()}}, sort_keys=False))
    base = config_from_args(build_train_parser().parse_args([*base_flags, "--output-dir", str(work / "sweep")]))
    return run_experiment(base, read_sweep(str(sweep), base), work / "sweep", address)
