"""What the scan finds and how it says so: a :class:`Problem` (``FILE[:LINE]: what is wrong``, the pair it
disqualifies), a split's :class:`SplitScan`, the printed list of problems, and the ``--on-bad-sample`` policies.

Every problem is collected (never the first one only) and the policy decides once, before the first step, what
happens: ``error`` stops with the full list, ``skip`` trains on the rest and reports what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from yolofuse_scale.data.sample import Sample

MAX_REPORTED = 20  # problems shown in an error message; the rest are counted
#: ``--on-bad-sample``: what the start-up scan does with bad pairs and labels; the tuple is derived from it.
BadSamplePolicy = Literal["error", "skip"]
POLICIES: tuple[str, ...] = get_args(BadSamplePolicy)


@dataclass(frozen=True)
class Problem:
    """One thing wrong. ``rgb`` names the pair it disqualifies (None: no pair to drop, e.g. an IR
    file without RGB partner); ``drops_pair`` is False where skipping loses nothing (a duplicate row
    is dropped and its pair kept)."""

    message: str
    rgb: str | None = None
    drops_pair: bool = True
    kind: str = "problem"  #: short name of what is wrong, counted in the start-up summary


@dataclass
class SplitScan:
    """What the scan found in one split: every pair it could form, and every problem."""

    split: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    from_cache: bool = False
    hidden: int = 0  #: hidden files and folders ignored (``.*``, ``._*``)
    repeats: list[str] = field(default_factory=list)  #: symlinked folders not entered again ("link -> real")
    renamed: int = 0  #: DEYOLO's layout: pairs (by position) whose two files are named differently

    def kept(self) -> list[Sample]:
        """The pairs no problem disqualifies (what ``--on-bad-sample skip`` trains on)."""
        bad = {p.rgb for p in self.problems if p.drops_pair and p.rgb is not None}
        return [s for s in self.samples if str(s.rgb) not in bad]


def format_problems(where: str, problems: list[str], limit: int | None = MAX_REPORTED) -> str:
    """``where: N problem(s) ...`` followed by one indented line per problem (the first ``limit``)."""
    shown = problems if limit is None else problems[:limit]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more
