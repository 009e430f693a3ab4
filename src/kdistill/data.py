"""Examples for a task as `datasets.Dataset` splits (text_a[, text_b], label), tokenised and batched.

Three sources end in the same `TaskData`: a shipped GLUE task, local CSV/TSV/JSONL files, or a
`datasets` name/folder. Bad input raises `KDistillError` naming the file, line or column, so the
CLI can print one line instead of a traceback from deep inside `datasets` or `csv`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import DataCollatorWithPadding

from kdistill.cells import is_missing, keep_complete_rows
from kdistill.config import DataConfig
from kdistill.errors import KDistillError
from kdistill.labels import label_key, norm_label
from kdistill.registry import Registry
from kdistill.sampling import LengthGroupedSampler

DATA_DIR = Path(__file__).parent / "datasets"
CACHE_FORMAT_VERSION = 1  # bump when the tokenised layout changes, so old caches are not reused
DEFAULT_CACHE = Path.home() / ".cache" / "kdistill" / "tokenized"
_DEFAULT_TEXT = [["sentence"], ["sentence1", "sentence2"], ["text"], ["text_a", "text_b"],
                 ["premise", "hypothesis"], ["question1", "question2"]]


@dataclass(frozen=True)
class TaskSpec:
    """A task shipped under `kdistill/datasets/<name>/` (GLUE dev files serve as our "test")."""

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    metric: str
    files: dict[str, str] = field(hash=False)


TASKS: Registry[TaskSpec] = Registry("task")
_DEV = {"train": "train.tsv", "test": "dev.tsv"}
for _spec in (
    TaskSpec("sst2", ("sentence",), "label", ("negative", "positive"), "accuracy",
             {"train": "train.tsv", "test": "test.tsv"}),
    TaskSpec("cola", ("sentence",), "label", ("unacceptable", "acceptable"), "matthews", _DEV),
    TaskSpec("mrpc", ("sentence1", "sentence2"), "label", ("not_paraphrase", "paraphrase"), "f1", _DEV),
    TaskSpec("rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), "accuracy", _DEV),
):
    TASKS.add(_spec.name, _spec)


@dataclass
class TaskData:
    """Splits "train", "validation" (and "test") with columns text_a, text_b (pairs only), label."""

    name: str
    label_names: list[str]
    metric: str
    is_pair: bool
    splits: dict[str, datasets.Dataset]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class _Split:
    """One split before label ids: raw cells plus line numbers, so errors can point at a row."""

    source: str
    text_a: list[str]
    text_b: list[str] | None
    labels: list[Any]
    lines: list[int]
    columns: tuple[str | int, ...] = ()  # the file's names (or indexes) of text_a[, text_b] and label, for messages

    def take(self, idx: list[int] | slice) -> _Split:
        def pick(xs: list) -> list:
            return xs[idx] if isinstance(idx, slice) else [xs[i] for i in idx]

        return _Split(self.source, pick(self.text_a), None if self.text_b is None else pick(self.text_b),
                      pick(self.labels), pick(self.lines), self.columns)


@dataclass
class _Table:
    """Rows of one file; `columns` is None when the file has no header row."""

    path: str
    columns: list[str] | None
    rows: list[list[Any]]
    lines: list[int]


# ---------------------------------------------------------------- reading files


def read_rows(path: Path) -> tuple[list[Any], list[int], str]:
    """Raw rows (lists or dicts) with their line numbers, plus the text (for csv.Sniffer)."""
    if not path.is_file():
        raise KDistillError(f"data file not found: {path}")
    ext = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise KDistillError(f"cannot read data file {path}: {err}") from None
    rows: list[Any]
    rows, lines = [], []
    if ext in (".csv", ".tsv", ".tab"):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if ext == ".csv" else "\t")
        try:
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append(row)
                    lines.append(reader.line_num)
        except csv.Error as err:
            raise KDistillError(f"{path} line {reader.line_num}: {err}") from None
    elif ext in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise KDistillError(f"{path} line {n}: not valid JSON ({err.msg})") from None
                lines.append(n)
        kinds = {type(r) for r in rows}
        if not kinds <= {dict, list} or len(kinds) > 1:
            raise KDistillError(f"{path}: every JSON line must be an object, or every line an array")
    else:
        raise KDistillError(f"unsupported data file type '{ext}' for {path} "
                            "(use .csv, .tsv, .tab, .jsonl or .json)")
    if not rows:
        raise KDistillError(f"data file is empty: {path}")
    return rows, lines, text


def _detect_header(rows: list[list[Any]], label_idx: int | None, known: set, sample: str) -> bool:
    """A header's label cell ("label") is not a label value the other rows (or train) use."""
    li = len(rows[0]) - 1 if label_idx is None else label_idx
    rest = {label_key(r[li]) for r in rows[1:] if len(r) > li} | known
    if 0 <= li < len(rows[0]) and rest:
        first = label_key(rows[0][li])
        if all(isinstance(k, int) for k in rest):
            return not isinstance(first, int)
        return first not in rest
    try:
        return csv.Sniffer().has_header(sample[:4096])
    except csv.Error:
        return False


