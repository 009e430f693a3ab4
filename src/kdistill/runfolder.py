"""A run folder (`--out`): can it hold a run, which config started it, and may this call resume it.

A run folder remembers the config it was started with (`kdistill.yaml`). A rerun with the same `--out`
resumes the run (or finds it finished) only when every field that can change the trained weights is
the same; otherwise it stops and names each differing field, instead of silently training one config
while recording another. Fields that cannot change the result (progress bars, logging, checkpoint
frequency, thread count, caches' locations) may differ.

The config is recorded only once set-up has succeeded (`record_config`), so a run refused at set-up
leaves no `kdistill.yaml` behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kdistill.atomic import atomic_write_text
from kdistill.checkpoints import complete_checkpoints
from kdistill.errors import KDistillError

__all__ = ["CONFIG_FILE", "RESULT_NEUTRAL_FIELDS", "check_out_dir", "prepare_run_folder", "record_config",
           "config_differences"]

CONFIG_FILE = "kdistill.yaml"

RESULT_NEUTRAL_FIELDS = frozenset({
    "train.progress", "train.log_every", "train.resume", "train.threads", "train.save_steps",
    "train.keep_checkpoints", "train.eval_batch_size", "data.cache_dir", "corpus.cache_dir",
})
"""Dotted config fields that may change between a run and its resume: they do not change the weights."""

_COMPARED_AS = {"teacher_cache": lambda v: v is not False}
"""Fields compared by what they change: where a teacher cache lives does not matter, whether there is one does."""


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


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _short(value: Any, limit: int = 80) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def config_differences(started: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Result-changing fields whose values differ: (dotted field, value the run started with, value now).

    Both arguments are configs as JSON-mode dicts. A field the earlier run did not record (a newer
    kdistill's field) is not compared.
    """
    a, b = _flatten(started), _flatten(now)
    diffs = []
    for key in b:
        if key in RESULT_NEUTRAL_FIELDS or key not in a:
            continue
        same = _COMPARED_AS.get(key, lambda v: v)
        if same(a[key]) != same(b[key]):
            diffs.append((key, a[key], b[key]))
    return diffs


def _remove_temporaries(path: Path) -> None:
    """Drop what a killed write left under a temporary name (see `kdistill.atomic`)."""
    for leftover in path.glob(".*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def prepare_run_folder(out: str | Path, cfg: BaseModel, resume: bool) -> Path:
    """Check `out` before any set-up work: writable, and an earlier run there has the same config.

    With `resume` and an earlier run in `out` (a checkpoint, finished or not), raises `KDistillError`
    listing every result-changing field that differs from `out/kdistill.yaml`. Without `resume`, the
    earlier run's checkpoints and best student are removed so that this run starts fresh. Nothing is
    written here apart from creating the folder.
    """
    path = check_out_dir(out)
    _remove_temporaries(path)
    started = complete_checkpoints(path)
    if not started:
        return path
    if not resume:
        print(f"[kdistill] resume is off: discarding the earlier run's checkpoints in {path}", flush=True)
        shutil.rmtree(path / "checkpoints", ignore_errors=True)
        shutil.rmtree(path / "best", ignore_errors=True)
        return path
    recorded = path / CONFIG_FILE
    if not recorded.is_file():
        return path  # a run from before configs were recorded: nothing to compare with
    try:
        before = yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        raise KDistillError(f"{recorded} is unreadable, so this run cannot be resumed safely: start over with "
                            "--resume false, or use another --out") from None
    diffs = config_differences(before, cfg.model_dump(mode="json"))
    if diffs:
        listed = "; ".join(f"{k}: {_short(x)} (run) -> {_short(y)} (now)" for k, x, y in diffs)
        raise KDistillError(f"{path} holds a run started with another config ({listed}); resume it with the same "
                            "settings, start over with --resume false (train.resume), or use another --out")
    return path


def record_config(out: Path, cfg: BaseModel, name: str = CONFIG_FILE) -> None:
    """Write the run's config to `out/name` atomically; call once set-up has succeeded."""
    atomic_write_text(out / name, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
