"""Multi-label classification (GoEmotions): any number of labels per example, one sigmoid per label.

A label cell lists names or ids separated by commas (`anger,annoyance`, `2,3`; GoEmotions' `labels` column), or is
a JSON list. The head is `problem_type="multi_label_classification"`; the teacher's per-label probabilities are
taught with `bce_soft` (binary cross-entropy at a temperature) and the gold labels with `bce` (which `ce` means
here). A label is predicted when its probability is at least 0.5; scored by micro and macro F1. At the end of a
run the decision threshold is tuned on validation and folded into the output biases (`MultiLabel.calibrate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.labels import label_key, norm_label, norm_names
from kdistill.tasks.base import Task
from kdistill.tasks.regression import as_score

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks.readers import RawSplit

__all__ = ["MultiLabel", "json_list", "label_items", "output_bias"]

THRESHOLD = 0.5


def output_bias(model: Any, num_labels: int) -> torch.nn.Parameter | None:
    """The bias (K,) of the model's last head `Linear` with `num_labels` outputs (outside the encoder), or None."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    out = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
           and m.out_features == num_labels and not name.startswith(prefix)]
    return out[-1].bias if out and out[-1].bias is not None else None


def json_list(cell: Any) -> list[Any] | None:
    """A CSV/TSV cell that holds a JSON list (`["joy", "love"]`, `[2, 27]`, `[]`) as that list, else None."""
    if not isinstance(cell, str) or not cell.strip().startswith("[") or not cell.strip().endswith("]"):
        return None
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def label_items(cell: Any) -> list[Any]:
    """The labels one cell lists: a JSON list (a list, or a file cell holding one) as it is, "a,b" split at
    commas, a single id or name alone."""
    if isinstance(cell, list | tuple):
        return list(cell)
    if isinstance(cell, str):
        parsed = json_list(cell)
        if parsed is not None:
            return parsed
        return [part.strip() for part in cell.split(",") if part.strip()]
    return [cell]


def _flag_vectors(items: dict[str, list[list[Any]]]) -> bool:
    """Whether every label cell of every split is a 0/1 vector of one width (>= 2) and some cell repeats a value,
    which a set of label ids cannot (`[0, 1]` alone stays the ids 0 and 1)."""
    rows = [row for split_rows in items.values() for row in split_rows]
    if not rows or not items.get("train") or len(rows[0]) < 2:
        return False
    width = len(rows[0])
    return (all(len(r) == width and all(isinstance(k, int) and k in (0, 1) for k in r) for r in rows)
            and any(len(set(r)) < width for r in rows))


def _check_items(keys: list[Any], cell: Any, where: str) -> None:
    """One label set's entries must be ids (integers) or names: not empty names, nested lists or decimal numbers
    (a column of scores read as label sets would make every score a label)."""
    for k in keys:
        if isinstance(k, list | tuple | dict) or k is None:
            raise KDistillError(f"{where} (cell {cell!r}): label set entry {k!r} is not a label id or name")
        if isinstance(k, str) and not k.strip():
            raise KDistillError(f"{where} (cell {cell!r}) lists an empty label name")
        if isinstance(label_key(k), float | str) and as_score(k) is not None:  # 1.5 or "0.08", not 3 or "3"
            raise KDistillError(f"{where} (cell {cell!r}): label {k!r} is a decimal number, not a label id or name "
                                "(a column of scores is a regression task: data.task_type regression)")


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")


