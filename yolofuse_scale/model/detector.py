"""The fusion detector: Ultralytics' ``DetectionModel`` fed with a stacked RGB+IR tensor.

Everything that makes a YOLO a YOLO (layer parsing and scaling, stride discovery, Detect bias init,
``v8DetectionLoss``, fusing Conv+BN for inference) is Ultralytics' own code; this module only adds
the RGB/IR input split in front of it. Nothing here knows about processes or devices.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml
from ultralytics.cfg import DEFAULT_CFG_DICT
from ultralytics.nn import tasks as ul_tasks
from ultralytics.nn.tasks import DetectionModel, OBBModel
from ultralytics.utils import IterableSimpleNamespace

from yolofuse_scale.model.attention import QUADRATIC_MODULES, ROW_LAYERS, expand_rows
from yolofuse_scale.model.fusion import (
    STREAM_INPUT_MODULES,
    IdentityInput,
    ModalConcat,
    split_modalities,
)
from yolofuse_scale.model.rgbt import EXPANDERS as RGBT_EXPANDERS
from yolofuse_scale.model.rgbt import PARSER_LAYERS as RGBT_LAYERS
from yolofuse_scale.model.rgbt import check_input_channels
from yolofuse_scale.model.safe_config.activation import default_activation, parse_activation
from yolofuse_scale.model.safe_config.limits import ModelConfigError
from yolofuse_scale.model.safe_config.schema import check_model_dict
from yolofuse_scale.model.safe_config.size import BUILD_ERRORS, check_model_size
from yolofuse_scale.model.variants import (
    FAMILIES,
    FUSIONS,
    SCALE_NAMES,
    TASK_HEADS,
    TASKS,
    fusion_yaml,
    head_task,
    model_name_task,
    parse_model_name,
)

# Ultralytics' parse_model resolves a YAML module name through its own module namespace. Adding our
# two input modules there (adding names, replacing nothing) lets the unmodified parser build
# YOLOFuse-schema graphs; both fall into its "output width = input width" branch, which is correct.
ul_tasks.IdentityInput = IdentityInput
ul_tasks.ModalConcat = ModalConcat
# DEYOLO's / YOLOFuse's attention rows (DEA, DEFA, C2f_BiFocus) reach the parser rewritten by expand_rows,
# naming these layers: new names again, so every other model parses exactly as before.
# YOLOv11-RGBT's input selectors and joins (rgbt.py) likewise: names its fork added to this namespace.
for _name, _layer in {**ROW_LAYERS, **RGBT_LAYERS}.items():
    setattr(ul_tasks, _name, _layer)

#: The heads whose loss this toolkit trains, each a task's (``variants.TASK_HEADS``): ``Detect``/``v10Detect``
#: (Ultralytics' ``v8DetectionLoss``; ``E2ELoss`` for an end-to-end head) and ``OBB``/``OBB26`` (``v8OBBLoss``;
#: ``E2ELoss`` over it for YOLO26). A model ending in another head (segmentation, pose, classification, RT-DETR,
#: YOLO-World/YOLOE) passes the check but is not built.
DETECTION_HEADS = frozenset(h for heads in TASK_HEADS.values() for h in heads)
#: The criterion of each task: the ``init_criterion`` of the Ultralytics model class of that task (called on our
#: model, which has what they read: its head, ``args``), so the choice of loss is Ultralytics' own.
CRITERIA = {"detect": DetectionModel.init_criterion, "obb": OBBModel.init_criterion}

#: Loss gains and other hyper-parameters Ultralytics' loss reads from ``model.args``: its defaults
#: (box 7.5, cls 0.5, dfl 1.5), which the YOLO recipe's learning rates assume.
DEFAULT_HYP = IterableSimpleNamespace(**DEFAULT_CFG_DICT)


def _rows(d: dict[str, Any]) -> list[list[Any]]:
    return list(d.get("backbone", [])) + list(d.get("head", []))


def prepare_model_dict(d: dict[str, Any], rgb_channels: int, ir_channels: int,
                       source: str = "model config") -> dict[str, Any]:
    """Rewrite a fusion YAML dictionary into one Ultralytics' ``parse_model`` builds unchanged.

    ``ModalitySelector [k]`` becomes ``Index [C_k, k-1]`` (Index's first argument is its output width),
    and ``ModalConcat``'s ``from: [-1]`` becomes ``-1`` so the parser does not index its channel
    list with a list. ``ch`` is set from the data, overriding the YAML's (YOLOFuse's files say 6), except
    that a YOLOv11-RGBT config selecting input channels by index must have been written for the data's count.
    """
    check_input_channels(d, rgb_channels + ir_channels, source)
    d = copy.deepcopy(d)
    widths = {1: rgb_channels, 2: ir_channels}
    for section in ("backbone", "head"):
        for row in d.get(section, []):
            f, _n, m, args = row
            if m == "ModalitySelector":
                k = int(args[0]) if args else 1
                if k not in widths:
                    raise ModelConfigError(f"{source}: ModalitySelector [{k}]: the modality must be 1 (RGB) or 2 (IR)")
                row[2], row[3] = "Index", [widths[k], k - 1]
            elif m == "ModalConcat" and isinstance(f, list) and len(f) == 1:
                row[0] = f[0]
    d["ch"] = rgb_channels + ir_channels
    expand_rows(d, d["ch"], source, RGBT_EXPANDERS)
    return d


class FusionDetectionModel(DetectionModel):
    """A YOLO detector whose input is ``(B, 3 + C_ir, H, W)``: RGB channels first, then IR.

    Args:
        cfg: model dictionary in Ultralytics' YAML schema (may use YOLOFuse's input modules).
        rgb_channels: channels of the visible image (3).
        ir_channels: channels of the infrared image (1 or 3).
        nc: number of classes (overrides the dictionary's ``nc``).
        source: where ``cfg`` came from, for the message if it is refused (see ``safe_config``).
    """

    def __init__(self, cfg: dict[str, Any], rgb_channels: int = 3, ir_channels: int = 3, nc: int | None = None,
                 source: str = "model config"):
        # Plain attributes may be set before Module.__init__; the forward used while Ultralytics
        # discovers the strides below already needs them.
        self.rgb_channels = rgb_channels
        self.ir_channels = ir_channels
        check_model_dict(cfg, source)  # whatever its origin: nothing in it may name code or be evaluated
        head = _rows(cfg)[-1][2]
        if head not in DETECTION_HEADS:
            raise ModelConfigError(
                f"{source}: its last layer is {head}; this toolkit trains detectors, whose last layer is "
                f"{' or '.join(sorted(DETECTION_HEADS))} (Ultralytics' other heads need their own losses and data)")
        #: what the model predicts, by its head: ``detect`` (xyxy boxes) or ``obb`` (xywh + angle)
        self.task = head_task(head)
        self.two_stream = _rows(cfg)[0][2] in STREAM_INPUT_MODULES
        parsed = prepare_model_dict(cfg, rgb_channels, ir_channels, source)
        # The parser would eval() the activation string: it gets the module built from the parsed spec instead.
        act = parse_activation(parsed.pop("activation"), source) if "activation" in parsed else None
        # The parameters it implies, counted on the meta device before anything is allocated (safe_config).
        check_model_size({**parsed, "nc": nc or parsed.get("nc", 80)}, rgb_channels + ir_channels, act, source)
        try:
            with default_activation(act):
                super().__init__(parsed, ch=rgb_channels + ir_channels, nc=nc, verbose=False)
        except BUILD_ERRORS as e:  # wrong wiring
            raise ModelConfigError(f"{source}: Ultralytics cannot build this model ({type(e).__name__}: {e})") from e
        self.yaml = copy.deepcopy(cfg)  # keep the user's schema (portable weights rebuild from it)
        self.yaml_source = source  # a YAML's path: how --pretrained's report names the model
        self.yaml["nc"] = self.model[-1].nc
        # Ultralytics' loss reads its gains (and E2ELoss the epoch count) here: a copy per model, so
        # setting one run's epochs changes no other model's defaults.
        self.args = IterableSimpleNamespace(**vars(DEFAULT_HYP))

    def init_criterion(self):
        """Ultralytics' criterion for this model's task (:data:`CRITERIA`): what ``engine/task.py`` trains with."""
        return CRITERIA[self.task](self)

    def _predict_once(self, x, *args, **kwargs):
        if self.two_stream and isinstance(x, torch.Tensor):
            x = split_modalities(x, self.rgb_channels)
        return super()._predict_once(x, *args, **kwargs)


BUILT_IN = f"{{{','.join(FAMILIES)}}}{{{','.join(SCALE_NAMES)}}}"  # for messages: {yolov8,yolo11,yolo26}{t,n,...}


#: A model YAML larger than this is refused unread (the largest real ones are ~10 KB; PyYAML takes
#: seconds per MB and holds it all in memory).
MAX_YAML_BYTES = 1 << 20


def read_model_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a model YAML file; anything it refuses (a ``!!python/...`` tag, bad syntax,
    nesting deeper than its recursive parser goes) becomes one :class:`ModelConfigError` naming the line."""
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ModelConfigError(f"{path}: {size} bytes; a model YAML is at most {MAX_YAML_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ModelConfigError(f"{path}{line}: not a plain YAML model file: {problem}") from None
    except RecursionError:
        raise ModelConfigError(f"{path}: nested too deeply to read (a model YAML nests a few levels)") from None
    except UnicodeDecodeError as e:
        raise ModelConfigError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None


def resolve_task(model: str, task: str | None) -> str:
    """The task a built-in ``--model`` name builds for: the name's own (``yolo11n-obb``: obb), else ``task`` (None:
    detect); a name and a task that disagree are refused. (A model YAML's head says its task: :func:`build_model`.)"""
    named = model_name_task(model)
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if named is not None and task is not None and task != named:
        raise ValueError(f"--model {model} is an {named.upper()} model, --task {task} asks for another: drop one of "
                         f"them (--model {model.removesuffix('-obb')} --task {task}, or --task {named})")
    return named or task or "detect"


def load_model_dict(model: str, fusion: str, nc: int, scale: str | None = None,
                    task: str | None = None) -> dict[str, Any]:
    """Resolve ``--model`` (a family + scale such as ``yolov8n``, ``yolo11s``, ``yolo26t``, ``yolo11n-obb``, or a
    YAML path), ``--fusion`` and ``--task`` (a built-in name: ``obb`` derives from the family's ``-obb`` file) into
    a model dictionary.

    For a YAML file, ``fusion`` and ``task`` are ignored here (the file *is* the architecture; its head says its
    task, which :func:`build_model` checks) and ``scale`` picks a row of its ``scales`` table (default: the file's
    ``scale`` key, else the first scale listed).
    """
    named = parse_model_name(model)
    if named is not None:
        family, name_scale = named
        if name_scale not in SCALE_NAMES:
            raise ValueError(f"unknown model {model!r}; choose {BUILT_IN} or a YAML file")
        return fusion_yaml(fusion, nc, scale or name_scale, family, resolve_task(model, task))
    path = Path(model)
    if path.suffix not in (".yaml", ".yml"):
        raise ValueError(f"--model {model!r}: expected {BUILT_IN} or a path to a .yaml file")
    if not path.is_file():
        raise FileNotFoundError(f"--model {model}: no such model YAML file")
    d = read_model_yaml(path)
    if not isinstance(d, dict) or not _rows(d):
        raise ModelConfigError(f"{path}: not an Ultralytics model YAML (no 'backbone'/'head' rows)")
    check_model_dict(d, str(path))
    d["nc"] = nc
    scales = d.get("scales")
    if scales:
        chosen = scale or d.get("scale") or next(iter(scales))
        if chosen not in scales:
            raise ValueError(f"{path}: scale {chosen!r} is not in its scales table ({', '.join(scales)})")
        d["scale"] = chosen
    return d


def build_model(
    model: str = "yolov8n",
    fusion: str = "mid",
    nc: int = 1,
    ir_channels: int = 3,
    scale: str | None = None,
    names: dict[int, str] | None = None,
    task: str | None = None,
) -> FusionDetectionModel:
    """Build a fusion detector from a built-in name or a YAML file (see :func:`load_model_dict`).

    ``task`` (``detect``/``obb``; None: the name's, else detect): a built-in name derives the task's variant; a
    model YAML's head must be one of that task's (a YAML ending in ``OBB`` is built for ``task`` None or obb)."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if ir_channels not in (1, 3):
        raise ValueError(f"ir_channels must be 1 or 3, got {ir_channels}")
    source = model if parse_model_name(model) is None else "model config"
    det = FusionDetectionModel(load_model_dict(model, fusion, nc, scale, task), ir_channels=ir_channels, nc=nc,
                               source=source)
    if task is not None and det.task != task:  # a model YAML: its head decides, and must be the run's task
        raise ModelConfigError(
            f"{source}: its last layer is {type(det.model[-1]).__name__}, a head for --task {det.task}, but this run "
            f"trains --task {task}: pass --task {det.task}, or end the YAML in a head of --task {task} "
            f"({' or '.join(TASK_HEADS[task])})")
    if names:
        det.names = dict(names)
    return det


def model_from_config(cfg: dict[str, Any], rgb_channels: int, ir_channels: int,
                      source: str = "model_yaml") -> FusionDetectionModel:
    """Rebuild a model from the dictionary stored in a weights file (``source`` names it in a refusal)."""
    check_model_dict(cfg, source)
    if "nc" not in cfg:
        raise ModelConfigError(f"{source}: no 'nc' (number of classes)")
    return FusionDetectionModel(cfg, rgb_channels=rgb_channels, ir_channels=ir_channels, nc=cfg["nc"], source=source)


def use_one_to_one_head(model: FusionDetectionModel, on: bool = True) -> FusionDetectionModel:
    """NMS-free prediction: an end-to-end head (YOLO26) answers from its one-to-one branch, top-k boxes
    per image as ``(B, max_det, 6)`` [x1, y1, x2, y2, score, class], with no NMS after it.

    Off by default, as in Ultralytics 8.4 (``nms=None``: the one-to-many branch and NMS); both branches
    are trained either way. A head without a one-to-one branch (YOLOv8, YOLO11) is refused.
    """
    if on and getattr(model.model[-1], "one2one_cv2", None) is None:
        raise ValueError("NMS-free prediction needs an end-to-end head (a yolo26 model); this model has none")
    model.end2end = on
    return model


def model_summary(model: FusionDetectionModel, imgsz: int) -> tuple[int, float]:
    """Return (parameter count, GFLOPs per image at ``imgsz``).

    FLOPs of a conv net scale with the image area, so they are counted once with thop at a small
    stride-aligned size and scaled: exact for convs, and cheap even for yolov8x at 640 px. Attention
    over all pixels (DEFA) grows with the area squared: such a model is counted at ``imgsz`` itself.
    """
    import thop  # Ultralytics' own dependency (ultralytics-thop)

    params = sum(p.numel() for p in model.parameters())
    quadratic = any(isinstance(m, QUADRATIC_MODULES) for m in model.modules())
    probe = imgsz if quadratic else max(int(model.stride.max()) * 2, 64)
    p = next(model.parameters())
    im = torch.zeros(1, model.rgb_channels + model.ir_channels, probe, probe, dtype=p.dtype, device=p.device)
    m = copy.deepcopy(model).eval()
    flops = thop.profile(m, inputs=[im], verbose=False)[0] * 2 / 1e9
    return params, flops * (imgsz / probe) ** 2
