"""The run's configuration: the settings (``sections``), the command line (``flags``), config.yaml read back
(``file``). Written beside every run as ``config.yaml``; ``--config FILE`` reads it back (flags still win),
so a run is reproducible from its own output."""

from yolofuse_scale.config.flags import add_train_arguments, config_from_args
from yolofuse_scale.config.sections import (
    CheckpointConfig,
    DataConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "RunConfig",
    "TrainConfig",
    "add_train_arguments",
    "config_from_args",
]
