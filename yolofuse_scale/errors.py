"""How a command ends on bad input: one message, a non-zero exit, no Python traceback.

A *user error* is one whose message already says what to fix: a bad flag or config file, bad data,
a missing file, an incompatible checkpoint, a launch problem. Every entry point (``train.py``, each
``yolofuse-scale`` command) runs through :func:`run_entry`, which prints such an error as one
``error: ...`` message and returns exit code 1; any other exception is a bug and keeps its traceback.
``YOLOFUSE_DEBUG=1`` (or ``--debug``) shows the traceback of user errors too.

Under a launcher (torchrun, accelerate, deepspeed) every rank usually hits the same error (the data
scan's result is broadcast, the flags are the same), and only one may print it:

- once the process group exists, the first rank to report takes a counter in the job's store
  (one atomic ``add``, a round trip) and prints; the others wait (up to :data:`GRACE_S`) until it
  has printed, then exit silently: the launcher stops every rank as soon as one exits;
- before it exists (flags, config files), rank 0 prints at once; another rank waits
  :data:`GRACE_S` seconds first: when rank 0 failed too the launcher stops it meanwhile, and when
  only this rank sees the problem (a file missing on one node) it still gets printed.

Ranks exit with ``sys.exit(1)``, not an exception: torchrun then stops the others within its
monitor interval, and, as ``train.py`` is not wrapped in elastic's ``@record``, its failure report
holds exit codes only (no per-rank error files, no tracebacks; torchrun's own ``ChildFailedError``
traceback, printed by the launcher process, remains).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

DEBUG_ENV = "YOLOFUSE_DEBUG"
#: Seconds a rank other than 0 waits before printing an error seen before the process group exists.
GRACE_S = 5.0


class UserError(Exception):
    """Bad input from the user; the message names the file, flag or setting and what is wrong."""


class ConfigError(UserError, ValueError):
    """A bad flag, flag combination or ``--config`` file (a ValueError, as these were before).

    ``settings``: the keys of the settings a check refuses (``("imgsz",)``; a cross-field check names each),
    so the caller can say where they were set (``config/flags.py``: a ``--config`` file's line).
    """

    def __init__(self, message: str = "", *, settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.settings = tuple(settings)


class DistributedSetupError(UserError, RuntimeError):
    """The launch environment, the flags and the Accelerator disagree about distribution."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint folder or a portable weights file that cannot be used; the message names the file and
    what is missing or wrong. Defined here, below both readers: the weights file's (``weights.py``) and the
    checkpoint folder's (``engine/checkpoint/``)."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as one message: ours all derive from :class:`UserError`
    (``DataError``, ``CheckpointError``, ``ConfigError``, ...), plus the OS's file errors."""
    return (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _job_store():
    """The job's key-value store once this process joined the process group, else None."""
    dist = sys.modules.get("torch.distributed")  # never imported here: a light command has no group
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:
        return None


def _error_key() -> str:
    # per elastic attempt: a restarted group shares the agent's store with the failed one
    return f"yolofuse_scale/error/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _reported_by_another_rank() -> bool:
    """Whether a rank of this job already reported a user error (its exit then fails our collectives)."""
    store = _job_store() if _world() > 1 else None
    if store is None:
        return False
    try:
        return bool(store.check([_error_key()]))
    except Exception:
        return False


def report(message: str) -> None:
    """Print ``message`` on stderr, once per job (see the module docstring)."""
    sys.stdout.flush()
    store = _job_store() if _world() > 1 else None
    if store is not None:
        key = _error_key()
        try:
            first = store.add(key, 1) == 1
        except Exception:  # the store is gone (its host exited): print rather than lose the message
            first = True
        if not first:
            # Exit only once the first reporter has printed: the launcher stops it when we exit.
            with contextlib.suppress(Exception):
                store.wait([key + "/printed"], timedelta(seconds=GRACE_S))
            return
        _print(message)
        with contextlib.suppress(Exception):
            store.set(key + "/printed", "1")
        return
    if _world() > 1 and _rank() != 0:
        time.sleep(GRACE_S)  # rank 0 reports what every rank sees; the launcher stops us meanwhile
    _print(message)


def _print(message: str) -> None:
    prefix = f"[rank {_rank()}] " if _world() > 1 and _rank() != 0 else ""
    print(prefix + message.rstrip("\n"), file=sys.stderr, flush=True)


def run_entry(fn: Callable[..., int | None], *args) -> int:
    """``fn(*args)`` as a command: its exit code, or 1 after reporting a user error (see above)."""
    # A crash in native code (a segfault in a collective, a kernel) then prints the Python stack of
    # every thread before the process dies, instead of only the launcher's "Signal 11". Costs nothing
    # until such a signal arrives.
    if not faulthandler.is_enabled():
        faulthandler.enable()
    try:
        return int(fn(*args) or 0)
    except SystemExit as e:  # raise SystemExit("message"): a clean message already, but once per job
        if e.code is None or isinstance(e.code, int):
            raise
        if debug_enabled():
            if e.__cause__ is not None:  # Python prints a SystemExit without its traceback
                traceback.print_exception(e.__cause__)
            raise
        message = str(e.code)
    except Exception as e:
        if not debug_enabled() and not isinstance(e, user_error_types()) and _reported_by_another_rank():
            return 1  # a peer's user error broke this rank's collective: the peer has said why
        if debug_enabled() or not isinstance(e, user_error_types()):
            raise
        message = f"error: {e}"
    report(message)
    return 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its usage errors printed once per job like any user error (exit code 2)."""

    def error(self, message: str):  # noqa: D102 (argparse's contract: never returns)
        report(f"{self.format_usage()}{self.prog}: error: {message}")
        sys.exit(2)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"show the Python traceback of a user error too (or set {DEBUG_ENV}=1)")


def apply_debug_flag(args: argparse.Namespace) -> None:
    """``--debug`` given: set the environment variable, so that launched children see it too."""
    if getattr(args, "debug", False):
        os.environ[DEBUG_ENV] = "1"


def finish(code: int) -> None:
    """End the process with ``code``. A rank of a multi-process launch skips the interpreter's teardown.

    After a finished run the process group is already destroyed (``Trainer.fit`` ends with
    ``end_training``), yet now and then a gloo rank still aborted at interpreter exit ("terminate called
    without an active exception", SIGABRT, seen 1 in 3 full test runs here): C++ objects of the
    distributed stack destroyed during finalization, after the result was written. ``os._exit`` after
    flushing skips that finalization; everything the run writes is closed by then (the log, metrics,
    checkpoints, trackers), and DataLoader workers exit when they see their parent gone. A single
    process exits normally.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if _world() > 1:
        import logging

        logging.shutdown()
        os._exit(code)
    sys.exit(code)

