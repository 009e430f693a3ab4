"""Reading example tables (CSV, TSV, JSONL, a JSON array of records) into raw splits: cells and line numbers.

Every task type starts here: a `RawSplit` holds the text cells, the raw label cells and each row's line, so that a
task's label reader (class ids, scores, label sets) can name the file and line of a bad cell. Bad input raises
`KDistillError` naming the file, line or column, so the CLI prints one line instead of a traceback from `csv`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdistill.cells import is_missing, keep_complete_rows
from kdistill.errors import KDistillError
from kdistill.labels import label_key

__all__ = ["RawSplit", "Table", "read_rows", "read_table", "default_text_columns", "default_label_column",
           "column_index", "cells_to_split", "drop_missing", "carve_rows"]

_DEFAULT_TEXT = [["sentence"], ["sentence1", "sentence2"], ["text"], ["text_a", "text_b"],
                 ["premise", "hypothesis"], ["question1", "question2"]]


@dataclass
class RawSplit:
    """One split before a task reads its labels: raw cells plus line numbers, so errors can point at a row."""

    source: str
    text_a: list[str]
    text_b: list[str] | None
    labels: list[Any]
    lines: list[int]
    columns: tuple[str | int, ...] = ()  # the file's names (or indexes) of text_a[, text_b] and label, for messages
    # per-row values a task type keeps beside text and label (a token's line in a CoNLL file, a question's id)
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def take(self, idx: list[int] | slice) -> RawSplit:
        """The rows `idx` (a list of positions or a slice), in that order."""
        def pick(xs: list) -> list:
            return xs[idx] if isinstance(idx, slice) else [xs[i] for i in idx]

        return RawSplit(self.source, pick(self.text_a), None if self.text_b is None else pick(self.text_b),
                        pick(self.labels), pick(self.lines), self.columns,
                        {k: pick(v) for k, v in self.extra.items()})

    def with_labels(self, labels: list[Any]) -> RawSplit:
        """The same rows with the task's label values (class ids, scores, multi-hot rows) in place of the cells."""
        return RawSplit(self.source, self.text_a, self.text_b, labels, self.lines, self.columns, self.extra)


@dataclass
class Table:
    """Rows of one file; `columns` is None when the file has no header row."""

    path: str
    columns: list[str] | None
    rows: list[list[Any]]
    lines: list[int]


def _json_records(text: str, path: Path) -> list[Any] | None:
    """A whole-file JSON array of objects or of arrays (pandas' `to_json(orient="records")`), else None (JSON lines).

    Raises `KDistillError` for a whole file that is JSON but not rows: an array of plain values, or one object whose
    values are all objects (pandas' `orient="columns"` or `"index"`; `"list"` reads as one row whose text cells are
    arrays, refused by `cells_to_split`).
    """
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(whole, list) and whole and all(isinstance(r, dict) for r in whole):
        return whole
    if isinstance(whole, list) and whole and all(isinstance(r, list) for r in whole):
        return whole
    if isinstance(whole, list):
        raise KDistillError(f"{path} is a JSON array of {len(whole)} values, not rows: give one object (or array) "
                            "per example")
    if isinstance(whole, dict) and whole and all(isinstance(v, dict) for v in whole.values()):
        raise KDistillError(f"{path} holds one JSON object of columns ({', '.join(map(str, list(whole)[:5]))}), not "
                            "rows: write one object per example (JSON lines, or pandas' to_json(orient=\"records\"))")
    return None


def read_rows(path: Path) -> tuple[list[Any], list[int], str]:
    """Raw rows (lists or dicts) with their line numbers, plus the text (for csv.Sniffer)."""
    if path.is_dir():
        raise KDistillError(f"{path} is a folder, not a data file (a `datasets` folder goes in data.dataset)")
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
    elif ext == ".json" and (records := _json_records(text, path)) is not None:
        rows, lines = records, list(range(1, len(records) + 1))  # no lines to name: record numbers
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


def _is_number(key: Any) -> bool:
    if isinstance(key, int):
        return True
    try:
        float(key)
    except (TypeError, ValueError):
        return False
    return True


def _detect_header(rows: list[list[Any]], label_idx: int | None, known: set, sample: str) -> bool:
    """A header's label cell ("label") is not a label value the other rows (or train) use.

    With numeric labels (class ids or scores) a first row whose label cell is a number is data, even when no other
    row has that very number (a score of 4.2 is unlikely to repeat).
    """
    li = len(rows[0]) - 1 if label_idx is None else label_idx
    rest = {label_key(r[li]) for r in rows[1:] if len(r) > li} | known
    if 0 <= li < len(rows[0]) and rest:
        first = label_key(rows[0][li])
        if all(isinstance(k, int) for k in rest):
            return not isinstance(first, int)
        if all(_is_number(k) for k in rest):
            return not _is_number(first)
        return first not in rest
    try:
        return csv.Sniffer().has_header(sample[:4096])
    except csv.Error:
        return False


