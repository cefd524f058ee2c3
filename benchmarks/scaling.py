"""The scaling benchmark from a source checkout: ``yolofuse-scale bench`` plus the side-by-side sections
that need other trainers' code.

    python -m benchmarks.scaling --strategies ddp,fsdp,zero1,zero2,zero3 --devices 1,2,4,8 \\
        --model yolov8s --fusion mid --imgsz 640 --batch-size 16 --out reports/scaling
    python -m benchmarks.scaling ... --compare-ultralytics --yolofuse ~/src/YOLOFuse

Flags, runs, ``results.json`` (schema in ``yolofuse_scale/bench/sweep.py``), ``report.md`` and the
plots are the package's (``yolofuse_scale/bench/``); this script adds ``--compare-ultralytics``
(Ultralytics' own trainer on data-level fusion) and ``--yolofuse PATH`` (YOLOFuse's), which run
``benchmarks/compare_ultralytics.py`` and land in ``results.json``'s ``comparisons`` and a report section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolofuse_scale.bench import sweep  # noqa: E402
from yolofuse_scale.errors import run_entry  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = sweep.build_parser(prog="python -m benchmarks.scaling")
    p.add_argument("--compare-ultralytics", action="store_true",
                   help="add a section: Ultralytics' own trainer vs ours on data-level fusion, same data and batch")
    p.add_argument("--yolofuse", default="", help="a YOLOFuse checkout: add its trainer vs ours (mid fusion)")
    return p


def comparisons(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The other trainers' section, when ``--compare-ultralytics`` or ``--yolofuse`` asks for it."""
    sections: dict[str, Any] = {}
    if args.compare_ultralytics or args.yolofuse:
        from benchmarks import compare_ultralytics

        result = compare_ultralytics.compare(out / "compare", model=args.model, imgsz=args.imgsz, batch=args.batch_size,
                                             workers=args.workers, threads=args.threads or None,
                                             yolofuse=args.yolofuse or None)
        sections["Ultralytics' and YOLOFuse's own trainers"] = {**result,
                                                                "markdown": compare_ultralytics.markdown(result)}
    return sections


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    return run_entry(sweep.run, args, [sys.executable, "-m", "benchmarks.scaling", *argv], comparisons)


if __name__ == "__main__":
    raise SystemExit(main())
