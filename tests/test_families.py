"""The same distillation works across encoder families: BERT, RoBERTa, DistilBERT, MPNet."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from kdistill import api
from kdistill.config import DistillConfig, build


def _family_teacher(family: str, tiny_teacher: Path, out: Path) -> Path:
    """A 2-layer classifier of `family`, sharing the tiny WordPiece tokenizer."""
    shutil.copytree(tiny_teacher, out)
    for f in out.glob("*.safetensors"):
        f.unlink()
    (out / "config.json").unlink()
    vocab = len((out / "vocab.txt").read_text().splitlines())
    torch.manual_seed(0)
    common = {"vocab_size": vocab, "num_labels": 2, "pad_token_id": 0}
    if family == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=130, **common))
    elif family == "distilbert":
        model = DistilBertForSequenceClassification(DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128, **common))
    else:
        model = MPNetForSequenceClassification(MPNetConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=130, **common))
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("family", ["roberta", "distilbert", "mpnet"])
def test_distill_one_layer_student_per_family(family: str, tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                              fast_train: dict) -> None:
    teacher = _family_teacher(family, tiny_teacher, tmp_path / "teacher")
    losses = [{"name": "kl", "temperature": 2.0}, {"name": "hidden_mse"}, {"name": "attn_kl"},
              {"name": "cls_cosine"}]
    if family != "mpnet":  # MPNet attention is outside AttentionInterface: no raw scores
        losses.append({"name": "attn_mse"})
    cfg = build(DistillConfig, {"teacher": str(teacher), "student": {"num_layers": 1}, "data": tiny_data,
                                "train": fast_train, "losses": losses, "out": str(tmp_path / "student")})
    summary = api.distill(cfg)
    assert {"hidden_mse", "attn_kl", "cls_cosine"} <= set(summary["history"][0]["layer_losses"])
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert student.config.model_type == family and student.config.num_hidden_layers == 1
    assert summary["test"]["accuracy"] >= 0.0
