"""``--pretrained`` from the weights of a model YAML's run into that same model YAML (a new run from
``<run>/weights/last.pt``): tensor by name, since nothing else says where that file's layers belong; any other
model is refused.
"""

from __future__ import annotations

import torch

from yolofuse_scale.model.pretrained.checkpoint import PretrainedError, Source
from yolofuse_scale.model.pretrained.identify import first_difference, plain, target_name
from yolofuse_scale.model.pretrained.report import LoadReport, compare_names
from yolofuse_scale.model.pretrained.streams import stream_labels, trace_streams
from yolofuse_scale.model.pretrained.transfer import CLASS_BRANCH, CLASS_CONV, KEY, grouped, shape_of, write_plan


def map_same_model(model: torch.nn.Module, source: Source, write: bool = True) -> LoadReport:
    """A weights file of a model YAML's run into the same model YAML (a new run from ``<run>/weights/last.pt``):
    each tensor to the one of the same name where the shapes agree (the class layers as in the other paths);
    any other model is refused, since nothing says where that file's layers belong in it."""
    mine, theirs = ({k: v for k, v in d.items() if k != "nc"} for d in (getattr(model, "yaml", None) or {},
                                                                        source.model_yaml or {}))
    name, builds = target_name(model)
    if plain(mine) != plain(theirs):
        why = first_difference(source.model_yaml or {}, getattr(model, "yaml", None) or {}, "the model being trained")
        raise PretrainedError(
            f"--pretrained {source.path}: the weights of another model ({why or 'its settings differ'}); the weights "
            f"of a model YAML's run start that same YAML only (its layers match by name). This run builds {builds}: "
            "give it an RGB checkpoint (matched by structure) or a run of this YAML")
    layers = list(model.model)
    dst_sd = model.state_dict()
    weighted = set(grouped(dst_sd))
    labels = stream_labels(layers, trace_streams(layers, weighted, bool(getattr(model, "two_stream", False))), weighted)
    head = len(layers) - 1
    nc_here = int(layers[-1].nc)
    report = LoadReport(source.path, source.what, f"{name} ({nc_here} class(es), IR "
                        f"{getattr(model, 'ir_channels', '?')} channel(s))", nc=(nc_here, source.nc), builds=builds)
    compare_names(report, model, source)
    used: set[str] = set()
    reinit_src: set[str] = set()
    plan = []
    for key, t in dst_sd.items():
        m = KEY.match(key)
        j, rest = (int(m.group(1)), m.group(2)) if m else (head, key)
        c = report.counts[labels.get(j, "shared")]
        w = source.tensors.get(key)
        if w is None:
            c["new"] += 1
            report.new.append(key)
        elif j == head and nc_here != source.nc and CLASS_BRANCH.match(rest) and (
                CLASS_CONV.match(rest) or w.shape != t.shape):
            c["reinit"] += 1
            report.reinit.append(key)
            reinit_src.add(key)
        elif w.shape != t.shape:  # e.g. an IR stem of another channel count
            c["skipped"] += 1
            report.skipped.append(f"{key} {shape_of(t)} vs {shape_of(w)}")
        else:
            plan.append((t, w))
            c["loaded"] += 1
            used.add(key)
    if write:
        write_plan(plan)
    report.settle(used, reinit_src, source.tensors)
    return report