def _read_table(path: Path, header: bool | None, by_name: bool, label_idx: int | None,
                known: set) -> _Table:
    rows, lines, text = read_rows(path)
    if isinstance(rows[0], dict):
        cols: list[str] = list(dict.fromkeys(k for r in rows for k in r))
        return _Table(str(path), cols, [[r.get(c) for c in cols] for r in rows], lines)
    if header is None:
        header = True if by_name else _detect_header(rows, label_idx, known, text)
    if not header:
        return _Table(str(path), None, rows, lines)
    if len(rows) < 2:
        raise KDistillError(f"data file has a header but no examples: {path}")
    return _Table(str(path), [str(c) for c in rows[0]], rows[1:], lines[1:])


def default_text_columns(columns: list[str], where: str) -> list[str]:
    """GLUE-style names, so common files work with no column settings."""
    for cand in _DEFAULT_TEXT:
        if all(c in columns for c in cand):
            return list(cand)
    raise KDistillError(f"no text column found in {where}: set data.text_columns "
                        f"(available: {', '.join(columns)})")


def _default_label(columns: list[str], where: str) -> str:
    for cand in ("label", "labels"):
        if cand in columns:
            return cand
    raise KDistillError(f"no 'label' column in {where}: set data.label_column "
                        f"(available: {', '.join(columns)})")


def column_index(spec: str | int, columns: list[str] | None, width: int, where: str) -> int:
    if isinstance(spec, str):
        if columns is None:
            raise KDistillError(f"column '{spec}' is given by name but {where} has no header row "
                                "(set data.header: true if it has one)")
        if spec not in columns:
            raise KDistillError(f"column '{spec}' not found in {where} (available: {', '.join(columns)})")
        return columns.index(spec)
    n = len(columns) if columns is not None else width
    if not 0 <= spec < n:
        raise KDistillError(f"column index {spec} out of range for {where} ({n} columns: 0..{n - 1})")
    return spec


def _cell_text(v: Any) -> str:
    """A text cell as a string; a missing one (null, NaN, a "NaN" or "null" cell: `kdistill.cells`) becomes ""."""
    return "" if is_missing(v) else str(v)


def _cells_to_split(table: _Table, text_spec: list[str | int], label_spec: str | int) -> _Split:
    width = len(table.columns) if table.columns is not None else len(table.rows[0])
    tidx = [column_index(c, table.columns, width, table.path) for c in text_spec]
    lidx = column_index(label_spec, table.columns, width, table.path)
    if lidx in tidx:
        raise KDistillError(f"column {label_spec!r} is used as both text and label in {table.path}")
    cols: list[list[str]] = [[] for _ in tidx]
    labels = []
    against = "the header has" if table.columns is not None else "the first row has"
    for row, ln in zip(table.rows, table.lines, strict=True):
        if len(row) != width:  # too many cells is as suspect as too few: a stray delimiter shifts columns
            raise KDistillError(f"{table.path} line {ln}: row has {len(row)} cells, {against} {width}")
        for out, i in zip(cols, tidx, strict=True):
            out.append(_cell_text(row[i]))
        labels.append(row[lidx])
    names = tuple(table.columns[i] if table.columns is not None else i for i in [*tidx, lidx])
    return _Split(table.path, cols[0], cols[1] if len(cols) > 1 else None, labels, table.lines, names)


