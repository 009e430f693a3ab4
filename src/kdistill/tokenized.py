"""Tokenised splits cached on disk by content, and the batches a training or scoring loop reads.

`tokenize_splits` encodes each split of a `kdistill.data.TaskData` with the task type's `Task.encode` (no padding) and
keeps it under a key of content, tokenizer and length; `make_loader` pads per batch with the task's collator.
The content hashes also key the teacher-output cache (`kdistill.cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from transformers import DataCollatorWithPadding

from kdistill.errors import KDistillError
from kdistill.sampling import LengthGroupedSampler

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks import Task

CACHE_FORMAT_VERSION = 1  # bump when the tokenised layout changes, so old caches are not reused
DEFAULT_CACHE = Path.home() / ".cache" / "kdistill" / "tokenized"


def split_hash(ds: datasets.Dataset) -> str:
    """Content hash (texts + labels): in-memory fingerprints are not stable across runs."""
    h = hashlib.sha256()
    h.update(json.dumps(ds.column_names).encode())
    for start in range(0, len(ds), 10_000):
        h.update(json.dumps(ds[start:start + 10_000], sort_keys=True).encode())
    return h.hexdigest()


def tokenizer_hash(tokenizer: Any) -> str:
    """Same name, vocabulary, class and pipeline = same token ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # truncation/padding state changes with each call: not part of identity
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        state = sorted(tokenizer.get_vocab().items())
    body = json.dumps(state, sort_keys=True)
    parts = [type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")), str(len(tokenizer)),
             str(list(tokenizer.model_input_names)), hashlib.sha256(body.encode()).hexdigest()]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _tokenize(ds: datasets.Dataset, tokenizer: Any, max_length: int, task: Task) -> datasets.Dataset:
    cols: dict[str, list] = {}
    for start in range(0, len(ds), 2048):
        for k, v in task.encode(ds[start:start + 2048], tokenizer, max_length).items():
            cols.setdefault(k, []).extend(v)
    feats = task.encoded_features(cols, ds.features["label"])  # labels: class id, score, 0/1 row or tag ids
    return datasets.Dataset.from_dict(cols, features=feats)


def tokenize_splits(data: TaskData, tokenizer: Any, max_length: int,
                    cache_dir: str | None = None) -> dict[str, datasets.Dataset]:
    """Encoded rows per split (`Task.encode`; no padding: the collator pads per batch), cached on disk by content.

    Each split is written to a temporary folder and renamed into place, so an interrupted run
    never leaves a half-written cache that a later run would read.
    """
    root = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
    root.mkdir(parents=True, exist_ok=True)
    tok_hash = tokenizer_hash(tokenizer)
    task = data.task
    out = {}
    for split, ds in data.splits.items():
        parts = [CACHE_FORMAT_VERSION, split_hash(ds), tok_hash, max_length, *task.encoding_key(ds)]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
        final = root / key
        if final.is_dir():
            try:
                out[split] = datasets.load_from_disk(str(final))
                continue
            except Exception:  # noqa: BLE001 - unreadable cache: rebuild it
                shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            tokenized = _tokenize(ds, tokenizer, max_length, task)
            bars = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()
            try:
                tokenized.save_to_disk(str(tmp))
            finally:
                if bars:
                    datasets.enable_progress_bars()
            os.rename(tmp, final)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.is_dir():  # else another process finished first; its copy is as good
                raise KDistillError(f"cannot write the tokenisation cache {final}: {err}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out[split] = datasets.load_from_disk(str(final))
    return out


def make_loader(ds: datasets.Dataset, tokenizer: Any, batch_size: int, shuffle: bool = False,
                seed: int | None = None, group_by_length: bool = False,
                collate_fn: Any = None, task: Task | None = None) -> torch.utils.data.DataLoader:
    """Batches padded to their own longest example; only model inputs, labels and `idx` reach the collator.

    `idx` (the example's row, present when a teacher cache serves the run) lets `kdistill.cache` find the
    teacher's outputs in any order; `features.model_inputs` keeps it away from the models.
    `group_by_length` shuffles in batches of similar length (see `kdistill.sampling`) to pad less.
    The collator is `collate_fn`, else the task's (`Task.collator`: token labels padded with -100), else padding of
    the model inputs.
    """
    keep = set(tokenizer.model_input_names) | {"labels", "idx", "special_tokens_mask"}
    keep |= set(task.batch_columns) if task is not None else set()  # what the task's targets read beside labels
    ds = ds.select_columns([c for c in ds.column_names if c in keep])
    collate = collate_fn or (task.collator(tokenizer) if task is not None else DataCollatorWithPadding(tokenizer))
    if shuffle and group_by_length:
        sampler = LengthGroupedSampler([len(x) for x in ds["input_ids"]], batch_size, seed or 0)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    gen = torch.Generator().manual_seed(seed) if shuffle and seed is not None else None
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       collate_fn=collate)