def read_table(path: Path, header: bool | None, by_name: bool, label_idx: int | None, known: set) -> Table:
    """One file as a `Table`; `header` None detects a header row (see `_detect_header`); `known` = train's labels."""
    rows, lines, text = read_rows(path)
    if isinstance(rows[0], dict):
        cols: list[str] = list(dict.fromkeys(k for r in rows for k in r))
        return Table(str(path), cols, [[r.get(c) for c in cols] for r in rows], lines)
    if header is None:
        header = True if by_name else _detect_header(rows, label_idx, known, text)
    if not header:
        return Table(str(path), None, rows, lines)
    if len(rows) < 2:
        raise KDistillError(f"data file has a header but no examples: {path}")
    return Table(str(path), [str(c) for c in rows[0]], rows[1:], lines[1:])


def default_text_columns(columns: list[str], where: str) -> list[str]:
    """GLUE-style names, so common files work with no column settings."""
    for cand in _DEFAULT_TEXT:
        if all(c in columns for c in cand):
            return list(cand)
    raise KDistillError(f"no text column found in {where}: set data.text_columns "
                        f"(available: {', '.join(columns)})")


def default_label_column(columns: list[str], where: str) -> str:
    """"label", else "labels" (GoEmotions' list of label names)."""
    for cand in ("label", "labels"):
        if cand in columns:
            return cand
    raise KDistillError(f"no 'label' column in {where}: set data.label_column "
                        f"(available: {', '.join(columns)})")


def column_index(spec: str | int, columns: list[str] | None, width: int, where: str) -> int:
    """The position of a column given by name or index; a miss names the available columns."""
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


def cells_to_split(table: Table, text_spec: list[str | int], label_spec: str | int) -> RawSplit:
    """The text and label columns of `table` as a `RawSplit`; every row must have as many cells as the header."""
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
            if isinstance(row[i], dict | list):  # JSON: str() would train on "{'a': 1}" as if it were text
                name = table.columns[i] if table.columns is not None else i
                raise KDistillError(f"{table.path} line {ln}: text column {name!r} holds a JSON "
                                    f"{'object' if isinstance(row[i], dict) else 'array'}, not text")
            out.append(_cell_text(row[i]))
        labels.append(row[lidx])
    names = tuple(table.columns[i] if table.columns is not None else i for i in [*tidx, lidx])
    return RawSplit(table.path, cols[0], cols[1] if len(cols) > 1 else None, labels, table.lines, names)


def drop_missing(raw: dict[str, RawSplit], skip: bool) -> dict[str, RawSplit]:
    """Refuse (or, with `skip`, drop and count) rows whose text or label is missing; see `kdistill.cells`."""
    out = {}
    for split, s in raw.items():
        roles = ["text_a", *(["text_b"] if s.text_b is not None else []), "label"]
        values = [s.text_a, *([s.text_b] if s.text_b is not None else []), s.labels]
        columns = s.columns or tuple(roles)
        keep = keep_complete_rows(s.source, split, list(zip(roles, columns, values, strict=True)), s.lines, skip)
        out[split] = s if keep is None else s.take(keep)
    return out


def carve_rows(split: RawSplit, n_val: int, seed: int, key: str | None) -> list[int]:
    """The rows of a carved validation split, in file order: a seeded permutation of the rows, or of the groups
    `split.extra[key]` names (QA's article titles: no context on both sides), each taken when it brings the count
    closer to `n_val`."""
    n = len(split.labels)
    if key is None or key not in split.extra:
        return sorted(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    groups: dict[Any, list[int]] = {}
    for i, g in enumerate(split.extra[key]):
        groups.setdefault(g, []).append(i)
    if len(groups) < 2:
        raise KDistillError(f"{split.source}: every example has the same {key} ({next(iter(groups))!r}), so no "
                            f"validation split can be carved by {key}: give data.validation_file")
    held: list[int] = []
    names = list(groups)
    for j in np.random.default_rng(seed).permutation(len(names)).tolist():
        size = len(groups[names[j]])
        # a group joins when it brings the count closer to n_val (and train keeps at least one group)
        if abs(len(held) + size - n_val) < abs(len(held) - n_val) and len(held) + size < n:
            held += groups[names[j]]
    if not held:  # every group is larger than twice n_val: the smallest one
        held = min(groups.values(), key=len)
    return sorted(held)
