"""Crash-safe writes: every file and folder kdistill produces appears whole or not at all.

A `kill -9` (or a full disk) in the middle of a write must never leave a half-written file under its
final name, because the next run would trust it. Each helper here writes to a temporary name in the
same folder (so the rename stays on one filesystem) and renames it into place; `os.replace` is atomic
on POSIX and Windows. Folders are built under a temporary name and renamed the same way.

Before the rename every file gets the mode `open()` would have given it (0666 less the umask; folders 0777 less
the umask): some writers (safetensors, `tempfile`) create private 0600 files, which would make a run's outputs
unreadable by the account or group that serves them.

`KDISTILL_KILL_AT` is a test hook: when it names a point (see `kill_point`), the process dies there with
`os._exit`, which skips every `finally` and atexit handler just as `kill -9` would. Tests use it to
kill a run at each write of its finish sequence without depending on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_bytes", "atomic_path", "atomic_dir",
           "replace_dir", "write_with", "kill_point", "current_umask", "usual_modes"]

KILL_ENV = "KDISTILL_KILL_AT"
KILL_EXIT_CODE = 137  # what a shell reports for SIGKILL, so tests read the same either way


def kill_point(name: str) -> None:
    """Die here (exit code 137, no cleanup) when `$KDISTILL_KILL_AT` equals `name`; a test hook."""
    if os.environ.get(KILL_ENV) == name:
        os._exit(KILL_EXIT_CODE)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (`/proc/self/status`)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and put it back at once)
    os.umask(mask)
    return mask


def usual_modes(path: str | Path) -> None:
    """Give `path` (a file, or a folder and everything under it) the modes `open()` and `mkdir()` would give.

    Files become 0666 & ~umask (0777 & ~umask if any execute bit was set), folders 0777 & ~umask. Links are
    left alone. Raises OSError when a mode cannot be set (a file owned by someone else).
    """
    path = Path(path)
    mask = current_umask()

    def fix(p: Path) -> None:
        if p.is_symlink():
            return
        mode = p.stat().st_mode
        full = 0o777 if p.is_dir() or mode & 0o111 else 0o666
        if mode & 0o7777 != full & ~mask:
            os.chmod(p, full & ~mask)

    fix(path)
    if path.is_dir() and not path.is_symlink():
        for p in path.rglob("*"):
            fix(p)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error it is renamed to `path`.

    For writers that want a file name (`save_file`, `torch.save`, `yaml.dump` to a path). On an error the
    temporary file is removed and `path` keeps its previous content.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        usual_modes(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and an atomic rename (flushed to disk first)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """`Path.write_text`, but the file appears whole or not at all."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1, **kwargs: Any) -> None:
    """`json.dump` to `path`, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, **kwargs))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an old `path` is removed).

    On an error the temporary folder is removed and `path` is left as it was. Between the removal of an
    old `path` and the rename a crash can leave no `path` at all, but never a partial one.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        usual_modes(tmp)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move folder `src` to `dst`, replacing an existing folder `dst`; the new content appears by one rename.

    Raises NotADirectoryError when `dst` is a file: a folder never silently takes the place of a user's file.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(20, "Not a directory (a file is in the way)", str(dst))
    if dst.exists():
        old = _tmp_name(dst)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp)` to write a file, then rename it to `path` (for writers that take a path)."""
    with atomic_path(path) as tmp:
        writer(tmp)
