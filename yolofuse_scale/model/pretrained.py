"""``--pretrained PATH``: start every stream of a fusion detector from one single-stream model's weights.

The source is an Ultralytics checkpoint of the same family and scale (``yolo11n.pt``: a pickled
``DetectionModel`` trained on 3-channel RGB; ``yolo11n-obb.pt``: an ``OBBModel``, oriented boxes) or one of
our weights files of any built-in variant
(``weights/last.pt``; of a model YAML's run: into that same YAML, tensor by name). For a built-in
variant nothing is matched by name: ``variants.fusion_origins`` says which single-stream layer (and which
stream) each layer of the built model copies, the source's layers are placed the same way (an
Ultralytics model: layer i is single-stream layer i; our rgb variant: layer i + 1), and
``model.{src}.<rest>`` goes to ``model.{dst}.<rest>`` where the shapes agree. Per fusion that gives:

- ``rgb``: the model as is. ``ir``: the same weights, the first conv adapted to the IR channels;
- ``early``: both stems from the pretrained stem, the trunk from the pretrained trunk;
- ``mid``: both backbones from the pretrained backbone, neck and head pretrained;
- ``dea``: as ``mid``; its cross-modal attention layers are new (no single-stream model has them)
  and keep their own initialisation;
- ``late``: both branches, and Detect's levels of each branch from the pretrained Detect's levels;
- ``data``: one stem reading 3 + C_ir channels (see below).

Choices, and why:

- the IR stem of a 1-channel IR image gets the **sum** over the RGB input channels of the pretrained
  first conv: a gray image g then gives exactly the response the RGB model gives to the RGB image
  (g, g, g) (the mean would give a third of it). With 3 IR channels the weights are copied.
- data-level fusion: the stem's RGB part is **half** the pretrained weight and its IR part half the
  adapted one, so an IR image equal to the RGB image's gray level gives the pretrained response
  (copying both whole would double it, and the BN statistics after it would be off by 2x); both
  modalities feed the trunk from the first step. Zero-initialising the IR part would keep the RGB
  response exactly but start the model blind to IR, the modality that matters at night.
- the fusion 1x1 convs (early, mid) are new: initialised to the **average of the two streams**
  (output channel c = (rgb_c + ir_c) / 2), so channel c of the fused map means what channel c
  meant to the pretrained neck; the default random init would scramble the channels the pretrained
  neck and head read. Its BN and SiLU stay as built (they still act once more on the average).
- a file of the other task (a detection checkpoint such as ``yolo11n.pt`` for ``--task obb``, or an ``-obb``
  one for detection): backbone and neck are loaded as above, the head keeps the model's own initialisation
  (it predicts another kind of box; the report lists it as re-initialised, and its tensors in the file are not
  counted against the file's share, as class-dependent ones are not). An ``-obb`` checkpoint into an OBB model
  loads the head too, its angle branch (``cv4``) level by level as the others.
- the class-dependent Detect layers (``cv3.*`` and YOLO26's ``one2one_cv3.*``: the final class
  convs, and the convs before them whose width Ultralytics derives from the class count) keep the
  model's own initialisation (Ultralytics' class-prior bias) when the class count differs, and are
  copied when it is the same.

Every transfer is reported per stream (loaded, adapted, shape-skipped, re-initialised, new), and one
that places fewer than half of the source's tensors (another family or scale) is refused, saying what the
file is (:func:`identify`: its rows against each family's, its scale row against the family's scales,
Ultralytics 8.3's older ``depth_multiple``/``width_multiple`` keys read as the scale they build) and what
the run builds. Class layers loaded under other names (the same count, ``cat`` in the file, ``person``
here) get one warning naming the ids. A model that is not a built-in variant (a model YAML) declares no
origins: ``pretrained_yaml.py`` matches its layers to the file's by structure.

Ultralytics checkpoints are pickles: they are read with torch's ``weights_only`` unpickler and an
explicit allow-list of the classes a detection checkpoint holds; anything else is refused by name.
Those classes may only be *rebuilt* (new object + state), never *called*: a pickle that calls one
(``DetectionModel(cfg)`` would parse a model YAML, whose activation Ultralytics ``eval()``s) is refused
too. The tensors are then read from the modules' parameter and buffer tables, without running any
method of the loaded objects. Imports nothing distributed.
"""

from __future__ import annotations

import functools
import importlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolofuse_scale.errors import UserError
from yolofuse_scale.model.variants import (
    FAMILIES,
    FUSIONS,
    SCALE_NAMES,
    TASKS,
    Origin,
    derive_fusion,
    family_yaml,
    fusion_origins,
    head_task,
)
from yolofuse_scale.torch_load import load_weights_only, refusal_reason

