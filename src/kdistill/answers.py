"""Teacher answers: normalised from any shape, read from and written to disk, and logged for resuming.

`kdistill.blackbox` talks to teachers; this module holds everything about what they answer:

- `to_answer` / `text_to_label`: one raw answer (probs, logits, a label id or name, generated text) -> `TeacherAnswer`
  (scores and label sets from command, HTTP and python teachers: `kdistill.teachers.label_sources.read_answer`).
- `read_numbered_examples`: the unlabeled input, with line numbers so an error or a log record can name its row.
- `AnswerLog`: an append-only partial file (`partial_path`). A teacher may be a paid API, so every answer it gave must
  survive a failed batch, a crash or a `kill -9`, and a rerun must ask only for the rows still unanswered. Each
  answered batch is appended (flushed and fsynced) as it arrives; once every row is answered `write_labeled`
  writes the output atomically and the log is removed.
- `StoredAnswers` (in `kdistill.teachers.answers`): a finished labelled file as a gray-box teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kdistill.atomic import atomic_write_text
from kdistill.cells import is_missing
from kdistill.errors import KDistillError
from kdistill.tasks import Task, get_task

__all__ = ["TeacherAnswer", "to_answer", "text_to_label", "read_examples", "read_numbered_examples", "write_labeled",
           "AnswerLog", "check_out_file", "partial_path", "row_key", "shorten", "parse_json", "finite_numbers"]

LOG_FORMAT = "kdistill-label-answers/1"  # first-line marker: a file of another kind is never overwritten


def shorten(text: str | bytes, n: int = 160) -> str:
    """The start of a reply, line or example, on one line and quoted, for error messages."""
    text = " ".join((text.decode("utf-8", "replace") if isinstance(text, bytes) else text).split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


def parse_json(text: str | bytes, error: str) -> Any:
    """`json.loads`, but bad JSON is a `KDistillError` reading ``error: 'start of the text'``."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KDistillError(f"{error}: {shorten(text)}") from None


@dataclass(frozen=True)
class TeacherAnswer:
    """What the teacher said about one example: always a label id; probabilities (and logits) when given.

    A regression answer is its score as the one logit (label_id 0); a multi-label answer is per-label probabilities,
    or `labels`: the ids of a label set answered without probabilities (label_id is then the first, or 0).
    """

    label_id: int
    probs: list[float] | None = None
    logits: list[float] | None = None
    labels: tuple[int, ...] | None = None

    @property
    def confidence(self) -> float | None:
        return max(self.probs) if self.probs else None


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", s.lower()).split())


