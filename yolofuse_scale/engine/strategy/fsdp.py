"""FSDP2 (``fully_shard``) through Accelerate's own FSDP path: the plugin, its wrap units, the CPU path.

Used for ``--strategy fsdp`` or an accelerate config with ``distributed_type: FSDP``. One unit per
block the model declares (``model/units.py``: :func:`wrap_units`) and the root; size-based wrapping is
refused (it wraps bare containers). Under bf16 each BatchNorm is its own fp32 unit (a few extra small
all-gathers per forward; see ``accelerator.prepare_model``). Accelerate enables FSDP only when GPUs are present; on
CPU processes :func:`_enable_fsdp_on_cpu` switches its state to FSDP after construction, so CPU runs
(and the tests) execute exactly the ``prepare``/``save_state``/``load_state`` code GPU runs execute.
"""

from __future__ import annotations

import os

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from yolofuse_scale.errors import DistributedSetupError
from yolofuse_scale.model.units import shard_unit_names


def fsdp_plugin() -> FullyShardedDataParallelPlugin:
    """FSDP2 wrapping by block class and sharded (DCP) checkpoints; an accelerate config's FSDP_* values win.

    ``accelerate launch`` exports the config's ``fsdp_config`` as ``FSDP_*`` variables and the plugin
    reads them; under ``torchrun --strategy fsdp`` our defaults fill in what is not set. The classes to
    wrap are not among them: the model declares its own (:func:`wrap_units`, once it is built), unless an
    accelerate config lists ``fsdp_transformer_layer_cls_to_wrap``.
    """
    defaults = {
        "FSDP_VERSION": "2",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
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
            "(TRANSFORMER_BASED_WRAP, without fsdp_transformer_layer_cls_to_wrap: the model names its blocks); a "
            "size policy wraps bare containers (nn.ModuleList), which FSDP2 cannot run"
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


def wrap_units(model: torch.nn.Module, names: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The class names FSDP2 wraps as units of ``model``: those the model declares (``model/units.py``), or,
    where an accelerate config lists ``fsdp_transformer_layer_cls_to_wrap`` (``names``), those of the list
    the model has (Accelerate refuses a listed class the model lacks, and one config serves every family)."""
    if names is None:
        kept = shard_unit_names(model)
        if not kept:
            raise DistributedSetupError(
                "FSDP: the model has none of the blocks it is sharded by (model/units.py); list its block classes "
                "in the accelerate config's fsdp_transformer_layer_cls_to_wrap, or use --strategy ddp or zero3")
        return kept
    present = {type(m).__name__ for m in model.modules()}
    kept = [n for n in names if n in present]
    if not kept:
        raise DistributedSetupError(f"FSDP wrap units {', '.join(names)}: the model has none of these classes")
    return kept
