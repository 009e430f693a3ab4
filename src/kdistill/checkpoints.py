"""A run's checkpoints on disk: the JSON run state, and which checkpoints are complete.

A checkpoint folder `OUT/checkpoints/step-N/` holds Accelerate's state (student + projections, optimizer,
scheduler, RNG) and `run_state.json`. The state file is written last, atomically, after the other files are
flushed to disk, so a checkpoint with a state file is complete; one without it was cut short and is ignored.
A checkpoint that does not load is set aside as `damaged-step-N` (the run warns and falls back to an older one);
once the run is finished, only the last checkpoint's `run_state.json` stays (`drop_resume_files`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdistill.atomic import atomic_write_json, replace_dir

__all__ = ["RUN_STATE", "DAMAGED_PREFIX", "RunState", "complete_checkpoints", "latest_checkpoint", "fsync_folder",
           "set_aside", "drop_resume_files"]

RUN_STATE = "run_state.json"
DAMAGED_PREFIX = "damaged-"


@dataclass
class RunState:
    """Where a run stands; JSON, so resuming never unpickles anything."""

    epoch: int = 0
    batches_in_epoch: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    schedule: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    wall_seconds: float = 0.0  # summed over resumed parts
    epoch_losses: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # term -> layer -> [sum, n]

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.__dict__)

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls(**json.loads(path.read_text()))


def complete_checkpoints(out: Path) -> list[Path]:
    """The run's checkpoints whose state file was written (the last act of a save), oldest first."""
    ckpts = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return [c for c in ckpts if (c / RUN_STATE).is_file()]


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of the run in `out`, or None."""
    ckpts = complete_checkpoints(out)
    return ckpts[-1] if ckpts else None


def fsync_folder(folder: Path) -> None:
    """Flush a checkpoint's files to disk before its state file declares it complete (power loss, not only kill)."""
    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def set_aside(ckpt: Path) -> Path:
    """Rename checkpoint folder `step-N` to `damaged-step-N` beside it (replacing one set aside earlier at that step,
    which a second damaged save at the same step would otherwise make the rename fail on); returns the new path."""
    aside = ckpt.with_name(DAMAGED_PREFIX + ckpt.name)
    replace_dir(ckpt, aside)
    return aside


def drop_resume_files(out: Path, final: Path) -> None:
    """Keep of a finished run's checkpoints only `final/run_state.json`; remove `out/best` too.

    Older checkpoints and damaged ones set aside (each was warned about when it was found) go, and so do the
    final checkpoint's weights and optimizer moments (twice the student's size), which only a resume needs.
    """
    for old in (out / "checkpoints").iterdir():
        if old != final and old.name.startswith(("step-", DAMAGED_PREFIX + "step-")):
            shutil.rmtree(old, ignore_errors=True)
    for f in final.iterdir():
        if f.name != RUN_STATE:
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
    shutil.rmtree(out / "best", ignore_errors=True)
