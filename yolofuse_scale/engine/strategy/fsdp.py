"""FSDP2 (``fully_shard``) through Accelerate's own FSDP path: the plugin, its wrap units, the CPU path.

Used for ``--strategy fsdp`` or an accelerate config with ``distributed_type: FSDP``. One unit per
C2f/SPPF/Detect block (:data:`WRAP_UNITS`) and the root; size-based wrapping is refused (it wraps
bare containers). Under bf16 each BatchNorm is its own fp32 unit (a few extra small all-gathers per
forward; see ``accelerator.prepare_model``). Accelerate enables FSDP only when GPUs are present; on
CPU processes :func:`_enable_fsdp_on_cpu` switches its state to FSDP after construction, so CPU runs
(and the tests) execute exactly the ``prepare``/``save_state``/``load_state`` code GPU runs execute.
"""

from __future__ import annotations

import os

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from yolofuse_scale.errors import DistributedSetupError

#: FSDP2 units: the blocks that hold a YOLO's parameters (YOLOv8's C2f, YOLO11/26's C3k2 and C2PSA,
#: SPPF in backbone and neck, the Detect head) and ``--fusion dea``'s attention (DEAPair: about 2 C^2 weights
#: per level, 0.3M in all at scale n, 2M at x, as much as a C2f; left in the root it would be gathered for the
#: whole forward). Every other module (stem convs, the fusion concatenations) belongs to the root unit.
#: Only the classes a model has are wrapped (wrap_units).
WRAP_UNITS = ("C2f", "C3k2", "SPPF", "C2PSA", "DEAPair", "Detect")


def fsdp_plugin() -> FullyShardedDataParallelPlugin:
    """FSDP2 with YOLO wrap units and sharded (DCP) checkpoints; an accelerate config's FSDP_* values win.

    ``accelerate launch`` exports the config's ``fsdp_config`` as ``FSDP_*`` variables and the plugin
    reads them; under ``torchrun --strategy fsdp`` our defaults fill in what is not set.
    """
    defaults = {
        "FSDP_VERSION": "2",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_TRANSFORMER_CLS_TO_WRAP": ",".join(WRAP_UNITS),
        "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",  # DCP: each rank writes its shard; reshards on load
        "FSDP_RESHARD_AFTER_FORWARD": "true",
        "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",  # every rank builds the same seeded model
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if os.environ["FSDP_VERSION"] != "2":
        raise DistributedSetupError("fsdp_version 1 is not supported: use fsdp_version: 2 (fully_shard)")
    if os.environ["FSDP_AUTO_WRAP_POLICY"] != "TRANSFORMER_BASED_WRAP":
        raise DistributedSetupError(
            f"fsdp_auto_wrap_policy {os.environ['FSDP_AUTO_WRAP_POLICY']}: wrap by block class instead "
            f"(TRANSFORMER_BASED_WRAP with fsdp_transformer_layer_cls_to_wrap: {','.join(WRAP_UNITS)}); a size policy "
            "wraps bare containers (nn.ModuleList), which FSDP2 cannot run"
        )
    return FullyShardedDataParallelPlugin()


def _enable_fsdp_on_cpu(plugin: FullyShardedDataParallelPlugin, mixed_precision: str) -> None:
    """The CPU path into FSDP: switch Accelerate's (shared) state from MULTI_CPU to FSDP.

    Accelerate turns FSDP on only for GPU process groups, yet FSDP2 runs on CPU tensors over gloo.
    Both state singletons hold the type (``AcceleratorState`` copies ``PartialState``'s on every
    construction), so both are set. Everything after this (``prepare``, ``save_state``,
    ``load_state``, ``get_state_dict``) is Accelerate's unmodified FSDP code.
    """
    PartialState().distributed_type = DistributedType.FSDP
    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    state.fsdp_plugin = plugin


def wrap_units(model: torch.nn.Module, names: list[str] | tuple[str, ...]) -> list[str]:
    """The FSDP unit classes among ``names`` that ``model`` has (Accelerate refuses a listed class the
    model lacks, and one accelerate config serves every family: C2f is YOLOv8's, C3k2 YOLO11's)."""
    present = {type(m).__name__ for m in model.modules()}
    kept = [n for n in names if n in present]
    if not kept:
        raise DistributedSetupError(f"FSDP wrap units {', '.join(names)}: the model has none of these classes")
    return kept
