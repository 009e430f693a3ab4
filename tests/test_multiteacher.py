"""Several teachers: averaged class probabilities as soft targets (weighted), features from the first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert
from safetensors.torch import load_file

from kdistill import api
from kdistill.config import DistillConfig, build
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, load_tokenizer
from kdistill.teachers import MultiTeacher
from kdistill.tokenized import make_loader, tokenize_splits


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("t2") / "teacher", seed=1)


def _cfg(teacher: Path, out: Path, tiny_data: dict, fast_train: dict, **extra) -> DistillConfig:
    return build(DistillConfig, {"teacher": str(teacher), "student": {"num_layers": 1}, "data": tiny_data,
                                 "losses": [{"name": "kl", "temperature": 1.0}], "train": fast_train,
                                 "out": str(out), **extra})


def _same(a: Path, b: Path) -> None:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-5, msg=k)


def test_the_average_is_weighted_and_features_come_from_the_first(tiny_teacher: Path, other_teacher: Path,
                                                                  tiny_data: dict) -> None:
    a, b = load_classifier(str(tiny_teacher)), load_classifier(str(other_teacher))
    tok = load_tokenizer(str(tiny_teacher))
    data = load_task_data(build(DistillConfig, {"data": tiny_data}).data)
    batch = next(iter(make_loader(tokenize_splits(data, tok, 32)["train"], tok, 8)))
    source = MultiTeacher([a, b], [3.0, 1.0], FeatureRequest(hidden=frozenset({2})))
    out = source.signals(batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        pa, pb = a(**inputs).logits.softmax(-1), b(**inputs).logits.softmax(-1)
        hidden = a(**inputs, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(out.logits.softmax(-1), 0.75 * pa + 0.25 * pb, rtol=0, atol=1e-6)
    assert not torch.allclose(pa, pb, atol=1e-3)  # the two teachers really differ
    torch.testing.assert_close(out.hidden[2], hidden, rtol=0, atol=1e-6)


def test_training_on_one_teacher_twice_or_weight_zero_equals_the_single_teacher(
        tiny_teacher: Path, other_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> None:
    single = api.distill(_cfg(tiny_teacher, tmp_path / "single", tiny_data, fast_train))
    twice = api.distill(_cfg(tiny_teacher, tmp_path / "twice", tiny_data, fast_train,
                             extra_teachers=[str(tiny_teacher)]))
    _same(tmp_path / "single", tmp_path / "twice")
    zero = api.distill(_cfg(tiny_teacher, tmp_path / "zero", tiny_data, fast_train,
                            extra_teachers=[str(other_teacher)], teacher_weights=[1.0, 0.0]))
    _same(tmp_path / "single", tmp_path / "zero")
    mixed = api.distill(_cfg(tiny_teacher, tmp_path / "mixed", tiny_data, fast_train,
                             extra_teachers=[str(other_teacher)]))
    assert single["steps"] == twice["steps"] == zero["steps"] == mixed["steps"] > 0
    x, y = load_file(str(tmp_path / "single" / "model.safetensors")), load_file(str(tmp_path / "mixed" /
                                                                                     "model.safetensors"))
    assert any(not torch.allclose(x[k], y[k], atol=1e-5) for k in x)  # another teacher, another student


def test_bad_weights_and_combinations_name_the_field(tiny_teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(KDistillError, match="teacher_weights"):
        build(DistillConfig, {"teacher": str(tiny_teacher), "extra_teachers": ["x"], "teacher_weights": [1.0]})
    with pytest.raises(KDistillError, match="teacher_weights"):
        build(DistillConfig, {"extra_teachers": ["x"], "teacher_weights": [0.0, 0.0]})
    with pytest.raises(KDistillError, match="extra_teachers"):
        build(DistillConfig, {"extra_teachers": ["x"], "teacher_cache": True})


def test_teacher_assistant_chain_is_two_distillations(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                      fast_train: dict) -> None:
    """Teacher (4 layers) -> assistant (2 layers) -> student (1 layer, taken from the assistant)."""
    base = {"data": tiny_data, "train": fast_train,
            "losses": [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]}
    api.distill(build(DistillConfig, {**base, "teacher": str(tiny_teacher), "student": {"num_layers": 2},
                                      "out": str(tmp_path / "assistant")}))
    summary = api.distill(build(DistillConfig, {**base, "teacher": str(tmp_path / "assistant"),
                                                "student": {"num_layers": 1}, "out": str(tmp_path / "student")}))
    student = load_classifier(str(tmp_path / "student"))
    assert student.config.num_hidden_layers == 1 and summary["teacher"] == str(tmp_path / "assistant")
    assert 0 < summary["retention"] < 2  # scored against the assistant's own test metric
