"""Feature capture: hidden states by layer, raw scores and pre-dropout probabilities, MPNet fallback."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, MPNetConfig, MPNetForSequenceClassification

from kdistill.distill.features import FeatureRequest, forward_features, prepare_for_capture
from kdistill.errors import KDistillError
from kdistill.models import probe


def _bert(layers: int = 3, dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, attention_probs_dropout_prob=dropout, hidden_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_raw_scores_match_manual_qk_and_probs_mask_padding() -> None:
    model = _bert().eval()
    req = FeatureRequest(hidden=frozenset({0, 1, 3}), attn_scores=frozenset({1, 2}), attn_probs=frozenset({2}))
    prepare_for_capture(model, probe(model), req, "student")
    batch = _batch()
    feats = forward_features(model, batch, req)
    assert set(feats.hidden) == {0, 1, 3} and set(feats.attn_scores) == {1, 2} and set(feats.attn_probs) == {2}
    # layer-1 scores by hand from the layer's own projections and the embedding output
    att = model.bert.encoder.layer[0].attention.self
    x = feats.hidden[0]
    q = att.query(x).view(2, 6, 2, 8).transpose(1, 2)
    k = att.key(x).view(2, 6, 2, 8).transpose(1, 2)
    manual = q @ k.transpose(-1, -2) / 8 ** 0.5
    torch.testing.assert_close(feats.attn_scores[1], manual)
    # probabilities: rows sum to 1 and padded keys get nothing
    probs = feats.attn_probs[2]
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    assert probs[1, :, :, 3:].abs().max() < 1e-6
    # capture does not change the model's output
    plain = _bert().eval()
    torch.testing.assert_close(feats.logits, plain(**batch).logits)


def test_probabilities_are_taken_before_dropout_in_train_mode() -> None:
    model = _bert(dropout=0.5).train()
    req = FeatureRequest(attn_probs=frozenset({1}))
    prepare_for_capture(model, probe(model), req, "student")
    feats = forward_features(model, _batch(), req)
    sums = feats.attn_probs[1].sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums))  # eager's post-dropout rows would sum to ~1/(1-p)


def test_layer_out_of_range_fails_at_setup() -> None:
    model = _bert(layers=2)
    with pytest.raises(KDistillError, match="has 2 layers"):
        prepare_for_capture(model, probe(model), FeatureRequest(hidden=frozenset({3})), "student")


def test_mpnet_falls_back_to_probabilities_and_refuses_raw_scores() -> None:
    cfg = MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32)
    model = MPNetForSequenceClassification(cfg).eval()
    info = probe(model)
    assert info.num_layers == 2 and not info.supports_attention_interface
    with pytest.raises(KDistillError, match="raw attention scores"):
        prepare_for_capture(model, info, FeatureRequest(attn_scores=frozenset({1})), "teacher")
    req = FeatureRequest(hidden=frozenset({2}), attn_probs=frozenset({1, 2}))
    prepare_for_capture(model, info, req, "teacher")
    feats = forward_features(model, _batch(), req)
    assert feats.attn_probs[1].shape == (2, 2, 6, 6) and feats.hidden[2].shape == (2, 6, 16)


def _mpnet(layers: int = 2) -> MPNetForSequenceClassification:
    torch.manual_seed(0)
    return MPNetForSequenceClassification(MPNetConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        attention_probs_dropout_prob=0.5, hidden_dropout_prob=0.0))


def test_student_copied_from_a_hooked_mpnet_teacher_numbers_its_own_layers() -> None:
    from kdistill.students.build import from_teacher_layers

    teacher = _mpnet(layers=3).eval()
    t_req = FeatureRequest(attn_probs=frozenset({1, 2, 3}))
    prepare_for_capture(teacher, probe(teacher), t_req, "teacher")
    student = from_teacher_layers(teacher, [1, 3], single_sentence=True).eval()  # deep copy carries the hooks
    s_req = FeatureRequest(attn_probs=frozenset({1, 2}))
    prepare_for_capture(student, probe(student), s_req, "student")  # must not hook the copied dropouts again
    batch = _batch()
    with torch.no_grad():
        feats = forward_features(student, batch, s_req)
        ref = student(**batch, output_attentions=True).attentions
    assert set(feats.attn_probs) == {1, 2}
    for layer in (1, 2):
        torch.testing.assert_close(feats.attn_probs[layer], ref[layer - 1])


def test_family_without_a_known_attention_dropout_is_refused_at_setup() -> None:
    model = _mpnet()
    unknown = dataclasses.replace(probe(model), family="mystery")
    with pytest.raises(KDistillError, match=r"before dropout from the student \(mystery\)"):
        prepare_for_capture(model, unknown, FeatureRequest(attn_probs=frozenset({1})), "student")
    prepare_for_capture(model, unknown, FeatureRequest(hidden=frozenset({1})), "student")  # no attention: fine


def test_unprepared_model_in_train_mode_refuses_post_dropout_maps() -> None:
    model = _mpnet().train()
    with pytest.raises(KDistillError, match="prepare_for_capture"):
        forward_features(model, _batch(), FeatureRequest(attn_probs=frozenset({1})))


def test_attention_divergence_is_zero_for_a_copy_and_positive_otherwise() -> None:
    from kdistill.evaluate import attention_divergence
    from kdistill.students.build import from_teacher_layers

    teacher = _bert(layers=3)
    copy = from_teacher_layers(teacher, [1, 2, 3], single_sentence=False)
    batches = [_batch(), _batch()]
    same = attention_divergence(teacher, copy, batches, [(1, 1), (3, 3)])
    assert set(same) == {1, 3} and max(same.values()) < 1e-6
    other = attention_divergence(teacher, _bert(layers=3).apply(_perturb), batches, [(1, 1)])
    assert other[1] > 1e-4


def _perturb(module: torch.nn.Module) -> None:
    if isinstance(module, torch.nn.Linear):
        torch.nn.init.normal_(module.weight, std=0.5)
