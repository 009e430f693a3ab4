"""Resumable benchmark results: one JSON line per finished cell, appended at once, skipped on rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def done_cells(path: Path) -> dict[str, dict[str, Any]]:
    """Cells already recorded in `path`, by name."""
    if not path.is_file():
        return {}
    return {r["cell"]: r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def record(path: Path, row: dict[str, Any]) -> None:
    """Append one finished cell; a run cut short afterwards keeps it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"[bench] recorded {row['cell']}", flush=True)
