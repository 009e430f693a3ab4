"""Relation distillation: MiniLM's value relation and MiniLMv2's multi-head self-attention relations.

A relation map of a layer is softmax(A A^T / sqrt(d)) over the tokens, A being that layer's queries, keys or
values: an L x L map whatever the width, so a student of any width (and, for MiniLMv2, any head count) matches
a teacher without a projection. The inputs are `QKV` records (`kdistill.distill.features.QKV`: query, key and value,
each (batch, heads, L, head_dim), after the linear projections and before attention) of one mapped layer pair.

Conventions as in `kdistill.distill.losses`: fp32, padding found from the mask only and removed with `torch.where`
before any arithmetic (padded keys get no probability, padded query rows no weight), and a batch that is
entirely padding gives 0.

- value_relation: MiniLM, Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
  Compression of Pre-Trained Transformers" (NeurIPS); with `attn_kl` on the same layer pair it is the
  paper's objective.
- minilmv2_relations: MiniLMv2, Wang et al. 2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation
  for Compressing Pretrained Transformers" (Findings of ACL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.distill.losses import as_f32, register_loss, valid_tokens
from kdistill.errors import KDistillError

if TYPE_CHECKING:
    from kdistill.distill.features import QKV

RELATIONS = ("qq", "kk", "vv")
"""MiniLMv2's relation types: query-query, key-key, value-value."""

DEFAULT_RELATION_HEADS = 12
"""MiniLMv2's relation heads by default; it divides the usual widths (768, 384, 312, 1024). The paper uses 48
for base-size teachers and 64 for large ones."""

_PART = {"qq": "query", "kk": "key", "vv": "value"}


# ----------------------------------------------------------------------------------------------- helpers


def _parts(loss: str, s: Any, t: Any, parts: Sequence[str]) -> torch.Size:
    """Check that both sides carry 4-D `parts` with equal batch and length; returns the (batch, L) shape."""
    lead = None
    for side, x in (("student", s), ("teacher", t)):
        for part in parts:
            a = getattr(x, part, None)
            if not isinstance(a, Tensor) or a.dim() != 4:
                raise KDistillError(f"{loss}: expects the {side}'s per-head {part} vectors (batch, heads, L, d) "
                                    "from the 'qkv' feature")
            if lead is None:
                lead = torch.Size((a.shape[0], a.shape[2]))
            elif (a.shape[0], a.shape[2]) != tuple(lead):
                raise KDistillError(f"{loss}: student and teacher {part} vectors differ in batch or sequence "
                                    f"length ({tuple(getattr(s, part).shape)} vs {tuple(getattr(t, part).shape)})")
    assert lead is not None
    return lead


