"""Mean-pooled hidden-state losses: each side's states averaged over its own real tokens, compared per example.

A sentence embedding in Sentence-Transformers is the mean of the last layer's token states over the attention
mask ([CLS] and [SEP] included, padding excluded): `sentence_transformers.models.Pooling` with
`pooling_mode_mean_tokens` (Reimers & Gurevych 2019, "Sentence-BERT", EMNLP), the `mean_pooling` function on the
model cards of all-MiniLM-L6-v2 and all-mpnet-base-v2, which are trained with it. These losses pool the same way,
at any mapped layer, and compare the (B, H) means:

- mean_pooled_cosine: 1 - cos per example (or `form` as `cls_cosine`), mean over examples. Scale-free, so it suits
  a student of another family whose hidden norms differ from the teacher's (MiniLM under MPNet).
- mean_pooled_mse: squared error over examples and dims, the mean of both: Sentence-Transformers' `MSELoss`
  distillation of a teacher's embeddings (Reimers & Gurevych 2020, "Making Monolingual Sentence Embeddings
  Multilingual using Knowledge Distillation", EMNLP). It also matches the embedding's length.

Both are per-example losses (`token_aligned=False`), so they work for a student with another tokenizer: `mask` is
the student's attention mask and `t_mask` the teacher's own (`kdistill.teachers.other_tokenizer` gives the teacher's
states on its own tokens with its mask; the objective passes that as `t_mask`). For a teacher of the student's
tokenizer `t_mask` is the student's mask. Different widths go through the objective's projection, applied to every
token before pooling (the mean of a Linear's outputs is the Linear of the mean).

Conventions as in `kdistill.distill.losses`: fp32, padding found from the masks only and removed with `torch.where`
before the sum (NaN or huge values there change neither value nor gradient), and an example without real tokens
on either side counts for nothing (a batch of only such examples gives 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdistill.distill.losses import as_f32, cosine_loss, hidden_mse, register_loss, valid_tokens
from kdistill.errors import KDistillError


def mean_over_tokens(x: Tensor, mask: Tensor | None, loss: str = "mean pooling") -> tuple[Tensor, Tensor]:
    """Mean pooling as Sentence-Transformers does it: (B, L, H) states -> (B, H) means over each row's real tokens.

    Returns the means (fp32) and a (B,) bool of rows that have a real token (a row with none gets a zero mean);
    2-D (B, H) input is taken as already pooled (every row counts). Raises KDistillError, naming `loss`, when
    `mask` is not (B, L).
    """
    x = as_f32(x)
    if x.dim() == 2:
        return x, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if x.dim() != 3:
        raise KDistillError(f"{loss}: expects (batch, tokens, width) states, got {tuple(x.shape)}")
    valid = valid_tokens(mask, x.shape[:-1], loss, x.device)
    summed = torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    n = valid.sum(dim=1)
    return summed / n.clamp_min(1).to(x.dtype)[:, None], n > 0


def _pooled(loss: str, s: Tensor, t: Tensor, mask: Tensor | None, t_mask: Tensor | None
            ) -> tuple[Tensor, Tensor, Tensor]:
    """Both sides pooled with their own masks (the teacher's defaults to the student's), and the rows to compare."""
    if s.shape[-1] != t.shape[-1]:
        raise KDistillError(f"{loss}: student width {s.shape[-1]} != teacher width {t.shape[-1]}; "
                            "project the student states first")
    s_mean, s_rows = mean_over_tokens(s, mask, f"{loss} (student)")
    t_mean, t_rows = mean_over_tokens(t, mask if t_mask is None else t_mask, f"{loss} (teacher)")
    if s_mean.shape != t_mean.shape:
        raise KDistillError(f"{loss}: student batch {s_mean.shape[0]} != teacher batch {t_mean.shape[0]}")
    return s_mean, t_mean, s_rows & t_rows


@register_loss("mean_pooled_cosine", feature="hidden", per_layer=True, projectable=True, token_aligned=False)
def mean_pooled_cosine(s: Tensor, t: Tensor, *, mask: Tensor | None = None, t_mask: Tensor | None = None,
                       form: str = "1-cos") -> Tensor:
    """`cosine_loss` between the student's and the teacher's mean-pooled states, mean over examples.

    s: (B, L_s, H) pooled with `mask` (B, L_s); t: (B, L_t, H) pooled with `t_mask` (B, L_t), default `mask`; 2-D
    (B, H) input is taken as already pooled. `form` as `cosine_loss` ("1-cos", "neg-cos", "mse-normalized").
    Raises KDistillError on different widths (project first), batch sizes or mask shapes.
    """
    s_mean, t_mean, rows = _pooled("mean_pooled_cosine", s, t, mask, t_mask)
    return cosine_loss(s_mean, t_mean, mask=rows, form=form)


@register_loss("mean_pooled_mse", feature="hidden", per_layer=True, projectable=True, token_aligned=False)
def mean_pooled_mse(s: Tensor, t: Tensor, *, mask: Tensor | None = None, t_mask: Tensor | None = None) -> Tensor:
    """Squared error between the student's and the teacher's mean-pooled states, mean over examples and the H dims
    (Sentence-Transformers' `MSELoss`, `torch.nn.MSELoss` on the two embeddings).

    Shapes and masks as `mean_pooled_cosine`; raises KDistillError on different widths, batch sizes or mask shapes.
    """
    s_mean, t_mean, rows = _pooled("mean_pooled_mse", s, t, mask, t_mask)
    return hidden_mse(s_mean, t_mean, mask=rows)
