"""The run folder when ``--output-dir`` is not given: ``<project>/<name>``, numbered as Ultralytics numbers runs.

A fresh run takes ``<project>/<name>`` (``runs/train``) if it does not exist, else the number after the highest
one there: ``train-2``, ``train-3``, ... (Ultralytics 8.4's ``increment_path`` spelling, ``NAME-N``; 8.3 and
older wrote ``NAME2``). Ultralytics takes the first free number; here it is the one after the highest, so a
deleted folder's number is never reused and the highest number is always the newest run, which is what
``--resume auto`` looks for. The folder is claimed by creating it (``mkdir``, atomic: two starts at the same
moment get two different folders), so a new run never lands in another's folder; the run lock
(``run_lock.py``) and the one-run-per-folder rule (``checkpoint.Checkpointer``) then hold inside it as for any
``--output-dir``.

Never numbered:

- ``--exist-ok``: ``<project>/<name>`` itself (Ultralytics' ``exist_ok=True``);
- ``--resume auto``: the newest run of ``<project>/<name>`` that holds a complete checkpoint (Ultralytics'
  ``resume=True`` takes the newest ``last.pt``), else the newest existing one (started fresh, as ``--resume
  auto`` starts an empty folder), else ``<project>/<name>``. A resume never creates a numbered folder;
- ``--resume PATH`` of ``<run>/checkpoints/step_<n>``: that run's folder ``<run>`` (the run continues where it
  was), any other PATH a new numbered folder.

Chosen once, by the job's main process, before any rank writes (one broadcast); every rank then uses that
folder. With ``--save-on-each-node`` the main process's node numbers the folder and every node uses the name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from yolofuse_scale.errors import ConfigError


def resolve_output_dir(c: Any, accelerator: Accelerator | None = None) -> tuple[Path, str | None]:
    """(the run folder, a line for the run's log saying how it was chosen, or None where ``--output-dir`` names it).

    ``c``: the checkpoint settings (output_dir, project, name, exist_ok, resume). Collective with an
    ``accelerator`` of several processes: the main process chooses (and creates a new folder), all get its answer;
    a refusal is raised on every rank alike."""
    if c.output_dir:
        return Path(c.output_dir), None
    answer: list[Any] = [None]
    if accelerator is None or accelerator.is_main_process:
        try:
            folder, why = choose_run_dir(Path(c.project), c.name, c.exist_ok, c.resume)
            answer = [(str(folder), why, None)]
        except (ConfigError, OSError) as e:  # every rank raises it, none waits for a folder that never comes
            answer = [(None, None, f"--project {c.project} --name {c.name}: cannot create the run folder ({e})")]
    if accelerator is not None and accelerator.num_processes > 1:
        answer = broadcast_object_list(answer)
    folder, why, error = answer[0]
    if error:
        raise ConfigError(error, settings=("project", "name"))
    return Path(folder), why


def choose_run_dir(project: Path, name: str, exist_ok: bool, resume: str) -> tuple[Path, str]:
    """The folder (created where it is a new one) and why it is that one (see the module docstring)."""
    base = project / name
    if exist_ok:
        return base, f"run folder {base} (--exist-ok: <project>/<name> itself)"
    if resume == "auto":
        runs = numbered_runs(base)
        with_checkpoint = [p for _, p in runs if has_checkpoint(p)]
        if with_checkpoint:
            return with_checkpoint[-1], (f"run folder {with_checkpoint[-1]}: --resume auto takes the newest run of "
                                         f"{base} that holds a checkpoint")
        folder = runs[-1][1] if runs else base
        return folder, f"run folder {folder}: --resume auto found no checkpoint in the runs of {base}"
    if resume:
        step = Path(resume)
        if step.parent.name == "checkpoints":
            return step.parent.parent, f"run folder {step.parent.parent}: the run --resume {resume} belongs to"
    folder = claim_next(base)
    return folder, f"run folder {folder}" + (f" ({base} is taken: the next number)" if folder != base else "")


def numbered_runs(base: Path) -> list[tuple[int, Path]]:
    """``base`` (number 1) and ``base-N`` folders that exist, by number."""
    runs = [(1, base)] if base.is_dir() else []
    pattern = re.compile(re.escape(base.name) + r"-(\d+)")
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and int(m.group(1)) >= 2 and p.is_dir():
                runs.append((int(m.group(1)), p))
    return sorted(runs)


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a complete checkpoint (``checkpoints/step_<n>/COMPLETE``, or a re-save's
    ``.old_step_<n>``: ``checkpoint.list_checkpoints``'s rule, without reading the checkpoints)."""
    root = folder / "checkpoints"
    return root.is_dir() and (any(root.glob("step_*/COMPLETE")) or any(root.glob(".old_step_*/COMPLETE")))


def claim_next(base: Path) -> Path:
    """Create and return ``base`` if it does not exist, else ``base-N`` with N one more than the highest there.
    ``mkdir`` either creates the folder or fails: a start that loses a race takes the next number."""
    base.parent.mkdir(parents=True, exist_ok=True)
    runs = numbered_runs(base)
    number = runs[-1][0] + 1 if runs else 1
    while True:
        folder = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
