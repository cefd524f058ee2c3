"""A model YAML's streams, traced through its built graph from its input selectors (it declares none).

A layer fed only by ``ModalitySelector [1]`` / ``SilenceChannel [0, 3]`` is on the RGB stream, only by ``[2]`` /
``[3, 4]`` on the IR stream; one fed by the whole stacked input (data-level: a first ``Conv``, ``ModalConcat``,
``SilenceChannel [0, 4]``) or by ``ChannelToNumber`` (both modalities as batch items, shared weights) is
``shared``; everything computed from an RGB map and an IR map together is *after fusion*. Both model-YAML
mappings (``by_structure.py``, ``by_name.py``) report per stream by these labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ultralytics.nn.modules import Index

from yolofuse_scale.model.attention import DEALayer, DEFALayer
from yolofuse_scale.model.fusion import IdentityInput, ModalConcat
from yolofuse_scale.model.rgbt import (
    RGB_CHANNELS,
    ChannelToNumberLayer,
    NumberToChannelLayer,
    Silence,
    SilenceChannelLayer,
)

RGB, IR = frozenset({"rgb"}), frozenset({"ir"})
BOTH = RGB | IR


@dataclass
class _Node:
    """What one built layer's output carries: modalities, and whether it is the ``[rgb, ir]`` pair, the image
    itself (no weights on the way), or computed from RGB and IR maps together (after fusion)."""

    mods: frozenset[str]
    pair: bool = False
    raw: bool = False
    joint: bool = False


def layer_inputs(j: int, f: Any) -> list[int]:
    """Layer ``j``'s inputs as absolute indices, -1 for the model input."""
    return [max(j + x, -1) if x < 0 else x for x in (f if isinstance(f, list) else [f])]


def trace_streams(layers: list[torch.nn.Module], weighted: set[int], two_stream: bool) -> list[_Node]:
    """Each layer's :class:`_Node`, in build order (a layer reads only earlier ones)."""
    start = _Node(BOTH, pair=two_stream, raw=True)
    nodes: list[_Node] = []
    for j, layer in enumerate(layers):
        ins = [start if x < 0 else nodes[x] for x in layer_inputs(j, layer.f)]
        one = ins[0] if len(ins) == 1 else None
        if isinstance(layer, Index) and one is not None and one.pair and layer.index in (0, 1):
            node = _Node((RGB, IR)[layer.index], raw=True)  # ModalitySelector [1] / [2]
        elif isinstance(layer, ModalConcat):
            node = _Node(BOTH, raw=True)
        elif isinstance(layer, SilenceChannelLayer):
            rgb, ir = layer.start < RGB_CHANNELS, layer.end > RGB_CHANNELS
            node = _Node(BOTH if rgb == ir else RGB if rgb else IR, raw=True)
        elif isinstance(layer, ChannelToNumberLayer):
            node = _Node(BOTH, raw=True)  # both images as batch items: what follows is one shared stream
        elif isinstance(layer, NumberToChannelLayer):
            node = _Node(BOTH, joint=True)  # the batch halves side by side on channels: RGB and IR meet
        else:
            seen = [n.mods for n in ins]
            passthrough = j not in weighted and isinstance(layer, (IdentityInput, Silence, Index))
            node = _Node(frozenset().union(*seen), pair=passthrough and one is not None and one.pair,
                         raw=j not in weighted and all(n.raw for n in ins),
                         joint=any(n.joint for n in ins) or (RGB in seen and IR in seen))
        nodes.append(node)
    return nodes


def stream_labels(layers: list[torch.nn.Module], nodes: list[_Node], weighted: set[int]) -> dict[int, str]:
    """The report's stream of each layer with weights: ``rgb`` / ``ir`` (one modality), ``shared`` (both: the
    stacked or batched input, or after fusion), ``fusion`` (reads an RGB and an IR map, through layers
    without weights), ``attention`` (DEA / DEFA)."""

    def reads_both(j: int) -> bool:
        seen, stack, found = set(), layer_inputs(j, layers[j].f), set()
        while stack:
            x = stack.pop()
            if x < 0 or x in seen:
                continue
            seen.add(x)
            if x in weighted or nodes[x].mods != BOTH or nodes[x].raw:
                found.add(nodes[x].mods)
            else:
                stack.extend(layer_inputs(x, layers[x].f))
        return RGB in found and IR in found

    def label(j: int) -> str:
        node = nodes[j]
        if node.mods in (RGB, IR):
            return "rgb" if node.mods == RGB else "ir"
        if not node.joint:
            return "shared"
        if isinstance(layers[j], (DEALayer, DEFALayer)):  # DEAPair's layer is a DEALayer
            return "attention"
        return "fusion" if reads_both(j) else "shared"

    return {j: label(j) for j in sorted(weighted)}
