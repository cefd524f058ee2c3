"""What every checkout benchmark shares: the package's launcher, run readers and environment record, and
``write_results``.

    from benchmarks import common

    run = common.run_training(["--data", d, "--output-dir", out, ...], launcher="torchrun", nproc=2,
                              threads=1, timeout=600, log=out / "stdout.txt")
    if run.ok:
        steps, summary = common.read_log(out), common.read_metrics(out)
    record = {"environment": common.environment(threads=1, command=[...]), ...}
    common.write_results(out, record, markdown_table)

The pieces the scaling benchmark needs ship in the package (``yolofuse_scale/bench/``: it runs from an
installed wheel) and are named here once, so the scripts of ``benchmarks/`` keep one import:

- ``train_env``, ``train_command``, ``launcher_command``, ``run_command``, ``run_training``,
  ``RunResult``: ``yolofuse_scale/bench/launch.py`` (the launcher environment lives there):
  ``-m yolofuse_scale train`` under python, torchrun, accelerate or a given prefix, with the checkout
  first on ``PYTHONPATH`` and a timeout that stops the whole process tree.
- ``read_log``, ``read_metrics``: ``yolofuse_scale/bench/measure.py``.
- ``environment``, ``PACKAGES``: ``yolofuse_scale/bench/environment.py``.

Standard library only at import (torch is imported by ``environment`` when it is installed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolofuse_scale.bench.environment import PACKAGES, environment  # noqa: E402
from yolofuse_scale.bench.launch import (  # noqa: E402
    RunResult,
    launcher_command,
    run_command,
    run_training,
    train_command,
    train_env,
)
from yolofuse_scale.bench.measure import read_log, read_metrics  # noqa: E402

__all__ = ["PACKAGES", "RunResult", "environment", "launcher_command", "read_log", "read_metrics", "run_command",
           "run_training", "train_command", "train_env", "write_results"]


def write_results(out: Path, result: dict[str, Any], text: str, report: str = "report.md") -> None:
    """``out/results.json`` (the numbers) and ``out/<report>`` (the table people read), then the table on stdout."""
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / report).write_text(text)
    print(text)
