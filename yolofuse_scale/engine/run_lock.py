"""One training at a time per output folder: ``<output-dir>/run.lock``, held for the run's whole life.

Two starts into one folder used to both pass the one-run-per-folder check (``run.json`` is read, then
written) and overwrite each other's outputs. The folder's writer process (see ``storage.is_writer``;
with ``--save-on-each-node`` every node's, each on its own copy) takes this lock before anything
reads the folder, and gives it back when the run ends, however it ends. What it is made of:

- **The lock file's existence.** It is published complete (written under a private name, then
  hard-linked into place: one atomic step that fails if the file exists, on local file systems, NFS
  v3/v4, Lustre and GPFS alike). It names the holder: host, boot id, pid (and the pid's start time,
  so a reused pid does not count), start time, and a heartbeat time that a daemon thread rewrites
  every :data:`HEARTBEAT_S` seconds.
- **A kernel ``flock`` on it**, kept by the holder. Where the file system implements flock (every local
  one; NFS emulates it with byte-range locks that the server arbitrates across hosts) it says exactly
  whether the holder lives: the kernel drops it when the process ends, also on SIGKILL.

Another start reads the file and judges the holder: its flock held -> alive; else, on this host (same
host name and boot id), alive while its pid runs; on another host, alive while its heartbeat is younger
than :data:`STALE_AFTER_S` (host clocks are assumed to agree within that). A live holder refuses the
start with one message naming the folder, the holder and the way out. A dead holder's file is taken
over: one contender wins an exclusive claim named after that file (so two hosts cannot both take it),
removes it and publishes its own, and the run's log says whom it replaced.

Given back on every exit we control: the end of the run, an exception (Trainer and Checkpointer
release it), interpreter exit (``atexit``), SIGTERM (a handler releases it, then the signal takes its
usual course). SIGKILL leaves the file behind; the kernel drops the flock, so the next start sees a dead
holder and takes over. Costs: a few file operations at start and end, one small write per heartbeat;
and a Python SIGTERM handler runs only between bytecodes, so a process blocked in native code (a
collective waiting for a hung peer) ends when that call returns or when the launcher's SIGKILL comes
(torchrun: after its grace period), leaving the file to be taken over.
Standard library only. docs/checkpoints.md states what is guaranteed on which file system.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolofuse_scale.errors import UserError

LOCK_FILE = "run.lock"
#: seconds between two heartbeats of a holder
HEARTBEAT_S = 10.0
#: a holder on another host whose heartbeat is this old is taken to be dead (its lock is taken over)
STALE_AFTER_S = 120.0
_RECORD_BYTES = 1024  # the record is rewritten in place at a fixed size: a reader never sees it shorter
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL}


class RunInUseError(UserError, RuntimeError):
    """Another live training holds the output folder's lock; the message names it and the way out."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot; None: unknown), which a reused pid does not share."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22; the command name may hold spaces


def _pid_runs(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _pid_start(pid)
    return start is None or now is None or now == start


def _flock(fd: int) -> bool | None:
    """Take an exclusive flock without waiting: True taken, False held by another, None not supported here."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in _NO_FLOCK:
            return None
        raise
    return True


def _read_record(fd: int) -> dict[str, Any] | None:
    """The holder's record, or None when it is not one (empty, being written, or anything else: a file
    someone else wrote decides nothing but its age; its token names a file only when it is plain hex)."""
    try:
        record = json.loads(os.pread(fd, _RECORD_BYTES * 2, 0).decode().strip() or "null")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    pid, number = record.get("pid"), (int, float)
    ok = (type(pid) is int and 0 < pid < 2**31 and isinstance(record.get("host"), str)
          and all(isinstance(record.get(k), number) and not isinstance(record.get(k), bool)
                  and math.isfinite(record[k]) for k in ("started", "heartbeat"))
          and all(isinstance(record.get(k, ""), str) for k in ("boot_id", "token"))
          and isinstance(record.get("pid_start"), (str, type(None))))
    if not ok:
        return None
    if not re.fullmatch(r"[0-9a-f]{1,64}", record.get("token", "")):
        record.pop("token", None)
    return record


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def describe(record: dict[str, Any] | None) -> str:
    """``host H, pid P, since T`` (or what is known of an unreadable record)."""
    if record is None:
        return "an unknown process (the lock file is being written, or is not a run lock)"
    return f"host {record['host'][:100]}, pid {record['pid']}, since {_when(record['started'])}"


@dataclass
class _Verdict:
    live: bool
    record: dict[str, Any] | None
    why: str  # why it is live or dead, for the refusal or the takeover note
    identity: str = ""  # names this file (its token, else its inode): whoever takes it over claims this name


def _judge(path: Path) -> _Verdict | None:
    """Whether the holder named by ``path`` lives (None: no lock file any more)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        kernel = _flock(fd)  # a probe: closing fd below gives it back at once
        record = _read_record(fd)
    finally:
        os.close(fd)
    identity = record["token"] if record and "token" in record else f"inode{st.st_ino}"
    age = time.time() - (record["heartbeat"] if record else st.st_mtime)
    if kernel is False:
        return _Verdict(True, record, "its flock is held", identity)
    if record is None:
        return _Verdict(age < STALE_AFTER_S, None, f"unreadable lock file, last written {age:.0f} s ago", identity)
    if record.get("host") == socket.gethostname() and record.get("boot_id", "") == _boot_id():
        if _pid_runs(record["pid"], record.get("pid_start")):
            return _Verdict(True, record, "its process runs", identity)
        return _Verdict(False, record, f"pid {record['pid']} is gone (killed or crashed)", identity)
    if age < STALE_AFTER_S:
        return _Verdict(True, record, f"another host; its heartbeat is {age:.0f} s old", identity)
    return _Verdict(False, record, f"another host; no heartbeat for {age:.0f} s (> {STALE_AFTER_S:.0f} s)",
                    identity)


