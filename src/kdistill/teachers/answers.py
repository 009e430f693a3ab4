"""Stored answers: a labelled file (written by `kdistill label`) as a gray-box teacher in distillation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kdistill.answers import parse_json
from kdistill.distill.features import Features
from kdistill.errors import KDistillError
from kdistill.tasks import Task, get_task


class StoredAnswers:
    """Gray-box distillation: a labelled file's probabilities (or logits) as the teacher's logits.

    The task type reads each row's answer (`Task.answer_logits`: class probabilities, logits, or a score). Rows of a
    training batch are matched to the file by their token ids (the text tokenised as in training), so the order,
    shuffling and validation carve of the training data do not matter. A row the file does not answer, or answers
    without probabilities, is an error, never a silent hard label.
    """

    def __init__(self, path: str, tokenizer: Any, max_length: int, task: Task | None = None,
                 num_outputs: int | None = None) -> None:
        """Read `path`; `num_outputs` (the data's classes, or 1 for a score) is the answer length every row must have.

        Raises:
            KDistillError: a missing file or a folder, a line that is not a `kdistill label` row, or a row whose
                answer has another length than `num_outputs` (named by its line).
        """
        task = task or get_task("classification")
        self.path, self.tokenizer = path, tokenizer
        p = Path(path)
        if p.is_dir():
            raise KDistillError(f"teacher_answers is a folder, not a file: {path} (give the JSONL `kdistill label` "
                                "wrote)")
        if not p.is_file():
            raise KDistillError(f"teacher_answers file not found: {path}")
        self.by_ids: dict[tuple[int, ...], torch.Tensor] = {}
        written_by: set[str] = set()
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path} line {n} is not JSON")
            if not isinstance(row, dict) or "text" not in row:
                raise KDistillError(f"{path} line {n}: expected an object with 'text' (written by kdistill label)")
            logits = task.answer_logits(row, f"{path} line {n}")  # probs, logits or a score, as the task reads them
            if num_outputs is not None and logits.numel() != num_outputs:
                raise KDistillError(f"{path} line {n}: {logits.numel()} values in its answer, but the data has "
                                    f"{num_outputs} {'classes' if num_outputs > 1 else 'output'}: these answers "
                                    "come from a teacher of another task or label set")
            pair = [row["text"]] + ([row["text_pair"]] if row.get("text_pair") is not None else [])
            ids = tokenizer(*pair, truncation=True, max_length=max_length)["input_ids"]
            self.by_ids[tuple(ids)] = logits
            if isinstance(row.get("teacher"), str):
                written_by.add(row["teacher"])
        # who answered, as `kdistill label` writes on each row (none in files from elsewhere): the run credits them
        self.teachers: list[str] = sorted(written_by)

    def check_covers(self, train: Any) -> None:
        """Refuse, before training starts, a training split (rows of student token ids) that the file does not
        answer whole, naming how many rows are missing and the first one's text."""
        missing = [ids for ids in train["input_ids"] if tuple(ids) not in self.by_ids]
        if missing:
            text = self.tokenizer.decode(missing[0], skip_special_tokens=True)
            raise KDistillError(
                f"{len(missing)} of {len(train)} training examples are not in teacher_answers {self.path}, the first: "
                f"{text[:60]!r}. Rows are matched by text: label the whole training file (the training split is the "
                "file less the validation rows carved from it, capped by data.max_train_examples)")

    def signals(self, batch: Mapping[str, torch.Tensor]) -> Features:
        mask = batch["attention_mask"]
        rows = []
        for ids, m in zip(batch["input_ids"].tolist(), mask.tolist(), strict=True):
            key = tuple(i for i, keep in zip(ids, m, strict=True) if keep)
            if key not in self.by_ids:
                raise KDistillError("a training example is not in teacher_answers; label the same file you train on "
                                    f"(first token ids: {list(key[:8])})")
            rows.append(self.by_ids[key])
        return Features(logits=torch.stack(rows).to(batch["input_ids"].device), mask=mask)
