"""The training command line: one flag per setting, and the run's configuration from defaults, a
``--config`` file and the flags, in that order (a flag wins).

A flag is derived from its field (``sections.py``): ``--batch-size`` for ``batch_size``, its help the
field's docstring with the default, a ``Literal`` type's values its choices, a bool an ``--X/--no-X``
pair, its placeholder a value (``--epochs N``, ``--lr LR``, ``--data FILE``: the field's ``metavar``
metadata, else N for a count and the key for anything else), never the ``section.key`` the parser stores
it under.

Why our own argparse and not a dataclass-to-CLI library (torchtitan uses ``tyro``; 1.0.16 was tried on
these sections): tyro keeps the docstrings as help, ``--X/--no-X`` and ``Literal`` choices, and would remove
the ~40 lines that build the parser and read the docstrings (it reads them from the source as well, with
``tokenize``). What it costs here: unprefixed flags need ``OmitArgPrefixes`` and value placeholders an
annotation per field (it shows ``INT``/``STR``); a ``--config`` file would be a default instance, whose checks
run before the flags apply, so a flag could no longer correct a file's bad value; its errors are framed boxes
with exit code 2, not the one ``error: FILE:LINE: ...`` line per job of ``errors.py``; it knows no file lines,
so ``file.py`` stays; Ultralytics-style ``key=value`` arguments need a rewrite of the argument list either way;
and tyro, docstring-parser and typeguard would join the dependencies and ``make wheels``' GPU wheel list.

The field docstrings are read with ``ast`` from the source (:func:`field_docs`): Python keeps no
attribute docstrings at run time, and the alternative, ``metadata={"help": ...}`` on every field, loses
the docstring under the field that torchtitan's ``job_config.py`` and this package read as the setting's
documentation. A check refuses with the keys of the settings it refuses (``ConfigError.settings``), so the
file and line of a value that came from ``--config`` are found without reading the message.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
from pathlib import Path

from yolofuse_scale.config.file import read_config_file
from yolofuse_scale.config.model_file import resolve_model_file
from yolofuse_scale.config.sections import (
    SECTION_OF,
    SECTIONS,
    RunConfig,
    allowed,
    field_type,
    is_model_file,
    knobs,
    type_hints,
)
from yolofuse_scale.engine.trackers import check_installed
from yolofuse_scale.errors import ConfigError, add_debug_argument


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (``--batch-size`` for ``batch_size``), grouped by section, helped by the
    field's docstring, with the default shown and a ``Literal`` type's values as the choices."""
    parser.add_argument("--config", default="", metavar="FILE",
                        help="YAML written by an earlier run (config.yaml); flags win")
    parser.add_argument("--device", default=None, metavar="DEVICES",
                        help="GPUs to train on, one process each: 0, or 0,1,2,3 (starts the DDP job itself, the same "
                             "elastic launch as torchrun); cpu; cpu:N (N CPU processes, DDP over gloo). Default: one "
                             "process (GPU 0, else the CPU) or what a launcher started (yolofuse_scale/devices.py)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_debug_argument(parser)
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section, " ".join((cls.__doc__ or "").split("\n\n")[0].split()))
        for key, knob in knobs(cls).items():
            flag, dest, default = "--" + key.replace("_", "-"), f"{section}.{key}", knob.field.default
            help_text = field_docs(knob.owner).get(knob.path[-1], "")
            if "help_more" in knob.field.metadata:  # what the docstring cannot hold: text computed from the code
                help_text += " " + knob.field.metadata["help_more"]()
            help_text = help_text.replace("%", "%%")  # argparse %-formats
            if isinstance(default, bool):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                   help=f"{help_text} (default: {'on' if default else 'off'})")
                continue
            choices = allowed(type_hints(knob.owner)[knob.path[-1]])
            kind = field_type(knob.field)
            metavar = knob.field.metadata.get("metavar", "N" if kind is int else key.upper())
            shown = knob.field.metadata.get("shown_default", default)
            group.add_argument(flag, dest=dest, type=kind, default=None, help=f"{help_text} (default: {shown})",
                               choices=[a for a in choices if a is not None] if choices else None,
                               metavar=None if choices else metavar)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal right under each field of dataclass ``cls``, whitespace folded: its ``--help`` line.

    Read with ``ast`` from the class's source, once per class (a few ms at parser-build time); ``{}`` where
    the source is not installed, which tests/test_config.py would notice (every flag has help text)."""
    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    except (OSError, TypeError):
        return {}
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config FILE``, then explicit flags; every value checked, every named file present.

    A refused value that the file set (no flag replaced it) is named with the file's line and key.
    """
    values, where = read_config_file(args.config) if getattr(args, "config", "") else ({}, {})
    flags = set()
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".", 1)
            values.setdefault(section, {})[key] = value
            flags.add((section, key))
    from_file = {home: at for home, at in where.items() if home not in flags}
    try:
        resolve_model_file(values)  # yolo11n.pt / yolo11n.yaml: Ultralytics' names for a family and scale
        cfg = RunConfig.from_dict(values)
        if ("model", "fusion") in flags and is_model_file(cfg.model.model):
            raise ConfigError(f"--fusion {cfg.model.fusion} with --model {cfg.model.model}: a model YAML defines its "
                              "own fusion (its layers); drop --fusion, or use --model yolov8n/yolo11n/yolo26n to pick "
                              "a fusion", settings=("model",))
        check_paths(cfg)
        check_installed(cfg.log.trackers)  # --log-with's packages: one error now, not a run that tracks nothing
    except ConfigError as e:
        at = next((from_file[home] for home in ((SECTION_OF.get(k), k) for k in e.settings) if home in from_file), None)
        raise (ConfigError(f"{at}: {e}", settings=e.settings) if at else e) from None
    return cfg


