"""Resumable benchmark results: one JSON line per finished cell, appended at once, skipped on rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def done_cells(path: Path) -> dict[str, dict[str, Any]]:
    """Cells already recorded in `path`, by name (a later line of a cell wins; a withdrawn cell is left out, so it
    runs again)."""
    if not path.is_file():
        return {}
    cells: dict[str, dict[str, Any]] = {}
    for row in (json.loads(line) for line in path.read_text().splitlines() if line.strip()):
        if row.get("kind") == "withdrawn":
            cells.pop(row["cell"], None)
        else:
            cells[row["cell"]] = row
    return cells


def record(path: Path, row: dict[str, Any]) -> None:
    """Append one finished cell; a run cut short afterwards keeps it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"[bench] recorded {row['cell']}", flush=True)


def supersede(path: Path, cell: str, reason: str) -> None:
    """Keep a recorded cell as `superseded: <cell> | <reason>` (shown, never compared) and withdraw its name, so the
    next run measures it again; nothing is deleted from the JSONL."""
    old = done_cells(path).get(cell)
    if old is None:
        return
    record(path, {**old, "cell": f"superseded: {cell} | {reason}", "kind": "superseded",
                  "superseded_kind": old["kind"]})
    record(path, {"cell": cell, "kind": "withdrawn", "reason": reason})