def _refusal(out: Path, verdict: _Verdict) -> RunInUseError:
    return RunInUseError(
        f"--output-dir {out} is in use by another training: {describe(verdict.record)} ({verdict.why}; lock file "
        f"{out / LOCK_FILE}). Wait for it to end, stop it, or write to another --output-dir. A holder that died "
        f"is taken over by the next start (on another host once its heartbeat is {STALE_AFTER_S:.0f} s old); only "
        f"if you are sure no training uses the folder, delete {out / LOCK_FILE}"
    )


class RunLock:
    """A held lock on one output folder: :func:`acquire` returns it, :meth:`release` gives it back."""

    def __init__(self, path: Path, fd: int, record: dict[str, Any], note: str | None):
        self.path, self.fd, self.record, self.note = path, fd, record, note
        self._inode = os.fstat(fd).st_ino
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        _HELD.add(self)

    def _write(self) -> None:
        self.record["heartbeat"] = round(time.time(), 3)
        os.pwrite(self.fd, _encode(self.record), 0)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a full or vanished disk must not end the run
                self._write()

    def release(self) -> None:
        """Remove the lock file (if it is still this one) and drop the flock. Idempotent."""
        if self not in _HELD:
            return
        _HELD.discard(self)
        self._stop.set()
        self._thread.join(timeout=2 * HEARTBEAT_S)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        if not self._thread.is_alive():  # else it may still write through fd: leave it to process exit
            os.close(self.fd)


_HELD: set[RunLock] = set()


def _encode(record: dict[str, Any]) -> bytes:
    """The record at its fixed size (the command is cut so that it fits): rewrites never leave a tail."""
    data = json.dumps(record).encode()
    if len(data) >= _RECORD_BYTES:  # escapes take at most 2 bytes a character
        keep = max(0, len(record["command"]) - 2 * (len(data) - _RECORD_BYTES) - 8)
        data = json.dumps({**record, "command": record["command"][:keep]}).encode()
    return data.ljust(_RECORD_BYTES - 1) + b"\n"


def _publish(path: Path, record: dict[str, Any]) -> int | None:
    """Put ``record`` at ``path`` if no file is there (atomic); return an fd on it, or None if one exists."""
    data = _encode(record)
    tmp = path.with_name(f".{LOCK_FILE}.{record['token']}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)  # before the link: on NFS closing any fd of the file would drop the holder's lock
    try:
        os.link(tmp, path)
    except FileExistsError:
        return None
    except OSError as e:  # a file system without hard links (some FUSE mounts): an exclusive create instead
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
            raise
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        os.write(fd, data)
        return fd
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return os.open(path, os.O_RDWR)


def _take_over(path: Path, verdict: _Verdict) -> bool:
    """Remove a dead holder's lock file; True once it is gone. One contender per file wins the exclusive
    claim ``.run.lock.takeover-<identity>``; the others look again (and find the winner's lock)."""
    claim = path.with_name(f".{LOCK_FILE}.takeover-{verdict.identity}")
    try:
        os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - claim.stat().st_mtime > STALE_AFTER_S:  # a taker that died while taking over
                claim.unlink()
        return False
    try:
        again = _judge(path)
        if again is None or again.identity != verdict.identity or again.live:
            return again is None
        path.unlink()  # only the claim's winner removes this file, and its holder is gone: nobody else does
        return True
    finally:
        with contextlib.suppress(OSError):
            claim.unlink()


def acquire(out: Path) -> RunLock:
    """Take ``out``'s lock for this process (creating ``out``), or raise :class:`RunInUseError`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    now = round(time.time(), 3)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _pid_start(os.getpid()),
              "boot_id": _boot_id(), "started": now, "heartbeat": now, "token": uuid.uuid4().hex,
              "command": " ".join(sys.argv).encode("ascii", "replace").decode()[:300]}
    note = None
    for _ in range(50):
        fd = _publish(path, record)
        if fd is not None:
            # The file is ours; another start's probe (_judge) may hold its flock for an instant. (Never
            # taken within 2 s: the lock still stands on the file, judged by pid and heartbeat.)
            for _ in range(200):
                if _flock(fd) is not False:
                    break
                time.sleep(0.01)
            _install_exit_hooks()
            return RunLock(path, fd, record, note)
        verdict = _judge(path)
        if verdict is None:
            continue  # released meanwhile: try again
        if verdict.live:
            raise _refusal(out, verdict)
        if _take_over(path, verdict):
            note = (f"{path}: took over the lock of {describe(verdict.record)}: {verdict.why}; that run ended "
                    "without releasing it (its outputs are as it left them)")
        else:
            time.sleep(0.05)  # another start is taking it over: look again
    raise RunInUseError(f"--output-dir {out}: could not take {path} after 50 tries (other starts keep taking it)")


def release_all() -> None:
    """Give back every lock this process holds (the end of the process, or a signal)."""
    for lock in list(_HELD):
        lock.release()


_hooks_installed = False


def _install_exit_hooks() -> None:
    """``atexit`` and SIGTERM release the locks; SIGTERM then takes its previous course (default: the process
    ends by that signal, as before). SIGINT needs nothing: its KeyboardInterrupt unwinds through the releases."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(release_all)
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        release_all()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker) shares the lock's open file: close its copy, so that the flock
    ends with the holder, not with its last worker (closing a copy does not drop the parent's flock)."""
    for lock in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(lock.fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)
