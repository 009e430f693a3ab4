"""The objective: formula, feature requests, projections, schedule filtering, config-time errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdistill.config import LossConfig, MappingConfig
from kdistill.distill.features import Features
from kdistill.distill.objective import Active, Objective
from kdistill.errors import KDistillError
from kdistill.models import ModelProbe

TEACHER = ModelProbe("bert", 6, 16, 2, "bert.encoder.layer", True)
STUDENT = ModelProbe("bert", 3, 8, 2, "bert.encoder.layer", True)


def _feats(layers: int, width: int, seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, 3:] = 0
    return Features(logits=torch.randn(2, 3, generator=g), mask=mask,
                    hidden={i: torch.randn(2, 5, width, generator=g) for i in range(layers + 1)},
                    attn_scores={i: torch.randn(2, 2, 5, 5, generator=g) for i in range(1, layers + 1)})


def _objective(**kw) -> Objective:
    losses = kw.pop("losses", [LossConfig(name="kl", weight=0.5, temperature=2.0), LossConfig(name="ce", weight=0.5),
                               LossConfig(name="hidden_mse", weight=2.0), LossConfig(name="attn_mse")])
    return Objective(losses, MappingConfig(), student=STUDENT, teacher=TEACHER, **kw)


def test_formula_requests_and_projection() -> None:
    obj = _objective()
    text = str(obj)
    assert text.startswith("0.5*kl[T=2] + 0.5*ce + 2*hidden_mse[layers 1<-2, 2<-4, 3<-6]")
    assert obj.student_request.hidden == {1, 2, 3} and obj.teacher_request.hidden == {2, 4, 6}
    assert obj.teacher_request.attn_scores == {2, 4, 6} and not obj.teacher_request.attn_probs
    assert set(obj.projections) == {"hidden_mse"}  # widths differ (8 vs 16); attention needs none
    assert obj.projections["hidden_mse"].in_features == 8 and obj.projections["hidden_mse"].out_features == 16


def test_total_is_the_weighted_sum_of_terms_over_layers() -> None:
    obj = _objective()
    s, t = _feats(3, 8, 0), _feats(6, 16, 1)
    labels = torch.tensor([0, 2])
    out = obj(s, t, labels)
    proj = obj.projections["hidden_mse"]
    # hidden_mse by hand: masked mean squared error, summed over the mapped layers
    valid = s.mask.bool()
    hid = sum(F.mse_loss(proj(s.hidden[i])[valid], t.hidden[j][valid]) for i, j in [(1, 2), (2, 4), (3, 6)])
    torch.testing.assert_close(out.terms["hidden_mse"], hid.detach())
    torch.testing.assert_close(out.terms["ce"], F.cross_entropy(s.logits, labels))
    expected = 0.5 * out.terms["kl"] + 0.5 * out.terms["ce"] + 2.0 * out.terms["hidden_mse"] + out.terms["attn_mse"]
    torch.testing.assert_close(out.total.detach(), expected)
    assert set(out.layer_terms["attn_mse"]) == {1, 2, 3}
    out.total.backward()
    assert proj.weight.grad is not None


def test_active_layers_and_prediction_switch() -> None:
    obj = _objective()
    out = obj(_feats(3, 8, 0), _feats(6, 16, 1), torch.tensor([0, 1]), active=Active(frozenset({1}), prediction=False))
    assert set(out.terms) == {"hidden_mse", "attn_mse"}
    assert set(out.layer_terms["hidden_mse"]) == {1}


def test_repeated_loss_gets_its_own_key_and_mapping() -> None:
    obj = _objective(losses=[LossConfig(name="hidden_mse", mapping=MappingConfig(strategy="bottom")),
                             LossConfig(name="hidden_mse", mapping=MappingConfig(strategy="top"))])
    assert [t.key for t in obj.terms] == ["hidden_mse", "hidden_mse_2"]
    assert [p.teacher for p in obj.terms[0].pairs] == [(1,), (2,), (3,)]
    assert [p.teacher for p in obj.terms[1].pairs] == [(4,), (5,), (6,)]


@pytest.mark.parametrize(("losses", "kw", "message"), [
    ([LossConfig(name="nope")], {}, "unknown loss 'nope'"),
    ([LossConfig(name="hidden_mse")], {"same_tokens": False}, "different vocabularies"),
    ([LossConfig(name="logit_mse", temperature=2.0)], {}, "takes no temperature"),
    ([LossConfig(name="kl", params={"alpha": 1})], {}, "no parameter"),
    ([LossConfig(name="hidden_mse", mapping=MappingConfig(strategy="explicit", pairs=[(1, 9)]))], {}, "teacher"),
])
def test_config_time_errors(losses, kw, message) -> None:
    with pytest.raises(KDistillError, match=message):
        _objective(losses=losses, **kw)


def test_teacher_free_objective_refuses_teacher_losses() -> None:
    with pytest.raises(KDistillError, match="needs a teacher"):
        Objective([LossConfig(name="kl")], MappingConfig(), student=STUDENT, teacher=None)
    obj = Objective([LossConfig(name="ce")], MappingConfig(), student=STUDENT, teacher=None)
    assert not obj.needs_teacher
