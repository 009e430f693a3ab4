"""Stored answers: a labelled file (written by `kdistill label`) as a gray-box teacher in distillation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kdistill.answers import parse_json
from kdistill.errors import KDistillError
from kdistill.features import Features


class StoredAnswers:
    """Gray-box distillation: a labelled file's probabilities (or logits) as the teacher's logits.

    Rows of a training batch are matched to the file by their token ids (the text tokenised as in training), so the
    order, shuffling and validation carve of the training data do not matter. A row the file does not answer, or
    answers without probabilities, is an error, never a silent hard label.
    """

    def __init__(self, path: str, tokenizer: Any, max_length: int) -> None:
        p = Path(path)
        if not p.is_file():
            raise KDistillError(f"teacher_answers file not found: {path}")
        self.by_ids: dict[tuple[int, ...], torch.Tensor] = {}
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path} line {n} is not JSON")
            if not isinstance(row, dict) or "text" not in row:
                raise KDistillError(f"{path} line {n}: expected an object with 'text' (written by kdistill label)")
            if row.get("logits") is not None:
                logits = torch.tensor(row["logits"], dtype=torch.float32)
            elif row.get("probs") is not None:
                logits = torch.tensor(row["probs"], dtype=torch.float32).clamp_min(1e-12).log()
            else:
                raise KDistillError(f"{path} line {n} has no probs or logits: that teacher gave labels only "
                                    "(train on the label column with the ce loss instead)")
            pair = [row["text"]] + ([row["text_pair"]] if row.get("text_pair") is not None else [])
            ids = tokenizer(*pair, truncation=True, max_length=max_length)["input_ids"]
            self.by_ids[tuple(ids)] = logits

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
