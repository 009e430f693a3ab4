"""`hidden_cka`: 1 - linear CKA between the student's and the teacher's token states, for any two widths.

Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited",
ICML) compares two sets of representations of the same N inputs, S (N, ds) and T (N, dt), after centring each
column over the N rows:

    CKA(S, T) = ||S^T T||_F^2 / (||S^T S||_F * ||T^T T||_F)        in [0, 1]

It is invariant to orthogonal transforms and to isotropic scaling of either side, so it needs no projection between
widths and no matching of scales. Why kdistill has it: `hidden_mse` through a learned projection can be lowered by
making every token state of a narrow random-init student the same vector (the random projection's noise then
vanishes; benchmarks/collapse.py measured a mean pairwise token cosine of 0.996 and a one-class student). Under CKA
that is the worst answer: a student whose centred states are all zero shares no structure with the teacher, so the
loss is 1 (its maximum), and the gradient rewards token states that vary as the teacher's do. Using CKA as a
distillation loss follows Saha et al. 2022 ("Distilling Representational Similarity using Centered Kernel
Alignment", BMVC).

Rows are the batch's real tokens (padding removed by the mask), so N is the number of real tokens in the batch.
Conventions as in `kdistill.distill.losses`: fp32, padding never counts. A batch with under two real tokens, or a
side without any variation, gives the maximum loss 1 (nothing is shared) without NaN.
"""

from __future__ import annotations

from torch import Tensor

from kdistill.distill.losses import as_f32, register_loss, valid_tokens
from kdistill.errors import KDistillError


def linear_cka(s: Tensor, t: Tensor, eps: float = 1e-12) -> Tensor:
    """Linear CKA of (N, ds) and (N, dt) row sets (columns centred here); 0-dim tensor in [0, 1]."""
    if s.dim() != 2 or t.dim() != 2 or s.shape[0] != t.shape[0]:
        raise KDistillError(f"hidden_cka: expected (N, ds) and (N, dt) with the same N, got {tuple(s.shape)} and "
                            f"{tuple(t.shape)}")
    s = s - s.mean(dim=0, keepdim=True)
    t = t - t.mean(dim=0, keepdim=True)
    cross = (s.T @ t).pow(2).sum()
    # clamp before the square root: sqrt'(0) is infinite, and an exactly collapsed student must get finite grads
    norm = ((s.T @ s).pow(2).sum() * (t.T @ t).pow(2).sum()).clamp_min(eps).sqrt()
    return cross / norm


@register_loss("hidden_cka", feature="hidden", per_layer=True, projectable=False)
def hidden_cka(s: Tensor, t: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """1 - linear CKA between (B, L, ds) student and (B, L, dt) teacher states over the batch's real tokens.

    Widths may differ (no projection). Raises KDistillError when batch or length differ.
    """
    s, t = as_f32(s), as_f32(t)
    if s.shape[:-1] != t.shape[:-1]:
        raise KDistillError(f"hidden_cka: student states {tuple(s.shape)} and teacher states {tuple(t.shape)} "
                            "cover different tokens")
    valid = valid_tokens(mask, s.shape[:-1], "hidden_cka", s.device)
    if int(valid.sum()) < 2:
        return 1.0 + 0.0 * s[valid].sum()  # keeps the graph; padding (maybe NaN) stays out
    return 1.0 - linear_cka(s[valid], t[valid])
