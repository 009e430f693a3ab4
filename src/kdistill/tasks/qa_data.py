"""Extractive QA data: SQuAD v1.1 JSON (and JSONL rows laid out like Hugging Face's `squad`) -> `QAExample`s.

SQuAD v1.1 (Rajpurkar et al., 2016) nests questions under articles and paragraphs: `{"data": [{"title",
"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}`.
A JSONL file holds one question a line, as the rows of `datasets.load_dataset("squad")`:
`{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}` (optional "title"); a list of
`{"text", "answer_start"}` objects is accepted for "answers" as well.

Every answer is checked against its context (`context[answer_start:]` must begin with its text), so a shifted or
re-encoded file fails here, naming the question, rather than training on wrong spans. Bad input raises one
`KDistillError` line naming the file and the question id (or its place, when the id itself is missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdistill.errors import KDistillError

__all__ = ["QAExample", "read_squad", "parse_squad", "parse_rows", "to_columns", "from_columns"]

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class QAExample:
    """One question about one context, with its reference answers (empty when the input has none).

    `answers[k]` is found at `context[answer_starts[k]:]`; training uses the first answer (as SQuAD's training set
    has exactly one), evaluation takes the best score over all of them.
    """

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    title: str = ""


def _snippet(text: str, n: int = 40) -> str:
    """A short, one-line excerpt for messages (repr escapes newlines)."""
    return repr(text if len(text) <= n else text[:n] + "...")


def _text_field(obj: Mapping[str, Any], key: str, where: str, qid: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        what = "is missing" if value is None else f"must be a string, got {type(value).__name__}"
        raise KDistillError(f"{where}: question {qid!r}: field '{key}' {what}")
    if not value.strip():
        raise KDistillError(f"{where}: question {qid!r}: field '{key}' is empty")
    return value


def _answer_list(raw: Any, where: str, qid: str) -> list[tuple[Any, Any]]:
    """(text, answer_start) pairs from a list of {"text", "answer_start"} or from {"text": [...], ...} columns."""
    if isinstance(raw, Mapping):
        texts, starts = raw.get("text"), raw.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list):
            raise KDistillError(f"{where}: question {qid!r}: 'answers' needs lists 'text' and 'answer_start'")
        if len(texts) != len(starts):
            raise KDistillError(f"{where}: question {qid!r}: 'answers' has {len(texts)} texts but "
                                f"{len(starts)} answer_start values")
        return list(zip(texts, starts, strict=True))
    if isinstance(raw, list):
        pairs = []
        for k, ans in enumerate(raw):
            if not isinstance(ans, Mapping) or "text" not in ans or "answer_start" not in ans:
                raise KDistillError(f"{where}: question {qid!r}: answer {k} needs fields 'text' and 'answer_start'")
            pairs.append((ans["text"], ans["answer_start"]))
        return pairs
    raise KDistillError(f"{where}: question {qid!r}: field 'answers' is "
                        + ("missing" if raw is None else f"a {type(raw).__name__}, not a list of answers"))


def _example(qa: Mapping[str, Any], context: Any, title: str, where: str, place: str,
             require_answers: bool) -> QAExample:
    """One validated example; `place` locates a question that has no id."""
    raw_id = qa.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or str(raw_id).strip() == "":
        raise KDistillError(f"{where}: {place} has no question id (field 'id')")
    qid = str(raw_id)
    question = _text_field(qa, "question", where, qid)
    if not isinstance(context, str) or not context.strip():
        what = "is missing" if context is None else ("is empty" if isinstance(context, str) else "must be a string")
        raise KDistillError(f"{where}: question {qid!r}: field 'context' {what}")
    texts: list[str] = []
    starts: list[int] = []
    raw_answers = qa.get("answers")
    if raw_answers is None and not require_answers:
        raw_answers = []
    for k, (text, start) in enumerate(_answer_list(raw_answers, where, qid)):
        if not isinstance(text, str) or not text:
            raise KDistillError(f"{where}: question {qid!r}: answer {k} has no text")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise KDistillError(f"{where}: question {qid!r}: answer {k} has answer_start {start!r}, "
                                "not a character offset (an integer >= 0)")
        found = context[start:start + len(text)]
        if found != text:
            raise KDistillError(f"{where}: question {qid!r}: answer {k} {_snippet(text)} is not at "
                                f"context[{start}:], which reads {_snippet(found) if found else 'nothing'}")
        texts.append(text)
        starts.append(start)
    if require_answers and not texts:
        why = (" (an unanswerable SQuAD 2.0 question: kdistill reads SQuAD v1.1, where every question has one)"
               if qa.get("is_impossible") else "")
        raise KDistillError(f"{where}: question {qid!r} has no answers{why}")
    return QAExample(qid, question, context, tuple(texts), tuple(starts), title)


def _unique(examples: list[QAExample], where: str) -> list[QAExample]:
    """Refuse repeated ids: windows and predictions are matched back to their question by id."""
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise KDistillError(f"{where}: question id {ex.id!r} appears more than once")
        seen.add(ex.id)
    return examples


def parse_squad(obj: Any, where: str, *, require_answers: bool = True) -> list[QAExample]:
    """SQuAD v1.1 JSON (already parsed) -> examples in file order.

    `where` names the source in messages (a file path). `require_answers=False` accepts questions without answers
    (data to predict on, not to train or score). Raises `KDistillError` for a file that is not SQuAD JSON, a missing
    or mistyped field, an answer not at `context[answer_start:]`, a question without answers (when required) and a
    repeated question id.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("data"), list):
        raise KDistillError(f"{where} is not SQuAD JSON: expected an object with a \"data\" list of articles "
                            "({\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\": [...]}]}]}), "
                            "or JSONL rows (id, question, context, answers) in a .jsonl file")
    examples: list[QAExample] = []
    for a, article in enumerate(obj["data"]):
        if not isinstance(article, Mapping) or not isinstance(article.get("paragraphs"), list):
            raise KDistillError(f"{where}: article {a} has no \"paragraphs\" list")
        title = str(article.get("title") or "")
        for p, para in enumerate(article["paragraphs"]):
            if not isinstance(para, Mapping) or not isinstance(para.get("qas"), list):
                raise KDistillError(f"{where}: article {a} paragraph {p} has no \"qas\" list")
            for q, qa in enumerate(para["qas"]):
                place = f"article {a} paragraph {p} question {q}"
                if not isinstance(qa, Mapping):
                    raise KDistillError(f"{where}: {place} is not an object")
                examples.append(_example(qa, para.get("context"), title, where, place, require_answers))
    if not examples:
        raise KDistillError(f"{where} holds no questions")
    return _unique(examples, where)


