"""Student construction: teacher layers (DistilBERT init), smaller configs, and their errors."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from kdistill.config import StudentConfig
from kdistill.errors import KDistillError
from kdistill.students import build_student, default_layers, from_teacher_layers


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


@pytest.mark.parametrize(("cfg", "message"), [
    (StudentConfig(layers=[1, 7]), "teacher has layers 1-6"),
    (StudentConfig(layers=[2, 2]), "repeats a layer"),
    (StudentConfig(init="config", hidden_size=10, num_heads=4), "not a multiple"),
])
def test_bad_student_configs_name_the_problem(cfg: StudentConfig, message: str) -> None:
    with pytest.raises(KDistillError, match=message):
        build_student(cfg, _teacher(), single_sentence=True)