def check_paths(cfg: RunConfig) -> None:
    """The files the flags name exist: found now, not after the process group and the model are built."""
    if cfg.data.data and not Path(cfg.data.data).is_file():
        raise ConfigError(f"--data {cfg.data.data}: no such file (a data.yaml; omit --data to train on a "
                          "synthetic set)", settings=("data",))
    if is_model_file(cfg.model.model) and not Path(cfg.model.model).is_file():
        raise ConfigError(f"--model {cfg.model.model}: no such model YAML file", settings=("model",))
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_file():
        raise ConfigError(f"--pretrained {cfg.model.pretrained}: no such file (an Ultralytics checkpoint such as "
                          "yolo11n.pt, or weights/last.pt of a run)", settings=("pretrained",))
    if cfg.parallel.deepspeed and not Path(cfg.parallel.deepspeed).is_file():
        raise ConfigError(f"--deepspeed {cfg.parallel.deepspeed}: no such file", settings=("deepspeed",))
    c = cfg.checkpoint
    out, flag = (Path(c.output_dir), "--output-dir") if c.output_dir else (Path(c.project), "--project")
    for folder in (out, *out.parents):  # the first that exists must be a folder (mkdir would raise later)
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                kind = "a file" if folder.exists() else "a broken symbolic link"
                where = "is" if folder == out else f"lies under {folder}, which is"
                raise ConfigError(f"{flag} {out}: {where} {kind}, not a folder (the run writes its logs, "
                                  "checkpoints and weights into a folder; name a new or existing folder)",
                                  settings=(flag[2:].replace("-", "_"),))
            break
    resume = cfg.checkpoint.resume
    if resume and resume != "auto" and Path(resume).is_file():
        raise ConfigError(f"--resume {resume}: a file, not a checkpoint folder (give checkpoints/step_<n>, or "
                          "'auto' for the newest one in --output-dir)", settings=("resume",))
    if resume and resume != "auto" and not Path(resume).exists():
        raise ConfigError(f"--resume {resume}: no such checkpoint folder (give checkpoints/step_<n>, or 'auto' for "
                          "the newest one in --output-dir)", settings=("resume",))
