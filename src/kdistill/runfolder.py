"""A run folder (`--out`): can it hold a run, which config started it, and may this call resume it.

A run folder remembers the config it was started with (`kdistill.yaml`). A rerun with the same `--out`
resumes the run (or finds it finished) only when every field that can change the trained weights is
the same; otherwise it stops and names each differing field (per item and subfield of lists such as
`losses`), instead of silently training one config while recording another. Fields that cannot change the
result (progress bars, logging, checkpoint frequency, caches' locations) may differ, and a path spelled
differently (`runs/t`, `./runs/t/`, absolute) is the same path.

Before anything is written, `--out` is refused when it is one of the run's input model folders (the teacher,
`student.path`, finetune's `--model`), or when it is not a kdistill run folder but already holds model files
(`config.json`, `model.safetensors`, `README.md`, ...) that the run would overwrite. While a run lives its
folder is locked (`kdistill.runlock`), so a second run into it is refused instead of mixing files.

The config is recorded only once set-up has succeeded (`record_config`), so a run refused at set-up
leaves no `kdistill.yaml` behind, and a folder that the refused call itself created is removed again.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kdistill.atomic import atomic_write_text
from kdistill.checkpoints import complete_checkpoints
from kdistill.config import DEFAULT_TEACHER
from kdistill.errors import KDistillError
from kdistill.runlock import acquire

__all__ = ["CONFIG_FILE", "STAGES_FILE", "RESULT_NEUTRAL_FIELDS", "PATH_FIELDS", "MODEL_FILES", "ABSENT",
           "check_out_dir", "check_out_guard", "check_resumable", "is_run_folder", "prepare_run_folder",
           "run_folder", "record_config", "config_differences", "describe_difference"]

CONFIG_FILE = "kdistill.yaml"
STAGES_FILE = "kdistill-stages.yaml"

RESULT_NEUTRAL_FIELDS = frozenset({
    "train.progress", "train.log_every", "train.resume", "train.save_steps", "train.keep_checkpoints",
    "train.eval_batch_size", "data.cache_dir", "corpus.cache_dir",
    "out",  # the folder being resumed is `out` itself, however the path was spelled
})
"""Dotted config fields that may change between a run and its resume: they do not change the weights.

Not `train.threads`: the thread count sets the order of float reductions, and a run resumed with another count
ends a few 1e-6 away from the uninterrupted one. `train.eval_batch_size` changes validation scores only by float
noise in the last digits (never the trained weights), so it stays neutral.
"""

PATH_FIELDS = frozenset({
    "out", "teacher", "model", "encoder", "extra_teachers", "student.path", "student.embeddings",
    "teacher_answers", "teacher_cache", "data.train_file", "data.validation_file", "data.test_file",
    "data.augment_file", "data.cache_dir", "corpus.files", "corpus.cache_dir",
})
"""Fields compared as paths (resolved against the current folder), wherever the path exists or not.
Any other string value is compared as a path too when both spellings name existing paths (`data.dataset`)."""

MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json", "tf_model.h5", "README.md", "metrics.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
               "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "generation_config.json")
"""Files a run writes into its folder, or that make a folder a model: not overwritten outside a run folder."""

_COMPARED_AS = {"teacher_cache": lambda v: v is not False}
"""Fields compared by what they change: where a teacher cache lives does not matter, whether there is one does."""

_INPUT_MODELS = {"teacher": "teacher", "model": "model", "encoder": "encoder", "extra_teachers": "teacher",
                 "student.path": "student"}
"""Config fields that name a model folder the run reads, and what the refusal calls it."""

_COMMANDS = {frozenset({"model"}): "finetune", frozenset({"teacher", "losses"}): "distill",
             frozenset({"teacher", "corpus", "losses"}): "general", frozenset({"encoder", "corpus"}): "mlm-head"}
"""Which command wrote a config, told by the top-level fields only it has."""


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""Stands for a list item that one of two compared configs does not have (`config_differences`)."""


