"""Single-label classification: one class per example, softmax over the classes (today's behaviour, unchanged).

Integer labels are class ids as written (labels 0 and 2 stay 0 and 2, with class 1 empty), so a file that lacks a
class still lines up with the teacher; text labels are numbered (sorted, or in the order of `data.label_names`).
`MaskedLM` is the same task over masked word-pieces, for general distillation.
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
from kdistill.labels import check_labels, label_key, norm_label
from kdistill.metrics import compute_metrics, single_class_warning
from kdistill.tasks.base import Target, Task
from kdistill.tasks.regression import as_score

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks.readers import RawSplit

__all__ = ["Classification", "MaskedLM", "class_ids"]


def class_ids(raw: dict[str, RawSplit], names: list[str] | None,
              named: bool = False) -> tuple[list[str], dict[str, RawSplit]]:
    """Labels to ids. Given `names` (shipped/ClassLabel) cells are ids already; `named` (data.label_names)
    maps text labels to those names' positions. Else non-negative integer labels are ids as written (labels
    0 and 2 stay 0 and 2, with class 1 empty), other integers keep their order (remapped to 0..K-1) and
    text labels are sorted. Eval labels must occur among the classes."""
    keys: dict[str, list[Any]] = {}
    for split, s in raw.items():
        keys[split] = [label_key(v) for v in s.labels]  # missing labels were refused or dropped before
    if names is not None and named:  # the user's class order: text labels by name, integers as ids
        norm = {norm_label(n): i for i, n in enumerate(names)}
        keys = {split: [norm.get(norm_label(str(k)), k) if isinstance(k, str) else k for k in v]
                for split, v in keys.items()}
        order = list(range(len(names)))
    elif names is None:
        ints = [k for v in keys.values() for k in v]
        if all(isinstance(k, int) for k in ints) and min(ints) >= 0:  # ids: a class missing from train keeps its id
            order: list[Any] = list(range(max(ints) + 1))
            names = [str(i) for i in order]
        elif all(isinstance(k, int) for k in keys["train"]):  # negative integers cannot be ids: keep their order
            order = sorted(set(keys["train"]))
            names = [str(i) for i in order]
        else:
            keys = {k: [str(x) for x in v] for k, v in keys.items()}
            order = names = sorted(set(keys["train"]))
    else:
        order = list(range(len(names)))
    lookup = {k: i for i, k in enumerate(order)}
    names = list(names)
    out = {}
    for split, s in raw.items():
        for k, v, ln in zip(keys[split], s.labels, s.lines, strict=True):
            if k not in lookup:
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                hint = ""
                score = as_score(k)
                if (not named and score is not None and not score.is_integer()  # a fraction beside whole numbers
                        and all(as_score(x) is not None for x in keys["train"])):
                    hint = "; scores, not classes? set data.task_type regression"
                among = "one of the named classes" if named else "among the training labels"
                raise KDistillError(f"label {v!r} in {s.source} line {ln} is not {among} ({shown}){hint}")
        out[split] = s.with_labels([lookup[k] for k in keys[split]])
    return names, out


class Classification(Task):
    """One class per example: softmax head (`single_label_classification`), cross-entropy, argmax predictions."""

    name = "classification"
    problem_type = "single_label_classification"
    metrics = ("accuracy", "matthews", "f1")
    gold_loss = "ce"
    figure_heading = "Confusion matrices"
    figure_caption = "confusion"
    pipeline_kwargs: dict[str, Any] = {}
    doc = "a classification task (one class per example)"

    def label_feature(self, num_labels: int) -> Any:
        return datasets.Value("int64")

    def read_labels(self, raw: dict[str, RawSplit], names: list[str] | None,
                    named: bool) -> tuple[list[str], dict[str, RawSplit]]:
        return class_ids(raw, names, named)

    def augment_fields(self, label: Any, names: Sequence[str]) -> dict[str, Any]:
        return {"label": names[int(label)], "label_id": int(label)}

    def augment_label(self, row: dict[str, Any], names: Sequence[str], where: str) -> Any:
        label = row.get("label_id")
        if label is None and row.get("label") is not None:
            label = {norm_label(n): i for i, n in enumerate(names)}.get(norm_label(str(row["label"])))
        if not isinstance(label, int) or not 0 <= label < len(names):
            raise KDistillError(f"{where}: label {row.get('label_id', row.get('label'))!r} is not one of this task's "
                                f"classes ({', '.join(names)})")
        return label

    def check_classes(self, data: TaskData, config: Any, model_name: str) -> None:
        check_labels(data, int(config.num_labels), config.id2label, model_name=model_name)

    def average_teachers(self, logits: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """log of the weighted average class probability: softmax at T=1 gives exactly the averaged distribution."""
        probs = sum(w * lg.float().softmax(-1) for w, lg in zip(weights, logits, strict=True))
        return torch.as_tensor(probs).clamp_min(1e-12).log()

    def answer_logits(self, row: dict[str, Any], where: str) -> Tensor:
        if row.get("logits") is None and row.get("probs") is not None:
            return torch.tensor(row["probs"], dtype=torch.float32).clamp_min(1e-12).log()
        return super().answer_logits(row, where)

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits).argmax(axis=-1)

    def score(self, metric: str, logits: np.ndarray | Sequence, labels: np.ndarray | Sequence,
              encoded: Any = None) -> dict[str, float]:
        self.check_metric(metric)
        return compute_metrics(metric, logits, labels)

    def collapse_warning(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> str | None:
        return single_class_warning(logits, labels)

    def detail(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> dict[str, Any]:
        from sklearn.metrics import confusion_matrix

        n = int(np.asarray(logits).shape[1])
        return {"confusion": confusion_matrix(labels, self.predictions(logits), labels=list(range(n))).tolist()}

    def figure(self, detail: dict[str, Any], classes: Sequence[str], title: str) -> bytes | None:
        from kdistill import plots

        return plots.confusion_png(np.array(detail["confusion"]), list(classes), title)

    def answer_probs(self, logits: Sequence[float]) -> list[float] | None:
        top = max(logits)
        exp = [math.exp(x - top) for x in logits]
        return [e / sum(exp) for e in exp]

    def labeled_fields(self, label_id: int, probs: Sequence[float] | None, logits: Sequence[float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"label": names[label_id], "label_id": label_id}
        if probs is not None:
            row.update(probs=[round(p, 6) for p in probs], confidence=round(max(probs), 6))
        return row


class MaskedLM(Classification):
    """Masked-LM pretraining (general distillation): classification over the vocabulary at the masked tokens only.

    Token labels (B, L) hold -100 where nothing is masked; the response losses compare the masked rows, so
    DistilBERT's soft targets are taken at masked tokens. Hidden states and attention keep their shape.
    """

    name = "masked_lm"
    loss_type = "classification"
    metrics = ("mlm_accuracy",)
    doc = "a masked-LM task"

    def targets(self, student: Tensor, teacher: Tensor | None, labels: Tensor | None,
                batch: Any = None) -> list[Target]:
        if labels is None or labels.dim() != 2:
            return [Target(student, teacher, labels)]
        keep = labels != -100
        # a head hooked by `score_masked_rows_only` already gives the masked rows (N, V)
        s = student[keep] if student.dim() == 3 else student
        t = teacher[keep] if teacher is not None and teacher.dim() == 3 else teacher
        return [Target(s, t, labels[keep])]
