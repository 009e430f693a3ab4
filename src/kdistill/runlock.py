"""One run per run folder: an exclusive lock on `OUT/.kdistill.lock` for the run's lifetime.

Two runs writing checkpoints, `best/` and the exported student into one folder corrupt each other without
either noticing. The lock is an `fcntl.flock` on a file inside the folder: the kernel releases it when the
holding process dies (even by `kill -9`), so a crashed run never blocks the next one. The file holds the
holder's pid, for the refusal message.

The lock is re-entrant within one thread: a multi-stage distillation holds OUT for the whole pipeline and its
last stage, an ordinary run into OUT itself, takes the same lock again instead of refusing itself. Another
thread, or another process, is refused. Under a multi-process launch (`accelerate launch`, torchrun) only
global rank 0 takes the lock; the other ranks of that launch write nothing of their own into the folder.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from kdistill.errors import KDistillError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there go unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "acquire", "is_held"]

LOCK_FILE = ".kdistill.lock"

_HELD: dict[Path, RunLock] = {}
_GUARD = threading.Lock()


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _holder_pid(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "pid unknown"
    return f"pid {text}" if text.isdigit() else "pid unknown"


class RunLock:
    """A held lock on one run folder; `release()` once per `acquire()` that returned it."""

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._fd = fd
        self._owner = threading.get_ident()
        self._depth = 1

    def release(self) -> None:
        """Give up one hold; the last one removes the lock file and unlocks (idempotent past zero)."""
        with _GUARD:
            if self._depth <= 0:
                return
            self._depth -= 1
            if self._depth:
                return
            _HELD.pop(self.folder, None)
            if self._fd is None:
                return
            # Unlink while still locked: a waiter that opened the old file finds, once it gets the lock, that
            # the path no longer names its file, and starts over (see `_lock_file`).
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass  # a folder made read-only meanwhile: the stale file is harmless, the lock goes with the fd
            os.close(self._fd)
            self._fd = None


def _lock_file(folder: Path, shown: str | Path) -> int:
    """Open and exclusively lock `folder/LOCK_FILE`; returns the fd, or raises `KDistillError` naming the holder
    (and the folder as the user spelled it, `shown`)."""
    assert fcntl is not None
    path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise KDistillError(f"out {shown}: cannot create its lock file {path.name}: "
                                f"{err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KDistillError(f"{shown} is in use by another kdistill run ({_holder_pid(path)}); wait for it to "
                                "end, or choose another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released and removed the file between our open and our lock: try again
    # Written in place, not by an atomic rename: a rename would give the path a new, unlocked file.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def acquire(folder: str | Path) -> RunLock:
    """Lock run folder `folder` (an existing folder) for this run, or raise `KDistillError` (exit 2) naming the
    pid of the run that holds it.

    A second `acquire` of the same folder by the same thread returns the held lock (one more `release` is then
    due); from another thread it is refused like another process. Non-zero ranks of a distributed launch and
    platforms without `fcntl` get a lock object that holds nothing.
    """
    key = Path(folder).resolve()
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held._owner != threading.get_ident():
                raise KDistillError(f"{folder} is in use by another kdistill run in this process (thread "
                                    f"{held._owner}); choose another --out")
            held._depth += 1
            return held
        fd = _lock_file(key, folder) if fcntl is not None and _is_rank0() else None
        lock = RunLock(key, fd)
        _HELD[key] = lock
        return lock


@atexit.register
def _release_at_exit() -> None:
    """Remove the lock files of locks a caller never released (`kdistill.runfolder.prepare_run_folder` keeps its
    lock until the process ends); the locks themselves die with the process either way."""
    for lock in list(_HELD.values()):
        lock._depth = 1
        lock.release()


def is_held(folder: str | Path) -> bool:
    """True when this process holds the lock on `folder`."""
    with _GUARD:
        return Path(folder).resolve() in _HELD
