"""What a command leaves on disk: a clean tokenizer beside every saved model, and output places checked first.

A fast tokenizer remembers the last truncation and padding it was called with inside its Rust backend, and
`save_pretrained` writes them into `tokenizer.json`. A student saved after training would then truncate (or pad)
every input at the training `max_length` for anyone who loads that file outside transformers' own call path
(`tokenizers.Tokenizer.from_file`, serving stacks), unlike the teacher's tokenizer. `save_tokenizer` writes the
settings as the teacher's file has them: none.

Commands that do minutes of work before they write (`export`, `report`, `bench`) check where they will write
before they start (`output_folder`, `check_out_file`), so a bad `--out` fails at once with one line. A command that
replaces its output folder whole (`export`) also refuses a folder holding anything but its own earlier output
(`check_replaceable`): `--out runs` would otherwise delete every run in `runs/`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdistill.atomic import atomic_write_text
from kdistill.errors import KDistillError
from kdistill.runfolder import check_out_dir

__all__ = ["save_tokenizer", "clean_tokenizer_json", "output_folder", "check_out_file", "check_replaceable"]

TOKENIZER_JSON = "tokenizer.json"


def clean_tokenizer_json(folder: str | Path) -> bool:
    """Set `truncation` and `padding` to null in `folder/tokenizer.json` (rewritten atomically if needed).

    Returns True when the file held either setting. A folder without `tokenizer.json` (a slow tokenizer) is left
    as it is: its settings live in no file. Raises OSError or ValueError for an unreadable file.
    """
    path = Path(folder) / TOKENIZER_JSON
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("truncation") is None and data.get("padding") is None:
        return False
    data["truncation"] = None
    data["padding"] = None
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2))  # the layout `tokenizers` writes
    return True


def save_tokenizer(tokenizer: Any, folder: str | Path) -> None:
    """`tokenizer.save_pretrained(folder)`, without the truncation and padding the backend was last called with.

    `tokenizer_config.json` (with `model_max_length`) is written by transformers as loaded; only the backend's
    per-call state is dropped. The tokenizer object itself is not changed.
    """
    tokenizer.save_pretrained(str(folder))
    clean_tokenizer_json(folder)


@contextmanager
def output_folder(out: str | Path, what: str = "out") -> Iterator[Path]:
    """Check (and create) the output folder `out` before the work in the block starts.

    Raises `KDistillError` (one line, from `runfolder.check_out_dir`) when `out` is a file, lies under a file, or
    cannot be created or written. When the block fails and this call created `out`, the folder is removed again
    if it is still empty, so a failed command leaves no empty folder behind.
    """
    path = Path(out).expanduser()
    existed = path.exists()
    checked = check_out_dir(path, what)
    try:
        yield checked
    except BaseException:
        if not existed:
            try:
                checked.rmdir()
            except OSError:
                pass  # not empty (something was written) or already gone: leave it
        raise


def check_out_file(out: str | Path, what: str) -> Path:
    """Check that a file can be written at `out` (its folder is created); return the path.

    Raises `KDistillError` when `out` is a folder, or its folder is a file, lies under a file, or cannot be
    created or written (the message then names that folder).
    """
    path = Path(out).expanduser()
    if path.is_dir():
        raise KDistillError(f"{what} {path} is a folder, not a file: choose another --{what}")
    check_out_dir(path.parent, what)
    return path


def check_replaceable(out: Path, source: Path, markers: tuple[str, ...], what: str = "out") -> None:
    """Refuse an output folder that a command replacing `out` whole would destroy user files with.

    Raises `KDistillError` when `out` is the input folder `source` or one of its parents, or when `out` is a
    non-empty folder holding none of `markers` (the files that show it is this command's earlier output). Reads
    only; call it before any work.
    """
    path, src = out.expanduser().resolve(), source.expanduser().resolve()
    if path == src or path in src.parents:
        raise KDistillError(f"{what} {out} holds the model folder {source}, and the output replaces {out} whole: "
                            f"choose a new folder, such as {source / 'onnx'}")
    if not path.is_dir():
        return
    entries = sorted(p.name for p in path.iterdir())
    if entries and not any((path / m).exists() for m in markers):
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise KDistillError(f"{what} {out} is not an earlier output of this command (no {' or '.join(markers)}) but "
                            f"holds {shown}, which would be deleted: choose a new or empty folder")
