"""``--pretrained`` into a built-in variant: every layer from the single-stream layer its declared origin names.

For a built-in variant nothing is matched by name: ``variants.fusion_origins`` says which single-stream layer
(and which stream) each layer of the built model copies, the source's layers are placed the same way (an
Ultralytics model: layer i is single-stream layer i; our rgb variant: layer i + 1), and
``model.{src}.<rest>`` goes to ``model.{dst}.<rest>`` where the shapes agree (the stems, fusion convs and
class layers as :mod:`.transfer` says). Per fusion that gives:

- ``rgb``: the model as is. ``ir``: the same weights, the first conv adapted to the IR channels;
- ``early``: both stems from the pretrained stem, the trunk from the pretrained trunk;
- ``mid``: both backbones from the pretrained backbone, neck and head pretrained;
- ``dea``: as ``mid``; its cross-modal attention layers are new (no single-stream model has them)
  and keep their own initialisation;
- ``late``: both branches, and Detect's levels of each branch from the pretrained Detect's levels;
- ``data``: one stem reading 3 + C_ir channels.

A file of the other task (a detection checkpoint such as ``yolo11n.pt`` for ``--task obb``, or an ``-obb``
one for detection): backbone and neck are loaded as above, the head keeps the model's own initialisation
(it predicts another kind of box; the report lists it as re-initialised, and its tensors in the file are not
counted against the file's share, as class-dependent ones are not). An ``-obb`` checkpoint into an OBB model
loads the head too, its angle branch (``cv4``) level by level as the others.
"""

from __future__ import annotations

from typing import Any

import torch

from yolofuse_scale.model.pretrained.checkpoint import Source
from yolofuse_scale.model.pretrained.identify import first_difference
from yolofuse_scale.model.pretrained.report import LoadReport, compare_names
from yolofuse_scale.model.pretrained.transfer import (
    CLASS_BRANCH,
    CLASS_CONV,
    KEY,
    LEVEL,
    adapt_stem,
    average_fusion,
    find_by_stream,
    shape_of,
)
from yolofuse_scale.model.variants import fusion_origins, head_task


def map_by_origins(model: torch.nn.Module, source: Source, found: tuple[str, str, str, dict[str, Any]],
                   write: bool = True) -> LoadReport:
    """Copy ``source`` into ``model``, a built-in variant (``found``: what ``identify.recognise`` says it is), in
    place, stream by stream; return the report (``write=False``: only the report, the model unchanged)."""
    family, scale, fusion, base = found
    origins = fusion_origins(base, fusion)
    nc_here = int(model.model[-1].nc)
    name = f"{family}{scale}" + ("-obb" if getattr(model, "task", "detect") == "obb" else "")
    target = (f"{name} fusion={fusion} ({nc_here} class(es), IR {getattr(model, 'ir_channels', '?')} "
              "channel(s))")
    last = len(base["backbone"]) + len(base["head"]) - 1
    # A file of the other task (a detection checkpoint for an OBB model, or the reverse): its head predicts another
    # kind of box, so the head starts as the model's own and everything before it is loaded as usual.
    task_here, task_there = getattr(model, "task", "detect"), head_task(source.kinds[-1]) if source.kinds else None
    cross = task_there is not None and task_there != task_here
    report = LoadReport(source.path, source.what, target,
                        difference=first_difference(source.single, base, name, heads=not cross),
                        nc=(nc_here, source.nc),
                        builds=f"{family}{name[len(family) + len(scale):]} scale {scale} (fusion={fusion})",
                        tasks=(task_there, task_here) if cross else None)
    compare_names(report, model, source)
    classes_differ = nc_here != source.nc
    used: set[str] = set()
    reinit_src: set[str] = set()
    if cross:  # the file's head tensors are set aside, as class-dependent ones are (not counted against it)
        heads = {j for (src, _), (j, _) in source.layers.items() if src == len(source.kinds) - 1}
        reinit_src = {k for k in source.tensors if (m := KEY.match(k)) and int(m.group(1)) in heads}
    dst_sd = model.state_dict()  # the model's own tensors (views): copy_ writes the weights

    def put(dst: torch.Tensor, value: torch.Tensor) -> None:
        if write:
            dst.copy_(value)

    with torch.no_grad():
        for key, dst in dst_sd.items():
            m = KEY.match(key)
            o = origins[int(m.group(1))] if m and int(m.group(1)) < len(origins) else None
            if o is None:
                report.counts["shared"]["new"] += 1
                report.new.append(key)
                continue
            rest, stream = m.group(2), o.stream
            if cross and o.src == last:
                report.counts[stream]["reinit"] += 1
                report.other_task.append(key)
                continue
            hit = find_by_stream(source.layers, o.src, stream)
            lm = LEVEL.match(rest) if o.src == last else None
            if hit is not None and lm is not None:  # the head: level k of this head <- the matching level there
                level, stream = o.levels[int(lm.group(2))] if o.levels else (int(lm.group(2)), stream)
                there = {lv: k for k, lv in enumerate(hit[1])} if hit[1] else None
                k = level if there is None else find_by_stream(there, level, stream)
                rest = f"{lm.group(1)}.{k}.{lm.group(3)}" if k is not None else None
            src_key = f"model.{hit[0]}.{rest}" if hit is not None and rest is not None else None
            c = report.counts[stream]
            if src_key is None or src_key not in source.tensors:
                if stream == "fusion" and rest == "conv.weight":
                    put(dst, average_fusion(dst))
                    report.fusion_init.append(int(m.group(1)))
                elif stream == "attention":
                    if int(m.group(1)) not in report.attention_new:
                        report.attention_new.append(int(m.group(1)))
                elif stream != "fusion":
                    report.new.append(key)
                c["new"] += 1
                continue
            w = source.tensors[src_key]
            if o.src == last and classes_differ and CLASS_BRANCH.match(rest) and (
                    CLASS_CONV.match(rest) or w.shape != dst.shape):
                c["reinit"] += 1
                report.reinit.append(key)
                reinit_src.add(src_key)
                continue
            if w.shape == dst.shape:
                put(dst, w)
                c["loaded"] += 1
                used.add(src_key)
                continue
            adapted = adapt_stem(w, dst, stream) if o.src == 0 and rest == "conv.weight" else None
            if adapted is not None:
                put(dst, adapted[0])
                c["adapted"] += 1
                used.add(src_key)
                report.adapted.append(f"{key} {shape_of(dst)} <- {src_key} {shape_of(w)}: {adapted[1]}")
                continue
            c["skipped"] += 1
            report.skipped.append(f"{key} {shape_of(dst)} vs {src_key} {shape_of(w)}")
    report.settle(used, reinit_src, source.tensors)
    return report
