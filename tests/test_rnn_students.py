"""BiLSTM and CNN students: built with the teacher's embeddings, trained from its logits, saved and evaluated
like any student."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdistill import api
from kdistill.config import DistillConfig, EvaluateConfig, build
from kdistill.errors import KDistillError
from kdistill.models import load_classifier


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_simple_student_distills_saves_loads_and_is_evaluated(kind: str, tiny_teacher: Path, tmp_path: Path,
                                                               tiny_data: dict, fast_train: dict) -> None:
    cfg = build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"init": kind, "hidden_size": 32},
                                "data": tiny_data, "train": {**fast_train, "epochs": 2},
                                "losses": [{"name": "logit_mse", "weight": 1.0}, {"name": "ce", "weight": 0.2}],
                                "out": str(tmp_path / kind)})
    summary = api.distill(cfg)
    student = load_classifier(str(tmp_path / kind))
    teacher = load_classifier(str(tiny_teacher))
    assert student.config.kind == kind and student.config.model_type == "kdistill-simple"
    assert summary["steps"] > 0 and summary["params"] == sum(p.numel() for p in student.parameters())
    # the student started from the teacher's word embeddings and trained them
    assert student.embeddings.weight.shape == teacher.get_input_embeddings().weight.shape
    report = api.evaluate(EvaluateConfig(model=str(tmp_path / kind), teacher=str(tiny_teacher),
                                         data=tiny_data, repeats=2, warmup=0, device="cpu"))
    assert report["model"]["speed"][0]["p50_ms"] > 0 and report["retention"] is not None
    assert "## Speed" in (tmp_path / kind / "README.md").read_text()


def test_simple_student_refuses_feature_losses(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                               fast_train: dict) -> None:
    cfg = build(DistillConfig, {"teacher": str(tiny_teacher), "student": {"init": "cnn"}, "data": tiny_data,
                                "train": fast_train, "losses": [{"name": "kl"}, {"name": "hidden_mse"}],
                                "out": str(tmp_path / "x")})
    with pytest.raises(KDistillError, match="response losses"):
        api.distill(cfg)


def test_padding_does_not_change_the_prediction(tiny_teacher: Path) -> None:
    from kdistill.rnn_students import simple_student

    for kind in ("bilstm", "cnn"):
        model = simple_student(kind, load_classifier(str(tiny_teacher)), hidden_size=16).eval()
        ids = torch.tensor([[2, 50, 60, 70, 3]])
        padded = torch.tensor([[2, 50, 60, 70, 3, 0, 0]])
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
        with torch.no_grad():
            a = model(input_ids=ids).logits
            b = model(input_ids=padded, attention_mask=mask).logits
            other = model(input_ids=torch.tensor([[2, 50, 61, 70, 3]])).logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # padding changes nothing
        assert not torch.allclose(a, other, atol=1e-6)  # a real token does
