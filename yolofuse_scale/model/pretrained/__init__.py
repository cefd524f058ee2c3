"""``--pretrained PATH``: start every stream of a fusion detector from one single-stream model's weights.

The source is an Ultralytics checkpoint of the same family and scale (``yolo11n.pt``, ``yolo11n-obb.pt``) or one
of our weights files; :func:`apply_pretrained` reads it, maps it into the model, and refuses one that hardly
fits. One concern per module, each importing only those below it:

- ``checkpoint.py``: the file read without running anything in it (:func:`read_source`, the allow-listed
  unpickler), as a ``Source``; ``identify.py``: what a model dictionary is (family, scale, task), in words;
- ``builtin.py``: a built-in variant, by the single-stream layer each of its layers declares it copies;
- ``by_structure.py``: a model YAML (declares no origins), its layers matched to the file's by structure,
  the streams traced through the built graph (``streams.py``); ``by_name.py``: a model YAML's run into the
  same YAML, tensor by name;
- ``transfer.py``: what the mappings share (stems adapted to IR, fusion convs as averages, class layers,
  Detect levels); ``report.py``: the per-stream load report they fill.

Every transfer is reported per stream (loaded, adapted, shape-skipped, re-initialised, new), and one
that places fewer than half of the source's tensors (another family or scale) is refused, saying what the
file is and what the run builds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yolofuse_scale.model.pretrained.builtin import map_by_origins
from yolofuse_scale.model.pretrained.by_name import map_same_model
from yolofuse_scale.model.pretrained.by_structure import map_by_structure
from yolofuse_scale.model.pretrained.checkpoint import PretrainedError, Source, read_source
from yolofuse_scale.model.pretrained.identify import recognise
from yolofuse_scale.model.pretrained.report import LoadReport

__all__ = ["apply_pretrained", "map_pretrained"]

#: Below this share of the source's tensors placed (class-dependent ones aside) the source is refused.
MIN_PLACED = 0.5


def map_pretrained(model: torch.nn.Module, source: Source, write: bool = True) -> LoadReport:
    """Copy ``source`` into ``model`` in place, stream by stream; return the report (``write=False``: only
    the report, the model unchanged). A built-in variant by its declared origins (``builtin.py``); any other
    model (a model YAML) by structure (``by_structure.py``), or by name from a run of that same YAML
    (``by_name.py``)."""
    if source.model_yaml is not None:
        return map_same_model(model, source, write)
    found = recognise(getattr(model, "yaml", None))
    if found is None:
        return map_by_structure(model, source, write)
    return map_by_origins(model, source, found, write)


def apply_pretrained(model: torch.nn.Module, path: str | Path) -> LoadReport:
    """Initialise ``model`` from ``path`` (see the module docstring); refuse one that hardly fits."""
    source = read_source(path)
    probe = map_pretrained(model, source, write=False)  # refused before any weight changes
    is_what = f"{Path(path).name} is {source.identity}; this run builds {probe.builds}"
    if probe.stream_share is not None and probe.stream_share < MIN_PLACED:
        first = f" (the first that does not: layer {probe.unmatched[0]})" if probe.unmatched else ""
        raise PretrainedError(
            f"--pretrained {path}: only {probe.stream_share:.0%} of the weights of the model's streams (input to "
            f"fusion) find a layer of the same type and shapes in it{first}. {is_what}. It must be an RGB "
            "checkpoint of the family and scale the YAML is written for (e.g. yolov8n.pt for a YOLOv8-based YAML "
            "at scale n)")
    if probe.stream_share is None and probe.share < MIN_PLACED:
        why = f"; another architecture: {probe.difference}" if probe.difference else ""
        raise PretrainedError(
            f"--pretrained {path}: only {probe.placed} of its {probe.countable} tensors ({probe.share:.0%}) fit "
            f"{probe.target}{why}. {is_what}. It must be a checkpoint of the same family and scale as --model "
            f"(e.g. {probe.target.split()[0]}.pt from Ultralytics, or weights/last.pt of a run of that model)")
    return map_pretrained(model, source)