def _drop_missing(raw: dict[str, _Split], skip: bool) -> dict[str, _Split]:
    """Refuse (or, with `skip`, drop and count) rows whose text or label is missing; see `kdistill.cells`."""
    out = {}
    for split, s in raw.items():
        roles = ["text_a", *(["text_b"] if s.text_b is not None else []), "label"]
        values = [s.text_a, *([s.text_b] if s.text_b is not None else []), s.labels]
        columns = s.columns or tuple(roles)
        keep = keep_complete_rows(s.source, split, list(zip(roles, columns, values, strict=True)), s.lines, skip)
        out[split] = s if keep is None else s.take(keep)
    return out


# ---------------------------------------------------------------- labels


def _with_ids(raw: dict[str, _Split], names: list[str] | None,
              named: bool = False) -> tuple[list[str], dict[str, _Split]]:
    """Labels to ids. Given `names` (shipped/ClassLabel) cells are ids already; `named` (data.label_names)
    maps text labels to those names' positions. Else non-negative integer labels are ids as written (labels
    0 and 2 stay 0 and 2, with class 1 empty), other integers keep their order (remapped to 0..K-1) and
    text labels are sorted. Eval labels must occur among the classes."""
    keys: dict[str, list[Any]] = {}
    for split, s in raw.items():
        keys[split] = [label_key(v) for v in s.labels]  # missing labels were refused or dropped before
    if names is not None and named:  # the user's class order: text labels by name, integers as ids
        norm = {norm_label(n): i for i, n in enumerate(names)}
        keys = {split: [norm.get(norm_label(str(k)), k) if isinstance(k, str) else k for k in v]
                for split, v in keys.items()}
        order = list(range(len(names)))
    elif names is None:
        ints = [k for v in keys.values() for k in v]
        if all(isinstance(k, int) for k in ints) and min(ints) >= 0:  # ids: a class missing from train keeps its id
            order: list[Any] = list(range(max(ints) + 1))
            names = [str(i) for i in order]
        elif all(isinstance(k, int) for k in keys["train"]):  # negative integers cannot be ids: keep their order
            order = sorted(set(keys["train"]))
            names = [str(i) for i in order]
        else:
            keys = {k: [str(x) for x in v] for k, v in keys.items()}
            order = names = sorted(set(keys["train"]))
    else:
        order = list(range(len(names)))
    lookup = {k: i for i, k in enumerate(order)}
    names = list(names)
    out = {}
    for split, s in raw.items():
        for k, v, ln in zip(keys[split], s.labels, s.lines, strict=True):
            if k not in lookup:
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                raise KDistillError(f"label {v!r} in {s.source} line {ln} is not among the training labels "
                                    f"({shown})")
        out[split] = _Split(s.source, s.text_a, s.text_b, [lookup[k] for k in keys[split]], s.lines, s.columns)
    return names, out


# ---------------------------------------------------------------- sources


def _from_files(cfg: DataConfig) -> tuple[dict[str, _Split], list[str] | None]:
    text_spec = list(cfg.text_columns) if cfg.text_columns else None
    label_spec = cfg.label_column
    given = [*(text_spec or []), *([] if label_spec is None else [label_spec])]
    by_name = any(isinstance(s, str) for s in given)
    li = label_spec if isinstance(label_spec, int) else None
    table = _read_table(Path(str(cfg.train_file)), cfg.header, by_name, li, set())
    if table.columns is not None:
        text_spec = text_spec or default_text_columns(table.columns, table.path)
        label_spec = _default_label(table.columns, table.path) if label_spec is None else label_spec
    else:
        text_spec = text_spec or [0]
        if label_spec is None:
            if len(table.rows[0]) < 2:
                raise KDistillError(f"{table.path} has one column: it needs a text and a label column")
            label_spec = len(table.rows[0]) - 1
    splits = {"train": _cells_to_split(table, text_spec, label_spec)}
    known = {label_key(v) for v in splits["train"].labels}
    by_name = any(isinstance(s, str) for s in [*text_spec, label_spec])
    li = label_spec if isinstance(label_spec, int) else None
    for name, path in (("validation", cfg.validation_file), ("test", cfg.test_file)):
        if path:
            t = _read_table(Path(path), cfg.header, by_name, li, known)
            splits[name] = _cells_to_split(t, text_spec, label_spec)
    return splits, None


