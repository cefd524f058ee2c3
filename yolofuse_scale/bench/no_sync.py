"""``python -m yolofuse_scale.bench.no_sync TRAIN-FLAGS``: a training whose gradients are never synchronised.

The scaling benchmark's ``--no-sync-baseline`` runs (``plan.py``) launch this instead of ``yolofuse_scale
train``: the same flags and the same loop, built with ``Trainer(..., skip_grad_sync=True)``, so the ranks
train apart and a step's time is its time without gradient communication (``measure.py``: the weak-scaling
run's exposed communication is the difference). DDP and FSDP only (DeepSpeed is refused). It is no setting
of a user's run: it appears in no ``--help`` and no config.yaml. It builds its own parser rather than
importing ``cli.py``, which imports this package (``yolofuse-scale bench``): no arrow back up.
"""

from __future__ import annotations

from yolofuse_scale.config import add_train_arguments, config_from_args
from yolofuse_scale.engine.strategy.deepspeed import release_shm_workspace
from yolofuse_scale.engine.trainer import Trainer
from yolofuse_scale.errors import ArgumentParser, apply_debug_flag, finish, run_entry


def train_without_grad_sync(args) -> int:
    try:
        Trainer(config_from_args(args), skip_grad_sync=True).fit()
    finally:
        release_shm_workspace()  # as cli.run_train: DeepSpeed's CPU op leaves a /dev/shm segment per rank
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m yolofuse_scale.bench.no_sync", description=__doc__.split("\n")[0])
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    apply_debug_flag(args)
    return run_entry(train_without_grad_sync, args)


if __name__ == "__main__":
    finish(main())
