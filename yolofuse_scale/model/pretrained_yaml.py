"""``--pretrained`` into a model YAML (YOLOFuse's, DEYOLO's, YOLOv11-RGBT's configs): layers matched by structure.

A built-in variant records which single-stream layer each of its layers copies (``variants.fusion_origins``);
a YAML written by someone else records nothing of the kind. Its layers are matched to the pretrained
single-stream model's by what they are instead:

1. **Streams**, traced through the built graph from its input selectors: a layer fed only by
   ``ModalitySelector [1]`` / ``SilenceChannel [0, 3]`` is on the RGB stream, only by ``[2]`` / ``[3, 4]`` on
   the IR stream; one fed by the whole stacked input (data-level: a first ``Conv``, ``ModalConcat``,
   ``SilenceChannel [0, 4]``) or by ``ChannelToNumber`` (both modalities as batch items, shared weights) is
   ``shared``; everything computed from an RGB map and an IR map together is *after fusion*.
2. **Alignment**, per stream, in order: the stream's layers with weights against the file's layers (its
   head aside), keeping their order and matching as many as possible (a longest common subsequence), where
   two layers match when they are the same class with the same tensors of the same shapes (the argument
   signature as built: widths, kernels, repeats, attention heads). The layers after fusion align with the
   file's layers after the last one a stream used (neck layers never take backbone weights). Where a
   stream reads the image itself, its first conv may differ in input channels and is adapted as for the
   built-in variants (``pretrained._adapt_stem``: a 1-channel IR stem gets the sum over the RGB input
   channels; a stacked 4/6-channel stem half the RGB weights and half the IR-adapted ones). A layer that
   *contains* one of the file's layers (DEYOLO's ``C2f_BiFocus`` is a ``C2f`` then a BiFocus) takes it in
   that part and keeps its own initialisation in the rest.
3. **The head**, tensor by tensor as for the built-in variants: each Detect level from the file's level
   whose input layer its own input was matched to (a six-level Detect over two branches takes levels 0-2
   twice), else level k from level k; a conv with its BN only when all of their shapes match; the class
   layers re-initialised when the class counts differ.
4. **Fusion convs** of the YAML (a 1x1 ``Conv`` from an RGB map and an IR map concatenated back to their
   width, no counterpart in the file) start as the average of the two streams, as the built-in ones do;
   cross-modal attention (DEA, DEFA) keeps its own initialisation.

What is matched, what is not and why, goes into the same per-stream report as the built-in transfer, and a
file in which less than half of the streams' weights (input to fusion: the part an RGB model can give)
find a match is refused, naming what the file is and what the run builds: another family or scale. The
transfer is deterministic: the same YAML and file always give the same start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ultralytics.nn.modules import Conv, Index

from yolofuse_scale.model.attention import DEALayer, DEFALayer
from yolofuse_scale.model.fusion import IdentityInput, ModalConcat
from yolofuse_scale.model.pretrained import (
    _CLASS_BRANCH,
    _CLASS_CONV,
    _KEY,
    _LEVEL,
    LoadReport,
    PretrainedError,
    Source,
    _adapt_stem,
    _average_fusion,
    _difference,
    _effective_scale,
    _find,
    _plain,
    _rows_of,
    _shape,
    compare_names,
    recognise,
)
from yolofuse_scale.model.rgbt import (
    RGB_CHANNELS,
    ChannelToNumberLayer,
    NumberToChannelLayer,
    Silence,
    SilenceChannelLayer,
)
from yolofuse_scale.model.safe_config.limits import MAX_ROWS

RGB, IR = frozenset({"rgb"}), frozenset({"ir"})
BOTH = RGB | IR
#: A head's tensors go by unit: a conv with its BN (``cv2.0.0.conv.weight``, ``cv2.0.0.bn.*`` -> ``cv2.0.0.``).
_UNIT = re.compile(r"^(.*?)(?:(?:conv|bn)\.)?[^.]+$")


@dataclass
class _Node:
    """What one built layer's output carries: modalities, and whether it is the ``[rgb, ir]`` pair, the image
    itself (no weights on the way), or computed from RGB and IR maps together (after fusion)."""

    mods: frozenset[str]
    pair: bool = False
    raw: bool = False
    joint: bool = False


def _inputs(j: int, f: Any) -> list[int]:
    """Layer ``j``'s inputs as absolute indices, -1 for the model input."""
    return [max(j + x, -1) if x < 0 else x for x in (f if isinstance(f, list) else [f])]


