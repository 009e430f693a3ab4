"""The multi-label decision threshold: tuned on validation outputs, folded into the head's output biases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert
from transformers import AutoModelForSequenceClassification

from kdistill.tasks import get_task


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture
def multilabel_model(tmp_path: Path):
    folder = make_tiny_bert(tmp_path / "m", num_layers=1, num_labels=3, problem_type="multi_label_classification")
    return AutoModelForSequenceClassification.from_pretrained(folder)


def test_the_best_threshold_is_folded_into_the_biases(multilabel_model) -> None:
    # every positive at probability 0.32, every negative at 0.10: any threshold in 0.15..0.30 separates them
    # perfectly, and the tie goes to the one nearest 0.5 (0.30); at 0.5 nothing is predicted (macro F1 0)
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    logits = np.where(labels == 1, _logit(0.32), _logit(0.10))
    before = multilabel_model.classifier.bias.detach().clone()
    fitted = get_task("multilabel").calibrate(multilabel_model, logits, labels, "macro_f1")
    assert fitted == {"threshold": 0.3, "validation_at_0.5": 0.0, "validation_tuned": 1.0}
    assert multilabel_model.config.kdistill_threshold == 0.3
    torch.testing.assert_close(multilabel_model.classifier.bias.detach(), before - _logit(0.3))
    # the shifted outputs cross 0.5 exactly where the old ones crossed 0.3
    shifted = logits - _logit(0.3)
    assert ((shifted >= 0) == (labels == 1)).all()


def test_a_model_already_at_its_best_threshold_is_left_alone(multilabel_model) -> None:
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    logits = np.where(labels == 1, 3.0, -3.0)  # 0.95 vs 0.05: every threshold from 0.05 to 0.95 is perfect
    before = multilabel_model.classifier.bias.detach().clone()
    fitted = get_task("multilabel").calibrate(multilabel_model, logits, labels, "micro_f1")
    assert fitted is not None and fitted["threshold"] == 0.5
    torch.testing.assert_close(multilabel_model.classifier.bias.detach(), before)


def test_other_task_types_fit_nothing(tmp_path: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(make_tiny_bert(tmp_path / "c", num_layers=1))
    assert get_task("classification").calibrate(model, np.zeros((4, 2)), np.array([0, 1, 0, 1]), "accuracy") is None


def test_a_teacher_gives_soft_targets_as_trained_not_shifted_to_its_threshold(multilabel_model, tmp_path: Path) -> None:
    from kdistill.calibration import teacher_as_trained

    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    logits = np.where(labels == 1, _logit(0.32), _logit(0.10))
    trained = multilabel_model.classifier.bias.detach().clone()
    get_task("multilabel").calibrate(multilabel_model, logits, labels, "macro_f1")  # folds t = 0.3
    multilabel_model.save_pretrained(tmp_path / "folded")
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "folded")
    assert teacher.config.kdistill_threshold == 0.3
    lines: list[str] = []
    assert teacher_as_trained(teacher, log=lines.append) is teacher
    torch.testing.assert_close(teacher.classifier.bias.detach(), trained)
    assert teacher.config.kdistill_threshold is None and "threshold 0.3 is unfolded" in lines[0]
    teacher_as_trained(teacher, log=lines.append)  # nothing folded any more: left alone, nothing said
    torch.testing.assert_close(teacher.classifier.bias.detach(), trained)
    assert len(lines) == 1
    plain = AutoModelForSequenceClassification.from_pretrained(make_tiny_bert(tmp_path / "c", num_layers=1))
    before = plain.classifier.bias.detach().clone()
    teacher_as_trained(plain, log=lines.append)  # a classifier has no threshold to undo
    torch.testing.assert_close(plain.classifier.bias.detach(), before)