def check_out_dir(out: str | Path, what: str = "out") -> Path:
    """Make `out` (and its parents) a writable folder, or raise a one-line `KDistillError`.

    Raises when `out` is an existing file, lies under a file, or cannot be created or written.
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise KDistillError(f"{what} {path} is an existing file, not a folder: choose another --{what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KDistillError(f"{what} {path}: a parent of this path is a file, not a folder") from None
    except OSError as err:
        raise KDistillError(f"{what} {path} cannot be created: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise KDistillError(f"{what} {path} is not writable: choose another --{what}")
    return path


def is_run_folder(path: Path) -> bool:
    """True when `path` holds a kdistill run: its recorded config, a stages record, or checkpoints."""
    return ((path / CONFIG_FILE).is_file() or (path / STAGES_FILE).is_file()
            or any((path / "checkpoints").glob("step-*")))


def _same_folder(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def _field(cfg: BaseModel, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def check_out_guard(out: str | Path, cfg: BaseModel) -> None:
    """Refuse an `out` that this run must not write into; reads only, so call it before anything is written.

    Raises `KDistillError` (exit 2) when `out` is the same folder as one of the run's input models (`teacher`,
    `extra_teachers`, `student.path` of a path student, finetune's `model`, mlm-head's `encoder`), or when `out` is
    an existing folder that is not a kdistill run folder (`is_run_folder`) but holds any of `MODEL_FILES`.
    """
    path = Path(out).expanduser()
    for dotted, role in _INPUT_MODELS.items():
        if dotted == "student.path" and _field(cfg, "student.init") != "path":
            continue
        values = _field(cfg, dotted)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value != DEFAULT_TEACHER and _same_folder(path, value):
                raise KDistillError(f"out {path} is the {role} folder ({dotted}: {value}); the run would overwrite "
                                    f"the {role}: choose another --out")
    if path.is_dir() and not is_run_folder(path):
        found = [name for name in MODEL_FILES if (path / name).exists()]
        if found:
            raise KDistillError(f"out {path} is not a kdistill run folder (no {CONFIG_FILE}) but holds "
                                f"{', '.join(found)}, which this run would overwrite: choose another --out (a new "
                                "or empty folder)")


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _as_path(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def _same(field: str, a: Any, b: Any) -> bool:
    if field in _COMPARED_AS:
        return _COMPARED_AS[field](a) == _COMPARED_AS[field](b)
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        if field in PATH_FIELDS or (os.path.exists(a) and os.path.exists(b)):
            return _as_path(a) == _as_path(b)
        return False
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(_same(field, x, y) for x, y in zip(a, b, strict=True))
    return False


def _walk(key: str, a: Any, b: Any, diffs: list[tuple[str, Any, Any]]) -> None:
    field = re.sub(r"\[\d+\]", "", key)  # `losses[1].weight` is the field `losses.weight`
    if field in RESULT_NEUTRAL_FIELDS:
        return
    leaf = field.rsplit(".", 1)[-1] == "params"  # a free-form mapping (a loss's keyword arguments): one value
    if isinstance(a, dict) and isinstance(b, dict) and not leaf:
        for k, v in b.items():
            if k in a:  # a field the earlier run did not record (a newer kdistill's) is not compared
                _walk(f"{key}.{k}" if key else k, a[k], v, diffs)
        return
    if isinstance(a, list) and isinstance(b, list) and any(isinstance(x, dict) for x in [*a, *b]):
        for i in range(max(len(a), len(b))):
            _walk(f"{key}[{i}]", a[i] if i < len(a) else ABSENT, b[i] if i < len(b) else ABSENT, diffs)
        return
    if a is ABSENT or b is ABSENT or not _same(field, a, b):
        diffs.append((key, a, b))


def config_differences(started: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Result-changing fields whose values differ: (field, value the run started with, value now).

    Both arguments are configs as JSON-mode dicts. Lists of mappings (`losses`, `stages`) are compared item by
    item and subfield by subfield (`losses[1].weight`); an item only one side has is `ABSENT` on the other.
    Paths are compared resolved (see `PATH_FIELDS`). A field the earlier run did not record (a newer kdistill's
    field) is not compared.
    """
    diffs: list[tuple[str, Any, Any]] = []
    _walk("", started, now, diffs)
    return diffs


def describe_difference(key: str, started: Any, now: Any) -> str:
    """One difference as the refusal names it: `losses[1].weight: 1.0 (run) -> 2.0 (now)`, or an item added or
    removed (`losses[2]: added {name: hidden_mse, ...} (now)`)."""
    if started is ABSENT:
        return f"{key}: added {_flow(now)} (now)"
    if now is ABSENT:
        return f"{key}: removed, was {_flow(started)} (run)"
    return f"{key}: {_flow(started)} (run) -> {_flow(now)} (now)"


