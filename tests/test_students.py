"""Student construction: teacher layers (DistilBERT init), narrowed by weight selection, smaller configs, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from kdistill.config import StudentConfig
from kdistill.errors import KDistillError
from kdistill.students.build import build_student, default_layers, from_teacher_layers, slice_width


def _teacher(layers: int = 6) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def test_default_layers_spread_evenly_and_keep_the_top() -> None:
    assert default_layers(6, 3) == [2, 4, 6]
    assert default_layers(12, 6) == [2, 4, 6, 8, 10, 12]
    assert default_layers(6, 4) == [2, 3, 5, 6]


def test_keeping_every_layer_reproduces_the_teacher_exactly() -> None:
    teacher = _teacher(4)
    student = from_teacher_layers(teacher, [1, 2, 3, 4], single_sentence=False)
    ids = torch.randint(5, 60, (2, 7))
    tt = torch.zeros_like(ids)
    tt[:, 4:] = 1
    torch.testing.assert_close(student(input_ids=ids, token_type_ids=tt).logits,
                               teacher(input_ids=ids, token_type_ids=tt).logits)


def test_kept_layers_are_copies_of_the_chosen_teacher_layers() -> None:
    teacher = _teacher(6)
    student = build_student(StudentConfig(layers=[1, 4, 6]), teacher, single_sentence=True)
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    for j, t in enumerate([1, 4, 6]):
        for (n, p), (_, q) in zip(student.bert.encoder.layer[j].named_parameters(),
                                  teacher.bert.encoder.layer[t - 1].named_parameters(), strict=True):
            assert torch.equal(p, q), n
        assert student.bert.encoder.layer[j].attention.self.layer_idx in (j, None)
    # a copy, not shared storage
    student.bert.encoder.layer[0].output.dense.weight.data.add_(1.0)
    assert not torch.equal(student.bert.encoder.layer[0].output.dense.weight,
                           teacher.bert.encoder.layer[0].output.dense.weight)
    # single-sentence task: one token-type row, the teacher's row 0
    assert student.bert.embeddings.token_type_embeddings.num_embeddings == 1
    assert torch.equal(student.bert.embeddings.token_type_embeddings.weight[0],
                       teacher.bert.embeddings.token_type_embeddings.weight[0])
    assert student.config.num_labels == 3


def test_pair_tasks_keep_token_types() -> None:
    student = build_student(StudentConfig(num_layers=2), _teacher(), single_sentence=False)
    assert student.bert.embeddings.token_type_embeddings.num_embeddings == 2


def test_smaller_config_is_random_and_narrow() -> None:
    cfg = StudentConfig(init="config", num_layers=2, hidden_size=8, num_heads=2)
    student = build_student(cfg, _teacher(), single_sentence=True)
    conf = student.config
    assert (conf.num_hidden_layers, conf.hidden_size, conf.intermediate_size) == (2, 8, 32)
    assert student.config.vocab_size == 60 and student.config.num_labels == 3
    out = student(input_ids=torch.randint(5, 60, (2, 5))).logits
    assert out.shape == (2, 3)


def _wide_teacher() -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=48, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def test_narrowed_student_is_the_leading_block_of_the_chosen_layers() -> None:
    teacher = _wide_teacher()
    student = build_student(StudentConfig(layers=[2, 4], hidden_size=8), teacher, single_sentence=True)
    c = student.config
    # head size 16/4 = 4 is kept: 8 wide = the first 2 heads; FFN scaled with the width
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, 8, 2, 24)
    assert c.type_vocab_size == 1 and c.kdistill_init["width"] == "leading slice"
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    for s_i, t_i in ((0, 1), (1, 3)):
        sl, tl = s_layers[s_i], t_layers[t_i]
        assert torch.equal(sl.attention.self.query.weight, tl.attention.self.query.weight[:8, :8])
        assert torch.equal(sl.attention.self.value.bias, tl.attention.self.value.bias[:8])
        assert torch.equal(sl.intermediate.dense.weight, tl.intermediate.dense.weight[:24, :8])
        assert torch.equal(sl.output.dense.weight, tl.output.dense.weight[:8, :24])
        assert torch.equal(sl.output.LayerNorm.weight, tl.output.LayerNorm.weight[:8])
    emb_s, emb_t = student.bert.embeddings, teacher.bert.embeddings
    assert torch.equal(emb_s.word_embeddings.weight, emb_t.word_embeddings.weight[:, :8])
    assert torch.equal(emb_s.token_type_embeddings.weight, emb_t.token_type_embeddings.weight[:1, :8])
    assert torch.equal(student.classifier.weight, teacher.classifier.weight[:, :8])
    assert student(input_ids=torch.randint(5, 60, (2, 5))).logits.shape == (2, 3)


def test_narrowing_keeps_each_kept_head_exact_when_the_input_is_in_the_kept_units() -> None:
    """With the residual input zero outside the kept units, head 0's scores are the teacher's head 0 scores."""
    teacher = _wide_teacher()
    narrow = slice_width(teacher, 8)
    x = torch.zeros(1, 5, 16)
    x[..., :8] = torch.randn(1, 5, 8)
    t_att, s_att = teacher.bert.encoder.layer[0].attention.self, narrow.bert.encoder.layer[0].attention.self
    q_t, k_t = t_att.query(x)[..., :4], t_att.key(x)[..., :4]
    q_s, k_s = s_att.query(x[..., :8])[..., :4], s_att.key(x[..., :8])[..., :4]
    torch.testing.assert_close(q_s @ k_s.transpose(-1, -2), q_t @ k_t.transpose(-1, -2))


def test_the_teachers_width_is_no_narrowing() -> None:
    teacher = _wide_teacher()
    student = build_student(StudentConfig(layers=[1, 2, 3, 4], hidden_size=16), teacher, single_sentence=False)
    ids = torch.randint(5, 60, (2, 7))
    torch.testing.assert_close(student(input_ids=ids).logits, teacher(input_ids=ids).logits)


@pytest.mark.parametrize(("cfg", "message"), [
    (StudentConfig(layers=[1, 7]), "teacher has layers 1-6"),
    (StudentConfig(layers=[2, 2]), "repeats a layer"),
    (StudentConfig(num_layers=12), "student.num_layers is 12 but the teacher has 6 layers"),
    (StudentConfig(init="config", hidden_size=10, num_heads=4), "not a multiple"),
    (StudentConfig(hidden_size=32), "wider than the teacher"),
    (StudentConfig(hidden_size=12), "multiple of the teacher's head size 8"),
    (StudentConfig(hidden_size=8, num_heads=2), "keeps whole teacher heads"),
    (StudentConfig(hidden_size=8, intermediate_size=64), "wider than the teacher's 32"),
    (StudentConfig(num_heads=1), "need student.hidden_size below"),
])
def test_bad_student_configs_name_the_problem(cfg: StudentConfig, message: str) -> None:
    with pytest.raises(KDistillError, match=message):
        build_student(cfg, _teacher(), single_sentence=True)