def _from_dataset(cfg: DataConfig) -> tuple[dict[str, _Split], list[str] | None]:
    name = str(cfg.dataset)
    try:
        p = Path(name)
        if p.is_dir() and any((p / f).exists() for f in ("dataset_dict.json", "state.json")):
            obj = datasets.load_from_disk(str(p))
        else:
            obj = datasets.load_dataset(name, cfg.dataset_config)
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one readable line
        msg = " ".join(str(err).split())[:300]
        raise KDistillError(f"could not load dataset {name}: {type(err).__name__}: {msg}") from None
    dsets = {"train": obj} if isinstance(obj, datasets.Dataset) else dict(obj)
    if "train" not in dsets:
        raise KDistillError(f"dataset {name} has no 'train' split (splits: {', '.join(dsets)})")
    val = next((s for s in ("validation", "dev", "valid", "val") if s in dsets), None)
    val = val or next((s for s in dsets if s.startswith("validation")), None)
    chosen = {"train": "train", "validation": val, "test": "test" if "test" in dsets else None}
    columns, where = dsets["train"].column_names, f"dataset {name}"
    text_spec = list(cfg.text_columns) if cfg.text_columns else default_text_columns(columns, where)
    label_spec = _default_label(columns, where) if cfg.label_column is None else cfg.label_column
    need = [columns[column_index(c, columns, 0, where)] for c in [*text_spec, label_spec]]
    feat = dsets["train"].features[need[-1]]
    names = list(feat.names) if isinstance(feat, datasets.ClassLabel) else None
    out: dict[str, _Split] = {}
    for ours, theirs in chosen.items():
        ds, where = dsets[theirs] if theirs else None, f"dataset {name} split '{theirs}'"
        if ds is None or len(ds) == 0:
            continue
        uniq = [ds.column_names[column_index(c, ds.column_names, 0, where)] for c in dict.fromkeys(need)]
        data = ds.select_columns(uniq)[:]
        if names is not None and ours != "train" and all(v == -1 for v in data[need[-1]]):
            continue  # unlabeled split (GLUE test sets carry -1)
        rows = [list(r) for r in zip(*(data[c] for c in uniq), strict=True)]
        table = _Table(where, uniq, rows, list(range(1, len(ds) + 1)))
        out[ours] = _cells_to_split(table, need[:-1], need[-1])
    return out, names


def _from_task(spec: TaskSpec) -> dict[str, _Split]:
    splits = {}
    for split, fname in spec.files.items():
        table = _read_table(DATA_DIR / spec.name / fname, True, True, None, set())
        splits[split] = _cells_to_split(table, list(spec.text_columns), spec.label_column)
    return splits


def load_task_data(cfg: DataConfig) -> TaskData:
    """Read the configured source, give labels ids, carve validation from train when there is none."""
    if cfg.dataset:
        raw, names = _from_dataset(cfg)
        task_name, metric = str(cfg.dataset), cfg.metric or "accuracy"
    elif cfg.train_file:
        raw, names = _from_files(cfg)
        names = cfg.label_names or names
        task_name, metric = Path(cfg.train_file).stem, cfg.metric or "accuracy"
    else:
        spec = TASKS.get(str(cfg.task))
        raw, names = _from_task(spec), list(spec.label_names)
        task_name, metric = spec.name, cfg.metric or spec.metric
    raw = _drop_missing(raw, cfg.skip_empty)
    names, raw = _with_ids(raw, names, named=bool(cfg.label_names and cfg.train_file))
    if "validation" not in raw:  # carve: a seeded permutation, each side kept in file order
        n = len(raw["train"].labels)
        n_val = max(1, int(round(n * cfg.validation_fraction)))
        if n - n_val < 1:
            raise KDistillError(f"too few training examples ({n}) to carve a validation split")
        perm = np.random.default_rng(cfg.seed).permutation(n)
        raw["validation"] = raw["train"].take(sorted(perm[:n_val].tolist()))
        raw["train"] = raw["train"].take(sorted(perm[n_val:].tolist()))
    is_pair = raw["train"].text_b is not None
    text = datasets.Value("string")
    feats = datasets.Features({"text_a": text, **({"text_b": text} if is_pair else {}),
                               "label": datasets.Value("int64")})
    splits = {}
    for key in [k for k in ("train", "validation", "test") if k in raw]:
        s = raw[key].take(slice(0, cfg.max_train_examples if key == "train" else cfg.max_eval_examples))
        cols = {"text_a": s.text_a, **({"text_b": s.text_b} if is_pair else {}), "label": s.labels}
        if key == "train" and cfg.augment_file:
            _add_augmented(cols, cfg.augment_file, list(names), is_pair)
        splits[key] = datasets.Dataset.from_dict(cols, features=feats)
    return TaskData(task_name, list(names), metric, is_pair, splits)