class MultiLabel(Task):
    """Label sets: sigmoid per label, BCE, predictions at probability 0.5, micro and macro F1."""

    name = "multilabel"
    problem_type = "multi_label_classification"
    metrics = ("macro_f1", "micro_f1")
    gold_loss = "bce"
    soft_loss = "bce_soft"
    pipeline_kwargs = {"function_to_apply": "sigmoid", "top_k": None}
    doc = "a multi-label task (a set of labels per example)"
    fits_decision_rule = True  # the threshold, tuned on validation and folded into the output biases

    def label_feature(self, num_labels: int) -> Any:
        return datasets.Sequence(datasets.Value("float32"), length=num_labels)

    def read_labels(self, raw: dict[str, RawSplit], names: list[str] | None,
                    named: bool) -> tuple[list[str], dict[str, RawSplit]]:
        for s in raw.values():
            for v, ln in zip(s.labels, s.lines, strict=True):
                _check_items(label_items(v), v, f"{s.source} line {ln}")
        items = {split: [[label_key(x) for x in label_items(v)] for v in s.labels] for split, s in raw.items()}
        if _flag_vectors(items):  # `[1, 0, 1]`: one 0/1 flag per label (a common export), not the ids 1, 0, 1
            width = len(items["train"][0])
            if names is not None and len(names) != width:
                raise KDistillError(f"label cells are 0/1 vectors of {width} flags but {len(names)} label names are "
                                    "given: give one name per flag")
            items = {split: [[i for i, k in enumerate(row) if k == 1] for row in rows] for split, rows in items.items()}
            names = names if names is not None else [str(i) for i in range(width)]
        if names is None:
            train = [k for row in items["train"] for k in row]
            if train and all(isinstance(k, int) and k >= 0 for k in train):
                every = [k for rows in items.values() for row in rows for k in row if isinstance(k, int)]
                names = [str(i) for i in range(max(every) + 1)]
            else:
                ids = next((k for k in train if isinstance(k, int)), None)
                if ids is not None:  # is 0 an id (a column of the head) or a label called "0"? no file says
                    text = next(k for k in train if not isinstance(k, int))
                    raise KDistillError(f"{raw['train'].source}: label sets mix ids ({ids}) and names ({text!r}); "
                                        "use one or the other, or name the labels in id order (data.label_names)")
                names = sorted({str(k) for k in train})
        lookup = {norm_label(n): i for i, n in enumerate(names)}
        out = {}
        for split, s in raw.items():
            rows = []
            for keys, v, ln in zip(items[split], s.labels, s.lines, strict=True):
                if len({str(k) for k in keys}) < len(keys):
                    raise KDistillError(f"{s.source} line {ln} (cell {v!r}) lists a label twice: a label set names "
                                        "each label once (ids or names), or is a 0/1 flag per label in every row")
                row = [0.0] * len(names)
                for k in keys:
                    i = k if isinstance(k, int) and 0 <= k < len(names) else lookup.get(norm_label(str(k)))
                    if i is None:
                        raise KDistillError(f"label {k!r} in {s.source} line {ln} (cell {v!r}) is not one of the "
                                            f"{len(names)} labels ({_shown(names)})")
                    row[i] = 1.0
                rows.append(row)
            if split == "train" and rows and not any(any(r) for r in rows):
                raise KDistillError(f"no row of {s.source} lists a label ({len(rows)} empty label sets): a multi-label "
                                    "model learns nothing from a training split without positives")
            out[split] = s.with_labels(rows)
        return list(names), out

    def check_augment(self) -> None:
        raise KDistillError("kdistill augment keeps one label per example: multi-label tasks are not supported yet")

    def check_classes(self, data: TaskData, config: Any, model_name: str) -> None:
        n = int(config.num_labels)
        if n != data.num_labels:
            raise KDistillError(f"model '{model_name}' has {n} labels, the data has {data.num_labels}: a multi-label "
                                "model needs one output per label (give data.label_names in the model's order)")
        id2label = config.id2label or {}
        model_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
        generic = all(m == f"LABEL_{i}" for i, m in enumerate(model_names))
        ids_only = data.label_names == [str(i) for i in range(n)]
        if not generic and not ids_only and norm_names(model_names) != norm_names(data.label_names):
            raise KDistillError(f"label names differ: data has {_shown(data.label_names)} (by id), model "
                                f"'{model_name}' has {_shown(model_names)}")

    def init_head(self, model: Any, train: Any) -> None:
        """Start each label's output bias at the log-odds of its training frequency (`train["label"]`: (N, C) 0/1
        rows).

        A random head starts every label at probability ~0.5 against priors of a few percent, and the large first
        gradients then teach the encoder to act as one shared negative bias: measured on GoEmotions (28 labels,
        all-MiniLM-L6-v2, 3 epochs, lr 5e-5) the [CLS] state became the same for every comment, the pooler
        saturated and the teacher answered the label prior for all of them (macro F1 0). The prior-bias start is
        the focal-loss paper's (Lin et al. 2017, "Focal Loss for Dense Object Detection", section 4.1).
        """
        y = torch.as_tensor(np.asarray(train["label"], dtype=np.float32))
        if y.dim() != 2 or y.size(0) == 0:
            return
        bias = output_bias(model, y.size(1))
        if bias is None:
            return
        prior = y.mean(dim=0).clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            bias.copy_(prior.log() - (1 - prior).log())

    def calibrate(self, model: Any, logits: np.ndarray, labels: np.ndarray, metric: str) -> dict[str, Any] | None:
        """Tune one decision threshold on validation outputs (N, K) and fold it into the head's output biases.

        The threshold t (0.05, 0.10, ..., 0.95) that maximises `metric` on validation is folded in as
        bias -= log(t / (1 - t)): the model then crosses probability 0.5 exactly where it crossed t, so every
        consumer that thresholds at 0.5 (kdistill's scoring, ONNX Runtime, `pipeline`, `kdistill label`) uses
        the tuned rule, and the model's sigmoid outputs are shifted by the same amount. One shared threshold,
        not one per label: rare labels have a handful of validation positives, too few to tune on. Ties go to
        the threshold nearest 0.5. Returns {"threshold", "validation_at_0.5", "validation_tuned"} (t is also
        recorded as `config.kdistill_threshold`), or None when the model has no output bias to shift.
        """
        bias = output_bias(model, np.asarray(logits).shape[-1])
        if bias is None:
            return None
        best = (-math.inf, 0.0, THRESHOLD)
        for t in np.round(np.arange(0.05, 0.951, 0.05), 2):
            score = self.score(metric, np.asarray(logits) - math.log(t / (1 - t)), labels)[metric]
            best = max(best, (score, -abs(float(t) - THRESHOLD), float(t)))
        t = best[2]
        with torch.no_grad():
            bias.sub_(math.log(t / (1 - t)))
        model.config.kdistill_threshold = t
        return {"threshold": t, "validation_at_0.5": self.score(metric, logits, labels)[metric],
                "validation_tuned": best[0]}

    def uncalibrate(self, model: Any) -> float | None:
        """Add back log(t / (1 - t)) to the output biases of a model whose threshold t `calibrate` folded in (and
        forget t): its sigmoid outputs are again the probabilities it was trained to give. Returns t, or None when
        the model has none."""
        t = getattr(model.config, "kdistill_threshold", None)
        bias = output_bias(model, int(model.config.num_labels)) if t is not None else None
        if bias is None:
            return None
        with torch.no_grad():
            bias.add_(math.log(t / (1 - t)))
        model.config.kdistill_threshold = None
        return float(t)

    def average_teachers(self, logits: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """The logit of the weighted average per-label probability."""
        probs = torch.as_tensor(sum(w * lg.float().sigmoid() for w, lg in zip(weights, logits, strict=True)))
        probs = probs.clamp(1e-7, 1 - 1e-7)
        return probs.log() - (1 - probs).log()

    def answer_logits(self, row: dict[str, Any], where: str) -> Tensor:
        if row.get("logits") is None and row.get("probs") is not None:
            p = torch.tensor(row["probs"], dtype=torch.float32).clamp(1e-7, 1 - 1e-7)
            return p.log() - (1 - p).log()
        return super().answer_logits(row, where)

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return (np.asarray(logits) >= math.log(THRESHOLD / (1 - THRESHOLD))).astype(np.int64)  # sigmoid >= 0.5

    def gold(self, labels: np.ndarray) -> np.ndarray:
        return (np.asarray(labels, dtype=np.float64) >= 0.5).astype(np.int64)

    def collapse_warning(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> str | None:
        preds, gold = self.predictions(logits), self.gold(labels)
        if len(gold) and not gold.any():
            return (f"none of the {len(gold)} validation examples has a label: F1 is 0.0 whatever the model does, so "
                    "the validation split can neither rank the epochs nor tune the decision threshold")
        if len(preds) < 2 or (gold == gold[0]).all() or not (preds == preds[0]).all():
            return None
        which = [str(i) for i in np.flatnonzero(preds[0])]
        return (f"every one of the {len(preds)} validation predictions is the same label set "
                f"({', '.join(which) or 'no label'}): the model has collapsed to a constant answer")

    def detail(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> dict[str, Any]:
        from sklearn.metrics import f1_score

        preds, gold = self.predictions(logits), self.gold(labels)
        f1 = f1_score(gold, preds, average=None, zero_division=0)
        return {"per_label_f1": [round(float(x), 5) for x in f1], "support": gold.sum(axis=0).tolist(),
                "predicted": preds.sum(axis=0).tolist()}

    def tables(self, detail: dict[str, Any], classes: Sequence[str]) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = [[str(c), f"{f:.3f}", str(n), str(p)] for c, f, n, p in
                zip(classes, detail["per_label_f1"], detail["support"], detail["predicted"], strict=True)]
        return [(f"Per-label F1 at probability {THRESHOLD:g}", ["Label", "F1", "Gold", "Predicted"], rows)]

    def answer_probs(self, logits: Sequence[float]) -> list[float] | None:
        return [1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x)) for x in logits]

    def labeled_fields(self, label_id: int, probs: Sequence[float] | None, logits: Sequence[float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
        if probs is None:
            raise KDistillError("a multi-label teacher must answer probabilities or logits per label")
        return {"label": [n for n, p in zip(names, probs, strict=True) if p >= THRESHOLD],
                "probs": [round(p, 6) for p in probs]}