#: The classes an Ultralytics YOLOv8 / YOLO11 / YOLO12 / YOLO26 detection checkpoint holds (found by saving
#: one of each; ``torch.serialization.get_unsafe_globals_in_checkpoint`` lists them). Only these are rebuilt.
#: YOLO12's (A2C2f, ABlock, AAttn) serve model YAMLs built on it (YOLOFuse's easy and decision-level fusion).
#: An oriented-box checkpoint (``yolo11n-obb.pt``) holds the same blocks in an ``OBBModel`` with an ``OBB`` head
#: (YOLO26: ``OBB26``).
ALLOWED_CLASSES = (
    "ultralytics.nn.tasks.DetectionModel", "ultralytics.nn.tasks.OBBModel",
    "ultralytics.nn.modules.conv.Conv", "ultralytics.nn.modules.conv.DWConv", "ultralytics.nn.modules.conv.Concat",
    "ultralytics.nn.modules.block.C2f", "ultralytics.nn.modules.block.C3k2", "ultralytics.nn.modules.block.C3k",
    "ultralytics.nn.modules.block.Bottleneck", "ultralytics.nn.modules.block.SPPF",
    "ultralytics.nn.modules.block.C2PSA", "ultralytics.nn.modules.block.PSABlock",
    "ultralytics.nn.modules.block.Attention", "ultralytics.nn.modules.block.DFL",
    "ultralytics.nn.modules.block.A2C2f", "ultralytics.nn.modules.block.ABlock", "ultralytics.nn.modules.block.AAttn",
    "ultralytics.nn.modules.head.Detect", "ultralytics.nn.modules.head.OBB", "ultralytics.nn.modules.head.OBB26",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.SiLU", "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.linear.Identity",
)
#: Plain data holders whose constructor only stores its keyword arguments: they may be called.
ALLOWED_DATA = ("ultralytics.utils.IterableSimpleNamespace",)
#: Below this share of the source's tensors placed (class-dependent ones aside) the source is refused.
MIN_PLACED = 0.5
STREAMS = ("rgb", "ir", "shared", "fusion", "attention")
_KEY = re.compile(r"^model\.(\d+)\.(.+)$")
_LEVEL = re.compile(r"^((?:one2one_)?cv[234])\.(\d+)\.(.+)$")  # a head's per-level branches (cv4: OBB's angle)
_CLASS_BRANCH = re.compile(r"^(one2one_)?cv3\.\d+\.")
_CLASS_CONV = re.compile(r"^(one2one_)?cv3\.\d+\.2\.(weight|bias)$")


class PretrainedError(UserError, ValueError):
    """A ``--pretrained`` file that cannot be used; the message names it and says why."""


# ------------------------------------------------------------------------------------ reading files
def _refuse_call(self, *args, **kwargs):
    raise pickle.UnpicklingError(f"the pickle calls {type(self).__name__}(...) instead of rebuilding one")


