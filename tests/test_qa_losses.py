"""QA distillation losses (`kdistill.tasks.qa_losses`) against hand computations and transformers' own QA loss."""

from __future__ import annotations

import math

import pytest
import torch

from kdistill.distill.losses import kl_div
from kdistill.errors import KDistillError
from kdistill.tasks.qa_losses import masked_kl, span_ce, span_kl


def hand_kl(s: list[float], t: list[float], keep: list[int], temperature: float) -> float:
    """KL(p_t || p_s) x T² with p = softmax(x / T) over the kept positions, in plain floats."""
    s_kept = [x / temperature for x, k in zip(s, keep, strict=True) if k]
    t_kept = [x / temperature for x, k in zip(t, keep, strict=True) if k]
    zs, zt = sum(math.exp(x) for x in s_kept), sum(math.exp(x) for x in t_kept)
    ps, pt = [math.exp(x) / zs for x in s_kept], [math.exp(x) / zt for x in t_kept]
    return sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True)) * temperature**2


S = [1.0, 2.0, 7.0, 0.5]
T = [2.0, 0.0, -3.0, 1.0]
KEEP = [1, 1, 0, 1]  # position 2 (say the question) is out: its large student logit must not count


def test_masked_kl_matches_hand_computation() -> None:
    value = masked_kl(torch.tensor([S]), torch.tensor([T]), mask=torch.tensor([KEEP]), temperature=2.0)
    assert float(value) == pytest.approx(hand_kl(S, T, KEEP, 2.0), rel=1e-6)
    # spelled out: s/T = [.5, 1, .25] and t/T = [1, 0, .5] over the kept positions give p_s = [.29176, .48102,
    # .22722] and p_t = [.50648, .18632, .30720]; sum p_t ln(p_t / p_s) = .19528, x T² (4) = .78113
    assert float(value) == pytest.approx(0.78113, abs=1e-5)
    # without a mask every position counts, as the classification KL computes it
    full = masked_kl(torch.tensor([S]), torch.tensor([T]), temperature=2.0)
    assert float(full) == pytest.approx(hand_kl(S, T, [1, 1, 1, 1], 2.0), rel=1e-6)
    assert float(full) == pytest.approx(float(kl_div(torch.tensor([S]), torch.tensor([T]), temperature=2.0)))


def test_span_kl_is_the_mean_of_start_and_end_over_windows() -> None:
    s_end, t_end = [0.0, -1.0, 3.0, 2.0], [0.5, 0.5, 0.0, -2.0]
    s_start = torch.tensor([S, [3.0, 1.0, 0.0, 0.0]])
    t_start = torch.tensor([T, [0.0, 0.0, 1.0, 1.0]])
    s_e = torch.tensor([s_end, [1.0, 1.0, 1.0, 1.0]])
    t_e = torch.tensor([t_end, [0.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([KEEP, [1, 0, 1, 1]])
    value = span_kl(s_start, s_e, t_start, t_e, mask=mask, temperature=1.5)
    kl_start = (hand_kl(S, T, KEEP, 1.5) + hand_kl([3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1, 0, 1, 1], 1.5)) / 2
    kl_end = (hand_kl(s_end, t_end, KEEP, 1.5) + hand_kl([1.0] * 4, [0.0, 2.0, 0.0, 0.0], [1, 0, 1, 1], 1.5)) / 2
    assert float(value) == pytest.approx((kl_start + kl_end) / 2, rel=1e-6)


def test_masked_positions_change_neither_value_nor_gradient() -> None:
    garbage = [float("nan"), float("inf"), float("-inf"), 1e30]
    s = torch.tensor([[1.0, 2.0, float("nan"), 0.5], garbage], requires_grad=True)
    t = torch.tensor([[2.0, 0.0, float("inf"), 1.0], garbage])
    mask = torch.tensor([KEEP, [0, 0, 0, 0]])  # the second window has no position at all: it is left out
    value = masked_kl(s, t, mask=mask, temperature=2.0)
    assert float(value.detach()) == pytest.approx(hand_kl(S, T, KEEP, 2.0), rel=1e-6)
    value.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert s.grad[0, 2] == 0 and (s.grad[1] == 0).all() and (s.grad[0, [0, 1, 3]] != 0).all()
    empty = masked_kl(torch.zeros(2, 3), torch.ones(2, 3), mask=torch.zeros(2, 3))
    assert float(empty) == 0.0


def test_span_ce_is_transformers_qa_loss() -> None:
    from transformers import BertConfig, BertForQuestionAnswering

    # hand: start row uniform over 4 tokens, gold 2 -> ln 4; end row [0, ln 3, 0, 0], gold 1 -> -ln(3/6) = ln 2
    start = torch.zeros(1, 4)
    end = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])
    assert float(span_ce(start, end, torch.tensor([2]), torch.tensor([1]))) == pytest.approx(1.5 * math.log(2.0))

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16)
    model = BertForQuestionAnswering(cfg).eval()
    ids = torch.randint(5, 40, (3, 7))
    starts, ends = torch.tensor([0, 3, 9]), torch.tensor([0, 5, 2])  # 9 lies past the window: ignored, as HF does
    with torch.no_grad():
        out = model(input_ids=ids, start_positions=starts, end_positions=ends)
    assert float(span_ce(out.start_logits, out.end_logits, starts, ends)) == pytest.approx(float(out.loss), rel=1e-6)


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(KDistillError, match=r"span KL: student logits \(2, 4\) and teacher logits \(2, 5\)"):
        masked_kl(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(KDistillError, match=r"span KL: mask shape \(2, 3\) does not match inputs \(2, 4\)"):
        masked_kl(torch.zeros(2, 4), torch.zeros(2, 4), mask=torch.ones(2, 3))
    with pytest.raises(KDistillError, match="temperature must be > 0"):
        masked_kl(torch.zeros(2, 4), torch.zeros(2, 4), temperature=0.0)
    with pytest.raises(KDistillError, match="span CE: start logits"):
        span_ce(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2), torch.zeros(2))
