"""``torch.load`` with the weights-only unpickler, and its refusals said in our words.

torch's message for a file its weights-only unpickler refuses advises re-running ``torch.load`` with
``weights_only=False``, or allow-listing the refused class with ``add_safe_globals``: both would run
whatever the file's pickle names, which is exactly what reading it this way prevents. So a refusal is
reported by the unpickler's reason alone (``Unsupported global: GLOBAL getattr``, ``Unsupported operand
149``), without that advice; torch's warning about the pickle protocol of a file it is about to refuse is
silenced too, so that the command ends with one message. The weights files, the checkpoints'
``full.pt`` merges and ``--pretrained`` files are all read through :func:`load_weights_only`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

#: Sentences of torch's message that give advice rather than the reason (any of these words).
_ADVICE = re.compile(r"weights_only|safe_globals|allowlist|trust|file an issue|documentation|you have two options",
                     re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_weights_only(path: str | Path, **kwargs: Any) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True, **kwargs)``, quietly (see the module docstring)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)


def refusal_reason(e: BaseException, limit: int = 300) -> str:
    """What ``torch.load`` said went wrong, without its advice to load the file unsafely."""
    text = " ".join(_ANSI.sub("", str(e)).split())
    if "WeightsUnpickler error:" in text:
        text = text.partition("WeightsUnpickler error:")[2]
    text = text.partition("Check the documentation")[0]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\s*\(\d\)\s*", text) if s.strip()]
    kept = [s for s in sentences if not _ADVICE.search(s)]
    return (" ".join(kept[:2]) or type(e).__name__)[:limit]
