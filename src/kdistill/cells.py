"""Missing cells: which text and label cells count as absent, and refusing (or dropping) the rows that hold them.

Why: a CSV or TSV file has no null. pandas and `datasets` read a cell "NaN", "null", "None" or "" as missing (NaN or
None) while Python's csv module keeps it as the word, so the same file would train on the text "NaN" with one loader
and fail with another. kdistill treats these cells as missing in every source, exactly like a JSON null or NaN, so
a row either has its text and label or is named in an error (or, with `data.skip_empty`, dropped and counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from kdistill.errors import KDistillError

__all__ = ["MISSING_MARKERS", "is_missing", "keep_complete_rows"]

MISSING_MARKERS = frozenset({"nan", "NaN", "NAN", "null", "NULL", "Null", "None", "NONE"})
"""Whole cells (after stripping spaces) that mean "no value": what pandas' and Python's writers print for a
missing value. Lower-case "none" is left out on purpose: it is an English word and a plausible short text."""


def is_missing(value: Any) -> bool:
    """True for None, a float NaN, and a string that is blank or one of `MISSING_MARKERS`."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, str):
        s = value.strip()
        return not s or s in MISSING_MARKERS
    return False


def keep_complete_rows(source: str, split: str, cells: Sequence[tuple[str, str | int, Sequence[Any]]],
                       lines: Sequence[int], skip: bool) -> list[int] | None:
    """The rows to keep when some text or label cells are missing; None when every row is complete.

    `cells` holds one (role, column, values) per used column, role being "text_a", "text_b" or "label" and
    column its name in the file (or its index when the file has no header); `lines` gives each row's line.

    Raises:
        KDistillError: a row has a missing cell and `skip` is False. The message names the file, the first such
            line and what it lacks (text_a, text_b or label), and how many rows of the split, and of each column
            by name, are affected.
    """
    bad: dict[int, list[tuple[str, str | int]]] = {}
    for role, column, values in cells:
        for i, v in enumerate(values):
            if is_missing(v):
                bad.setdefault(i, []).append((role, column))
    if not bad:
        return None
    per_column = Counter(column for where in bad.values() for _, column in where)
    counts = ", ".join(f"column {c!r}: {n}" for c, n in per_column.items())
    if not skip:
        first = min(bad)
        role = bad[first][0][0]
        what = "empty label (empty, null or NaN)" if role == "label" else f"empty, null or NaN text ({role})"
        raise KDistillError(f"{source} line {lines[first]}: {what}; {len(bad)} such row(s) in the {split} split "
                            f"({counts}): fix them, or set --data.skip_empty true to drop them")
    print(f"[data] skip_empty: dropped {len(bad)} of {len(lines)} {split} rows with empty, null or NaN text or "
          f"label ({source}; {counts})", flush=True)
    return [i for i in range(len(lines)) if i not in bad]
