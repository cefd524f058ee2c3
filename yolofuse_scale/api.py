"""The Python API: train, validate, export and detect in a few lines, as Ultralytics' ``YOLO(...)`` does.

    from yolofuse_scale import FusionYOLO

    m = FusionYOLO("yolo11n", fusion="mid")
    metrics = m.train(data="data.yaml", epochs=100, imgsz=640, batch=16)   # the last validation's metrics
    m.val(data="data.yaml")                                                # weights/best.pt on data.yaml's val split
    m.export("onnx")                                                       # best.onnx beside it, checked

Every keyword is a setting of the command line, by our name (``batch_size=8``, ``output_dir=...``) or by
Ultralytics' (``batch=16``, ``lr0=0.01``, ``device=[0, 1]``), and goes through the same parsing and checks as
``yolofuse-scale train`` (``config/ultralytics.py``, ``config/flags.py``): one meaning, one message per mistake,
raised here as a :class:`~yolofuse_scale.errors.UserError` (a ``ConfigError`` for a bad setting).

Training runs in this process, which is what callbacks need (``add_callback``; the events are
``engine.callbacks.Callback``'s). ``device`` listing several devices starts one worker process per device, as the
command line does, and returns when they end (callbacks are refused then: they cannot travel to other
processes; launch the script with torchrun instead, and every process runs them). A script launched by
torchrun trains in each of its processes, like ``train.py``.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolofuse_scale.config.model_file import builtin_model
from yolofuse_scale.engine.callbacks import Callback
from yolofuse_scale.errors import ConfigError, UserError

#: Callback events (engine.callbacks.Callback's methods) and Ultralytics' names for the same moments
EVENTS = ("on_train_start", "on_epoch_start", "on_step_end", "on_epoch_end", "on_fit_end")
ULTRALYTICS_EVENTS = {"on_train_epoch_start": "on_epoch_start", "on_train_batch_end": "on_step_end",
                      "on_fit_epoch_end": "on_epoch_end", "on_train_end": "on_fit_end"}


class RaisingParser(argparse.ArgumentParser):
    """argparse whose usage errors raise (a Python caller gets an exception, not a printed message and an exit)."""

    def error(self, message: str):  # noqa: D102 (argparse's contract: never returns)
        raise ConfigError(message)


class TrainingFailed(UserError, RuntimeError):
    """The worker processes of a ``device=`` launch failed; their error was printed by the failing worker."""


class FusionYOLO:
    """An RGB+IR fusion detector to train, validate, export and run.

    ``model``: a family and scale (``yolo11n``), a model YAML, Ultralytics' file names (``yolo11n.yaml``;
    ``yolo11n.pt``, a local file: that family and scale started from it) or a weights file of a finished run
    (``runs/train/weights/best.pt``: for ``val``, ``export`` and ``predict``; to train from it, pass the model it
    was trained as and ``pretrained=`` the file). ``fusion`` and any other keyword: settings for every ``train``
    call (as ``train``'s keywords, which win).
    """

    def __init__(self, model: str | Path = "yolov8n", fusion: str | None = None, **settings: Any):
        self.model = str(model)
        self.settings: dict[str, Any] = {**({"fusion": fusion} if fusion else {}), **settings}
        path = Path(self.model)
        #: the weights val/export/predict use: the finished run's best.pt (else last.pt), or the file given
        self.weights: Path | None = path if path.suffix == ".pt" and builtin_model(self.model) is None else None
        self.out: Path | None = None  # the last training's run folder
        self.metrics: dict[str, Any] = {}  # the last training's or validation's metrics
        self.callbacks: dict[str, list[Callable]] = {event: [] for event in EVENTS}

    def add_callback(self, event: str, fn: Callable) -> None:
        """Call ``fn`` at ``event`` (every rank): ``on_train_start(trainer)``, ``on_epoch_start(epoch)``,
        ``on_step_end(record)``, ``on_epoch_end(epoch, metrics)``, ``on_fit_end(metrics)``; Ultralytics' names for
        the same moments work too (``on_fit_epoch_end``, ``on_train_end``, ...), with these arguments."""
        name = ULTRALYTICS_EVENTS.get(event, event)
        if name not in self.callbacks:
            close = difflib.get_close_matches(event, [*EVENTS, *ULTRALYTICS_EVENTS], n=1)
            raise ConfigError(f"add_callback({event!r}): no such event" + (f" (did you mean {close[0]!r}?)" if close
                              else "") + f"; the events are {', '.join(EVENTS)}")
        self.callbacks[name].append(fn)

    def train(self, **settings: Any) -> dict[str, Any]:
        """Train with the instance's settings and these (``data``, ``epochs``, ``imgsz``, ``batch``, ``device``, any
        flag's name); return the last validation's metrics (metrics.json's ``metrics``). ``self.out`` is the run
        folder, ``self.weights`` its best.pt (else last.pt)."""
        from yolofuse_scale.cli import build_train_parser, parse_train_args, train

        if self.weights is not None and "model" not in settings:
            raise ConfigError(f"FusionYOLO({self.model!r}) holds a finished run's weights: to train from them, "
                              f"FusionYOLO('<the model it was trained as>', pretrained={self.model!r})")
        merged = {"model": self.model, **self.settings, **settings}
        args = parse_train_args(build_train_parser("FusionYOLO.train", RaisingParser), key_values(merged))
        _fresh_accelerate_state()
        result = train(args, [_Hooks(self.callbacks)] if any(self.callbacks.values()) else [])
        if result.code:
            raise TrainingFailed(f"training in {result.out} failed (exit code {result.code}); the failing worker's "
                                 "error is printed above")
        self.out, self.metrics = result.out, result.metrics
        best, last = result.out / "weights" / "best.pt", result.out / "weights" / "last.pt"
        self.weights = best if best.is_file() else last
        return result.metrics

    def val(self, data: str | Path | None = None, **options: Any) -> dict[str, Any]:
        """Evaluate ``self.weights`` (or ``weights=``) on ``data`` (default: the data trained on): ``yolofuse-scale
        val``'s options by name (``split``, ``batch_size``/``batch``, ``conf``, ``iou``, ``max_det``, ``imgsz``,
        ``plots=False``, ``out``); returns the metrics (written to ``out``/metrics.json, default the run's val/)."""
        from yolofuse_scale.cli import add_val_arguments, validate

        weights = options.pop("weights", None) or self._weights("val")
        data = data or self.settings.get("data") or self._trained_data()
        if not data:
            raise ConfigError("val: give data= (a data.yaml)")
        if "batch" in options:
            options["batch_size"] = options.pop("batch")
        if options.pop("plots", True) is False:
            options["no_plots"] = True
        options.setdefault("out", str((self.out or Path(weights).parent.parent) / "val"))
        parser = RaisingParser(prog="FusionYOLO.val")
        add_val_arguments(parser)
        args = parser.parse_args(["--weights", str(weights), "--data", str(data), *flags(options, parser)])
        _fresh_accelerate_state()
        self.metrics = validate(args)
        return self.metrics

    def export(self, format: str = "onnx", **options: Any) -> Path:
        """Export ``self.weights`` (or ``weights=``) as ``yolofuse-scale export-onnx`` does, checked against PyTorch
        (``imgsz``, ``opset``, ``exporter``, ``out``, ``nms_free``, ``check=False``, ...); the file written."""
        from yolofuse_scale import export

        weights = options.pop("weights", None) or self._weights("export")
        if options.pop("check", True) is False:
            options["no_check"] = True
        parser = RaisingParser(prog="FusionYOLO.export")
        export.add_arguments(parser)
        args = parser.parse_args(["--weights", str(weights), "--format", format, *flags(options, parser)])
        try:
            code = export.run(args)
        except SystemExit as e:  # the command's one-line refusal
            raise ConfigError(str(e.code).removeprefix("error: ")) from None
        if code:
            raise UserError(f"export of {weights}: the ONNX graph's outputs differ from PyTorch's beyond --tolerance")
        return Path(args.out) if args.out else Path(weights).with_suffix(".onnx")

    def predict(self, rgb: Any, ir: Any, **options: Any):
        """Detections on one RGB+IR pair (paths or arrays): ``FusionDetector.load(self.weights, **options)``."""
        from yolofuse_scale.inference import FusionDetector

        return FusionDetector.load(self._weights("predict"), **options)(rgb, ir)

    def _weights(self, what: str) -> Path:
        if self.weights is None:
            raise ConfigError(f"{what}: no weights yet: train first, or FusionYOLO('runs/train/weights/best.pt')")
        return self.weights

    def _trained_data(self) -> str | None:
        if self.out is None or not (self.out / "config.yaml").is_file():
            return None
        import yaml

        return (yaml.safe_load((self.out / "config.yaml").read_text()).get("data") or {}).get("data") or None


def key_values(settings: dict[str, Any]) -> list[str]:
    """Python keywords as the command line's ``key=value`` (``device=[0, 1]`` -> ``device=0,1``; None: left out)."""
    out = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        out.append(f"{key}={value}")
    return out


def flags(options: dict[str, Any], parser: argparse.ArgumentParser) -> list[str]:
    """Keywords as ``parser``'s flags (``max_det=100`` -> ``--max-det 100``, ``nms_free=True`` -> ``--nms-free``);
    a keyword no flag has is refused with the nearest one."""
    known = {s for a in parser._actions for s in a.option_strings}  # argparse keeps no public list
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if flag not in known:
            close = difflib.get_close_matches(flag, sorted(known), n=1)
            raise ConfigError(f"{parser.prog}: no option {key}=" + (f" (did you mean {close[0][2:].replace('-', '_')}?)"
                                                                    if close else ""))
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, str(value)]
    return out


class _Hooks(Callback):
    """The functions ``add_callback`` collected, as the loop's :class:`Callback` (each event's in the order added)."""

    def __init__(self, callbacks: dict[str, list[Callable]]):
        self.callbacks = callbacks

    def _call(self, event: str, *args: Any) -> None:
        for fn in self.callbacks[event]:
            fn(*args)

    def on_train_start(self, trainer: Any) -> None:
        self._call("on_train_start", trainer)

    def on_epoch_start(self, epoch: int) -> None:
        self._call("on_epoch_start", epoch)

    def on_step_end(self, record: dict[str, Any]) -> None:
        self._call("on_step_end", record)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._call("on_epoch_end", epoch, metrics)

    def on_fit_end(self, metrics: dict[str, Any]) -> None:
        self._call("on_fit_end", metrics)


def _fresh_accelerate_state() -> None:
    """Let this process build another Accelerator with other settings (precision, accumulation).

    Accelerate keeps one state per process and refuses a second Accelerator with another mixed precision
    ("AcceleratorState has already been initialized"): a Python session that trains, then validates, would
    stop there. A finished run ended its state (``end_training``); its precision and accumulation settings are
    cleared here (Accelerate's own reset; the process state, device and process group, is kept)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