def _rebuild_only(cls: type) -> type:
    """A subclass of ``cls`` the unpickler can rebuild (``__new__`` + state) but whose construction refuses."""
    return type(cls.__name__, (cls,), {"__init__": _refuse_call, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def _resolve(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _allow_list() -> list[tuple[Any, str]]:
    return [(_rebuild_only(_resolve(n)), n) for n in ALLOWED_CLASSES] + [(_resolve(n), n) for n in ALLOWED_DATA]


def _refused_globals(path: Path, error: Exception) -> list[str]:
    """The classes/functions of ``path`` outside the allow-list (read from its pickle opcodes, not run)."""
    found = []
    try:
        found = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                 if g not in ALLOWED_CLASSES + ALLOWED_DATA]
    except Exception:  # not a zip checkpoint: the unpickler's own message names what it met
        pass
    named = re.search(r"GLOBAL (\S+)", str(error))
    if named:  # torch's message writes builtins without their module
        name = named.group(1) if "." in named.group(1) else f"builtins.{named.group(1)}"
        if name not in ALLOWED_CLASSES:
            found.append(name)
    return sorted(set(found))


def safe_load(path: Path) -> Any:
    """``torch.load(path)`` with the weights-only unpickler and the allow-list; a refusal names the class."""
    try:
        with torch.serialization.safe_globals(_allow_list()):
            return load_weights_only(path)
    except pickle.UnpicklingError as e:
        refused = _refused_globals(path, e)
        if refused:
            raise PretrainedError(
                f"--pretrained {path}: refused: it holds {', '.join(refused)}, "
                f"{'which is' if len(refused) == 1 else 'which are'} not among the classes an "
                f"Ultralytics detection checkpoint holds ({', '.join(n.rpartition('.')[2] for n in ALLOWED_CLASSES)}"
                "); nothing in the file was run") from None
        reason = refusal_reason(e)
        if reason.startswith(("Unsupported operand", "invalid load key")):  # bytes that are no pickle at all
            raise PretrainedError(f"--pretrained {path}: not a PyTorch checkpoint ({reason})") from None
        raise PretrainedError(f"--pretrained {path}: refused by the weights-only unpickler ({reason}); "
                              "nothing in the file was run") from None
    except Exception as e:  # a truncated zip, a text file, ...
        raise PretrainedError(f"--pretrained {path}: not a PyTorch checkpoint ({type(e).__name__}: "
                              f"{refusal_reason(e)})") from None


#: Modules a checkpoint's tree may hold, a shared one counted each time it is reached (a yolov8x has ~400;
#: Ultralytics shares one activation module among all its convs).
MAX_TREE = 100_000


def _table(module: Any, name: str, where: str) -> dict[str, Any]:
    """One of a rebuilt module's tables (``_parameters``, ``_buffers``, ``_modules``): a name -> value mapping."""
    t = vars(module).get(name)
    if t is None:
        return {}
    if not isinstance(t, dict) or not all(isinstance(k, str) for k in t):
        raise PretrainedError(f"{where or 'the model'}: its {name} is a {type(t).__name__}, not a table of names")
    return t


def _module_tensors(root: Any) -> dict[str, torch.Tensor]:
    """A rebuilt module's state-dict tensors, read from its tables: no method of the object runs. Walked
    without recursion; every node must be a module with tables of the types torch gives them."""
    out: dict[str, torch.Tensor] = {}
    stack: list[tuple[Any, str]] = [(root, "")]
    visits = 0
    while stack:
        module, prefix = stack.pop()
        visits += 1
        where = prefix.rstrip(".") or "the model"
        if visits > MAX_TREE:
            raise PretrainedError(f"more than {MAX_TREE} modules in its module tree (a module that holds itself, "
                                  "or shared ones nested to blow up: a real detector has ~400)")
        if not isinstance(module, torch.nn.Module):
            raise PretrainedError(f"{where} is a {type(module).__name__}, not a module")
        transient = vars(module).get("_non_persistent_buffers_set") or set()
        if not isinstance(transient, (set, frozenset, list, tuple)) or not all(isinstance(n, str) for n in transient):
            raise PretrainedError(f"{where}: its _non_persistent_buffers_set is not a set of names")
        for table in ("_parameters", "_buffers"):
            for name, t in _table(module, table, where).items():
                if t is not None and name not in transient:
                    if not isinstance(t, torch.Tensor):
                        raise PretrainedError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
                    out[prefix + name] = t.detach()
        children = _table(module, "_modules", where)
        stack.extend((child, f"{prefix}{name}.") for name, child in reversed(children.items()) if child is not None)
    return out


def _fp32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ultralytics saves fp16: every floating tensor as fp32 (integers such as BN's counters unchanged)."""
    return {k: v.float() if v.is_floating_point() else v.clone() for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------- structure
def _plain(d: Any) -> Any:
    """JSON's view of a value (tuples as lists, keys as strings), so stored and derived dicts compare."""
    return json.loads(json.dumps(d))


def recognise(model_yaml: Any) -> tuple[str, str, str, dict[str, Any]] | None:
    """(family, scale, fusion, single-stream dict) of a built-in variant's model dictionary (of either task: the
    single-stream dict is then the family's ``-obb`` one), else None.

    Structural, not by name: the dictionary must be exactly what ``derive_fusion`` gives for it."""
    if not isinstance(model_yaml, dict) or not isinstance(model_yaml.get("scale"), str):
        return None
    want = _plain({k: v for k, v in model_yaml.items() if k != "nc"})
    rows = [r for k in ("backbone", "head") if isinstance(model_yaml.get(k), list) for r in model_yaml[k]]
    last = rows[-1] if rows else None
    task = head_task(str(last[2])) if isinstance(last, (list, tuple)) and len(last) == 4 else None
    for family in FAMILIES:
        try:
            base = family_yaml(family, model_yaml["scale"], task or "detect")
        except ValueError:
            continue
        for fusion in FUSIONS:
            derived = derive_fusion(base, fusion, 1)
            if _plain({k: v for k, v in derived.items() if k != "nc"}) == want:
                return family, model_yaml["scale"], fusion, base
    return None


def _rows_of(d: dict[str, Any]) -> list[list[Any]]:
    """A model dictionary's rows, each ``[from, repeats, module, args]`` (a malformed one of a file's as
    ``[None, None, "?", []]``: compared, never built)."""
    rows = []
    for section in ("backbone", "head"):
        v = d.get(section)
        for r in v if isinstance(v, list) else []:
            ok = isinstance(r, (list, tuple)) and len(r) == 4 and isinstance(r[3], (list, tuple))
            rows.append(list(r) if ok else [None, None, "?", []])
    return rows


def _scale_row(d: dict[str, Any]) -> tuple[list[Any] | None, bool]:
    """The [depth, width, max_channels] a single-stream dict builds with, as Ultralytics' parser reads it: its
    ``scales`` row (``scale``, else the first), else the older ``depth_multiple`` / ``width_multiple`` keys
    (Ultralytics 8.3 still writes them into some checkpoints; no channel cap: None). Second: whether the old
    keys said it."""
    scales = d.get("scales")
    if isinstance(scales, dict) and scales:
        row = scales.get(d.get("scale"), next(iter(scales.values())))
        return (list(row) if isinstance(row, (list, tuple)) else None), False
    if "depth_multiple" in d or "width_multiple" in d:
        return [d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0), None], True
    return None, False


def _effective_scale(d: dict[str, Any]) -> list[Any] | None:
    """:func:`_scale_row` as the shapes see it: the channel cap only where it binds (at most the widest
    width a row asks for), so ``depth_multiple: 0.33, width_multiple: 0.25`` (no cap) is yolov8's scale n
    ``[0.33, 0.25, 1024]``, and an uncapped ``[1.0, 1.0]`` is not scale l ``[1.0, 1.0, 512]``."""
    row, _ = _scale_row(d)
    if row is None or len(row) != 3:
        return row
    widest = max([r[3][0] for r in _rows_of(d)[:-1] if r[3] and isinstance(r[3][0], int)
                  and not isinstance(r[3][0], bool)] or [0])
    cap = row[2]
    return [row[0], row[1], widest if cap is None or (isinstance(cap, (int, float)) and cap > widest) else cap]


def _signature(d: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A single-stream dict's rows (module names without ``nn.``, YAML's None/True/False as words) and
    the meta entries that change shapes (its effective scale row, reg_max, end2end)."""
    words = {None: "None", True: "True", False: "False"}
    rows = [[f, n, str(m).rpartition(".")[2], [words.get(a, a) if a is None or isinstance(a, bool) else a
                                                for a in args]]
            for f, n, m, args in _rows_of(d)]
    meta = {"scale": _effective_scale(d), "reg_max": d.get("reg_max", 16), "end2end": bool(d.get("end2end", False))}
    return _plain(rows), _plain(meta)


@functools.cache
def _family_tables() -> tuple[tuple[str, str, str], ...]:
    """(family, scale, its signature as JSON) for every built-in family, task and scale (the family files, read
    once); an oriented-box family is named with its file's suffix (``yolo11-obb``)."""
    out = []
    for family in FAMILIES:
        for task in TASKS:
            for scale in SCALE_NAMES:
                try:
                    sig = json.dumps(_signature(family_yaml(family, scale, task)), sort_keys=True)
                except ValueError:  # a scale the family's file does not list
                    continue
                out.append((family + ("-obb" if task == "obb" else ""), scale, sig))
    return tuple(out)


def identify(single: dict[str, Any]) -> str:
    """What a single-stream model dictionary is, in words: ``yolov8 scale s`` (``yolov8-obb scale s`` for an
    oriented-box one) when its rows are a built-in family's and its (effective) scale row one of that family's,
    else what the file says of itself."""
    rows, meta = _signature(single)
    row, old = _scale_row(single)
    how = f" (from depth_multiple {row[0]}, width_multiple {row[1]})" if old and row else ""
    family = None
    for fam, scale, sig in _family_tables():
        theirs = json.loads(sig)
        if theirs[0] == rows and {k: v for k, v in theirs[1].items() if k != "scale"} == {
                k: v for k, v in meta.items() if k != "scale"}:
            family = fam
            if theirs[1]["scale"] == meta["scale"]:
                return f"{fam} scale {scale}{how}"
    if family is not None:
        return f"{family} at scale {meta['scale']} [depth, width, max_channels], none of {family}'s scales{how}"
    named = str(single.get("yaml_file", ""))
    named = Path(named).name[:60] if re.fullmatch(r"[\w./ -]{1,4096}", named) else ""
    said = single.get("scale") if isinstance(single.get("scale"), str) and len(single["scale"]) < 8 else None
    return (f"{named + ' ' if named else 'a model '}(not a {'/'.join(FAMILIES)} model)"
            + (f", scale {said}" if said else f", scale {row}" if row else "") + how)


def _difference(src: dict[str, Any], dst: dict[str, Any], dst_name: str, heads: bool = True) -> str | None:
    """The first structural difference between two single-stream dicts, in words (None: the same); ``heads``
    False: their last layers (heads of two tasks, the report says so itself) are not compared."""
    (sr, sm), (dr, dm) = _signature(src), _signature(dst)
    if not heads:
        sr, dr = sr[:-1], dr[:-1]
    for key in ("scale", "reg_max", "end2end"):
        if sm[key] != dm[key]:
            what = "[depth, width, max_channels]" if key == "scale" else key
            return f"{what} {sm[key]} in the checkpoint, {dm[key]} in {dst_name}"
    for i, (a, b) in enumerate(zip(sr, dr)):
        if a != b:
            return f"layer {i} is {a[2]} {a[3]} in the checkpoint, {b[2]} {b[3]} in {dst_name}"
    if len(sr) != len(dr):
        return f"{len(sr)} layers in the checkpoint, {len(dr)} in {dst_name}"
    return None


@dataclass
class Source:
    """A pretrained file read: its tensors (fp32) and where each of its layers sits in the single-stream model."""

    path: Path
    what: str
    tensors: dict[str, torch.Tensor]
    nc: int
    single: dict[str, Any]  # its single-stream model dictionary (for the structural comparison)
    #: (single-stream layer, stream) -> (its layer index, its Detect levels when it reads two branches)
    layers: dict[tuple[int, str], tuple[int, tuple[tuple[int, str], ...]]]
    identity: str = "a model"  # what it is, in words ("yolov8 scale s"; see :func:`identify`)
    names: dict[int, str] | None = None  # its class names, where it has a valid table of them
    #: the class name of each single-stream layer (Conv, C2f, ..., Detect): what a model YAML is matched by
    kinds: list[str] = field(default_factory=list)
    #: a weights file of a model YAML: its model dictionary (it starts that same YAML only, by name)
    model_yaml: dict[str, Any] | None = None


def _layer_table(origins: list[Origin | None]) -> dict[tuple[int, str], tuple[int, tuple[tuple[int, str], ...]]]:
    return {(o.src, o.stream): (j, o.levels) for j, o in enumerate(origins) if o is not None}


def read_source(path: str | Path) -> Source:
    """Read ``--pretrained`` (an Ultralytics checkpoint or our weights file) without running anything in it."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"--pretrained {path}: no such file")
    payload = safe_load(path)
    if isinstance(payload, dict) and "model_yaml" in payload:
        return _our_weights(path)
    model = None
    if isinstance(payload, dict):
        model = payload.get("ema") if payload.get("ema") is not None else payload.get("model")
    from ultralytics.nn.tasks import DetectionModel

    if not isinstance(model, DetectionModel):
        held = type(model).__name__ if isinstance(payload, dict) else type(payload).__name__
        raise PretrainedError(f"--pretrained {path}: neither an Ultralytics detection checkpoint (a dict whose 'ema' "
                              f"or 'model' is a DetectionModel) nor a yolofuse-scale weights file; it holds {held}")
    return _ultralytics(path, payload, model)


def _ultralytics(path: Path, payload: dict[str, Any], model: Any) -> Source:
    from yolofuse_scale.model.safe_config.budget import check_budget
    from yolofuse_scale.model.safe_config.limits import MAX_NC, ModelConfigError

    single = vars(model).get("yaml")
    if not isinstance(single, dict):
        raise PretrainedError(f"--pretrained {path}: its DetectionModel has no model dictionary (yaml)")
    try:  # compared and serialised below, never built: its size and shape are what must be bounded
        check_budget(single, f"--pretrained {path}: its model dictionary (yaml)")
        tensors = _module_tensors(model)
        seq = _table(model, "_modules", "the model").get("model")
        layers = list(_table(seq, "_modules", "model").values()) if isinstance(seq, torch.nn.Module) else []
    except ModelConfigError as e:
        raise PretrainedError(str(e)) from None
    except PretrainedError as e:
        raise PretrainedError(f"--pretrained {path}: {e}") from None
    if not layers or not isinstance(layers[-1], torch.nn.Module):
        raise PretrainedError(f"--pretrained {path}: its DetectionModel has no layers (model.model is empty)")
    half = any(t.dtype == torch.float16 for t in tensors.values())
    nc = vars(layers[-1]).get("nc", single.get("nc"))
    if not (isinstance(nc, int) and not isinstance(nc, bool) and 0 < nc <= MAX_NC):
        raise PretrainedError(f"--pretrained {path}: its head's class count nc {nc!r} is not an integer from 1 to "
                              f"{MAX_NC}")
    version = payload.get("version")
    identity = identify(single)
    what = (f"Ultralytics{' ' + str(version)[:20] if isinstance(version, str) else ''} checkpoint "
            f"({identity}, {nc} class(es){', fp16 -> fp32' if half else ''})")
    # The class of each layer as rebuilt (the allow-list named it; nothing of it runs): what it really holds.
    kinds = [type(m).__name__ for m in layers]
    return Source(path, what, _fp32(tensors), nc, single, {(i, "shared"): (i, ()) for i in range(len(layers))},
                  identity, _class_names(vars(model).get("names"), nc), kinds)


def _class_names(v: Any, nc: int) -> dict[int, str] | None:
    """A file's class names as ``{id: name}`` when they are a table of ``nc`` of them (a list is read as one),
    else None: they only feed a warning, so an odd table is left out rather than refused."""
    if isinstance(v, (list, tuple)) and len(v) == nc:
        v = dict(enumerate(v))
    if not isinstance(v, dict) or len(v) != nc:
        return None
    if not all(isinstance(k, int) and not isinstance(k, bool) and isinstance(n, str) for k, n in v.items()):
        return None
    return {k: v[k] for k in sorted(v)}


def _our_weights(path: Path) -> Source:
    from yolofuse_scale.errors import CheckpointError
    from yolofuse_scale.model.safe_config.limits import ModelConfigError
    from yolofuse_scale.model.safe_config.schema import check_model_dict
    from yolofuse_scale.weights import read_weights

    try:
        payload = read_weights(path)  # checks its plain entries
        # its model_yaml (allow-lists and budget) before recognise() compares it with the built-in variants
        check_model_dict(payload["model_yaml"], f"{path}: model_yaml")
    except (CheckpointError, ModelConfigError) as e:  # their message starts with the path
        raise PretrainedError(f"--pretrained {e}") from None
    found = recognise(payload["model_yaml"])
    nc = int(payload["model_yaml"].get("nc", len(payload["names"])))
    if found is None:  # a run of a model YAML: it starts the same YAML (a new run from <run>/weights/last.pt)
        what = f"yolofuse-scale weights of a model YAML ({nc} class(es), IR {payload['ir_channels']} channel(s))"
        return Source(path, what, _fp32(payload["model"]), nc, payload["model_yaml"], {},
                      "the weights of a model YAML's run", _class_names(payload.get("names"), nc),
                      model_yaml=payload["model_yaml"])
    family, scale, fusion, base = found
    kinds = [str(r[2]).rpartition(".")[2] for r in _rows_of(base)]
    obb = "-obb" if head_task(kinds[-1]) == "obb" else ""  # an oriented-box variant: its family's -obb model
    what = (f"yolofuse-scale weights ({family}{scale}{obb} fusion={fusion}, {nc} class(es), IR "
            f"{payload['ir_channels']} channel(s))")
    return Source(path, what, _fp32(payload["model"]), nc, base, _layer_table(fusion_origins(base, fusion)),
                  f"{family}{obb} scale {scale} (fusion={fusion})", _class_names(payload.get("names"), nc), kinds)


# ------------------------------------------------------------------------------------------ mapping
_PREFER = {"rgb": ("rgb", "shared", "ir"), "ir": ("ir", "shared", "rgb"), "shared": ("shared", "rgb", "ir"),
           "fusion": ("fusion",), "attention": ("attention",)}


def _find(table: dict, src: int, stream: str):
    for s in _PREFER[stream]:
        if (src, s) in table:
            return table[(src, s)]
    return None


@dataclass
class LoadReport:
    """What a transfer did, per stream of the built model (see :meth:`lines`)."""

    path: Path
    what: str
    target: str
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {s: dict.fromkeys(
        ("loaded", "adapted", "skipped", "reinit", "new"), 0) for s in STREAMS})
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reinit: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    fusion_init: list[int] = field(default_factory=list)
    attention_new: list[int] = field(default_factory=list)  # new attention layers (dea), model's own init
    placed: int = 0
    countable: int = 0
    difference: str | None = None
    nc: tuple[int, int] = (0, 0)  # (here, in the file)
    reinit_src: set[str] = field(default_factory=set)  # the file's class-dependent (or head) tensors not placed
    #: (the file's task, this model's) when they differ: the head is re-initialised (:attr:`other_task`)
    tasks: tuple[str, str] | None = None
    other_task: list[str] = field(default_factory=list)  # this model's head tensors, re-initialised
    #: (id, name in the file, name here) of each class whose name differs while the counts agree
    names_differ: list[tuple[int, str, str]] = field(default_factory=list)
    #: a model YAML's transfer (no declared origins): what was matched by structure, what was not, and the
    #: share of its streams' weights (input selectors to fusion) that start pretrained (see pretrained_yaml.py)
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    stream_share: float | None = None
    builds: str = ""  # what the run builds, in the words of :func:`identify` (for a refusal)

    @property
    def share(self) -> float:
        return self.placed / self.countable if self.countable else 0.0

    def summary(self) -> dict[str, Any]:
        """The report's numbers as JSON (what metrics.json records)."""
        out = {"path": str(self.path), "source": self.what, "placed": self.placed, "countable": self.countable,
               "share": self.share, "counts": {s: dict(c) for s, c in self.counts.items() if any(c.values())},
               "adapted": list(self.adapted), "fusion_init": list(self.fusion_init),
               "difference": self.difference}
        if self.tasks:
            out["head"] = f"re-initialised: a {self.tasks[0]} file for a {self.tasks[1]} model"
        if self.names_differ:
            out["class_names_differ"] = [{"id": i, "file": a, "here": b} for i, a, b in self.names_differ]
        if self.stream_share is not None:
            out["matched_by"], out["stream_share"] = "structure", self.stream_share
        return out

    def lines(self) -> list[str]:
        """The report as logged: a headline, a table per stream, then what was adapted or left out."""
        total = self.countable + len(self.reinit_src)
        aside = (f" of the {self.countable} {'outside its head' if self.tasks else 'not class-dependent'}"
                 if self.reinit_src else "")
        out = [f"--pretrained {self.path}: {self.what} -> {self.target}: placed {self.placed} of its {total} "
               f"tensors ({self.share:.0%}{aside})"]
        if self.difference:
            out.append(f"  WARNING another architecture ({self.difference}): transferred where the shapes match")
        if self.stream_share is not None:
            out.append(f"  matched by structure (a model YAML declares no layer origins): {self.stream_share:.0%} of "
                       "its streams' weights (input to fusion) start pretrained")
        if self.names_differ:
            shown = "; ".join(f"id {i}: {_quote(a)} in the file, {_quote(b)} here" for i, a, b in self.names_differ[:4])
            more = f"; ... ({len(self.names_differ)} ids in all)" if len(self.names_differ) > 4 else ""
            out.append(f"  WARNING class names differ ({shown}{more}): the class layers are loaded all the same (the "
                       "class counts agree), so each id starts as the file's class of that id")
        shown = [s for s in STREAMS if any(self.counts[s].values())]
        w = max([8] + [len(s) + 1 for s in shown])  # "attention" (dea) is one wider than the others
        out.append(f"  {'stream':<{w}}{'loaded':>8}{'adapted':>9}{'skipped':>9}{'re-init':>9}{'new':>6}")
        for s in shown:
            c = self.counts[s]
            out.append(f"  {s:<{w}}{c['loaded']:>8}{c['adapted']:>9}{c['skipped']:>9}{c['reinit']:>9}{c['new']:>6}")
        out += [f"  adapted {a}" for a in self.adapted]
        if self.fusion_init:
            out.append(f"  new fusion convs (layers {', '.join(map(str, self.fusion_init))}): initialised to the "
                       "average of the two streams (channel c = (rgb_c + ir_c) / 2)")
        if self.attention_new:
            out.append(f"  new cross-modal attention (layers {', '.join(map(str, self.attention_new))}): the "
                       "model's own initialisation")
        out += [f"  {m}" for m in self.matched]
        if self.tasks:
            out.append(f"  head re-initialised (the file is a --task {self.tasks[0]} model, this run trains --task "
                       f"{self.tasks[1]}: another kind of box; its backbone and neck are loaded, its head is not): "
                       + _listing(self.other_task))
        if self.reinit:
            out.append(f"  re-initialised (class-dependent; {self.nc[0]} class(es) here, {self.nc[1]} in the file): "
                       + _listing(self.reinit))
        if self.skipped:
            out.append("  skipped (shapes differ; the model's own initialisation kept): " + _listing(self.skipped))
        if self.new:
            out.append("  new (not in the file; the model's own initialisation): " + _listing(self.new))
        if self.unmatched:
            out.append("  not matched (no layer of the file has its type and shapes; the model's own "
                       "initialisation): " + _listing(self.unmatched, 10))
        return out


def _quote(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:37] + "...")


def compare_names(report: LoadReport, model: torch.nn.Module, source: Source) -> None:
    """Note the classes whose names differ when the class counts agree (their layers are loaded, so a
    model trained for 'cat' starts 'person' from 'cat'); a model without real names (Ultralytics' default
    ``{0: '0', ...}``) is not compared."""
    here = getattr(model, "names", None)
    if source.names is None or not isinstance(here, dict) or report.nc[0] != report.nc[1]:
        return
    if all(str(i) == n for i, n in here.items()):
        return
    report.names_differ = [(i, source.names[i], str(here[i])) for i in sorted(here)
                           if i in source.names and source.names[i] != str(here[i])]


def _listing(items: list[str], limit: int = 6) -> str:
    return "; ".join(items[:limit]) + (f"; ... ({len(items)} in all)" if len(items) > limit else "")


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(map(str, t.shape)) + "]"


def _adapt_stem(w: torch.Tensor, dst: torch.Tensor, stream: str) -> tuple[torch.Tensor, str] | None:
    """The pretrained first conv's weight (out, 3, k, k) for a stem reading ``dst.shape[1]`` channels."""
    if w.ndim != 4 or w.shape[1] != 3 or dst.ndim != 4 or (dst.shape[0], *dst.shape[2:]) != (w.shape[0], *w.shape[2:]):
        return None
    gray = w.sum(1, keepdim=True)  # a gray IR image answers like the RGB model to the same gray in RGB
    if stream == "ir" and dst.shape[1] == 1:
        return gray, "sum over the 3 RGB input channels -> 1 IR channel"
    if stream == "shared" and dst.shape[1] in (4, 6):  # data-level: one stem reads 3 + C_ir channels
        ir = gray if dst.shape[1] == 4 else w
        return torch.cat([w, ir], 1) * 0.5, (f"RGB part = 1/2 the pretrained weight, IR part = 1/2 "
                                             f"{'its sum over RGB channels' if dst.shape[1] == 4 else 'the same'}")
    return None


def _average_fusion(w: torch.Tensor) -> torch.Tensor:
    """A fusion conv's weight (C, 2C, 1, 1) mapping [rgb; ir] to (rgb + ir) / 2, channel by channel."""
    c = w.shape[0]
    eye = torch.eye(c, dtype=w.dtype, device=w.device)
    return (torch.cat([eye, eye], 1) * 0.5).reshape(w.shape)


def map_pretrained(model: torch.nn.Module, source: Source, write: bool = True) -> LoadReport:
    """Copy ``source`` into ``model`` in place, stream by stream; return the report (``write=False``: only
    the report, the model unchanged). A built-in variant by its declared origins; any other model (a model
    YAML) by structure (``pretrained_yaml.map_by_structure``)."""
    found = recognise(getattr(model, "yaml", None))
    if found is None or source.model_yaml is not None:
        from yolofuse_scale.model.pretrained_yaml import map_by_structure, map_same_model

        return (map_same_model if source.model_yaml is not None else map_by_structure)(model, source, write)
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
                        difference=_difference(source.single, base, name, heads=not cross),
                        nc=(nc_here, source.nc),
                        builds=f"{family}{name[len(family) + len(scale):]} scale {scale} (fusion={fusion})",
                        tasks=(task_there, task_here) if cross else None)
    compare_names(report, model, source)
    classes_differ = nc_here != source.nc
    used: set[str] = set()
    reinit_src: set[str] = set()
    if cross:  # the file's head tensors are set aside, as class-dependent ones are (not counted against it)
        heads = {j for (src, _), (j, _) in source.layers.items() if src == len(source.kinds) - 1}
        reinit_src = {k for k in source.tensors if (m := _KEY.match(k)) and int(m.group(1)) in heads}
    dst_sd = model.state_dict()  # the model's own tensors (views): copy_ writes the weights

    def put(dst: torch.Tensor, value: torch.Tensor) -> None:
        if write:
            dst.copy_(value)

    with torch.no_grad():
        for key, dst in dst_sd.items():
            m = _KEY.match(key)
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
            hit = _find(source.layers, o.src, stream)
            lm = _LEVEL.match(rest) if o.src == last else None
            if hit is not None and lm is not None:  # the head: level k of this head <- the matching level there
                level, stream = o.levels[int(lm.group(2))] if o.levels else (int(lm.group(2)), stream)
                there = {lv: k for k, lv in enumerate(hit[1])} if hit[1] else None
                k = level if there is None else _find(there, level, stream)
                rest = f"{lm.group(1)}.{k}.{lm.group(3)}" if k is not None else None
            src_key = f"model.{hit[0]}.{rest}" if hit is not None and rest is not None else None
            c = report.counts[stream]
            if src_key is None or src_key not in source.tensors:
                if stream == "fusion" and rest == "conv.weight":
                    put(dst, _average_fusion(dst))
                    report.fusion_init.append(int(m.group(1)))
                elif stream == "attention":
                    if int(m.group(1)) not in report.attention_new:
                        report.attention_new.append(int(m.group(1)))
                elif stream != "fusion":
                    report.new.append(key)
                c["new"] += 1
                continue
            w = source.tensors[src_key]
            if o.src == last and classes_differ and _CLASS_BRANCH.match(rest) and (
                    _CLASS_CONV.match(rest) or w.shape != dst.shape):
                c["reinit"] += 1
                report.reinit.append(key)
                reinit_src.add(src_key)
                continue
            if w.shape == dst.shape:
                put(dst, w)
                c["loaded"] += 1
                used.add(src_key)
                continue
            adapted = _adapt_stem(w, dst, stream) if o.src == 0 and rest == "conv.weight" else None
            if adapted is not None:
                put(dst, adapted[0])
                c["adapted"] += 1
                used.add(src_key)
                report.adapted.append(f"{key} {_shape(dst)} <- {src_key} {_shape(w)}: {adapted[1]}")
                continue
            c["skipped"] += 1
            report.skipped.append(f"{key} {_shape(dst)} vs {src_key} {_shape(w)}")
    report.placed = len(used)
    report.reinit_src = reinit_src - used
    report.countable = len(set(source.tensors) - report.reinit_src)
    return report


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
