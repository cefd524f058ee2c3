"""ZeRO-1/2 checkpoints that resume at another world size: the optimizer state saved whole, re-partitioned on load.

DeepSpeed partitions the fp32 master weights and the optimizer state flat, by rank, and its own
checkpoint reloads only at the world size that wrote it (its universal-checkpoint converter keeps
Adam's moments but not SGD's momentum). :func:`zero_full_state` saves them per parameter through
DeepSpeed's ``safe_get_full_*`` API, in the checkpoint's ``ZERO_FULL_STATE`` file, and
:func:`load_zero_full_state` lays them out for this world size. ZeRO-3 does not write one.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

#: The checkpoint file holding it (written by ``engine/checkpoint/``, looked for by ``resume.py``).
ZERO_FULL_STATE = "zero_full_state.safetensors"  # ZeRO-1/2 only: whole optimizer state, any world size

def zero_full_state(accelerator: Accelerator, engine) -> tuple[dict[str, torch.Tensor], dict[str, float]] | None:
    """ZeRO-1/2: every parameter's fp32 master weight and optimizer state, whole. Collective.

    DeepSpeed partitions these flat, by rank, and its checkpoint reloads only at the world size that
    wrote it; its universal-checkpoint converter keeps Adam's moments but not SGD's momentum. Saving
    them per parameter (one all-reduce per parameter and state, through DeepSpeed's own
    ``safe_get_full_*`` API) lets :func:`load_zero_full_state` re-partition them for any world size.
    Costs (1 + states) x the fp32 model in the checkpoint and one gather per save.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED or engine.zero_optimization_stage() not in (1, 2):
        return None
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    _relink_optimizer_fragments(engine.optimizer)
    inner = engine.optimizer.optimizer  # the loop's torch optimizer over DeepSpeed's flat partitions
    keys = sorted({k for st in inner.state.values() for k, v in st.items() if torch.is_tensor(v) and v.dim() > 0})
    scalars = {k: float(v) for st in inner.state.values() for k, v in st.items() if torch.is_tensor(v) and v.dim() == 0}
    tensors = {}
    for name, p in engine.module.named_parameters():
        if not p.requires_grad:
            continue
        tensors[f"fp32/{name}"] = safe_get_full_fp32_param(p).cpu()
        for key in keys:
            tensors[f"{key}/{name}"] = safe_get_full_optimizer_state(p, key).cpu()
    return tensors, scalars


def _relink_optimizer_fragments(zero) -> None:
    """Point every parameter's optimizer-state fragments at the current state.

    DeepSpeed 0.19 links them once, right after the *first* parameter group's first step, when the
    other groups have no state yet (their fragments stay empty and ``safe_get_full_optimizer_state``
    raises); the loop uses three groups (weights, biases, BatchNorm), so we relink.
    """
    zero._hp_optimizer_states_linked = False
    zero._lazy_init_hp_params_optimizer_state()


def load_zero_full_state(engine, tensors: dict[str, torch.Tensor], scalars: dict[str, float]) -> None:
    """Re-partition a :func:`zero_full_state` for this world size (each rank takes its fragments)."""
    from deepspeed.utils import safe_set_full_fp32_param

    zero = engine.optimizer
    inner = zero.optimizer
    params = dict(engine.module.named_parameters())
    keys = sorted({k.split("/", 1)[0] for k in tensors} - {"fp32"})
    # Optimizer states are created lazily at the first step; build them flat, as DeepSpeed lays them
    # out (each parameter's fragment at its offset in this rank's partition), then link the fragments.
    for group, flat in zip(zero.bit16_groups, zero.single_partition_of_fp32_groups):
        state = inner.state[flat]
        for key in keys:
            buffer = torch.zeros_like(flat)
            for p in group:
                mapping = p._hp_mapping
                if mapping is None:
                    continue
                name = next(n for n, q in params.items() if q is p)
                lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                src = tensors[f"{key}/{name}"].flatten().narrow(0, lp.start, lp.numel)
                buffer.narrow(0, hp.start, hp.numel).copy_(src)
            state[key] = buffer
        for key, value in scalars.items():
            state[key] = torch.tensor(value, dtype=torch.float32)
    _relink_optimizer_fragments(zero)
    with torch.no_grad():
        for name, p in params.items():
            if f"fp32/{name}" in tensors:
                full = tensors[f"fp32/{name}"].to(p.device)
                safe_set_full_fp32_param(p, full)
                p.data.copy_(full.to(p.dtype))
