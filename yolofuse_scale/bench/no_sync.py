"""``python -m yolofuse_scale.bench.no_sync TRAIN-FLAGS``: a training whose gradients are never synchronised.

The scaling benchmark's ``--no-sync-baseline`` runs (``plan.py``) launch this instead of ``yolofuse_scale
train``: the same flags and the same loop, built with ``Trainer(..., skip_grad_sync=True)``, so the ranks
train apart and a step's time is its time without gradient communication (``measure.py``: the weak-scaling
run's exposed communication is the difference). DDP and FSDP only (DeepSpeed is refused). It is no setting
of a user's run: it appears in no ``--help`` and no config.yaml.
"""

from __future__ import annotations

from yolofuse_scale.cli import build_train_parser, run_train
from yolofuse_scale.errors import apply_debug_flag, finish, run_entry


def main(argv: list[str] | None = None) -> int:
    args = build_train_parser("python -m yolofuse_scale.bench.no_sync").parse_args(argv)
    apply_debug_flag(args)
    return run_entry(run_train, args, (), True)


if __name__ == "__main__":
    finish(main())
