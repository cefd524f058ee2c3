"""DeepSpeed's CPU communication op (``deepspeed_shm_comm``): the prebuilt one used, or its compile announced.

DeepSpeed on CPU builds a C++ op for its collectives when its process group starts
(``deepspeed/comm/torch.py: build_shm_op`` -> ``ShareMemCommBuilder().load()`` -> torch's
``cpp_extension.load``): 30-100 s of g++ on 2 cores, silently, into
``$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/`` (unset: ``~/.cache/torch_extensions/py<ver>_<cuda|cpu>/``).
``make install`` builds it once into ``<venv>/torch_extensions``. Naming that folder is not enough for
torch's loader to reuse it: ``load`` rewrites ``build.ninja`` with the source paths *this* interpreter
sees (a venv reached through a symlink, or moved, gives other paths) and ninja rebuilds when that file
changes, or when its log was written by another ninja version (pip's ninja 1.13 on PATH discards the
log a system ninja 1.11 wrote). So :func:`prepare` runs before DeepSpeed starts, on every rank:

- ``TORCH_EXTENSIONS_DIR`` unset and ``<sys.prefix>/torch_extensions`` present (``make install``): it is
  set to that folder, for this process and what it launches;
- the op's library there, compiled against this torch (its ``build.ninja`` names the headers) and newer
  than its sources and than the installed torch and DeepSpeed, is imported and handed to DeepSpeed's op
  cache, whose ``load`` then returns it: nothing is built, nothing in the folder is written (one line
  says which file);
- otherwise one line says, before it starts, that the op is compiled now, where, about how long, and
  whether another process is compiling it (holds the build lock) so that this one waits.

The build lock: torch 2.14 guards a build with ``filelock.FileLock(<build dir>/lock)``, an ``flock``.
The ``lock`` file stays after every build by design and blocks nobody; a compile killed (SIGTERM or
SIGKILL, e.g. at a benchmark's time cap) loses its flock with its process, and its orphaned compilers
hold none. Only a live build holds it. (On a file system without flock, filelock falls back to a
marker file that names its pid and is broken once that pid is gone on the same host.) A killed
compile leaves partial objects; the next build redoes them (ninja), again taking the full time.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import os
import re
import sys
from pathlib import Path

NAME = "deepspeed_shm_comm"


def extensions_dir() -> str | None:
    """``TORCH_EXTENSIONS_DIR``, set to the venv's prebuilt folder (``make install``) when the user left it unset."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        venv = Path(sys.prefix) / "torch_extensions"
        if venv.is_dir():
            os.environ["TORCH_EXTENSIONS_DIR"] = str(venv)
    return os.environ.get("TORCH_EXTENSIONS_DIR")


def stale_reason(library: Path, inputs: list[Path], torch_include: Path) -> str | None:
    """Why ``library`` cannot be used as built (None: it can): missing, compiled against another torch than
    ``torch_include`` (this interpreter's headers; the build's ``build.ninja`` names the ones it used), or
    older than one of ``inputs`` (the op's sources, the installed torch and DeepSpeed). Reads only."""
    if not library.is_file():
        return "not built yet"
    try:
        used = re.search(r"-isystem (\S+/torch/include)\s", (library.parent / "build.ninja").read_text())
    except OSError:
        used = None
    if used is None or os.path.realpath(used.group(1)) != os.path.realpath(torch_include):
        return f"not known to be built against this torch ({torch_include})"
    built = library.stat().st_mtime
    newer = [p for p in inputs if p.is_file() and p.stat().st_mtime > built]
    return f"older than {newer[0]} (installed or changed since it was built)" if newer else None


def _inputs(builder) -> list[Path]:
    """What the op's library depends on: its C++ sources, torch's library, both packages' install records."""
    import torch

    sources = {Path(builder.deepspeed_src_path(s)).parent for s in builder.sources()}
    files = [p for folder in sources for p in folder.rglob("*")]
    site = Path(torch.__file__).parents[1]
    files += [Path(torch.__file__).parent / "lib" / "libtorch_cpu.so",
              *site.glob("torch-*.dist-info/RECORD"), *site.glob("deepspeed-*.dist-info/RECORD")]
    return files


def _build_lock_held(build_dir: Path) -> bool:
    """Whether another process holds torch's build lock (an flock on ``lock``) now. A probe: taken and
    given back at once; a file system without flock answers False."""
    try:
        fd = os.open(build_dir / "lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # gives the probe's flock back
    return False


def prepare(say=print) -> str | None:
    """Before DeepSpeed starts on CPU: use the prebuilt op, or announce its compile (see the module
    docstring). ``say`` prints the one line (on each node's first process). Returns that line."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.ops import __compatible_ops__
    from torch.utils.cpp_extension import _get_build_directory

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not __compatible_ops__.get(builder.NAME, False) or builder.name in builder._loaded_ops:
        return None  # DeepSpeed will not build it here (not a CPU accelerator, not Linux), or it is loaded
    extensions_dir()
    build_dir = Path(_get_build_directory(NAME, verbose=False))
    library = build_dir / f"{NAME}.so"
    import torch

    why = stale_reason(library, _inputs(builder), Path(torch.__file__).parent / "include")
    if why is None:
        try:
            spec = importlib.util.spec_from_file_location(NAME, library)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except (ImportError, OSError) as e:  # built against another torch: rebuilt by DeepSpeed
            why = f"cannot be loaded ({e})"
    if why is None:
        builder._loaded_ops[builder.name] = module  # DeepSpeed's load() returns it: no build, no write
        _without_build_message()
        line = f"DeepSpeed CPU comm op: using the prebuilt {library}"
    else:
        wait = ("; another process is compiling it now (it holds the build lock): this one waits for it"
                if _build_lock_held(build_dir) else "")
        line = (f"DeepSpeed CPU comm op: {library}: {why}; compiling {NAME} now with the C++ compiler into "
                f"{build_dir}, about 30-100 s (once per folder; `make install` prebuilds it into "
                f".venv/torch_extensions, or set TORCH_EXTENSIONS_DIR to a folder that holds it){wait}")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        say(line)
    return line


def _without_build_message() -> None:
    """DeepSpeed's ``build_shm_op`` prints "DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully"
    (a bare ``print``, on every rank) after its ``load()`` returned the op handed over above: nothing was built,
    and this module's line already names the file used. Its stdout alone is dropped, in that one call."""
    ds_comm = importlib.import_module("deepspeed.comm.torch")  # (`import ... as` finds deepspeed.comm's `torch`)
    original = ds_comm.build_shm_op
    if getattr(original, "quiet", False):
        return

    def build_shm_op():
        with contextlib.redirect_stdout(io.StringIO()):
            return original()

    build_shm_op.quiet = True
    ds_comm.build_shm_op = build_shm_op
