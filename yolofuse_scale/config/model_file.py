"""Ultralytics' model file names on ``--model`` (:func:`resolve_model_file`, called by ``flags.config_from_args``
for ``--model`` from any source): ``yolo11n.yaml`` means ``--model yolo11n`` unless a file of that name is here (a
local file wins, as in Ultralytics), ``yolo11n.pt`` means ``--model yolo11n`` started from that file
(``--pretrained``); nothing is downloaded, so a missing one is refused. A run's own weights file names its run
(:func:`run_of_weights`: what ``resume=True model=<run>/weights/last.pt`` continues).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolofuse_scale.errors import ConfigError
from yolofuse_scale.model.variants import parse_model_name

#: Ultralytics' own scales (``t`` is ours: no Ultralytics file is named after it)
ULTRALYTICS_SCALES = ("n", "s", "m", "l", "x")


def run_of_weights(path: str | None) -> Path | None:
    """The run folder of ``<run>/weights/<name>.pt`` when that run's config.yaml is there (else None)."""
    if not path or not path.endswith(".pt"):
        return None
    weights = Path(path)
    run = weights.parent.parent
    return run if weights.parent.name == "weights" and (run / "config.yaml").is_file() else None


def builtin_model(name: str) -> str | None:
    """``yolo11n.pt`` / ``path/to/yolov8s.yaml`` -> ``yolo11n`` / ``yolov8s``: the family and scale an Ultralytics
    file name stands for; None for any other name."""
    path = Path(name)
    if path.suffix not in (".pt", ".yaml", ".yml"):
        return None
    named = parse_model_name(path.stem)
    return path.stem if named and named[1] in ULTRALYTICS_SCALES else None


def resolve_model_file(values: dict[str, dict[str, Any]]) -> None:
    """Rewrite ``values['model']`` (the run's model settings from every source) where ``--model`` is an Ultralytics
    file name: ``yolo11n.yaml`` (no such file here) -> ``yolo11n``; ``yolo11n.pt`` -> ``yolo11n`` started from that
    file (``--pretrained``, unless one is given: an explicit empty one trains from scratch)."""
    m = values.get("model", {})
    model = m.get("model")
    if not model:
        return
    path = Path(model)
    name = builtin_model(model)
    if path.suffix in (".yaml", ".yml"):
        if name and not path.is_file():
            m["model"] = name
        return
    if path.suffix != ".pt":
        return
    if name is None:
        run = run_of_weights(model)
        again = (f"; to continue that run: resume=True model={model} (or --resume auto --output-dir {run})"
                 if run else "")
        raise ConfigError(f"--model {model}: a weights file, not a model; --model takes a family and scale (yolo11n) "
                          "or a model YAML. To start from these weights: --model <the model it was trained as> "
                          f"--pretrained {model}{again}", settings=("model",))
    m["model"] = name
    if "pretrained" in m:  # given (even empty: from scratch): theirs
        return
    if not path.is_file():
        raise ConfigError(f"--model {model}: no such file here, and nothing is downloaded; put Ultralytics' "
                          f"{path.name} there to start from it, or pass --model {name} to train from scratch",
                          settings=("model",))
    m["pretrained"] = model
