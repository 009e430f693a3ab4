"""The same distillation works across encoder families: BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT, MPNet."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from kdistill import api
from kdistill.config import DistillConfig, build
from kdistill.distill.features import FeatureRequest, forward_features, prepare_for_capture
from kdistill.distill.losses import attention_kl
from kdistill.errors import KDistillError
from kdistill.models import probe


def _family_teacher(family: str, tiny_teacher: Path, out: Path, **dropouts: float) -> Path:
    """A 2-layer classifier of `family`, sharing the tiny WordPiece tokenizer; `dropouts` go to its config."""
    shutil.copytree(tiny_teacher, out)
    for f in out.glob("*.safetensors"):
        f.unlink()
    (out / "config.json").unlink()
    vocab = len((out / "vocab.txt").read_text().splitlines())
    torch.manual_seed(0)
    common = {"vocab_size": vocab, "num_labels": 2, "pad_token_id": 0, **dropouts}
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


# Attention dropout 0.5 makes post-dropout maps far from the pre-dropout ones (the bug this guards against);
# every other dropout is off, so a copy in train mode and its original see identical pre-dropout attention.
_NO_DROP = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.5, "classifier_dropout": 0.0}
_FAMILIES: dict[str, tuple[type[PreTrainedModel], Any, str]] = {
    # family: (model class, config, path of the query projection inside one transformer layer)
    "bert": (BertForSequenceClassification, lambda: BertConfig(**_NO_DROP), "attention.self.query"),
    "roberta": (RobertaForSequenceClassification, lambda: RobertaConfig(max_position_embeddings=130, **_NO_DROP),
                "attention.self.query"),
    "distilbert": (DistilBertForSequenceClassification, lambda: DistilBertConfig(
        dim=32, n_layers=2, n_heads=2, hidden_dim=64, dropout=0.0, attention_dropout=0.5, seq_classif_dropout=0.0),
        "attention.q_lin"),
    "electra": (ElectraForSequenceClassification, lambda: ElectraConfig(embedding_size=32, **_NO_DROP),
                "attention.self.query"),
    # num_hidden_groups = layers: kdistill's probe finds layers as a ModuleList of num_hidden_layers modules
    "albert": (AlbertForSequenceClassification, lambda: AlbertConfig(
        embedding_size=16, num_hidden_groups=2, classifier_dropout_prob=0.0, **_NO_DROP),
        "albert_layers.0.attention.query"),
    "mpnet": (MPNetForSequenceClassification, lambda: MPNetConfig(max_position_embeddings=130, **_NO_DROP),
              "attention.attn.q"),
    "deberta-v2": (DebertaV2ForSequenceClassification, lambda: DebertaV2Config(
        relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16, pooler_dropout=0.0,
        pooler_hidden_size=32,
        **_NO_DROP), "attention.self.query_proj"),
}


def _tiny(family: str) -> PreTrainedModel:
    """A random 2-layer, width-32 classifier of `family`, attention dropout 0.5, no other dropout."""
    cls, make_config, _ = _FAMILIES[family]
    cfg = make_config()
    if family != "distilbert":
        cfg.update({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64})
    cfg.update({"vocab_size": 60, "num_labels": 2})
    torch.manual_seed(0)
    return cls(cfg)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 60, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("teacher_mode", ["train", "eval"])
@pytest.mark.parametrize("family", list(_FAMILIES))
def test_identical_student_in_train_mode_has_zero_attention_kl(family: str, teacher_mode: str) -> None:
    teacher = _tiny(family)
    student = copy.deepcopy(teacher)
    req = FeatureRequest(attn_probs=frozenset({1, 2}))
    prepare_for_capture(teacher, probe(teacher), req, "teacher")
    prepare_for_capture(student, probe(student), req, "student")
    teacher.train(teacher_mode == "train")
    student.train()
    batch = _batch()
    # attention dropout really acts in train mode: the student's last states are not its eval-mode ones
    last = FeatureRequest(hidden=frozenset({2}))
    with torch.no_grad():
        train_states = forward_features(student, batch, last).hidden[2]
        eval_states = forward_features(student.eval(), batch, last).hidden[2]
    student.train()
    assert (train_states - eval_states).abs().max() > 1e-2

    with torch.no_grad():
        t = forward_features(teacher, batch, req)
    s = forward_features(student, batch, req)
    for layer in (1, 2):
        probs = s.attn_probs[layer]
        assert probs.shape == (3, 2, 9, 9)
        kl = attention_kl(probs, t.attn_probs[layer], mask=batch["attention_mask"])
        assert kl.item() < 1e-4, (family, layer, kl.item())
        sums = probs.sum(-1)  # post-dropout rows would sum to 0 or 2 entry by entry, not 1
        torch.testing.assert_close(sums, torch.ones_like(sums))

    # gradients of an attention loss reach every layer's query weights (against a uniform target, since
    # at the teacher's own maps the KL gradient is zero)
    uniform = batch["attention_mask"][:, None, None, :].float().expand(3, 2, 9, 9)
    uniform = uniform / uniform.sum(-1, keepdim=True)
    sum(attention_kl(s.attn_probs[i], uniform, mask=batch["attention_mask"]) for i in (1, 2)).backward()
    layers = student.get_submodule(probe(student).layers_path)
    for i, layer in enumerate(layers):
        grad = layer.get_submodule(_FAMILIES[family][2]).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (family, i)


def test_mpnet_captured_maps_are_its_own_attentions_before_dropout() -> None:
    model = _tiny("mpnet").eval()
    req = FeatureRequest(attn_probs=frozenset({1, 2}))
    prepare_for_capture(model, probe(model), req, "student")
    prepare_for_capture(model, probe(model), req, "student")  # a second set-up adds no second hook
    batch = _batch()
    with torch.no_grad():
        feats = forward_features(model, batch, req)
        ref = model(**batch, output_attentions=True).attentions  # eval mode: no dropout, same maps
    for layer in (1, 2):
        torch.testing.assert_close(feats.attn_probs[layer], ref[layer - 1])


@pytest.mark.parametrize("family", ["mpnet", "deberta-v2"])
def test_raw_scores_outside_attention_interface_are_refused_at_setup(family: str) -> None:
    model = _tiny(family)
    with pytest.raises(KDistillError, match=rf"attn_mse.*\({family}.*attn_kl.*work"):
        prepare_for_capture(model, probe(model), FeatureRequest(attn_scores=frozenset({1})), "student")


def test_distilling_mpnet_into_its_own_copy_gives_zero_attention_kl(tiny_teacher: Path, tmp_path: Path,
                                                                      tiny_data: dict, fast_train: dict) -> None:
    """End to end, as the issue reported it: a student copying every teacher layer, trained with attn_kl."""
    teacher = _family_teacher("mpnet", tiny_teacher, tmp_path / "teacher", hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.5)
    cfg = build(DistillConfig, {"teacher": str(teacher), "student": {"layers": [1, 2]}, "data": tiny_data,
                                "train": {**fast_train, "lr": 1e-12}, "losses": [{"name": "attn_kl"}],
                                "out": str(tmp_path / "student")})
    summary = api.distill(cfg)
    per_layer = summary["history"][0]["layer_losses"]["attn_kl"]
    assert set(per_layer) == {"1", "2"} and max(per_layer.values()) < 1e-4, per_layer
