"""How a parameter is split across ranks: FSDP2 DTensors and ZeRO-3 partitions.

:func:`local_tensor`, :func:`full_tensor` and :func:`local_shard` are the only places that know how a
parameter is split; the EMA (``ema.py``), the portable weights and the memory accounting
(``perf.model_state_bytes``) go through them, so a new sharding scheme is taught here once.

``torch.distributed.tensor`` is not imported here: it costs ~0.5 s of CPU per process on a 2-core machine, and a
tensor can only be a DTensor once FSDP2 has imported it (:func:`is_dtensor`).
"""

from __future__ import annotations

import sys

import torch


def is_dtensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is an FSDP2 DTensor (without importing DTensor's module)."""
    dtensor = sys.modules.get("torch.distributed.tensor")
    return dtensor is not None and isinstance(t, dtensor.DTensor)


def is_zero3_param(t: torch.Tensor) -> bool:
    return hasattr(t, "ds_tensor")


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter or buffer: the whole tensor unless the strategy shards it.

    FSDP2: the DTensor's local shard (dim-0 chunk). ZeRO-3: the flat partition ``ds_tensor``
    (``numel / world`` elements, the last rank's padded with zeros).
    """
    if is_dtensor(t):
        return t.to_local()
    if is_zero3_param(t):
        return t.ds_tensor
    return t.data


def full_tensor(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reassemble the full tensor from every rank's ``local`` part shaped like ``like``. Collective
    when ``like`` is sharded (one all-gather); the identity otherwise."""
    if is_dtensor(like):
        return type(like).from_local(local, like.device_mesh, like.placements, shape=like.shape,
                                  stride=like.stride()).full_tensor()
    if is_zero3_param(like):
        world = torch.distributed.get_world_size()
        dev = _collective_device()
        parts = [torch.empty_like(local, device=dev) for _ in range(world)]
        torch.distributed.all_gather(parts, local.to(dev))
        return torch.cat(parts)[: like.ds_numel].view(like.ds_shape).to(local.device)
    return local


def local_shard(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``full`` as :func:`local_tensor` would return it (no communication)."""
    if is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None).to_local()
    if is_zero3_param(like):
        n = like.ds_tensor.numel()
        start = torch.distributed.get_rank() * n
        flat = full.flatten()[start : start + n]
        return torch.cat([flat, flat.new_zeros(n - flat.numel())]).to(like.ds_tensor.device)
    return full


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")


def full_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The full state dict of ``model`` on every rank (``tensors``: local parts to use instead of the
    model's own, e.g. the EMA's). Collective under FSDP2/ZeRO-3: one all-gather per sharded tensor."""
    out = {}
    for name, t in named_state(model):
        local = tensors[name] if tensors is not None and name in tensors else local_tensor(t)
        out[name] = full_tensor(local, t).detach().clone()
    return out


def named_state(model: torch.nn.Module):
    """(name, tensor) of every parameter and buffer, named as in ``model.state_dict()``."""
    yield from model.named_parameters()
    yield from model.named_buffers()