def parse_rows(rows: Iterable[Mapping[str, Any]], where: str, *, require_answers: bool = True,
               places: Sequence[str] | None = None) -> list[QAExample]:
    """Flat rows (HF `squad` layout: id, question, context, answers {text, answer_start}, optional title) -> examples.

    `places[k]` names row k in messages when its id is missing ("line 7" in a JSONL file; default "row k").
    Errors as `parse_squad`.
    """
    examples = []
    for k, row in enumerate(rows):
        place = places[k] if places is not None else f"row {k}"
        if not isinstance(row, Mapping):
            raise KDistillError(f"{where}: {place} is not an object")
        examples.append(_example(row, row.get("context"), str(row.get("title") or ""), where, place,
                                 require_answers))
    if not examples:
        raise KDistillError(f"{where} holds no questions")
    return _unique(examples, where)


def _read_jsonl(path: Path, require_answers: bool) -> list[QAExample]:
    rows: list[Any] = []
    places: list[str] = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise KDistillError(f"{path}:{no}: not a JSON object ({e.msg})") from None
            places.append(f"line {no}")
    return parse_rows(rows, str(path), require_answers=require_answers, places=places)


def read_squad(path: str | Path, *, require_answers: bool = True) -> list[QAExample]:
    """Read a SQuAD v1.1 JSON file, or a JSONL file (`.jsonl`/`.ndjson`) of HF `squad` rows, into examples.

    Raises `KDistillError` (one line, naming the file and the question) for a missing or unreadable file, invalid
    JSON, a file that is not SQuAD JSON, and every bad question `parse_squad` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise KDistillError(f"QA data file not found: {path}")
    try:
        if path.suffix.lower() in JSONL_SUFFIXES:
            return _read_jsonl(path, require_answers)
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except UnicodeDecodeError as e:
        raise KDistillError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise KDistillError(f"{path} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); "
                            "JSONL rows need a .jsonl name") from None
    return parse_squad(obj, str(path), require_answers=require_answers)


def to_columns(examples: Sequence[QAExample]) -> dict[str, list[Any]]:
    """Examples -> columns in HF `squad` layout (for `datasets.Dataset.from_dict`): id, title, context, question,
    answers {text: [...], answer_start: [...]}."""
    return {
        "id": [ex.id for ex in examples],
        "title": [ex.title for ex in examples],
        "context": [ex.context for ex in examples],
        "question": [ex.question for ex in examples],
        "answers": [{"text": list(ex.answers), "answer_start": list(ex.answer_starts)} for ex in examples],
    }


def from_columns(columns: Mapping[str, Sequence[Any]], where: str = "QA batch", *,
                 require_answers: bool = False) -> list[QAExample]:
    """The inverse of `to_columns` (a batch of a `datasets.Dataset.map(batched=True)`), validated as `parse_rows`."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    rows = [{name: columns[name][i] for name in names} for i in range(n)]
    return parse_rows(rows, where, require_answers=require_answers)
