"""MiniLM value relation and MiniLMv2 multi-head self-attention relations: hand computations, capture of
queries/keys/values, set-up checks, and short task and general distillation runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, write_vocab
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertTokenizerFast,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
)

from kdistill import api
from kdistill.config import DistillConfig, GeneralConfig, LossConfig, MappingConfig, build
from kdistill.distill.features import QKV, FeatureRequest, forward_features, prepare_for_capture
from kdistill.distill.losses import get_loss
from kdistill.distill.objective import Objective
from kdistill.distill.relations import minilmv2_relations, value_relation
from kdistill.errors import KDistillError
from kdistill.models import probe

MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])


def _qkv(heads: int, head_dim: int, seed: int, scale: float = 1.5) -> QKV:
    g = torch.Generator().manual_seed(seed)
    b, n = MASK.shape
    return QKV(*(scale * torch.randn(b, heads, n, head_dim, generator=g, dtype=torch.float64) for _ in range(3)))


# ----------------------------------------------------------------------------- hand computation (numpy, loops)


def _hand_kl(a_s: np.ndarray, a_t: np.ndarray, mask: np.ndarray) -> float:
    """a_*: (B, R, L, d) relation heads. Per batch b, head r and real query i: softmax over real keys j of
    a[b,r,i].a[b,r,j]/sqrt(d), KL(teacher || student); mean over (r, real i) pairs."""
    total, rows = 0.0, 0
    for b in range(mask.shape[0]):
        real = [j for j in range(mask.shape[1]) if mask[b, j]]
        for r in range(a_s.shape[1]):
            for i in real:
                p_s, p_t = (_hand_softmax_row(a[b, r], i, real) for a in (a_s, a_t))
                total += float(np.sum(p_t * (np.log(p_t) - np.log(p_s))))
                rows += 1
    return total / max(rows, 1)


def _hand_softmax_row(a: np.ndarray, i: int, real: list[int]) -> np.ndarray:
    """softmax over the real keys j of a[i].a[j] / sqrt(d), a: (L, d)."""
    logits = np.array([a[i] @ a[j] / math.sqrt(a.shape[-1]) for j in real])
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _hand_relation_heads(x: np.ndarray, r: int) -> np.ndarray:
    """(B, h, L, d) -> (B, r, L, h*d/r) by writing the full-width vector of each token, then slicing it."""
    b, h, n, d = x.shape
    full = np.zeros((b, n, h * d))
    for head in range(h):
        full[:, :, head * d:(head + 1) * d] = x[:, head]
    dr = h * d // r
    out = np.zeros((b, r, n, dr))
    for k in range(r):
        out[:, k] = full[:, :, k * dr:(k + 1) * dr]
    return out


# ------------------------------------------------------------------------------------------- the losses


def test_value_relation_matches_hand_computation_across_widths() -> None:
    s, t = _qkv(heads=2, head_dim=8, seed=1), _qkv(heads=2, head_dim=16, seed=2)  # widths 16 and 32
    got = value_relation(s, t, mask=MASK)
    want = _hand_kl(s.value.numpy(), t.value.numpy(), MASK.numpy())
    assert want > 0.05
    assert float(got) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("relation_heads", [2, 4])
@pytest.mark.parametrize("relations", [("qq", "kk", "vv"), ("vv",), ("kk", "qq")])
def test_minilmv2_matches_hand_computation_across_widths_and_heads(relation_heads: int,
                                                                  relations: tuple[str, ...]) -> None:
    t = _qkv(heads=4, head_dim=8, seed=3)  # teacher width 32, 4 heads
    s = _qkv(heads=2, head_dim=8, seed=4)  # student width 16, 2 heads
    got = minilmv2_relations(s, t, mask=MASK, relation_heads=relation_heads, relations=list(relations))
    part = {"qq": "query", "kk": "key", "vv": "value"}
    want = sum(_hand_kl(_hand_relation_heads(getattr(s, part[n]).numpy(), relation_heads),
                        _hand_relation_heads(getattr(t, part[n]).numpy(), relation_heads), MASK.numpy())
               for n in relations)
    assert want > 0.05
    assert float(got) == pytest.approx(want, rel=1e-9)


def test_relation_heads_equal_to_attention_heads_are_the_model_heads() -> None:
    """With R = the attention heads, MiniLMv2's value relation is MiniLM's value relation."""
    s, t = _qkv(heads=4, head_dim=4, seed=5), _qkv(heads=4, head_dim=8, seed=6)
    got = minilmv2_relations(s, t, mask=MASK, relation_heads=4, relations=["vv"])
    assert float(got) == pytest.approx(float(value_relation(s, t, mask=MASK)), rel=1e-12)


def test_zero_when_student_equals_teacher_and_padding_is_ignored() -> None:
    t = _qkv(heads=4, head_dim=8, seed=7)
    assert float(minilmv2_relations(t, t, mask=MASK, relation_heads=4)) == pytest.approx(0.0, abs=1e-12)
    assert float(value_relation(t, t, mask=MASK)) == pytest.approx(0.0, abs=1e-12)
    s = _qkv(heads=2, head_dim=8, seed=8)
    clean = minilmv2_relations(s, t, mask=MASK, relation_heads=2)
    pad = ~MASK.bool()[:, None, :, None]
    # garbage at padded positions changes neither the loss nor makes its gradient non-finite
    dirty_s = QKV(*(torch.where(pad, torch.tensor(float("nan"), dtype=x.dtype), x).requires_grad_() for x in s))
    dirty_t = QKV(*(torch.where(pad, torch.tensor(float("inf"), dtype=x.dtype), x) for x in t))
    dirty = minilmv2_relations(dirty_s, dirty_t, mask=MASK, relation_heads=2)
    assert float(dirty.detach()) == pytest.approx(float(clean), rel=1e-12)
    dirty.backward()
    assert all(torch.isfinite(x.grad).all() and (x.grad[pad.expand_as(x)] == 0).all() for x in dirty_s)
    # an all-padding batch gives 0, not NaN
    zero = torch.zeros_like(MASK)
    assert float(minilmv2_relations(s, t, mask=zero, relation_heads=2)) == 0.0
    assert float(value_relation(QKV(*s), _qkv(heads=2, head_dim=4, seed=9), mask=zero)) == 0.0


def test_half_precision_inputs_are_computed_in_fp32() -> None:
    s, t = _qkv(heads=2, head_dim=8, seed=10), _qkv(heads=4, head_dim=8, seed=11)
    full = minilmv2_relations(s, t, mask=MASK, relation_heads=2)
    half = minilmv2_relations(QKV(*(x.half() for x in s)), QKV(*(x.half() for x in t)), mask=MASK, relation_heads=2)
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(full), rel=2e-2)


def test_bad_inputs_are_one_line_errors() -> None:
    s, t = _qkv(heads=2, head_dim=8, seed=12), _qkv(heads=4, head_dim=8, seed=13)
    with pytest.raises(KDistillError, match="relation_heads 3 does not divide the student width 16"):
        minilmv2_relations(s, t, mask=MASK, relation_heads=3)
    with pytest.raises(KDistillError, match="relation_heads must be a positive integer"):
        minilmv2_relations(s, t, mask=MASK, relation_heads=0)
    with pytest.raises(KDistillError, match="relations must be distinct names"):
        minilmv2_relations(s, t, mask=MASK, relations=["qq", "qk"])
    with pytest.raises(KDistillError, match="heads one to one"):
        value_relation(s, t, mask=MASK)
    with pytest.raises(KDistillError, match="differ in batch or sequence length"):
        minilmv2_relations(s, QKV(*(x[:, :, :4] for x in t)), relation_heads=2)
    with pytest.raises(KDistillError, match="mask shape"):
        value_relation(s, s, mask=MASK[:, :4])


# ------------------------------------------------------------------------------------- capture from models


def _bert(hidden: int, heads: int, layers: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=32))


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, 60, MASK.shape, generator=g), "attention_mask": MASK.clone()}


def _capture(model: torch.nn.Module, layers: set[int], role: str = "student"):
    req = FeatureRequest(qkv=frozenset(layers), hidden=frozenset(i - 1 for i in layers))
    prepare_for_capture(model, probe(model), req, role)
    return forward_features(model, _batch(), req)


def test_bert_capture_is_the_projected_layer_input_split_into_heads() -> None:
    model = _bert(32, 4).eval()
    feats = _capture(model, {2}, "teacher")
    attn = model.bert.encoder.layer[1].attention.self
    for part, lin in (("query", attn.query), ("key", attn.key), ("value", attn.value)):
        want = lin(feats.hidden[1]).view(3, 6, 4, 8).transpose(1, 2)
        torch.testing.assert_close(getattr(feats.qkv[2], part), want)


def test_gradients_reach_the_students_query_key_value_weights() -> None:
    teacher, student = _bert(32, 4, seed=1).eval(), _bert(16, 2, seed=2).train()
    with torch.no_grad():
        t = _capture(teacher, {2}, "teacher").qkv[2]
    s = _capture(student, {2}).qkv[2]
    assert not t.value.requires_grad and s.value.requires_grad
    minilmv2_relations(s, t, mask=MASK, relation_heads=2).backward()
    attn = student.bert.encoder.layer[1].attention.self
    for lin in (attn.query, attn.key, attn.value):
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    student.zero_grad(set_to_none=True)
    value_relation(_capture(student, {2}).qkv[2], _capture(_bert(16, 2, seed=3).eval(), {2}).qkv[2],
                   mask=MASK).backward()
    assert attn.value.weight.grad.abs().sum() > 0
    assert attn.query.weight.grad is None  # the value relation does not touch the layer's queries


def test_mpnet_is_captured_through_projection_hooks_and_deberta_refused() -> None:
    torch.manual_seed(0)
    mpnet = MPNetForSequenceClassification(MPNetConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40)).eval()
    feats = _capture(mpnet, {2, 3}, "teacher")
    assert set(feats.qkv) == {2, 3}
    attn = mpnet.mpnet.encoder.layer[2].attention.attn
    for part, lin in (("query", attn.q), ("key", attn.k), ("value", attn.v)):
        want = lin(feats.hidden[2]).view(3, 6, 4, 8).transpose(1, 2)
        torch.testing.assert_close(getattr(feats.qkv[3], part), want)
    prepare_for_capture(mpnet, probe(mpnet), FeatureRequest(qkv=frozenset({3})), "teacher")  # idempotent
    assert len(attn.q._forward_hooks) == 1
    deberta = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(KDistillError, match=r"cannot be captured from the student \(deberta-v2\)"):
        prepare_for_capture(deberta, probe(deberta), FeatureRequest(qkv=frozenset({2})), "student")


def test_unprepared_model_is_refused() -> None:
    with pytest.raises(KDistillError, match="need prepare_for_capture first"):
        forward_features(_bert(16, 2), _batch(), FeatureRequest(qkv=frozenset({1})))


# ----------------------------------------------------------------------------------------- set-up checks


def _objective(name: str, student: BertForSequenceClassification, teacher: BertForSequenceClassification,
               **params: object) -> Objective:
    return Objective([LossConfig(name=name, params=params)],
                     MappingConfig(strategy="explicit", pairs=[(2, 3)]), student=probe(student),
                     teacher=probe(teacher))


def test_objective_requests_qkv_of_mapped_layers_and_checks_at_set_up() -> None:
    teacher, student = _bert(32, 4, layers=3), _bert(16, 2)
    obj = _objective("minilmv2_relations", student, teacher, relation_heads=4, relations=["qq", "vv"])
    assert obj.student_request == FeatureRequest(qkv=frozenset({2}))
    assert obj.teacher_request == FeatureRequest(qkv=frozenset({3}))
    assert str(obj) == "1*minilmv2_relations[relation_heads=4, relations=['qq', 'vv']; layers 2<-3]"
    with pytest.raises(KDistillError, match=r"relation_heads 3 must divide both widths, and does not divide the "
                                            r"student width 16 or teacher width 32; pick a divisor of 16"):
        _objective("minilmv2_relations", student, teacher, relation_heads=3)
    with pytest.raises(KDistillError, match="relation_heads must be a positive integer, got '4'"):
        _objective("minilmv2_relations", student, teacher, relation_heads="4")
    with pytest.raises(KDistillError, match="relation_heads 12 must divide both widths"):  # the default
        _objective("minilmv2_relations", student, teacher)
    with pytest.raises(KDistillError, match="relations must be distinct names"):
        _objective("minilmv2_relations", student, teacher, relation_heads=4, relations=[])
    with pytest.raises(KDistillError, match="student has 2 heads and the teacher 4; use minilmv2_relations"):
        _objective("value_relation", student, teacher)
    assert _objective("value_relation", _bert(16, 4), teacher).student_request.qkv == {2}
    spec = get_loss("value_relation")
    assert spec.feature == "qkv" and spec.per_layer and not spec.projectable


# --------------------------------------------------------------------------------------- distillation runs


def test_task_distillation_with_relations_lowers_the_loss(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                          fast_train: dict) -> None:
    # student narrowed to width 16 with 1 head (teacher: 32 wide, 2 heads); relation heads 2 divide both
    cfg = build(DistillConfig, {
        "teacher": str(tiny_teacher), "data": tiny_data, "out": str(tmp_path / "s"),
        "student": {"num_layers": 2, "hidden_size": 16},
        "train": {**fast_train, "epochs": 2, "eval_every_epoch": False},
        "losses": [{"name": "minilmv2_relations", "params": {"relation_heads": 2}},
                   {"name": "value_relation", "mapping": {"strategy": "explicit", "pairs": [[2, 4]]}}]})
    with pytest.raises(KDistillError, match="student has 1 heads and the teacher 2; use minilmv2_relations"):
        api.distill(cfg)  # value_relation needs equal heads: refused before training
    assert not (tmp_path / "s" / "checkpoints").exists()
    cfg = cfg.model_copy(update={"out": str(tmp_path / "s2"),
                                 "losses": [LossConfig(name="minilmv2_relations", params={"relation_heads": 2})]})
    summary = api.distill(cfg)
    assert summary["method"] == "1*minilmv2_relations[relation_heads=2; layers 1<-2, 2<-4]"
    first, last = (summary["history"][i]["layer_losses"]["minilmv2_relations"] for i in (0, -1))
    assert set(first) == {"1", "2"}
    assert sum(last.values()) < 0.95 * sum(first.values())


def test_invalid_relation_heads_and_teacher_cache_are_set_up_errors(tiny_teacher: Path, tmp_path: Path,
                                                                   tiny_data: dict, fast_train: dict) -> None:
    base = {"teacher": str(tiny_teacher), "data": tiny_data, "train": fast_train,
            "student": {"num_layers": 1}}
    bad = build(DistillConfig, {**base, "out": str(tmp_path / "a"),
                                "losses": [{"name": "minilmv2_relations", "params": {"relation_heads": 5}}]})
    with pytest.raises(KDistillError, match="relation_heads 5 must divide both widths"):
        api.distill(bad)
    cached = build(DistillConfig, {**base, "out": str(tmp_path / "b"), "teacher_cache": True,
                                   "losses": [{"name": "minilmv2_relations", "params": {"relation_heads": 4}}]})
    with pytest.raises(KDistillError, match="relation losses .* need teacher_cache: false"):
        api.distill(cached)


def test_general_distillation_takes_a_relation_loss(tmp_path: Path) -> None:
    teacher = tmp_path / "mlm"
    teacher.mkdir()
    write_vocab(teacher / "vocab.txt")
    tok = BertTokenizerFast.from_pretrained(str(teacher), do_lower_case=True)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=64,
                               initializer_range=0.2)).save_pretrained(teacher)  # peaked, not uniform, relations
    tok.save_pretrained(teacher)
    with open(DATA / "sst2" / "train.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:161]
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(" ".join(r[0] for r in rows[i:i + 4]) for i in range(0, len(rows), 4)) + "\n")
    cfg = build(GeneralConfig, {
        "teacher": str(teacher), "method": "custom", "out": str(tmp_path / "g"),
        "student": {"init": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
        "losses": [{"name": "minilmv2_relations", "params": {"relation_heads": 4, "relations": ["qq", "kk", "vv"]}}],
        "corpus": {"files": [str(text)], "max_length": 32, "validation_fraction": 0.1, "max_blocks": 64},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "lr": 2e-3, "progress": False,
                  "save_steps": 1000, "device": "cpu"}})
    from kdistill.general import general_distill

    summary = general_distill(cfg)
    assert summary["objective"] == "1*minilmv2_relations[relation_heads=4, relations=['qq', 'kk', 'vv']; layers 1<-2]"
    first, last = (summary["history"][i]["layer_losses"]["minilmv2_relations"]["1"] for i in (0, -1))
    assert last < 0.95 * first
