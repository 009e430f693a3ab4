"""Extractive QA losses: soft targets on the start and end distributions, and the gold start/end cross-entropy.

DistilBERT's SQuAD distillation (Sanh et al., 2019; `transformers/examples/research_projects/distillation/
run_squad_w_distillation.py`) adds to the student's own QA loss the KL divergence between the teacher's and the
student's start distributions and between their end distributions, each softened by a temperature T:
`(KL_start + KL_end) / 2 * T^2`, `KLDivLoss(reduction="batchmean")` (summed over positions, mean over windows).
Here the distributions run over a mask of the window's positions (`QAWindows.span_mask`: the context tokens and
CLS), so the question, the special tokens and padding, whose logits mean nothing as answers, take no part; that
script pads every window to max_seq_length and compares all positions. CLS stays in: under HF's labelling a
window without the answer points at CLS, so the teacher's mass there is its "not in this window" signal.

Not registered as losses yet: these are plain functions `(student, teacher, *, mask, temperature)` in the style
of `kdistill.distill.losses`, for the QA task type to register.

A teacher cache stores each training window's start and end logits unpadded: window w has n_w real tokens
(`sum(attention_mask[w])`; right padding, so they come first), and a shard holds `start_logits` and `end_logits`
as float32 vectors of length sum(n_w), cut by the shard's `lengths` (n_w), as hidden states are stored today.
Reading a batch pads them back to (B, L); `span_mask` zeroes the padded positions, so their fill value never counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.distill.losses import as_f32, valid_tokens
from kdistill.errors import KDistillError

__all__ = ["masked_kl", "span_kl", "span_ce"]


def masked_kl(s_logits: Tensor, t_logits: Tensor, *, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """KL(p_t || p_s) between position distributions, p = softmax(logits / T) over each row's masked-in positions.

    `s_logits`, `t_logits`: (B, L); `mask`: (B, L), 1 = a position the distribution covers (None = all). Summed
    over positions, mean over the rows that have at least one position, times T² (Hinton et al., 2015); 0 when no
    row has any. Positions outside the mask change neither the value nor the gradient, whatever they hold (padding,
    -inf, NaN). Raises `KDistillError` for shapes that differ or are not 2-D.
    """
    if s_logits.shape != t_logits.shape or s_logits.dim() != 2:
        raise KDistillError(f"span KL: student logits {tuple(s_logits.shape)} and teacher logits "
                            f"{tuple(t_logits.shape)} must both be (windows, tokens)")
    if temperature <= 0:
        raise KDistillError(f"span KL: temperature must be > 0, got {temperature}")
    keep = valid_tokens(mask, s_logits.shape, "span KL", s_logits.device)
    rows = keep.any(dim=-1)
    if not bool(rows.any()):
        return s_logits.new_zeros((), dtype=torch.float32)
    keep = keep[rows]
    neg_inf = torch.tensor(float("-inf"), device=s_logits.device)
    # masked positions become -inf before the softmax (probability 0); `where` afterwards keeps their log terms,
    # -inf - -inf, out of the sum and out of the gradient
    log_ps = F.log_softmax(torch.where(keep, as_f32(s_logits[rows]) / temperature, neg_inf), dim=-1)
    log_pt = F.log_softmax(torch.where(keep, as_f32(t_logits[rows]) / temperature, neg_inf), dim=-1)
    zero = torch.zeros((), device=s_logits.device)
    log_ps, log_pt = torch.where(keep, log_ps, zero), torch.where(keep, log_pt, zero)
    kl = (log_pt.exp() * (log_pt - log_ps)).masked_fill(~keep, 0.0).sum(dim=-1)
    return kl.mean() * temperature**2


def span_kl(s_start: Tensor, s_end: Tensor, t_start: Tensor, t_end: Tensor, *, mask: Tensor | None = None,
            temperature: float = 1.0) -> Tensor:
    """DistilBERT's SQuAD soft-target loss: (KL_start + KL_end) / 2 x T², each a `masked_kl` over `mask`.

    All logits (B, L); `mask` (B, L) as `QAWindows.span_mask` (padded with 0).
    """
    return (masked_kl(s_start, t_start, mask=mask, temperature=temperature)
            + masked_kl(s_end, t_end, mask=mask, temperature=temperature)) / 2


def span_ce(s_start: Tensor, s_end: Tensor, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """The gold QA loss of `*ForQuestionAnswering`: (CE(start) + CE(end)) / 2, mean over windows.

    Logits (B, L), positions (B,) token indices (CLS when the answer is not in the window). As in transformers,
    positions outside [0, L) are clamped to L and ignored, so a model's own `loss` and this agree.
    """
    if s_start.shape != s_end.shape or s_start.dim() != 2:
        raise KDistillError(f"span CE: start logits {tuple(s_start.shape)} and end logits {tuple(s_end.shape)} "
                            "must both be (windows, tokens)")
    length = s_start.shape[1]
    start = start_positions.reshape(-1).long().clamp(0, length)
    end = end_positions.reshape(-1).long().clamp(0, length)
    ce_start = F.cross_entropy(as_f32(s_start), start, ignore_index=length)
    ce_end = F.cross_entropy(as_f32(s_end), end, ignore_index=length)
    return (ce_start + ce_end) / 2
