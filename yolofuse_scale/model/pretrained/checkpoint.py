"""Reading a ``--pretrained`` file without running anything in it, as a :class:`Source`: its tensors (fp32), where
each of its layers sits in the single-stream model, and what it is in words (:mod:`.identify`).

The file is an Ultralytics checkpoint (``yolo11n.pt``: a pickled ``DetectionModel`` trained on 3-channel RGB;
``yolo11n-obb.pt``: an ``OBBModel``, oriented boxes) or one of our weights files (``weights/last.pt``) of a
built-in variant (its layers placed by the variant's declared origins) or of a model YAML's run (it starts that
same YAML, tensor by name).

Ultralytics checkpoints are pickles: they are read with torch's ``weights_only`` unpickler and an
explicit allow-list of the classes a detection checkpoint holds; anything else is refused by name.
Those classes may only be *rebuilt* (new object + state), never *called*: a pickle that calls one
(``DetectionModel(cfg)`` would parse a model YAML, whose activation Ultralytics ``eval()``s) is refused
too. The tensors are then read from the modules' parameter and buffer tables, without running any
method of the loaded objects. Imports nothing distributed.
"""

from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolofuse_scale.errors import UserError
from yolofuse_scale.model.pretrained.identify import identify, recognise, rows_of
from yolofuse_scale.model.variants import Origin, fusion_origins, head_task
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
    kinds = [str(r[2]).rpartition(".")[2] for r in rows_of(base)]
    obb = "-obb" if head_task(kinds[-1]) == "obb" else ""  # an oriented-box variant: its family's -obb model
    what = (f"yolofuse-scale weights ({family}{scale}{obb} fusion={fusion}, {nc} class(es), IR "
            f"{payload['ir_channels']} channel(s))")
    return Source(path, what, _fp32(payload["model"]), nc, base, _layer_table(fusion_origins(base, fusion)),
                  f"{family}{obb} scale {scale} (fusion={fusion})", _class_names(payload.get("names"), nc), kinds)