def _command(config: dict[str, Any]) -> str | None:
    return _COMMANDS.get(frozenset(k for k in ("model", "encoder", "teacher", "corpus", "losses") if k in config))


def check_resumable(out: str | Path, cfg: BaseModel) -> None:
    """Raise `KDistillError` when `out` holds a run (a checkpoint, finished or not) that `cfg` cannot resume:
    one of another command, or one whose recorded config differs in a result-changing field (each is named).
    Reads only; a folder without a run, or without a recorded config, passes."""
    path = Path(out).expanduser()
    recorded = path / CONFIG_FILE
    if not complete_checkpoints(path) or not recorded.is_file():
        return  # no run, or one from before configs were recorded: nothing to compare with
    try:
        before = yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        before = None
    if not isinstance(before, dict):
        raise KDistillError(f"{recorded} is unreadable, so this run cannot be resumed safely: start over with "
                            "--resume false, or use another --out")
    now = cfg.model_dump(mode="json")
    was, this = _command(before), _command(now)
    if was and this and was != this:
        raise KDistillError(f"{path} holds a `kdistill {was}` run, which this `kdistill {this}` cannot resume: "
                            "use another --out")
    diffs = config_differences(before, now)
    if diffs:
        listed = "; ".join(describe_difference(*d) for d in diffs)
        raise KDistillError(f"{path} holds a run started with another config ({listed}); resume it with the same "
                            "settings, start over with --resume false (train.resume), or use another --out")


def _remove_temporaries(path: Path) -> None:
    """Drop what a killed write left under a temporary name (see `kdistill.atomic`)."""
    for leftover in path.glob(".*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def _start(path: Path, cfg: BaseModel, resume: bool) -> None:
    """Under the lock: clear killed writes, then check the earlier run's config or discard it (`resume` off)."""
    _remove_temporaries(path)
    if not complete_checkpoints(path):
        return
    if not resume:
        print(f"[kdistill] resume is off: discarding the earlier run's checkpoints in {path}", flush=True)
        shutil.rmtree(path / "checkpoints", ignore_errors=True)
        shutil.rmtree(path / "best", ignore_errors=True)
        return
    check_resumable(path, cfg)


def prepare_run_folder(out: str | Path, cfg: BaseModel, resume: bool) -> Path:
    """Check `out` before any set-up work and lock it; see `run_folder`, which also releases the lock and removes
    a folder this call created if set-up fails. Here the lock is held until the process ends.

    Raises `KDistillError`: see `check_out_guard`, `check_out_dir`, `check_resumable`, `kdistill.runlock.acquire`.
    """
    check_out_guard(out, cfg)
    path = check_out_dir(out)
    acquire(path)
    _start(path, cfg, resume)
    return path


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders this call created, deepest first, while each is empty.

    The run's own lock file is gone by now (`RunLock.release` removes it); a lock file still there belongs to a
    run that started into the same new folder at the same moment, and keeps the folder.
    """
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (set-up wrote something), or gone: leave it and its parents
            return


@contextmanager
def run_folder(out: str | Path, cfg: BaseModel, resume: bool, *, start: bool = True) -> Iterator[Path]:
    """Hold `out` for one run: refuse it when it must not be written (`check_out_guard`), create it, lock it for
    the block (`kdistill.runlock`), then clear killed writes and check (or, without `resume`, discard) an earlier
    run there. `start=False` skips that last step (a multi-stage run whose stages check their own folders).

    When the block raises, the folders this call created are removed again if still empty; a folder that existed
    before is never removed. Nothing is written here apart from creating the folder and its lock file.

    Raises `KDistillError`: see `check_out_guard`, `check_out_dir`, `check_resumable`, `kdistill.runlock.acquire`.
    """
    path = Path(out).expanduser()
    created = _missing_folders(path)
    try:
        check_out_guard(path, cfg)
        path = check_out_dir(path)
        lock = acquire(path)
        try:
            if start:
                _start(path, cfg, resume)
            yield path
        finally:
            lock.release()
    except BaseException:
        _remove_if_empty(created)
        raise


def record_config(out: Path, cfg: BaseModel, name: str = CONFIG_FILE) -> None:
    """Write the run's config to `out/name` atomically; call once set-up has succeeded."""
    atomic_write_text(out / name, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
