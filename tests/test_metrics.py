"""Metrics against values computed by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kdistill.tasks  # noqa: F401  (registers the task types' own metrics: squad_f1, exact_match)
from kdistill.errors import KDistillError
from kdistill.metrics import METRICS, compute_metrics, primary

PREDS = np.array([1, 1, 0, 0, 1, 0])
GOLD = np.array([1, 0, 0, 1, 1, 0])  # TP=2 FP=1 TN=2 FN=1


def test_registry_names_and_primary() -> None:
    assert METRICS.names() == ["accuracy", "entity_f1", "exact_match", "f1", "macro_f1", "matthews", "micro_f1",
                               "mlm_accuracy", "pearson", "spearman", "squad_f1"]
    for name in METRICS.names():
        assert primary(name) == name
        if name in ("accuracy", "f1", "matthews", "mlm_accuracy"):  # class ids; the others through their task type
            assert next(iter(compute_metrics(name, PREDS, GOLD))) == name  # headline key first
    with pytest.raises(KDistillError, match="unknown metric 'auc'"):
        primary("auc")


def test_accuracy() -> None:
    assert compute_metrics("accuracy", PREDS, GOLD) == {"accuracy": pytest.approx(4 / 6)}


def test_matthews() -> None:
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / sqrt(3*3*3*3) = 1/3
    out = compute_metrics("matthews", PREDS, GOLD)
    assert list(out) == ["matthews", "accuracy"]
    assert out["matthews"] == pytest.approx(1 / 3) and out["accuracy"] == pytest.approx(4 / 6)
    assert compute_metrics("matthews", np.ones(4, int), np.array([0, 1, 1, 0]))["matthews"] == 0.0


def test_binary_f1() -> None:
    # precision 2/3, recall 2/3 -> F1 2/3
    assert compute_metrics("f1", PREDS, GOLD)["f1"] == pytest.approx(2 / 3)
    # P = 1/1, R = 1/3 -> F1 = 2 * 1 * 1/3 / (4/3) = 0.5
    assert compute_metrics("f1", [1, 0, 0], [1, 1, 1])["f1"] == pytest.approx(0.5)
    assert compute_metrics("f1", [0, 0], [0, 0])["f1"] == 0.0  # no positives anywhere


def test_macro_f1_three_classes() -> None:
    preds, gold = [0, 1, 2, 2, 1, 0], [0, 1, 2, 1, 1, 2]
    # class 0: P 1/2 R 1 -> 2/3; class 1: P 1 R 2/3 -> 4/5; class 2: P 1/2 R 1/2 -> 1/2
    out = compute_metrics("f1", preds, gold)
    assert out["f1"] == pytest.approx((2 / 3 + 4 / 5 + 1 / 2) / 3)
    assert out["accuracy"] == pytest.approx(4 / 6)


def test_logits_argmax_and_num_labels() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.3]])
    out = compute_metrics("accuracy", logits, np.array([0, 1, 1]))
    assert out["accuracy"] == pytest.approx(2 / 3)
    # 3-class logits but only classes 0/1 present: still macro over the 3 classes
    two = compute_metrics("f1", np.array([[1.0, 0, 0], [0, 1.0, 0]]), [0, 1])["f1"]
    assert two == pytest.approx(2 / 3)
    assert all(isinstance(v, float) and not math.isnan(v) for v in out.values())


def test_bad_inputs() -> None:
    with pytest.raises(KDistillError, match="2 predictions but 3 labels"):
        compute_metrics("accuracy", [0, 1], [0, 1, 1])
    with pytest.raises(KDistillError, match="no examples"):
        compute_metrics("accuracy", [], [])
    with pytest.raises(KDistillError, match="unknown metric"):
        compute_metrics("bleu", [0], [0])


def test_single_class_warning_only_when_predictions_collapse() -> None:
    from kdistill.metrics import single_class_warning

    gold = [0, 1, 1, 0, 1]
    assert single_class_warning(np.array([[0.1, 0.9]] * 5), gold) == (
        "every one of the 5 validation predictions is class 1 (60.0% of the gold labels): the model has collapsed "
        "to a single class")
    assert single_class_warning(np.array([[0.1, 0.9]] * 4 + [[0.9, 0.1]]), gold) is None
    assert single_class_warning([1, 1, 1], [1, 1, 1]) is None  # one gold class: nothing to collapse from
