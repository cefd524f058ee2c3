"""The load report of a ``--pretrained`` transfer: per stream of the built model what was loaded, adapted,
shape-skipped, re-initialised or new, logged as a table (:meth:`LoadReport.lines`) and recorded in metrics.json
(:meth:`LoadReport.summary`). Class layers loaded under other names (the same count, ``cat`` in the file,
``person`` here) get one warning naming the ids (:func:`compare_names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # an annotation only: the report is filled by the mappings, never reads a file
    from yolofuse_scale.model.pretrained.checkpoint import Source

STREAMS = ("rgb", "ir", "shared", "fusion", "attention")


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
    #: share of its streams' weights (input selectors to fusion) that start pretrained (see by_structure.py)
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    stream_share: float | None = None
    builds: str = ""  # what the run builds, in the words of ``identify.py`` (for a refusal)

    def settle(self, used: set[str], reinit_src: set[str], tensors: dict[str, torch.Tensor]) -> None:
        """The counts of a finished transfer: the file's tensors placed (``used``), and those set aside
        (class-dependent, or another task's head: ``reinit_src``, less any placed after all), which are not counted
        against the file."""
        self.placed = len(used)
        self.reinit_src = reinit_src - used
        self.countable = len(set(tensors) - self.reinit_src)

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
