"""Reading token-classification data (NER): CoNLL column files and JSONL rows of tokens and tags, into `RawSplit`s.

CoNLL (CoNLL-2003's `token POS chunk NER`): one token a line, columns separated by whitespace, the tag in the
last column, a blank line after each sentence; `-DOCSTART-` lines (document separators) are skipped. JSONL: one
sentence a line, `{"tokens": [...], "tags": [...]}` (a `ner_tags` key is read as `tags`); tags are names, or ids
when the label names are known (`data.label_names`, a shipped task, a `datasets` ClassLabel).

A `RawSplit` of token data holds each sentence's tokens (a list) in `text_a`, its tag cells in `labels`, and in
`extra["tag_lines"]` the file line of each tag, so that a tag outside the label set is named by its own line. Bad
input is one `KDistillError` line naming the file and line: a token line without a tag column, a line with another
number of columns than the file's first token line (a missing column would shift the tag), an empty token, tokens
and tags of different lengths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdistill.errors import KDistillError
from kdistill.tasks.readers import RawSplit

__all__ = ["CONLL_SUFFIXES", "JSON_SUFFIXES", "TAG_RE", "sniff_tokens", "read_token_file", "token_rows"]

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".iob2", ".bio", ".ner")
JSON_SUFFIXES = (".jsonl", ".json")
TAG_RE = re.compile(r"O|[BIES]-\S+")
"""A tag seqeval reads: O, or a B-/I-/E-/S- prefix and an entity type (IOB1, IOB2, IOE, IOBES)."""
_DOCSTART = "-DOCSTART-"
_SNIFF_BYTES = 65536


def sniff_tokens(path: Path) -> bool:
    """Whether `path` is evidently token-classification data: JSONL objects with "tokens", or CoNLL lines whose last
    column is a tag (O, B-X, I-X, ...: the first line and 80% of the first 200) in a .txt file; any file named
    .conll, .iob, .iob2, .bio or .ner."""
    suffix = path.suffix.lower()
    if suffix not in CONLL_SUFFIXES + JSON_SUFFIXES or not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8-sig") as f:
            head = f.read(_SNIFF_BYTES)
    except (OSError, UnicodeDecodeError):
        return False
    lines = head.splitlines()[:-1] if len(head) == _SNIFF_BYTES else head.splitlines()  # the last may be cut
    if suffix in JSON_SUFFIXES:
        first = next((ln for ln in lines if ln.strip()), "")
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(row, dict) and isinstance(row.get("tokens"), list)
    if suffix != ".txt":  # only CoNLL data is named so: read it, and let the reader name a bad first line
        return True
    tokens = [ln.split() for ln in lines if ln.strip() and not ln.startswith(_DOCSTART)][:200]
    fits = [len(c) >= 2 and TAG_RE.fullmatch(c[-1]) is not None for c in tokens]
    # mostly fitting lines: a CoNLL file with a bad line is still read as one, and the reader names that line
    return bool(fits) and fits[0] and sum(fits) >= 0.8 * len(fits)


def read_token_file(path: Path) -> RawSplit:
    """A CoNLL or token-JSONL file as a `RawSplit` of sentences (see the module docstring for the formats).

    Raises `KDistillError`: a missing or unreadable file, or bad input naming the file and line.
    """
    if not path.is_file():
        raise KDistillError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise KDistillError(f"cannot read data file {path}: {err}") from None
    split = _read_jsonl(path, text) if path.suffix.lower() in JSON_SUFFIXES else _read_conll(path, text)
    if not split.text_a:
        raise KDistillError(f"data file has no sentences: {path}")
    return split


def _read_conll(path: Path, text: str) -> RawSplit:
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    tag_lines: list[list[int]] = []
    width: tuple[int, int] | None = None  # (columns, line) of the file's first token line
    words: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw or raw.isspace() or raw.startswith(_DOCSTART):  # a sentence ends (or a document separator)
            if words:
                sentences.append(words)
                words = []
            continue
        if raw[0] in " \t":
            raise KDistillError(f"{path} line {n}: empty token (the line starts with a separator: {raw!r})")
        cells = raw.split()
        if len(cells) < 2:
            raise KDistillError(f"{path} line {n}: token {cells[0]!r} has no tag column (a CoNLL line is "
                                "`token ... TAG`, the tag in the last column)")
        if width is None:
            width = (len(cells), n)
        elif len(cells) != width[0]:
            raise KDistillError(f"{path} line {n} has {len(cells)} columns, line {width[1]} (the first token line) "
                                f"has {width[0]}: a missing or extra column would shift the tag column")
        if not words:
            tags.append([])
            tag_lines.append([])
        words.append(cells[0])
        tags[-1].append(cells[-1])
        tag_lines[-1].append(n)
    if words:
        sentences.append(words)
    return RawSplit(str(path), sentences, None, tags, [ln[0] for ln in tag_lines], ("token", "tag"),
                    {"tag_lines": tag_lines})


def _read_jsonl(path: Path, text: str) -> RawSplit:
    rows, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise KDistillError(f"{path} line {n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or "tokens" not in row:
            raise KDistillError(f"{path} line {n}: expected an object with 'tokens' and 'tags'")
        if "tags" not in row and "ner_tags" not in row:
            raise KDistillError(f"{path} line {n} has tokens but no 'tags'")
        rows.append(row)
        lines.append(n)
    return token_rows(str(path), [r["tokens"] for r in rows], [r.get("tags", r.get("ner_tags")) for r in rows],
                      lines)


def token_rows(source: str, tokens: Sequence[Any], tags: Sequence[Any], lines: Sequence[int],
               where: str = "line") -> RawSplit:
    """Sentences given as lists (JSONL rows, a `datasets` split) -> a `RawSplit`, checked row by row.

    `where` names a row in messages ("line" for files, "row" for datasets). Raises `KDistillError` for tokens that
    are not a list of non-empty strings, tags that are not a list of names or ids, or lists of different lengths.
    """
    for toks, tgs, n in zip(tokens, tags, lines, strict=True):
        at = f"{source} {where} {n}"
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise KDistillError(f"{at}: 'tokens' must be a list of strings")
        if not toks:
            raise KDistillError(f"{at} has no tokens")
        if not isinstance(tgs, list) or not all(isinstance(t, str | int) and not isinstance(t, bool) for t in tgs):
            raise KDistillError(f"{at}: 'tags' must be a list of tag names (or ids)")
        if len(toks) != len(tgs):
            raise KDistillError(f"{at}: {len(toks)} tokens but {len(tgs)} tags")
        for i, t in enumerate(toks):
            if not t.strip():
                raise KDistillError(f"{at}: token {i} is empty ({t!r}); every word needs text")
    return RawSplit(source, [list(t) for t in tokens], None, [list(t) for t in tags], list(lines),
                    ("tokens", "tags"), {"tag_lines": [[n] * len(t) for t, n in zip(tags, lines, strict=True)]})
