"""Every distributed nuance in one package: how the Accelerator is built and what it may wrap.

The training loop calls :func:`build_accelerator`, ``accelerator.prepare`` and :func:`unwrap`, and
nothing else distributed. Which strategy runs is decided by the launcher and its config file
(``accelerate launch --config_file configs/accelerate/*.yaml``, ``torchrun``, ``--deepspeed``), never
by branches in the loop. One concern per module, each saying in its docstring what it decides and why:

- ``launch``: what the launcher asked for (``strategy_name``, ``launched``, ``launched_world_size``),
  flags that contradict the accelerate config, launches whose ranks would train alone, and the
  process group of elastic restarts and of DeepSpeed without a launcher.
- ``accelerator``: ``build_accelerator`` (CPU path, backend and timeout, accumulation, DDP settings),
  ``prepare_model``, ``unwrap``, ``clip_grad_norm``.
- ``deepspeed``: the DeepSpeed JSON of a run (packaged configs included) and the loop's values
  written into it.
- ``cpu_comm_op``: DeepSpeed's CPU communication op, taken prebuilt (``make install``) or its compile
  announced before it starts.
- ``fsdp``: FSDP2 through Accelerate's plugin, its wrap units (the model's: ``model/units.py``), and the
  CPU path into it.
- ``sharded``: FSDP2 DTensors and ZeRO-3 partitions (local part, full tensor, full state dict).
- ``zero_state``: ZeRO-1/2 optimizer state saved whole and re-partitioned at another world size.
- ``memory_format``: convolution weights channels-last where the images are (one process, DDP), and their
  state saved contiguous and loaded back in that layout.
- ``batchnorm``: running statistics made equal on every rank before validation and saving; SyncBN.
- ``activation_checkpoint``: recomputed blocks whose BatchNorm statistics stay exact.
- ``resume``: which checkpoints this run can resume, refused before anything is loaded.

Memory accounting (``model_state_bytes``) and the precision probe (``PrecisionProbe``,
``effective_precision``) are measurements and live in ``engine/perf.py``. Every public name of the
package's modules (and those two) is re-exported here, so ``from yolofuse_scale.engine.strategy
import X`` keeps working.
"""

from __future__ import annotations

from yolofuse_scale.engine.perf import PrecisionProbe, effective_precision, model_state_bytes
from yolofuse_scale.engine.strategy.accelerator import build_accelerator, clip_grad_norm, prepare_model, unwrap
from yolofuse_scale.engine.strategy.activation_checkpoint import apply_activation_checkpointing
from yolofuse_scale.engine.strategy.batchnorm import (
    average_running_stats,
    convert_sync_batchnorm,
    needs_buffer_sync,
    sync_batchnorm_buffers,
)
from yolofuse_scale.engine.strategy.deepspeed import PACKAGED_CONFIGS, deepspeed_config, deepspeed_file
from yolofuse_scale.engine.strategy.fsdp import fsdp_plugin, wrap_units
from yolofuse_scale.engine.strategy.launch import (
    LAUNCH_ENV,
    check_distributed,
    check_strategy_flags,
    init_elastic_process_group,
    launched,
    launched_world_size,
    strategy_name,
)
from yolofuse_scale.engine.strategy.memory_format import channels_last_weights, keep_optimizer_layout
from yolofuse_scale.engine.strategy.resume import check_resumable
from yolofuse_scale.engine.strategy.sharded import (
    full_state_dict,
    full_tensor,
    is_zero3_param,
    local_shard,
    local_tensor,
    named_state,
)
from yolofuse_scale.engine.strategy.zero_state import load_zero_full_state, zero_full_state
from yolofuse_scale.errors import DistributedSetupError  # defined there; raised and imported from here too

__all__ = [
    "LAUNCH_ENV", "PACKAGED_CONFIGS", "DistributedSetupError", "PrecisionProbe",
    "apply_activation_checkpointing", "average_running_stats", "build_accelerator", "channels_last_weights",
    "check_distributed", "check_resumable", "check_strategy_flags", "clip_grad_norm", "convert_sync_batchnorm",
    "deepspeed_config", "deepspeed_file", "effective_precision", "fsdp_plugin", "full_state_dict", "full_tensor",
    "init_elastic_process_group", "is_zero3_param", "keep_optimizer_layout", "launched", "launched_world_size",
    "load_zero_full_state", "local_shard", "local_tensor", "model_state_bytes", "named_state", "needs_buffer_sync",
    "prepare_model", "strategy_name", "sync_batchnorm_buffers", "unwrap", "wrap_units", "zero_full_state",
]
