"""``--pretrained`` into a model YAML (YOLOFuse's, DEYOLO's, YOLOv11-RGBT's configs): layers matched by structure.

A built-in variant records which single-stream layer each of its layers copies (``variants.fusion_origins``);
a YAML written by someone else records nothing of the kind. Its layers are matched to the pretrained
single-stream model's by what they are instead:

1. **Streams**, traced through the built graph from its input selectors (``streams.py``): a layer on one
   modality is on the RGB or the IR stream, one fed by both images (stacked, or as batch items) ``shared``,
   one computed from an RGB map and an IR map together *after fusion*.
2. **Alignment**, per stream, in order: the stream's layers with weights against the file's layers (its
   head aside), keeping their order and matching as many as possible (a longest common subsequence), where
   two layers match when they are the same class with the same tensors of the same shapes (the argument
   signature as built: widths, kernels, repeats, attention heads). The layers after fusion align with the
   file's layers after the last one a stream used (neck layers never take backbone weights). Where a
   stream reads the image itself, its first conv may differ in input channels and is adapted as for the
   built-in variants (``transfer.adapt_stem``: a 1-channel IR stem gets the sum over the RGB input
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
from typing import Any

import torch
from ultralytics.nn.modules import Conv, Index

from yolofuse_scale.model.pretrained.checkpoint import PretrainedError, Source
from yolofuse_scale.model.pretrained.identify import rows_of, target_name
from yolofuse_scale.model.pretrained.report import LoadReport, compare_names
from yolofuse_scale.model.pretrained.streams import IR, RGB, layer_inputs, stream_labels, trace_streams
from yolofuse_scale.model.pretrained.transfer import (
    CLASS_BRANCH,
    CLASS_CONV,
    LEVEL,
    adapt_stem,
    average_fusion,
    find_by_stream,
    grouped,
    shape_of,
    write_plan,
)
from yolofuse_scale.model.safe_config.limits import MAX_ROWS

#: A head's tensors go by unit: a conv with its BN (``cv2.0.0.conv.weight``, ``cv2.0.0.bn.*`` -> ``cv2.0.0.``).
_UNIT = re.compile(r"^(.*?)(?:(?:conv|bn)\.)?[^.]+$")


def _signature(tensors: dict[str, torch.Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((k, tuple(v.shape)) for k, v in tensors.items()))


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
    groups = grouped(source.tensors)
    view: list[dict[str, str]] = []
    for i in range(len(source.kinds)):
        hit = find_by_stream(source.layers, i, "rgb")
        layer: dict[str, str] = {}
        if hit is not None:
            j, levels = hit
            there = {lv: k for k, lv in enumerate(levels)}
            for rest, key in groups.get(j, {}).items():
                lm = LEVEL.match(rest) if levels else None
                if lm is None:
                    layer[rest] = key
                else:  # built level k reads (lv, stream): keep the one the RGB stream prefers for each lv
                    lv = levels[int(lm.group(2))]
                    if find_by_stream(there, lv[0], "rgb") == int(lm.group(2)):
                        layer[f"{lm.group(1)}.{lv[0]}.{lm.group(3)}"] = key
        view.append(layer)
    rows = rows_of(source.single)

    def inputs(i: int) -> list[int] | None:
        f = rows[i][0]
        ok = (isinstance(f, int) and not isinstance(f, bool)) or (
            isinstance(f, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in f))
        return layer_inputs(i, f) if ok else None  # -1: the image

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


def map_by_structure(model: torch.nn.Module, source: Source, write: bool = True) -> LoadReport:
    """Copy ``source`` into a model built from a YAML (see the module docstring); the report says what went
    where. ``write=False``: only the report."""
    sv = single_view(source)
    kinds, view, head_from = sv.kinds, sv.keys, sv.head_from
    if len(kinds) > MAX_ROWS:
        raise PretrainedError(f"--pretrained {source.path}: {len(kinds)} layers; a detector has at most {MAX_ROWS}")
    layers = list(model.model)
    dst_sd = model.state_dict()
    dst_groups = grouped(dst_sd)
    dst = {j: {rest: dst_sd[key] for rest, key in g.items()} for j, g in dst_groups.items()}
    src = {i: {rest: source.tensors[key] for rest, key in g.items()} for i, g in enumerate(view) if g}
    nodes = trace_streams(layers, set(dst), bool(getattr(model, "two_stream", False)))
    head, src_head = len(layers) - 1, len(kinds) - 1
    nc_here = int(layers[-1].nc)
    name, builds = target_name(model)
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
        graph.add(layer_inputs(j, layer.f), type(layer).__name__,
                  layer.conv.stride[0] if isinstance(layer, Conv) else None,
                  layer.scale_factor if isinstance(layer, torch.nn.Upsample) else None)
    places = graph.places

    def stem_kind(j: int) -> str | None:
        """The modality a layer reading the image itself sees (``adapt_stem``'s stream), else None."""
        ins = [x for x in layer_inputs(j, layers[j].f)]
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
                t.shape == src[i][r].shape or (r == "conv.weight" and adapt_stem(src[i][r], t, stems[j]) is not None)
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
                adapted = adapt_stem(w, t, stems[j])
                plan.append((t, adapted[0]))
                c["adapted"] += 1
                report.adapted.append(f"{key} {shape_of(t)} <- {src_key} {shape_of(w)}: {adapted[1]}")
        if hit is None:
            layer = layers[j]
            w = dst[j].get("conv.weight")
            if streams[j] == "attention":
                report.attention_new.append(j)
            elif (streams[j] == "fusion" and isinstance(layer, Conv) and w is not None and w.ndim == 4
                  and w.shape[1] == 2 * w.shape[0] and w.shape[2:] == (1, 1)):
                plan.append((w, average_fusion(w)))
                report.fusion_init.append(j)
            else:
                report.unmatched.append(f"{j} {type(layer).__name__} ({streams[j]})")
        elif hit[1] == "part":
            report.unmatched.append(f"{j} {type(layers[j]).__name__} ({streams[j]}) but its part "
                                    f"{hit[2].rstrip('.')} (<- {hit[0]} {kinds[hit[0]]})")
    _head(report, layers, dst.get(head, {}), head, src.get(src_head, {}), view[src_head] if view else {},
          src_head, kinds, head_from, pairs, plan, used, reinit_src)

    if write:
        write_plan(plan)
    report.settle(used, reinit_src, source.tensors)
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
    ins = layer_inputs(head, layers[head].f)
    nl_src = len(head_from)
    levels: dict[int, int | None] = {}
    for k, x in enumerate(ins):
        while x >= 0 and x not in pairs and isinstance(layers[x], Index) and len(layer_inputs(x, layers[x].f)) == 1:
            x = layer_inputs(x, layers[x].f)[0]  # the Index after one of our expanded layers passes its map on
        i = pairs.get(x, (None,))[0]
        levels[k] = head_from.index(i) if i in head_from else k if len(ins) == nl_src else None
    classes_differ = report.nc[0] != report.nc[1]
    status: dict[str, tuple[str, str | None]] = {}
    for rest, t in dst.items():
        lm = LEVEL.match(rest)
        there = rest
        if lm is not None:
            k = levels.get(int(lm.group(2)))
            there = f"{lm.group(1)}.{k}.{lm.group(3)}" if k is not None else None
        if there is None or there not in src:
            status[rest] = ("new", None)
        elif classes_differ and CLASS_BRANCH.match(rest) and (CLASS_CONV.match(rest) or src[there].shape != t.shape):
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
            report.skipped.append(f"{key} {shape_of(dst[rest])} vs model.{src_head}.{there} {shape_of(src[there])}")
        else:
            c["new"] += 1
    shown = ", ".join(f"{k}<-{v}" for k, v in levels.items() if v is not None)
    report.matched.append(f"head: {head} {type(layers[head]).__name__} <- {src_head}"
                          + (f" (levels {shown})" if shown else " (no level matched)"))
    if any(v is None for v in levels.values()):
        report.unmatched.append(f"{head} {type(layers[head]).__name__} levels "
                                f"{', '.join(str(k) for k, v in levels.items() if v is None)} (no level of the "
                                "file's head reads a layer matched to theirs)")
