"""Task metrics by name, so a task (or a user's file) picks its headline figure with one string.

Every metric returns plain floats with its own name as the first key (the headline figure) and,
where useful, a second figure: accuracy for classification (it reads the same across tasks), the other
correlation for regression, the other F1 average for multi-label, precision, recall and token accuracy for
entity F1. A metric takes predictions in its task's form (`kdistill.tasks`): class ids (N,), scores (N,), 0/1 rows
(N, K), or tag names per sentence (token classification).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from kdistill.errors import KDistillError
from kdistill.registry import Registry

MetricFn = Callable[..., dict[str, float]]
METRICS: Registry[MetricFn] = Registry("metric")


@METRICS.register("accuracy")
def accuracy(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(labels, preds))}


@METRICS.register("matthews")
def matthews(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """Matthews correlation (CoLA's GLUE metric): fair under class imbalance, 0 for constant guesses."""
    acc = float(accuracy_score(labels, preds))
    return {"matthews": float(matthews_corrcoef(labels, preds)), "accuracy": acc}


@METRICS.register("f1")
def f1(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """F1 of class 1 for two classes (MRPC's GLUE figure), macro F1 over all classes otherwise.

    `num_labels` (known from logits) decides binary vs macro, so a small eval set that happens to
    hold only classes 0 and 1 of a 3-class task is still scored with macro F1.
    """
    if num_labels is None:
        num_labels = int(max(preds.max(initial=0), labels.max(initial=0))) + 1
    if num_labels <= 2:
        score = f1_score(labels, preds, labels=[0, 1], pos_label=1, average="binary", zero_division=0)
    else:
        score = f1_score(labels, preds, labels=list(range(num_labels)), average="macro", zero_division=0)
    return {"f1": float(score), "accuracy": float(accuracy_score(labels, preds))}


def _correlation(fn: Callable[..., Any], preds: np.ndarray, labels: np.ndarray) -> float:
    """A correlation, 0.0 (not NaN) when either side is constant: a collapsed model must still compare as worst."""
    p, g = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(g) == 0:
        return 0.0
    return float(fn(p, g)[0])


@METRICS.register("pearson")
def pearson(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """Pearson correlation of predicted and gold scores (STS-B's official measure), with Spearman beside it."""
    return {"pearson": _correlation(pearsonr, preds, labels), "spearman": _correlation(spearmanr, preds, labels)}


@METRICS.register("spearman")
def spearman(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """Spearman rank correlation (average ranks for ties), with Pearson beside it."""
    return {"spearman": _correlation(spearmanr, preds, labels), "pearson": _correlation(pearsonr, preds, labels)}


def _label_f1(preds: np.ndarray, labels: np.ndarray, average: str) -> float:
    if preds.ndim != 2 or preds.shape != labels.shape:
        raise KDistillError(f"multi-label F1 needs 0/1 rows of equal shape, got {preds.shape} and {labels.shape}")
    return float(f1_score(labels, preds, average=average, zero_division=0))


@METRICS.register("macro_f1")
def macro_f1(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """Multi-label: F1 per label (0 for a label never predicted nor present), averaged over labels; micro F1 beside."""
    return {"macro_f1": _label_f1(preds, labels, "macro"), "micro_f1": _label_f1(preds, labels, "micro")}


@METRICS.register("micro_f1")
def micro_f1(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """Multi-label: F1 over all (example, label) decisions pooled; macro F1 beside."""
    return {"micro_f1": _label_f1(preds, labels, "micro"), "macro_f1": _label_f1(preds, labels, "macro")}


@METRICS.register("entity_f1")
def entity_f1(preds: Sequence[Sequence[str]], labels: Sequence[Sequence[str]],
              num_labels: int | None = None) -> dict[str, float]:
    """Token classification: entity-level micro F1 over all entity types, with precision, recall and token accuracy.

    `preds` and `labels` are tag names per sentence (IOB: O, B-PER, I-PER, ...). An entity counts only with its exact
    span and type, as conlleval and `seqeval.metrics.f1_score` (its default, conlleval-compatible reading) compute
    it; no predicted (or no gold) entity gives 0, not a warning. Raises `KDistillError` when the sentences differ
    in number or length.
    """
    from seqeval.metrics import accuracy_score as token_accuracy
    from seqeval.metrics import f1_score as seq_f1
    from seqeval.metrics import precision_score, recall_score

    if len(preds) != len(labels) or any(len(p) != len(g) for p, g in zip(preds, labels, strict=True)):
        raise KDistillError("entity_f1: predicted and gold tags differ in sentences or words")
    p, g = [list(x) for x in preds], [list(x) for x in labels]
    return {"entity_f1": float(seq_f1(g, p, zero_division=0)),
            "entity_precision": float(precision_score(g, p, zero_division=0)),
            "entity_recall": float(recall_score(g, p, zero_division=0)),
            "token_accuracy": float(token_accuracy(g, p))}


def compute_metrics(
    metric: str, logits_or_preds: np.ndarray | Sequence, labels: np.ndarray | Sequence
) -> dict[str, float]:
    """Classification: score predictions (or logits, argmax taken over the last axis) against integer labels.

    Other task types score through their task (`kdistill.tasks.Task.score`), which turns outputs into predictions.
    """
    fn = METRICS.get(metric)
    arr = np.asarray(logits_or_preds)
    num_labels = None
    if arr.ndim == 2:
        num_labels = int(arr.shape[1])
        arr = arr.argmax(axis=-1)
    elif arr.ndim != 1:
        raise KDistillError(f"metric '{metric}' needs 1-D predictions or 2-D logits, got shape {arr.shape}")
    preds = arr.astype(np.int64)
    gold = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(preds) != len(gold):
        raise KDistillError(f"metric '{metric}': {len(preds)} predictions but {len(gold)} labels")
    if len(gold) == 0:
        raise KDistillError(f"metric '{metric}': no examples to score")
    return fn(preds, gold, num_labels=num_labels)


def primary(metric: str) -> str:
    """Key of the headline figure in `compute_metrics(metric, ...)` (the metric's own name)."""
    METRICS.get(metric)  # unknown names fail here with the list of valid ones
    return metric


@METRICS.register("mlm_accuracy")
def mlm_accuracy(preds: np.ndarray, labels: np.ndarray, num_labels: int | None = None) -> dict[str, float]:
    """Share of masked tokens whose original word-piece is the top prediction (general distillation)."""
    return {"mlm_accuracy": float(accuracy_score(labels, preds))}


def single_class_warning(logits_or_preds: np.ndarray | Sequence, labels: np.ndarray | Sequence) -> str | None:
    """A warning when every prediction is one class although the gold labels hold several, else None.

    A student that answers the majority class everywhere can still score well on skewed data (MRPC's
    all-"paraphrase" F1 is 81.2), so a collapsed run looks merely mediocre unless it is said out loud.
    """
    arr = np.asarray(logits_or_preds)
    preds = arr.argmax(axis=-1) if arr.ndim == 2 else arr
    gold = np.asarray(labels).reshape(-1)
    if len(preds) < 2 or len(np.unique(gold)) < 2 or len(np.unique(preds)) > 1:
        return None
    only = int(preds[0])
    share = float(np.mean(gold == only))
    return (f"every one of the {len(preds)} validation predictions is class {only} ({share:.1%} of the gold "
            "labels): the model has collapsed to a single class")


CORRELATIONS = ("pearson", "spearman")


def format_score(metric: str, value: float | None) -> str:
    """A score as tables show it: x100 with "%" for shares (accuracy, F1, exact match), x100 without it for a
    correlation (GLUE's convention: Pearson 0.80 is "80.0", not a percentage); "-" for None."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if metric in CORRELATIONS else f"{100 * value:.1f}%"
