"""Crash-safe writes: every file and folder kdistill produces appears whole or not at all.

A `kill -9` (or a full disk) in the middle of a write must never leave a half-written file under its
final name, because the next run would trust it. Each helper here writes to a temporary name in the
same folder (so the rename stays on one filesystem) and renames it into place; `os.replace` is atomic
on POSIX and Windows. Folders are built under a temporary name and renamed the same way.

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
           "replace_dir", "write_with", "kill_point"]

KILL_ENV = "KDISTILL_KILL_AT"
KILL_EXIT_CODE = 137  # what a shell reports for SIGKILL, so tests read the same either way


def kill_point(name: str) -> None:
    """Die here (exit code 137, no cleanup) when `$KDISTILL_KILL_AT` equals `name`; a test hook."""
    if os.environ.get(KILL_ENV) == name:
        os._exit(KILL_EXIT_CODE)


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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
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
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move folder `src` to `dst`, replacing an existing `dst`; the new content appears by one rename."""
    src, dst = Path(src), Path(dst)
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
