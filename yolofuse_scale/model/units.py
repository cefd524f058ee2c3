"""What the distributed strategies need to know of a detector: the blocks FSDP2 shards as one unit each and
the blocks ``--activation-checkpointing`` recomputes in backward.

The model declares, the strategy applies (torchtitan's ``models/<name>/parallelize.py`` beside its
``distributed/``): ``engine/strategy/`` names no block class, it asks :func:`shard_unit_names` and
:func:`recompute_units`. The declaration is by block class, so it answers for every model however it was
built: each built-in variant of each family, YOLOFuse's and YOLOv11-RGBT's YAMLs (made of the same
Ultralytics blocks; YOLOv11-RGBT's own layers, ``rgbt.py``, hold no parameters) and the attention rows of
``attention.py``. A class matches by its exact name, never as a subclass: C3k2 subclasses C2f and DEAPair
subclasses DEA, and each is listed for itself, so no unit ever sits inside another of the same list.
``C2f_BiFocus`` (DEYOLO's YAMLs) is not listed: its C2f is a unit, and its BiFocus is a few depthwise convs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

#: FSDP2 units: the blocks that hold a YOLO's parameters (YOLOv8's C2f, YOLO11/26's C3k2 and C2PSA, SPPF in
#: backbone and neck, the head: Detect, or OBB / OBB26 for oriented boxes, each a unit by its own name, as OBB
#: subclasses Detect and OBB26 OBB) and the cross-modal attentions: DEAPair (``--fusion dea``: about 2 C^2
#: weights per level, 0.3M in all at scale n, 2M at x, as much as a C2f), DEA (DEYOLO's YAMLs: the same
#: attention with a 3x3 joint conv, 1.6M of DEYOLO's 6.2M parameters at n) and DEFA (1.6M of 6.1M).
#: Left in the root unit, a block's parameters would stay gathered for the whole forward. FlowAlign (the
#: ``-align`` variants' offset head, align.py) is one too: a unit fed the (rgb, ir) pair as DEAPair is. Every
#: other module (stem convs, the fusion concatenations and 1x1 convs, BatchNorms) belongs to the root unit.
SHARD_UNITS = ("C2f", "C3k2", "SPPF", "C2PSA", "DEA", "DEAPair", "DEFA", "FlowAlign", "Detect", "OBB", "OBB26")
#: Blocks recomputed in backward under ``--activation-checkpointing``: the backbone and neck blocks and the
#: attentions, not the head (its outputs go straight into the loss). DEAPair stores about nine C x H x W maps
#: per level (the concatenated pair, the joint conv's, the two gated pairs) for a few percent of the model's
#: FLOPs: cheap to recompute. DEFA's attention stores its H*W x H*W weights unless a fused kernel runs. FlowAlign
#: stores the concatenated pair, its head's maps and the sampling grid for three small convs and one resampling.
RECOMPUTE_UNITS = ("C2f", "C3k2", "SPPF", "C2PSA", "DEA", "DEAPair", "DEFA", "FlowAlign")


def shard_unit_names(model: nn.Module) -> list[str]:
    """The class names of ``model``'s FSDP2 units: the :data:`SHARD_UNITS` it has, in that order (Accelerate's
    plugin takes names, and refuses one the model lacks)."""
    present = {type(m).__name__ for m in model.modules()}
    return [name for name in SHARD_UNITS if name in present]


def recompute_units(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` recomputed in backward under ``--activation-checkpointing``."""
    return [m for m in model.modules() if type(m).__name__ in RECOMPUTE_UNITS]
