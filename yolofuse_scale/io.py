"""Small file-writing helpers shared by the scan cache, the converter, the pair cache and the benchmarks.

Nothing here imports torch: the light commands (synth, convert) use it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) via a temporary file in the same folder and ``os.replace``: a reader never sees
    half a file, also when the writer is killed (one temporary name per writer, so two never share one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
