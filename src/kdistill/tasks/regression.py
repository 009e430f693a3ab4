"""Regression (STS-B): one score per example, a head with one output (`problem_type="regression"`).

The teacher's prediction is taught with `logit_mse` (squared error between the two outputs) and the gold score with
`mse` (which `ce` means here); a softmax loss (`kl`, `soft_ce`) has no class distribution to compare and is refused
at set-up. Scored by Pearson and Spearman correlation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.tasks.base import Task

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks.readers import RawSplit

__all__ = ["Regression", "as_score"]


def as_score(value: Any) -> float | None:
    """A label cell as a finite float: 3.8, "3.8", 4 or " 4 "; None for anything else (text, bool, NaN, inf)."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


MIN_CORRELATION_ROWS = 5  # below this a validation Pearson/Spearman is near +-1 by chance: warned, not trusted


class Regression(Task):
    """One score per example: one output, MSE to the gold score, Pearson/Spearman; the model's output is the score."""

    name = "regression"
    problem_type = "regression"
    metrics = ("pearson", "spearman")
    gold_loss = "mse"
    soft_loss = "logit_mse"
    figure_heading = "Predicted vs gold scores"
    figure_caption = "predicted vs gold scores"
    pipeline_kwargs = {"function_to_apply": "none"}
    doc = "a regression task (one score per example)"

    def label_feature(self, num_labels: int) -> Any:
        return datasets.Value("float32")

    def read_labels(self, raw: dict[str, RawSplit], names: list[str] | None,
                    named: bool) -> tuple[list[str], dict[str, RawSplit]]:
        if names is not None and len(names) != 1:
            raise KDistillError(f"a regression task has one output; data.label_names names {len(names)} "
                                f"({', '.join(names)}): give one name or none")
        out = {}
        for split, s in raw.items():
            values = []
            for v, ln in zip(s.labels, s.lines, strict=True):
                x = as_score(v)
                if x is None:
                    raise KDistillError(f"label {v!r} in {s.source} line {ln} is not a finite number: a regression "
                                        "task needs a score in every row")
                values.append(x)
            out[split] = s.with_labels(values)
        return list(names or ["score"]), out

    def num_labels(self, names: Sequence[str]) -> int:
        return 1

    def augment_fields(self, label: Any, names: Sequence[str]) -> dict[str, Any]:
        return {"label": float(label)}

    def augment_label(self, row: dict[str, Any], names: Sequence[str], where: str) -> Any:
        x = as_score(row.get("label"))
        if x is None:
            raise KDistillError(f"{where}: label {row.get('label')!r} is not a finite number (this task is a "
                                "regression task)")
        return x

    def check_classes(self, data: TaskData, config: Any, model_name: str) -> None:
        if int(config.num_labels) != 1:
            raise KDistillError(f"model '{model_name}' has {config.num_labels} outputs; a regression task needs one")

    def average_teachers(self, logits: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """The weighted average of the teachers' scores."""
        return torch.stack([w * lg.float() for w, lg in zip(weights, logits, strict=True)]).sum(dim=0)

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float64)[:, 0]

    def gold(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(labels, dtype=np.float64).reshape(-1)

    def collapse_warning(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> str | None:
        preds, gold = self.predictions(logits), self.gold(labels)
        if len(gold) < MIN_CORRELATION_ROWS:
            return (f"the validation split has {len(gold)} example(s): a correlation over so few scores says little "
                    "(more validation rows: data.validation_file or data.validation_fraction)")
        if np.ptp(gold) == 0:
            return (f"every validation gold score is {gold[0]:.4g}: a correlation is undefined there (scored 0.0), so "
                    "the validation split cannot rank the epochs")
        if np.ptp(preds) > 1e-6 * max(1.0, float(np.abs(preds).max())):
            return None
        return (f"every one of the {len(preds)} validation predictions is the score {preds[0]:.4g} (gold scores "
                f"{gold.min():.4g} to {gold.max():.4g}): the model has collapsed to a constant")

    def detail(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> dict[str, Any]:
        return {"predicted": [round(float(x), 5) for x in self.predictions(logits)],
                "gold": [round(float(x), 5) for x in self.gold(labels)]}

    def figure(self, detail: dict[str, Any], classes: Sequence[str], title: str) -> bytes | None:
        from kdistill import plots

        return plots.scatter_png(detail["gold"], detail["predicted"], title)

    def answer_probs(self, logits: Sequence[float]) -> list[float] | None:
        return None

    def labeled_fields(self, label_id: int, probs: Sequence[float] | None, logits: Sequence[float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
        if not logits or len(logits) != 1:
            raise KDistillError("a regression teacher answers one score per example")
        return {"label": round(float(logits[0]), 6)}
