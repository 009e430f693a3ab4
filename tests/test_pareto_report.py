"""The Pareto benchmark's target check (benchmarks/pareto_report.py) decides what the README claims: a student meets
a teacher's target only when it is fast enough on every task, at batch 1 and 32, and keeps >= 97% on every task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from pareto_report import groups, targets  # noqa: E402


def _teacher(task: str) -> dict[str, Any]:
    return {"cell": f"teacher | minilm | {task}", "kind": "teacher", "teacher": "minilm", "task": task,
            "score": 0.85, "params": 22_000_000, "train_s": 60.0}


def _student(task: str, student: str, retention: float, bs1: float, bs32: float) -> dict[str, Any]:
    return {"cell": f"student | minilm | {task} | {student} | soft targets | seed 42", "kind": "student",
            "teacher": "minilm", "task": task, "student": student, "method": "soft targets", "seed": 42,
            "score": 0.85 * retention, "retention": retention, "speedup_bs1": bs1, "speedup_bs32": bs32,
            "speedup_served": 2 * bs1, "speed_reliable": False, "params": 15_000_000, "train_s": 60.0}


def _done(*rows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["cell"]: r for r in rows}


def test_a_target_is_met_only_when_fast_enough_on_every_task_and_batch_size() -> None:
    rows = [_teacher("sst2"), _teacher("mrpc"),
            _student("sst2", "2L-384", 0.975, 3.1, 2.9), _student("mrpc", "2L-384", 0.98, 3.3, 3.2)]
    line = next(x for x in targets(_done(*rows)) if x.startswith("- minilm"))
    assert line.startswith("- minilm: missed") and "2.9x" in line  # SST-2's batch 32 is under 3x

    retimed = {"cell": "speed | minilm | sst2 | 2L-384", "kind": "speed", "speedup_bs1": 3.4, "speedup_bs32": 3.05,
               "speedup_served": 9.0, "speed_reliable": True}
    line = next(x for x in targets(_done(*rows, retimed)) if x.startswith("- minilm"))
    assert line.startswith("- minilm: met by 2L-384: 3.0x") and "97.5%" in line  # the slowest speed, worst task

    low = _student("mrpc", "2L-384", 0.96, 3.3, 3.3)
    line = next(x for x in targets(_done(*rows[:3], low, retimed)) if x.startswith("- minilm"))
    assert line.startswith("- minilm: missed") and "1.0 points short" in line


def test_a_later_speed_cell_replaces_the_speed_a_student_was_recorded_with() -> None:
    rows = [_teacher("sst2"), _student("sst2", "3L-384", 0.99, 1.9, 1.8),
            {"cell": "speed | minilm | sst2 | 3L-384", "kind": "speed", "speedup_bs1": 2.2, "speedup_bs32": 2.1,
             "speedup_served": 4.0, "speed_reliable": True}]
    (row,) = groups(_done(*rows))[("minilm", "sst2", "3L-384", "soft targets")]
    assert (row["speedup_bs1"], row["speedup_bs32"], row["speed_reliable"]) == (2.2, 2.1, True)
    assert row["retention"] == 0.99


def test_a_miss_on_both_counts_still_names_the_closest_students() -> None:
    rows = [_teacher("sst2"), _student("sst2", "2L-384", 0.96, 2.8, 3.1), _student("sst2", "3L-384", 0.965, 1.9, 2.0)]
    line = next(x for x in targets(_done(*rows)) if x.startswith("- minilm"))
    assert "the best one (3L-384) keeps 96.5% at 1.9x" in line and "the fastest (2L-384) is 2.8x at 96.0%" in line