def _log_relation(x: Tensor, valid: Tensor) -> Tensor:
    """log softmax(x x^T / sqrt(d)) over the real keys: x (B, R, L, d), valid (B, L) -> (B, R, L, L)."""
    x = as_f32(x)
    x = torch.where(valid[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    scores = torch.matmul(x, x.transpose(-1, -2)) / math.sqrt(x.shape[-1])
    # a finite floor, not -inf: an all-padding row stays finite (uniform) and is dropped by the query mask
    scores = torch.where(valid[:, None, None, :], scores, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def _relation_kl(log_s: Tensor, log_t: Tensor, valid: Tensor) -> Tensor:
    """KL(t || s) per query row summed over real keys, then mean over relation heads and real query tokens."""
    zero = torch.zeros((), dtype=log_s.dtype, device=log_s.device)
    pairs = valid[:, None, :, None] & valid[:, None, None, :]
    per_row = torch.where(pairs, log_t.exp() * (log_t - log_s), zero).sum(dim=-1)  # (B, R, L)
    per_row = torch.where(valid[:, None, :], per_row, zero)
    return per_row.sum() / (valid.sum().clamp_min(1) * log_s.shape[1])


def _split_relation_heads(x: Tensor, heads: int, side: str) -> Tensor:
    """(B, h, L, d): concatenate the attention heads back to the full width h*d, then split it into `heads`."""
    b, h, n, d = x.shape
    width = h * d
    if width % heads:
        raise KDistillError(f"minilmv2_relations: relation_heads {heads} does not divide the {side} width {width}")
    return x.transpose(1, 2).reshape(b, n, heads, width // heads).transpose(1, 2)


def relation_heads_param(value: Any) -> int:
    """`relation_heads` as a positive int; KDistillError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KDistillError(f"minilmv2_relations: relation_heads must be a positive integer, got {value!r}")
    return value


def relation_names(value: Any) -> tuple[str, ...]:
    """`relations` as a tuple of distinct names from RELATIONS ("vv" alone is accepted as ["vv"])."""
    names = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list | tuple) else None
    if not names or any(n not in RELATIONS for n in names) or len(set(names)) != len(names):
        raise KDistillError(f"minilmv2_relations: relations must be distinct names from {list(RELATIONS)}, "
                            f"got {value!r}")
    return names


# ---------------------------------------------------------------------------------------- set-up checks


def _check_value_relation(student: Any, teacher: Any, params: dict[str, Any]) -> None:
    """Refuse unequal head counts when the objective is built (heads are paired one to one)."""
    del params
    if student.num_heads != teacher.num_heads:
        raise KDistillError(f"value_relation pairs attention heads one to one, but the student has {student.num_heads} "
                            f"heads and the teacher {teacher.num_heads}; use minilmv2_relations (any head count)")


def _check_relations(student: Any, teacher: Any, params: dict[str, Any]) -> None:
    """Refuse bad `relations`, and `relation_heads` that do not divide both widths, when the objective is built."""
    relation_names(params.get("relations", RELATIONS))
    heads = relation_heads_param(params.get("relation_heads", DEFAULT_RELATION_HEADS))
    widths = {"student": student.hidden_size, "teacher": teacher.hidden_size}
    bad = [f"{side} width {w}" for side, w in widths.items() if w % heads]
    if bad:
        common = math.gcd(*widths.values())
        raise KDistillError(f"minilmv2_relations: relation_heads {heads} must divide both widths, and does not divide "
                            f"the {' or '.join(bad)}; pick a divisor of {common}")


# ----------------------------------------------------------------------------------------------- losses


@register_loss("value_relation", feature="qkv", per_layer=True, check=_check_value_relation)
def value_relation(s: QKV, t: QKV, *, mask: Tensor | None = None) -> Tensor:
    """MiniLM value-relation loss (Wang et al. 2020), per mapped layer pair.

    Per attention head h: VR_h = softmax(V_h V_h^T / sqrt(d_h)) over the real keys (d_h each model's own head
    size); KL(VR_t || VR_s) summed over keys, then mean over heads and real query tokens. Any widths, but equal
    head counts (raises KDistillError otherwise, and when batch or length differ). MiniLM's objective is this
    plus `attn_kl` on the last layer pair (teacher last layer <- student last layer).
    """
    lead = _parts("value_relation", s, t, ("value",))
    sv, tv = s.value, t.value
    if sv.shape[1] != tv.shape[1]:
        raise KDistillError(f"value_relation pairs attention heads one to one: student has {sv.shape[1]} heads, "
                            f"teacher {tv.shape[1]}; use minilmv2_relations")
    valid = valid_tokens(mask, lead, "value_relation", sv.device)
    return _relation_kl(_log_relation(sv, valid), _log_relation(tv, valid), valid)


@register_loss("minilmv2_relations", feature="qkv", per_layer=True, check=_check_relations)
def minilmv2_relations(s: QKV, t: QKV, *, mask: Tensor | None = None,
                       relation_heads: int = DEFAULT_RELATION_HEADS,
                       relations: Sequence[str] = RELATIONS) -> Tensor:
    """MiniLMv2 multi-head self-attention relation loss (Wang et al. 2021), per mapped layer pair.

    For each relation in `relations` ("qq", "kk", "vv": queries, keys, values): the heads are concatenated back
    to the full width and split into `relation_heads` relation heads of size d_r = width / relation_heads (each
    model its own d_r); per relation head, R = softmax(A A^T / sqrt(d_r)) over the real keys; KL(R_t || R_s)
    summed over keys, mean over relation heads and real query tokens. The relations' losses are summed (the
    paper weighs them equally). Any widths and head counts as long as `relation_heads` divides both widths
    (raises KDistillError otherwise, for unknown relations, and when batch or length differ).
    """
    names = relation_names(relations)
    heads = relation_heads_param(relation_heads)
    parts = [_PART[n] for n in names]
    lead = _parts("minilmv2_relations", s, t, parts)
    valid = valid_tokens(mask, lead, "minilmv2_relations", s.value.device)
    total = torch.zeros((), dtype=torch.float32, device=valid.device)
    for part in parts:
        xs = _split_relation_heads(getattr(s, part), heads, "student")
        xt = _split_relation_heads(getattr(t, part), heads, "teacher")
        total = total + _relation_kl(_log_relation(xs, valid), _log_relation(xt, valid), valid)
    return total