def _add_augmented(cols: dict[str, list], path: str, names: list[str], is_pair: bool) -> None:
    """Append `kdistill augment` rows (text[, text_pair], label name or label_id) to the training columns."""
    p = Path(path)
    if not p.is_file():
        raise KDistillError(f"data.augment_file not found: {path}")
    by_name = {norm_label(n): i for i, n in enumerate(names)}
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise KDistillError(f"{path} line {n} is not JSON") from None
            if not isinstance(row, dict) or "text" not in row or (is_pair and row.get("text_pair") is None):
                need = "'text' and 'text_pair'" if is_pair else "'text'"
                raise KDistillError(f"{path} line {n}: expected an object with {need} (a `kdistill augment` file "
                                    "of this task)")
            label = row.get("label_id")
            if label is None and row.get("label") is not None:
                label = by_name.get(norm_label(str(row["label"])))
            if not isinstance(label, int) or not 0 <= label < len(names):
                raise KDistillError(f"{path} line {n}: label {row.get('label_id', row.get('label'))!r} is not one of "
                                    f"this task's classes ({', '.join(names)})")
            cols["text_a"].append(str(row["text"]))
            if is_pair:
                cols["text_b"].append(str(row["text_pair"]))
            cols["label"].append(label)


# ---------------------------------------------------------------- tokenisation and batching


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


def _tokenize(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    cols: dict[str, list] = {}
    pair = "text_b" in ds.column_names
    for start in range(0, len(ds), 2048):
        part = ds[start:start + 2048]
        args = [part["text_a"], part["text_b"]] if pair else [part["text_a"]]
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        for k, v in enc.items():
            cols.setdefault(k, []).extend(v)
        cols.setdefault("labels", []).extend(part["label"])
    feats = {k: datasets.Sequence(datasets.Value("int32")) for k in cols if k != "labels"}
    feats["labels"] = datasets.Value("int64")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def tokenize_splits(data: TaskData, tokenizer: Any, max_length: int,
                    cache_dir: str | None = None) -> dict[str, datasets.Dataset]:
    """Token ids per split (no padding: the collator pads per batch), cached on disk by content.

    Each split is written to a temporary folder and renamed into place, so an interrupted run
    never leaves a half-written cache that a later run would read.
    """
    root = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
    root.mkdir(parents=True, exist_ok=True)
    tok_hash = tokenizer_hash(tokenizer)
    out = {}
    for split, ds in data.splits.items():
        key = hashlib.sha256(json.dumps([CACHE_FORMAT_VERSION, split_hash(ds), tok_hash, max_length])
                             .encode()).hexdigest()[:32]
        final = root / key
        if final.is_dir():
            try:
                out[split] = datasets.load_from_disk(str(final))
                continue
            except Exception:  # noqa: BLE001 - unreadable cache: rebuild it
                shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            tokenized = _tokenize(ds, tokenizer, max_length)
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
                collate_fn: Any = None) -> torch.utils.data.DataLoader:
    """Batches padded to their own longest example; only model inputs, labels and `idx` reach the collator.

    `idx` (the example's row, present when a teacher cache serves the run) lets `kdistill.cache` find the
    teacher's outputs in any order; `features.model_inputs` keeps it away from the models.
    `group_by_length` shuffles in batches of similar length (see `kdistill.sampling`) to pad less.
    """
    keep = set(tokenizer.model_input_names) | {"labels", "idx", "special_tokens_mask"}
    ds = ds.select_columns([c for c in ds.column_names if c in keep])
    collate = collate_fn or DataCollatorWithPadding(tokenizer)
    if shuffle and group_by_length:
        sampler = LengthGroupedSampler([len(x) for x in ds["input_ids"]], batch_size, seed or 0)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    gen = torch.Generator().manual_seed(seed) if shuffle and seed is not None else None
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       collate_fn=collate)
