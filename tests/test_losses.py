"""Every loss against a hand computation on tiny tensors, plus padding safety, gradients and the registry."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from kdistill.distill.losses import (
    LOSSES,
    attention_kl,
    attention_mse,
    cls_cosine,
    cosine_loss,
    get_loss,
    hard_ce,
    hidden_mse,
    kl_div,
    logit_mse,
    register_loss,
    soft_cross_entropy,
)
from kdistill.errors import KDistillError

BIG = 1e30
nan = float("nan")


def close(x: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    assert torch.isfinite(x).all(), x
    assert x.item() == pytest.approx(expected, rel=tol, abs=tol)


# ------------------------------------------------------------------------------------------ prediction


def test_kl_two_classes_by_hand() -> None:
    # p_s = (1/2, 1/2); p_t = (3/4, 1/4). Second row: student == teacher, KL 0, so batchmean halves it.
    s = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    close(kl_div(s, t), kl / 2)


def test_kl_temperature_squared_scaling() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    # At T=2, p_t = softmax(ln3/2, 0) = (sqrt3, 1) / (sqrt3 + 1); p_s stays uniform.
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    kl_t2 = a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5)
    close(kl_div(s, t, temperature=2.0), 4.0 * kl_t2)


def test_kl_is_zero_for_equal_logits_and_matches_torch() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    close(kl_div(s, s), 0.0)
    ref = F.kl_div(F.log_softmax(s / 3, -1), F.softmax(t / 3, -1), reduction="batchmean") * 9
    close(kl_div(s, t, temperature=3.0), ref.item())


def test_soft_cross_entropy_by_hand_and_tinybert_relation() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    # -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2
    close(soft_cross_entropy(s, t), math.log(2.0))
    close(soft_cross_entropy(s, t, temperature=2.0, t2_scale=True), 4 * math.log(2.0))
    tinybert = (-F.softmax(t, -1) * F.log_softmax(s, -1)).mean()  # TinyBERT also averages over classes
    close(soft_cross_entropy(s, t) / 2, tinybert.item())


def test_logit_mse_by_hand() -> None:
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    close(logit_mse(s, torch.zeros(2, 2)), (1 + 4 + 9 + 16) / 4)


def test_hard_ce_by_hand() -> None:
    s = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    close(hard_ce(s, labels), (math.log(2.0) + math.log(4.0)) / 2)


# --------------------------------------------------------------------------------------------- hidden


def test_hidden_mse_ignores_huge_padding() -> None:
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [BIG, -BIG]]], requires_grad=True)
    t = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [-BIG, nan]]])
    mask = torch.tensor([[1, 1, 0]])
    loss = hidden_mse(s, t, mask=mask)
    close(loss, (1 + 4 + 9 + 16) / (2 * 2))  # 2 real tokens x H=2
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert torch.equal(s.grad[0, 2], torch.zeros(2))
    assert torch.allclose(s.grad[0, :2], 2 * s.detach()[0, :2] / 4)


def test_hidden_mse_without_mask_is_plain_mse_and_bool_mask_works() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    close(hidden_mse(s, t), F.mse_loss(s, t).item())
    close(hidden_mse(s, t, mask=torch.ones(2, 3, dtype=torch.bool)), F.mse_loss(s, t).item())


def test_hidden_mse_all_padding_row_and_batch() -> None:
    s = torch.tensor([[[1.0, 1.0]], [[nan, BIG]]])
    t = torch.zeros(2, 1, 2)
    close(hidden_mse(s, t, mask=torch.tensor([[1], [0]])), 1.0)
    close(hidden_mse(s, t, mask=torch.tensor([[0], [0]])), 0.0)


def test_hidden_mse_width_mismatch_is_user_error() -> None:
    with pytest.raises(KDistillError, match="project"):
        hidden_mse(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


def test_hidden_mse_half_precision_is_upcast() -> None:
    s = torch.full((1, 1, 2), 300.0, dtype=torch.float16)  # 300² overflows fp16
    loss = hidden_mse(s, torch.zeros_like(s))
    assert loss.dtype == torch.float32
    close(loss, 90000.0)


# ------------------------------------------------------------------------------------------ attention


def test_attention_mse_masks_query_and_key_padding() -> None:
    # L=2, token 1 is padding: only (q=0, k=0) is valid. Head values 1 and 3 there.
    s = torch.full((1, 2, 2, 2), -BIG)
    s[0, 0, 0, 0], s[0, 1, 0, 0] = 1.0, 3.0
    s[0, :, 1, 0] = 50.0  # padded query, real key: must not count
    s[0, :, 0, 1] = -float("inf")  # real query, padded key (how SDPA masks): must not count
    t = torch.zeros(1, 2, 2, 2)
    t[0, :, 1, 1] = nan
    s.requires_grad_(True)
    loss = attention_mse(s, t, mask=torch.tensor([[1, 0]]))
    close(loss, (1 + 9) / 2)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[0, :, 1, 0].abs().sum() == 0 and s.grad[0, :, 0, 1].abs().sum() == 0


def test_attention_mse_no_mask_and_differing_heads() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    close(attention_mse(s, t), F.mse_loss(s, t).item())
    s2 = torch.stack([torch.ones(2, 2), 3 * torch.ones(2, 2)])[None]  # 2 heads, mean 2
    t1 = torch.zeros(1, 1, 2, 2)
    close(attention_mse(s2, t1), 4.0)
    close(attention_mse(t1, s2), 4.0)


def test_attention_mse_all_padding_row_finite() -> None:
    s = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), nan)])
    t = torch.zeros(2, 1, 2, 2)
    close(attention_mse(s, t, mask=torch.tensor([[1, 1], [0, 0]])), 1.0)
    close(attention_mse(s, t, mask=torch.zeros(2, 2)), 0.0)


def test_attention_kl_by_hand_with_query_and_key_padding() -> None:
    # L=3, token 2 is padding. Row 0: t=(.5,.5), s=(.25,.75). Row 1: t=(1,0), s=(.5,.5). Row 2 padded.
    t = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [nan, nan, nan]]]])
    s = torch.tensor([[[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]]])
    s[0, 0, 0, 2] = 7.0  # a garbage padded-key probability must not count
    t[0, 0, 1, 2] = 0.3
    s.requires_grad_(True)
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    row1 = math.log(1.0 / 0.5)
    loss = attention_kl(s, t, mask=torch.tensor([[1, 1, 0]]))
    close(loss, (row0 + row1) / 2)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[0, 0, 2].abs().sum() == 0 and s.grad[0, 0, :, 2].abs().sum() == 0


def test_attention_kl_zero_student_prob_is_clamped_not_inf() -> None:
    t = torch.tensor([[[[1.0, 0.0]]]]).expand(1, 1, 2, 2).contiguous()
    s = torch.tensor([[[[0.0, 1.0]]]]).expand(1, 1, 2, 2).contiguous()
    close(attention_kl(s, t, eps=1e-12), -math.log(1e-12), tol=1e-4)
    close(attention_kl(t, t), 0.0)


def test_attention_kl_differing_heads_and_all_padding_row() -> None:
    s = torch.zeros(1, 2, 1, 2)
    s[0, 0, 0] = torch.tensor([1.0, 0.0])
    s[0, 1, 0] = torch.tensor([0.0, 1.0])  # head average = (.5, .5)
    t = torch.tensor([[[[0.5, 0.5]]]])
    # square maps needed: L=2 queries
    s = s.expand(1, 2, 2, 2).contiguous()
    t = t.expand(1, 1, 2, 2).contiguous()
    close(attention_kl(s, t), 0.0)
    batch_s = torch.cat([torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), nan)])
    batch_t = torch.cat([torch.tensor([[[[0.25, 0.75], [0.25, 0.75]]]]), torch.full((1, 1, 2, 2), nan)])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    close(attention_kl(batch_s, batch_t, mask=torch.tensor([[1, 1], [0, 0]])), expected)
    close(attention_kl(batch_s, batch_t, mask=torch.zeros(2, 2)), 0.0)


def test_attention_shape_errors() -> None:
    with pytest.raises(KDistillError):
        attention_mse(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
    with pytest.raises(KDistillError, match="mask shape"):
        attention_kl(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), mask=torch.ones(1, 3))


# --------------------------------------------------------------------------------------------- cosine


def test_cosine_forms_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # cos = 0 and 1
    close(cosine_loss(s, t), (1 + 0) / 2)
    close(cosine_loss(s, t, form="neg-cos"), -(0 + 1) / 2)
    close(cosine_loss(s, t, form="mse-normalized"), (2 + 0) / 2)  # |e1 - e2|² = 2
    with pytest.raises(KDistillError, match="1-cos"):
        cosine_loss(s, t, form="cos2")


def test_cosine_masked_tokens_and_zero_vectors() -> None:
    s = torch.tensor([[[1.0, 0.0], [BIG, nan], [0.0, 0.0]]], requires_grad=True)
    t = torch.tensor([[[-1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    loss = cosine_loss(s, t, mask=torch.tensor([[1, 0, 1]]))
    close(loss, (2 + 1) / 2)  # cos -1 -> 2; zero vectors -> cos 0 -> 1
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 1].abs().sum() == 0
    close(cosine_loss(s, t, mask=torch.zeros(1, 3)), 0.0)


def test_cls_cosine_uses_position_zero_only() -> None:
    s = torch.tensor([[[1.0, 0.0], [nan, nan]], [[1.0, 1.0], [5.0, -3.0]]])
    t = torch.tensor([[[0.0, 1.0], [1.0, 2.0]], [[3.0, 3.0], [BIG, 0.0]]])
    close(cls_cosine(s, t), 0.5)
    close(cls_cosine(s, t, form="neg-cos", mask=torch.ones(2, 2)), -0.5)


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["kl", "soft_ce", "logit_mse", "hidden_mse", "attn_mse", "attn_kl",
                                  "hidden_cosine", "cls_cosine"])
def test_gradient_flows_to_student_only(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    shape = (2, 3) if LOSSES.get(name).feature == "logits" else (2, 2, 3, 3)
    if name in ("hidden_mse", "hidden_cosine", "cls_cosine"):
        shape = (2, 3, 4)
    s = torch.randn(shape, generator=g)
    t = torch.randn(shape, generator=g)
    if name == "attn_kl":
        s, t = s.softmax(-1), t.softmax(-1)
    s.requires_grad_(True)
    kwargs = {"mask": torch.tensor([[1, 1, 0], [1, 0, 0]])} if LOSSES.get(name).accepts("mask") else {}
    loss = get_loss(name).fn(s, t, **kwargs)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_hard_ce_gradient() -> None:
    s = torch.zeros(2, 3, requires_grad=True)
    hard_ce(s, torch.tensor([0, 2])).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- registry


def test_registered_specs() -> None:
    assert set(LOSSES.names()) >= {"kl", "soft_ce", "logit_mse", "ce", "hidden_mse", "embedding_mse",
                                   "attn_mse", "attn_kl", "hidden_cosine", "cls_cosine"}
    ce = LOSSES.get("ce")
    assert (ce.feature, ce.needs_teacher, ce.per_layer, ce.token_aligned) == ("labels", False, False, False)
    kl = LOSSES.get("kl")
    assert kl.needs_teacher and not kl.per_layer and not kl.token_aligned and kl.accepts("temperature")
    assert not LOSSES.get("logit_mse").accepts("temperature")
    emb, hid = LOSSES.get("embedding_mse"), LOSSES.get("hidden_mse")
    assert emb.fn is hid.fn is hidden_mse
    assert (emb.feature, hid.feature) == ("embeddings", "hidden")
    assert emb.projectable and hid.projectable and emb.per_layer and emb.token_aligned
    for name in ("attn_mse", "attn_kl"):
        spec = LOSSES.get(name)
        assert spec.per_layer and not spec.projectable and spec.token_aligned
    assert LOSSES.get("attn_kl").feature == "attn_probs" and LOSSES.get("attn_mse").feature == "attn_scores"
    assert LOSSES.get("cls_cosine").projectable and LOSSES.get("hidden_cosine").projectable


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(KDistillError, match=r"unknown loss 'nope' \(valid: .*hidden_mse.*kl"):
        get_loss("nope")


def test_duplicate_registration_refused() -> None:
    with pytest.raises(KDistillError, match="already registered"):
        register_loss("kl", feature="logits")(kl_div)


def test_unknown_feature_refused() -> None:
    with pytest.raises(KDistillError, match="feature"):
        register_loss("bad_feature_loss", feature="pixels")


@pytest.fixture
def temp_loss_name() -> Iterator[str]:
    name = "test_user_l1"
    yield name
    LOSSES._items.pop(name, None)


def test_user_can_register_a_loss(temp_loss_name: str) -> None:
    @register_loss(temp_loss_name, feature="hidden", per_layer=True, projectable=True)
    def l1(s: torch.Tensor, t: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        return (s - t).abs().mean()

    spec = get_loss(temp_loss_name)
    assert spec.fn is l1 and spec.token_aligned and spec.per_layer and spec.needs_teacher
    close(spec.fn(torch.ones(1, 2), torch.zeros(1, 2)), 1.0)