def text_to_label(text: str, names: Sequence[str], where: str = "teacher") -> int:
    """Generated text -> label id: a label name exactly (case-insensitive), else the single one it contains.

    A name inside a longer matched name does not count ("not_entailment" also contains "entailment").
    """
    t, normed = _norm(text), [_norm(n) for n in names]
    if t in normed:
        return normed.index(t)
    found = [i for i, n in enumerate(normed) if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", t)]
    found = [i for i in found if not any(j != i and normed[i] in normed[j] for j in found)]
    if len(found) == 1:
        return found[0]
    why = "no label name" if not found else "several label names (" + ", ".join(names[i] for i in found) + ")"
    raise KDistillError(f"{where} answered {shorten(text, 80)}, which contains {why}; "
                        f"label names: {', '.join(names)}")


def finite_numbers(raw: Any, key: str, names: Sequence[str] | None, where: str) -> list[float]:
    """An answer's `key` field as floats; `KDistillError` unless it is a list of finite numbers, one per name."""
    ok = isinstance(raw, list) and raw and all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
    if not ok or not all(math.isfinite(x) for x in raw):
        raise KDistillError(f"{where} answered '{key}' that is not a list of finite numbers: {shorten(str(raw))}")
    if names is not None and len(raw) != len(names):
        raise KDistillError(f"{where} answered {len(raw)} {key} for {len(names)} label names ({', '.join(names)})")
    return [float(x) for x in raw]


def to_answer(raw: Any, names: Sequence[str] | None, where: str, task: Task | None = None) -> TeacherAnswer:
    """One raw answer (any shape in `kdistill.blackbox`'s docstring) -> `TeacherAnswer`; bad shapes name `where`.

    `task` (default classification) turns logits into probabilities: softmax over classes, a sigmoid per label
    (multi-label), or none at all (regression: the one logit is the score).
    """
    task = task or get_task("classification")
    probs = logits = None
    if isinstance(raw, dict):
        if "probs" in raw:
            probs = finite_numbers(raw["probs"], "probs", names, where)
            if min(probs) < 0 or abs(sum(probs) - 1) > 1e-3:
                raise KDistillError(f"{where} answered probs that are not a distribution (sum {sum(probs):.4g}); "
                                    "send unnormalised scores as 'logits'")
        elif "logits" in raw:
            logits = finite_numbers(raw["logits"], "logits", names, where)
            probs = task.answer_probs(logits)
            if probs is None:  # a score: no classes to choose from
                return TeacherAnswer(0, None, logits)
        elif "label" in raw:
            raw = raw["label"]
        else:
            raise KDistillError(f"{where} answered an object without 'probs', 'logits' or 'label': {shorten(str(raw))}")
    if probs is not None:
        return TeacherAnswer(max(range(len(probs)), key=probs.__getitem__), probs, logits)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0 or (names is not None and raw >= len(names)):
            raise KDistillError(f"{where} answered label id {raw}, outside "
                                + (f"0..{len(names) - 1}" if names is not None else "0, 1, ..."))
        return TeacherAnswer(raw)
    if isinstance(raw, str):
        if not names:
            raise KDistillError(f"{where} answered the label {shorten(raw, 40)} but no label names are known: "
                                'set label_names, e.g. --label_names "[negative, positive]"')
        return TeacherAnswer(text_to_label(raw, names, where))
    raise KDistillError(f"{where} answered {shorten(repr(raw))}: expected probs, logits, a label or text")


def read_examples(path: str, text_columns: Sequence[str | int] | None = None) -> list[tuple[str, ...]]:
    """Unlabeled examples: .txt is one per line (blanks skipped); tables use named or indexed text columns."""
    return read_numbered_examples(path, text_columns)[0]


def read_numbered_examples(path: str, text_columns: Sequence[str | int] | None = None
                           ) -> tuple[list[tuple[str, ...]], list[int]]:
    """`read_examples` plus each example's line number in the file (1-based), for messages and resuming."""
    from kdistill.tasks.readers import column_index, default_text_columns, read_rows

    p = Path(path)
    if not p.is_file():
        raise KDistillError(f"input file not found: {path}")
    if p.suffix.lower() == ".txt":
        if text_columns:
            raise KDistillError(f"text_columns is for tables; {path} is plain text, one example a line")
        try:
            lines = p.read_text(encoding="utf-8-sig").split("\n")  # not splitlines: U+2028 is text
        except (OSError, UnicodeDecodeError) as err:
            raise KDistillError(f"cannot read input file {path}: {err}") from None
        examples = [(ln.strip(),) for ln in lines if ln.strip()]
        line_numbers = [n for n, ln in enumerate(lines, 1) if ln.strip()]
    else:
        rows, numbers, _ = read_rows(p)
        columns: list[str] | None = None
        if isinstance(rows[0], dict):
            columns = list(dict.fromkeys(k for r in rows for k in r))
            rows = [[r.get(c) for c in columns] for r in rows]
        elif p.suffix.lower() in (".csv", ".tsv", ".tab"):  # tables carry a header row
            columns, rows, numbers = [str(c) for c in rows[0]], rows[1:], numbers[1:]
        spec: list[str | int] = list(text_columns or [])
        if not spec:
            try:
                spec = list(default_text_columns(columns or [], path))
            except KDistillError:
                spec = [0]  # no GLUE-style name: the first column
        idx = [column_index(c, columns, len(rows[0]) if rows else 0, path) for c in spec]
        examples, line_numbers = [], list(numbers)
        missing: list[tuple[int, str | int]] = []  # (line, column) of each row lacking a text, as `kdistill.cells`
        for row, ln in zip(rows, numbers, strict=True):
            cells = [row[i] if i < len(row) else None for i in idx]
            missing += [(ln, c) for c, cell in zip(spec, cells, strict=True) if is_missing(cell)][:1]
            examples.append(tuple(str(c) for c in cells))
        if missing:
            raise KDistillError(f"{path} line {missing[0][0]}: empty or missing text in column {missing[0][1]!r} "
                                f"(empty, null or NaN); {len(missing)} such row(s) in the file: fix or remove them")
    if not examples:
        raise KDistillError(f"input file has no examples: {path}")
    return examples, line_numbers


def write_labeled(out: Path, examples: Sequence[Sequence[str]], answers: Sequence[TeacherAnswer],
                  label_names: Sequence[str] | None, min_confidence: float | None = None,
                  task: Task | None = None, teacher: str | None = None) -> dict[str, Any]:
    """Write the labelled JSONL (the format `kdistill.blackbox.label_file` documents) to `out` atomically.

    `teacher` (who answered: a model folder or hub name, a URL, a command) is written on every row, so the file says
    where its answers came from wherever it is copied, and a run taught by it credits that teacher.

    Rows whose top probability is under `min_confidence` are left out; label ids are named by `label_names`
    (else "0", "1", ...). `task` (default classification) writes each row's label fields (`Task.labeled_fields`):
    a class name and id, a score (regression) or the list of labels at probability >= 0.5 (multi-label; a label set
    answered without probabilities is written as it is, `TeacherAnswer.labels`). Returns
    kept (rows written), labels (rows per label name; none for scores), scores (regression: mean, min, max) and
    warning (set when `kdistill distill` would number the labels differently from the teacher).
    """
    task = task or get_task("classification")
    width = max([len(a.probs) for a in answers if a.probs] + [a.label_id + 1 for a in answers])
    names = list(label_names or [str(i) for i in range(width)])
    counts: Counter[str] = Counter()
    scores: list[float] = []
    lines = []
    for ex, a in zip(examples, answers, strict=True):
        if min_confidence is not None and (a.confidence or 0.0) < min_confidence:
            continue
        fields = ({"label": [names[i] for i in a.labels]} if a.labels is not None
                  else task.labeled_fields(a.label_id, a.probs, a.logits, names))
        row: dict[str, Any] = {"text": ex[0], **({"text_pair": ex[1]} if len(ex) > 1 else {}), **fields}
        if a.logits is not None:
            row["logits"] = [round(x, 6) for x in a.logits]
        if teacher is not None:
            row["teacher"] = teacher
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        label = row["label"]
        if isinstance(label, int | float):
            scores.append(float(label))
        counts.update([label] if isinstance(label, str) else label if isinstance(label, list) else [])
    atomic_write_text(out, "".join(lines))
    present, warning = [n for n in names if counts[n]], None
    if not scores and (present != sorted(present) or len(present) < len(names)):  # string labels get sorted ids
        warning = (f"kdistill distill will number these labels {', '.join(sorted(present))} (alphabetically, only "
                   f"those present), not as the teacher does ({', '.join(names)}): class ids will differ")
    summary = {"mean": sum(scores) / len(scores), "min": min(scores), "max": max(scores)} if scores else None
    return {"kept": len(lines), "labels": {} if scores else {n: counts[n] for n in names}, "scores": summary,
            "warning": warning}


def partial_path(out: str | Path) -> Path:
    """Where `kdistill label --out OUT` keeps its answers until the run completes, beside OUT.

    OUT's own name with ``.jsonl`` replaced by ``.partial.jsonl`` (``labeled.jsonl`` -> ``labeled.partial.jsonl``,
    so the partial file keeps a JSONL suffix and sorts next to its output); a name not ending in ``.jsonl`` gets
    ``.partial.jsonl`` appended (``out.txt`` -> ``out.txt.partial.jsonl``).
    """
    out = Path(out)
    return out.with_name((out.stem if out.suffix.lower() == ".jsonl" else out.name) + ".partial.jsonl")


def check_out_file(out: str | Path) -> Path:
    """Make sure the labelled file `out` can be written, before the teacher is asked anything (it may be paid).

    Creates the parent folders, and proves the folder writable by creating and removing a file in it (permission
    bits alone miss read-only mounts and lie to root). Returns `out` with ``~`` expanded.

    Raises:
        KDistillError: `out` (or its partial file, see `partial_path`) is an existing folder; a parent of `out` is
            a file; the parent folder cannot be created or written.
    """
    path = Path(out).expanduser()
    try:
        for p in (path, partial_path(path)):
            if p.is_dir():
                raise KDistillError(f"out {p} is an existing folder, not a file: give the JSONL file to write, "
                                    f"e.g. --out {path / 'labeled.jsonl'}" if p == path else
                                    f"out {path}: {p} (where unfinished answers are kept) is a folder; move it away")
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KDistillError(f"out {path}: a parent of this path is a file, not a folder") from None
    except OSError as err:  # a name too long, no permission, a read-only file system
        raise KDistillError(f"out {path}: its folder cannot be created: {err.strerror or err}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name[:40]}.probe-"):
            pass
    except OSError as err:
        raise KDistillError(f"out {path}: cannot write in {path.parent}: {err.strerror or err}") from None
    return path


def row_key(line: int, example: Sequence[str]) -> str:
    """An example's identity in the log: its input line number and a hash of its text(s).

    Both, so that an edited or reordered input file never receives an answer given for another text, while the
    rows that did not change are still reused.
    """
    digest = hashlib.sha256(json.dumps(list(example), ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    return f"{line}:{digest}"


def _floats(raw: Any) -> list[float] | None:
    if raw is not None and not (isinstance(raw, list) and all(isinstance(x, int | float) for x in raw)):
        raise TypeError("not a list of numbers")
    return raw


def _ids(raw: Any) -> tuple[int, ...] | None:
    if raw is not None and not (isinstance(raw, list) and all(isinstance(x, int) and x >= 0 for x in raw)):
        raise TypeError("not a list of label ids")
    return None if raw is None else tuple(raw)


class AnswerLog:
    """An append-only JSONL file of answers keyed by `row_key`, readable after any crash.

    Line 1 is a header: what the answers depend on besides the text (teacher, label names, ...). A rerun whose
    header differs is refused rather than mixed. Every further line is one answer. Bytes after the last newline
    are a write cut short by a kill: they are ignored and cut off before the next append. A complete line that is
    not a valid record (a damaged disk block) is ignored too, and counted in `damaged`: that row is asked again.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.header = json.loads(json.dumps({"format": LOG_FORMAT, **header}))  # as it reads back from disk
        self.answers: dict[str, TeacherAnswer] = {}
        self.damaged = 0
        self._end = 0  # bytes of whole lines already in the file; 0 = start it afresh
        self._file: IO[bytes] | None = None
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            raise KDistillError(f"cannot read {self.path}: {err}") from None
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1]
        if not lines:
            return  # empty, or only a header cut short: start afresh
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict) or header.get("format") != LOG_FORMAT:
            raise KDistillError(f"{self.path} exists but was not written by kdistill label (first line "
                                f"{shorten(lines[0], 60)}); move it away, it is where unfinished answers are kept")
        if header != self.header:
            diff = ", ".join(f"{k} {header.get(k)!r} (now {self.header.get(k)!r})"
                             for k in sorted(set(header) | set(self.header)) if header.get(k) != self.header.get(k))
            raise KDistillError(f"{self.path} holds answers given under other settings: {diff}; rerun with those "
                                "settings to reuse them, or delete the file to ask the teacher again for every row")
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                key = f"{int(rec['line'])}:{rec['sha']}"
                answer = TeacherAnswer(int(rec["label_id"]), _floats(rec.get("probs")), _floats(rec.get("logits")),
                                       _ids(rec.get("labels")))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.damaged += 1
                continue
            self.answers[key] = answer
        self._end = end

    def append(self, answered: Iterable[tuple[str, TeacherAnswer]]) -> None:
        """Add one batch of (row_key, answer) and force it to disk before returning (it may have been paid for)."""
        if self._file is None:
            if self.path.exists():
                os.truncate(self.path, self._end)  # drop a line cut short by a kill, or a header-only stub
            self._file = open(self.path, "ab")  # noqa: SIM115 - stays open across batches; closed in close()
            if self._end == 0:
                self._file.write((json.dumps(self.header, ensure_ascii=False) + "\n").encode("utf-8"))
        lines = []
        for key, a in answered:
            line, sha = key.split(":", 1)
            rec: dict[str, Any] = {"line": int(line), "sha": sha, "label_id": a.label_id}
            rec.update({k: v for k, v in (("probs", a.probs), ("logits", a.logits)) if v is not None})
            if a.labels is not None:
                rec["labels"] = list(a.labels)
            lines.append(json.dumps(rec) + "\n")
            self.answers[key] = a
        self._file.write("".join(lines).encode("utf-8"))  # one write per batch: a kill cuts at most its last line
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """The run is complete and its output written: the log has served its purpose."""
        self.close()
        self.path.unlink(missing_ok=True)