def _trace(layers: list[torch.nn.Module], weighted: set[int], two_stream: bool) -> list[_Node]:
    """Each layer's :class:`_Node`, in build order (a layer reads only earlier ones)."""
    start = _Node(BOTH, pair=two_stream, raw=True)
    nodes: list[_Node] = []
    for j, layer in enumerate(layers):
        ins = [start if x < 0 else nodes[x] for x in _inputs(j, layer.f)]
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
        seen, stack, found = set(), _inputs(j, layers[j].f), set()
        while stack:
            x = stack.pop()
            if x < 0 or x in seen:
                continue
            seen.add(x)
            if x in weighted or nodes[x].mods != BOTH or nodes[x].raw:
                found.add(nodes[x].mods)
            else:
                stack.extend(_inputs(x, layers[x].f))
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


def _signature(tensors: dict[str, torch.Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((k, tuple(v.shape)) for k, v in tensors.items()))


def _grouped(sd: dict[str, torch.Tensor]) -> dict[int, dict[str, str]]:
    """``model.{i}.{rest}`` keys by layer: ``{i: {rest: key}}``."""
    out: dict[int, dict[str, str]] = {}
    for key in sd:
        m = _KEY.match(key)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = key
    return out


@dataclass
class SingleView:
    """A pretrained file as one single-stream model (:func:`single_view`)."""

    kinds: list[str]  # each layer's class
    keys: list[dict[str, str]]  # each layer's tensors: {rest: key in source.tensors}
    head_from: list[int]  # the layers its head reads
    #: each layer's place, where its rows say it (see :class:`_Places`)
    places: list[tuple[Any, ...] | None]


class _Places:
    """Where each layer sits beyond its shapes, from the graph: the stride of the map it reads (convs of one
    shape serve P3 -> P4 and P4 -> P5), whether an upsampling comes before it (a neck's bottom-up conv has the
    shapes of a backbone conv), and a Conv's own stride (a 3x3 conv is one at stride 1 or 2). Strides are
    counted from the rows' convs and upsamplings alone, the same way on both sides."""

    def __init__(self) -> None:
        self.out: list[tuple[float, bool]] = []  # (output stride, upsampled on the way)
        self.places: list[tuple[Any, ...]] = []

    def add(self, ins: list[int], kind: str, conv_stride: Any, upsample: Any) -> None:
        seen = [self.out[x] if x >= 0 else (1.0, False) for x in ins] or [(1.0, False)]
        stride, up = max(s for s, _ in seen), any(u for _, u in seen)
        own = conv_stride if kind in ("Conv", "DWConv") and isinstance(conv_stride, int) else None
        self.places.append((stride, up, own))
        scale = upsample if isinstance(upsample, (int, float)) and upsample > 0 else None
        self.out.append((stride * (own or 1) / (scale or 1), up or scale is not None))


def single_view(source: Source) -> SingleView:
    """The file as one single-stream model: per layer its class and ``{rest: key in source.tensors}``, the
    layers its head reads, and where its rows say each layer sits. An Ultralytics checkpoint is one; a weights
    file of ours is read through its origins, the RGB stream's copy of each layer first (a late-fusion
    Detect: its RGB branch's levels)."""
    groups = _grouped(source.tensors)
    view: list[dict[str, str]] = []
    for i in range(len(source.kinds)):
        hit = _find(source.layers, i, "rgb")
        layer: dict[str, str] = {}
        if hit is not None:
            j, levels = hit
            there = {lv: k for k, lv in enumerate(levels)}
            for rest, key in groups.get(j, {}).items():
                lm = _LEVEL.match(rest) if levels else None
                if lm is None:
                    layer[rest] = key
                else:  # built level k reads (lv, stream): keep the one the RGB stream prefers for each lv
                    lv = levels[int(lm.group(2))]
                    if _find(there, lv[0], "rgb") == int(lm.group(2)):
                        layer[f"{lm.group(1)}.{lv[0]}.{lm.group(3)}"] = key
        view.append(layer)
    rows = _rows_of(source.single)

    def inputs(i: int) -> list[int] | None:
        f = rows[i][0]
        ok = (isinstance(f, int) and not isinstance(f, bool)) or (
            isinstance(f, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in f))
        return _inputs(i, f) if ok else None  # -1: the image

    head_from = [x for x in inputs(len(rows) - 1) or [] if x >= 0] if rows else []
    places: list[tuple[Any, ...] | None] = [None] * len(source.kinds)
    if len(rows) == len(source.kinds):  # the rows describe the layers the tensors came from
        graph = _Places()
        for i, (_f, _n, m, args) in enumerate(rows):
            ins = inputs(i)
            if ins is None or any(x >= i for x in ins):
                break
            graph.add(ins, source.kinds[i], args[2] if len(args) > 2 else 1,
                      (args[1] if len(args) > 1 else 2) if str(m).endswith("Upsample") else None)
            places[i] = graph.places[i]
    return SingleView(list(source.kinds), view, head_from, places)


def _align(seq: list[int], cands: list[int], match) -> list[tuple[int, int]]:
    """The longest order-keeping matching of target layers ``seq`` to file layers ``cands`` (``match(j, i)``
    says whether two may pair); among the longest, each target layer takes the earliest file layer left."""
    n, m = len(seq), len(cands)
    ok = [[match(j, i) is not None for i in cands] for j in seq]
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for a in range(n - 1, -1, -1):
        row, below = best[a], best[a + 1]
        for b in range(m - 1, -1, -1):
            row[b] = max(below[b], row[b + 1], below[b + 1] + 1 if ok[a][b] else 0)
    pairs, a, b = [], 0, 0
    while a < n and b < m:
        if ok[a][b] and best[a][b] == best[a + 1][b + 1] + 1:
            pairs.append((seq[a], cands[b]))
            a, b = a + 1, b + 1
        elif best[a][b] == best[a][b + 1]:
            b += 1
        else:
            a += 1
    return pairs


def _runs(pairs: list[tuple[str, int]]) -> str:
    """``3<-0, 4<-1, 5<-2, 9<-4`` as ``3-5<-0-2, 9<-4`` (a name with a part: as it is)."""
    out: list[list[Any]] = []
    for j, i in pairs:
        if out and j.isdigit() and out[-1][1].isdigit() and int(j) == int(out[-1][1]) + 1 and i == out[-1][3] + 1:
            out[-1][1], out[-1][3] = j, i
        else:
            out.append([j, j, i, i])
    return ", ".join(f"{a}<-{c}" if a == b else f"{a}-{b}<-{c}-{d}" for a, b, c, d in out)


def _target_name(model: torch.nn.Module) -> tuple[str, str]:
    """(how the report names the model, what it builds in words): a model YAML's file name and scale (a
    built-in variant as :func:`pretrained.identify` says it)."""
    found = recognise(getattr(model, "yaml", None))
    if found is not None:
        return f"{found[0]}{found[1]} fusion={found[2]}", f"{found[0]} scale {found[1]} (fusion={found[2]})"
    source = getattr(model, "yaml_source", None)
    name = Path(source).name if isinstance(source, str) and source.endswith((".yaml", ".yml")) else "the model YAML"
    d = getattr(model, "yaml", None) or {}
    scale = d.get("scale")
    row = _effective_scale(d)
    return (f"{name}{f' scale {scale}' if scale else ''}",
            f"{name}{f' at scale {scale}' if scale else ''}{f' {row}' if row else ''}")


def map_by_structure(model: torch.nn.Module, source: Source, write: bool = True) -> LoadReport:
    """Copy ``source`` into a model built from a YAML (see the module docstring); the report says what went
    where. ``write=False``: only the report."""
    sv = single_view(source)
    kinds, view, head_from = sv.kinds, sv.keys, sv.head_from
    if len(kinds) > MAX_ROWS:
        raise PretrainedError(f"--pretrained {source.path}: {len(kinds)} layers; a detector has at most {MAX_ROWS}")
    layers = list(model.model)
    dst_sd = model.state_dict()
    dst_groups = _grouped(dst_sd)
    dst = {j: {rest: dst_sd[key] for rest, key in g.items()} for j, g in dst_groups.items()}
    src = {i: {rest: source.tensors[key] for rest, key in g.items()} for i, g in enumerate(view) if g}
    nodes = _trace(layers, set(dst), bool(getattr(model, "two_stream", False)))
    head, src_head = len(layers) - 1, len(kinds) - 1
    nc_here = int(layers[-1].nc)
    name, builds = _target_name(model)
    report = LoadReport(source.path, source.what, f"{name} ({nc_here} class(es), IR "
                        f"{getattr(model, 'ir_channels', '?')} channel(s))", nc=(nc_here, source.nc), builds=builds)
    compare_names(report, model, source)

    # ------------------------------------------------------------------ what may pair with what
    sig_src = {i: (kinds[i], _signature(t)) for i, t in src.items()}
    # A layer may hold a block of the file's (several convs: DEYOLO's C2f_BiFocus holds a C2f), not one conv.
    wanted = {k for i, (k, sig) in sig_src.items() if sum(len(shape) == 4 for _, shape in sig) > 1}
    subs: dict[int, dict[tuple[str, Any], str]] = {}
    for j, layer in enumerate(layers):
        if j in dst and j != head:
            subs[j] = {}
            for prefix, sub in layer.named_modules():
                if prefix and type(sub).__name__ in wanted:
                    part = {r[len(prefix) + 1:]: t for r, t in dst[j].items() if r.startswith(prefix + ".")}
                    subs[j].setdefault((type(sub).__name__, _signature(part)), prefix + ".")
    sig_dst = {j: (type(layers[j]).__name__, _signature(t)) for j, t in dst.items()}
    graph = _Places()
    for j, layer in enumerate(layers):
        graph.add(_inputs(j, layer.f), type(layer).__name__, layer.conv.stride[0] if isinstance(layer, Conv) else None,
                  layer.scale_factor if isinstance(layer, torch.nn.Upsample) else None)
    places = graph.places

    def stem_kind(j: int) -> str | None:
        """The modality a layer reading the image itself sees (``_adapt_stem``'s stream), else None."""
        ins = [x for x in _inputs(j, layers[j].f)]
        if not all(x < 0 or nodes[x].raw for x in ins):
            return None
        mods = nodes[j].mods
        return "ir" if mods == IR else "rgb" if mods == RGB else "shared"

    stems = {j: stem_kind(j) for j in dst if j != head}

    def match(j: int, i: int) -> tuple[str, str] | None:
        """("whole", "") or ("part", prefix) where target layer j may take file layer i; else None."""
        if sv.places[i] is not None and sv.places[i] != places[j]:
            return None
        if sig_dst[j] == sig_src[i]:
            return "whole", ""
        if stems.get(j) and sig_dst[j][0] == kinds[i] and set(dst[j]) == set(src[i]) and all(
                t.shape == src[i][r].shape or (r == "conv.weight" and _adapt_stem(src[i][r], t, stems[j]) is not None)
                for r, t in dst[j].items()):
            return "whole", ""
        prefix = subs.get(j, {}).get(sig_src[i])
        return ("part", prefix) if prefix else None

    # ------------------------------------------------------------------ streams, aligned in order
    weighted = [j for j in sorted(dst) if j != head]
    streams = stream_labels(layers, nodes, set(dst))
    groups = {"rgb": [], "ir": [], "shared": [], "after fusion": []}
    for j in weighted:
        groups["after fusion" if nodes[j].joint else streams[j]].append(j)
    cands = [i for i in sorted(src) if i != src_head]
    pairs: dict[int, tuple[int, str, str]] = {}  # target layer -> (file layer, "whole"/"part", prefix)
    for g in ("rgb", "ir", "shared", "after fusion"):
        floor = max([i for i, _, _ in pairs.values()], default=-1) if g == "after fusion" else -1
        aligned = _align(groups[g], [i for i in cands if i > floor], match)
        for j, i in aligned:
            how, prefix = match(j, i)
            pairs[j] = (i, how, prefix)
        if aligned:
            report.matched.append(f"{g}: " + _runs([(f"{j}{'.' + pairs[j][2].rstrip('.') if pairs[j][2] else ''}", i)
                                                    for j, i in aligned]))

    # ------------------------------------------------------------------ the plan: tensor by tensor
    used: set[str] = set()
    reinit_src: set[str] = set()
    branch_numel = [0, 0]  # (placed, all) of the streams' weights, input to fusion
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for j in weighted:
        c, branch = report.counts[streams[j]], not nodes[j].joint
        hit = pairs.get(j)
        for rest, t in dst[j].items():
            key = f"model.{j}.{rest}"
            branch_numel[1] += t.numel() * branch
            there = None
            if hit is not None:
                i, how, prefix = hit
                there = rest if how == "whole" else rest[len(prefix):] if rest.startswith(prefix) else None
            if there is None:
                c["new"] += 1
                continue
            w, src_key = src[hit[0]][there], view[hit[0]][there]
            used.add(src_key)
            branch_numel[0] += t.numel() * branch
            if w.shape == t.shape:
                plan.append((t, w))
                c["loaded"] += 1
            else:
                adapted = _adapt_stem(w, t, stems[j])
                plan.append((t, adapted[0]))
                c["adapted"] += 1
                report.adapted.append(f"{key} {_shape(t)} <- {src_key} {_shape(w)}: {adapted[1]}")
        if hit is None:
            layer = layers[j]
            w = dst[j].get("conv.weight")
            if streams[j] == "attention":
                report.attention_new.append(j)
            elif (streams[j] == "fusion" and isinstance(layer, Conv) and w is not None and w.ndim == 4
                  and w.shape[1] == 2 * w.shape[0] and w.shape[2:] == (1, 1)):
                plan.append((w, _average_fusion(w)))
                report.fusion_init.append(j)
            else:
                report.unmatched.append(f"{j} {type(layer).__name__} ({streams[j]})")
        elif hit[1] == "part":
            report.unmatched.append(f"{j} {type(layers[j]).__name__} ({streams[j]}) but its part "
                                    f"{hit[2].rstrip('.')} (<- {hit[0]} {kinds[hit[0]]})")
    _head(report, layers, dst.get(head, {}), head, src.get(src_head, {}), view[src_head] if view else {},
          src_head, kinds, head_from, pairs, plan, used, reinit_src)

    if write:
        with torch.no_grad():
            for t, value in plan:
                t.copy_(value)
    report.placed = len(used)
    report.reinit_src = reinit_src - used
    report.countable = len(set(source.tensors) - report.reinit_src)
    report.stream_share = branch_numel[0] / branch_numel[1] if branch_numel[1] else 0.0
    return report


def _head(report: LoadReport, layers: list[torch.nn.Module], dst: dict[str, torch.Tensor], head: int,
          src: dict[str, torch.Tensor], keys: dict[str, str], src_head: int, kinds: list[str], head_from: list[int],
          pairs: dict[int, tuple[int, str, str]], plan: list, used: set[str],
          reinit_src: set[str]) -> None:
    """The Detect head, tensor by tensor (module docstring, 3.): into ``plan`` and the report."""
    c = report.counts["shared"]
    if not dst:
        return
    if type(layers[head]).__name__ != (kinds[src_head] if kinds else None) or not src:
        c["new"] += len(dst)
        report.unmatched.append(f"{head} {type(layers[head]).__name__} (the file's last layer is "
                                f"{kinds[src_head] if kinds else 'missing'})")
        return
    ins = _inputs(head, layers[head].f)
    nl_src = len(head_from)
    levels: dict[int, int | None] = {}
    for k, x in enumerate(ins):
        while x >= 0 and x not in pairs and isinstance(layers[x], Index) and len(_inputs(x, layers[x].f)) == 1:
            x = _inputs(x, layers[x].f)[0]  # the Index after one of our expanded layers passes its map on
        i = pairs.get(x, (None,))[0]
        levels[k] = head_from.index(i) if i in head_from else k if len(ins) == nl_src else None
    classes_differ = report.nc[0] != report.nc[1]
    status: dict[str, tuple[str, str | None]] = {}
    for rest, t in dst.items():
        lm = _LEVEL.match(rest)
        there = rest
        if lm is not None:
            k = levels.get(int(lm.group(2)))
            there = f"{lm.group(1)}.{k}.{lm.group(3)}" if k is not None else None
        if there is None or there not in src:
            status[rest] = ("new", None)
        elif classes_differ and _CLASS_BRANCH.match(rest) and (_CLASS_CONV.match(rest) or src[there].shape != t.shape):
            status[rest] = ("reinit", there)
        elif src[there].shape != t.shape:
            status[rest] = ("skipped", there)
        else:
            status[rest] = ("loaded", there)
    broken = {_UNIT.match(r).group(1) for r, (s, _) in status.items() if s == "skipped"}
    for rest, (s, there) in status.items():
        key = f"model.{head}.{rest}"
        if s == "loaded" and _UNIT.match(rest).group(1) in broken:
            s = "skipped"  # a conv's BN without its conv (or the reverse) would not be the file's unit
        if s == "loaded":
            plan.append((dst[rest], src[there]))
            used.add(keys[there])
            c["loaded"] += 1
        elif s == "reinit":
            c["reinit"] += 1
            report.reinit.append(key)
            reinit_src.add(keys[there])
        elif s == "skipped":
            c["skipped"] += 1
            report.skipped.append(f"{key} {_shape(dst[rest])} vs model.{src_head}.{there} {_shape(src[there])}")
        else:
            c["new"] += 1
    shown = ", ".join(f"{k}<-{v}" for k, v in levels.items() if v is not None)
    report.matched.append(f"head: {head} {type(layers[head]).__name__} <- {src_head}"
                          + (f" (levels {shown})" if shown else " (no level matched)"))
    if any(v is None for v in levels.values()):
        report.unmatched.append(f"{head} {type(layers[head]).__name__} levels "
                                f"{', '.join(str(k) for k, v in levels.items() if v is None)} (no level of the "
                                "file's head reads a layer matched to theirs)")


def map_same_model(model: torch.nn.Module, source: Source, write: bool = True) -> LoadReport:
    """A weights file of a model YAML's run into the same model YAML (a new run from ``<run>/weights/last.pt``):
    each tensor to the one of the same name where the shapes agree (the class layers as in the other paths);
    any other model is refused, since nothing says where that file's layers belong in it."""
    mine, theirs = ({k: v for k, v in d.items() if k != "nc"} for d in (getattr(model, "yaml", None) or {},
                                                                        source.model_yaml or {}))
    name, builds = _target_name(model)
    if _plain(mine) != _plain(theirs):
        why = _difference(source.model_yaml or {}, getattr(model, "yaml", None) or {}, "the model being trained")
        raise PretrainedError(
            f"--pretrained {source.path}: the weights of another model ({why or 'its settings differ'}); the weights "
            f"of a model YAML's run start that same YAML only (its layers match by name). This run builds {builds}: "
            "give it an RGB checkpoint (matched by structure) or a run of this YAML")
    layers = list(model.model)
    dst_sd = model.state_dict()
    weighted = set(_grouped(dst_sd))
    labels = stream_labels(layers, _trace(layers, weighted, bool(getattr(model, "two_stream", False))), weighted)
    head = len(layers) - 1
    nc_here = int(layers[-1].nc)
    report = LoadReport(source.path, source.what, f"{name} ({nc_here} class(es), IR "
                        f"{getattr(model, 'ir_channels', '?')} channel(s))", nc=(nc_here, source.nc), builds=builds)
    compare_names(report, model, source)
    used: set[str] = set()
    reinit_src: set[str] = set()
    plan = []
    for key, t in dst_sd.items():
        m = _KEY.match(key)
        j, rest = (int(m.group(1)), m.group(2)) if m else (head, key)
        c = report.counts[labels.get(j, "shared")]
        w = source.tensors.get(key)
        if w is None:
            c["new"] += 1
            report.new.append(key)
        elif j == head and nc_here != source.nc and _CLASS_BRANCH.match(rest) and (
                _CLASS_CONV.match(rest) or w.shape != t.shape):
            c["reinit"] += 1
            report.reinit.append(key)
            reinit_src.add(key)
        elif w.shape != t.shape:  # e.g. an IR stem of another channel count
            c["skipped"] += 1
            report.skipped.append(f"{key} {_shape(t)} vs {_shape(w)}")
        else:
            plan.append((t, w))
            c["loaded"] += 1
            used.add(key)
    if write:
        with torch.no_grad():
            for t, value in plan:
                t.copy_(value)
    report.placed = len(used)
    report.reinit_src = reinit_src - used
    report.countable = len(set(source.tensors) - report.reinit_src)
    return report
