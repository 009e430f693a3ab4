"""Distillation losses as pure tensor functions, plus a registry so configs (and users) pick them by name.

Conventions: `s` is the student tensor, `t` the teacher tensor, `mask` the 2-D attention mask (B, L) with
1 = real token and 0 = padding. Padding is found from the mask only, never from tensor values, and padded
positions are removed with `torch.where` before any arithmetic, so huge, infinite or NaN values there
(e.g. -inf attention scores) change neither the loss nor its gradient. Every loss is computed in fp32
(half-precision inputs are upcast) and a batch that is entirely padding gives 0, not NaN.

The relation losses (MiniLM's value relation, MiniLMv2's multi-head self-attention relations) live in
`kdistill.distill.relations`, the mean-pooled hidden-state losses (`mean_pooled_cosine`, `mean_pooled_mse`) in
`kdistill.distill.pooled_losses`; both are registered here too, on import of this module.

Per-example losses (`token_aligned=False`: the prediction losses, `cls_cosine`, the mean-pooled ones) also work
for a teacher with another tokenizer; the per-layer ones among them take the teacher's own mask as `t_mask`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.registry import Registry

FEATURES = ("logits", "labels", "hidden", "embeddings", "attn_scores", "attn_probs", "cls", "qkv")
"""What a loss can consume; the trainer collects exactly these from the models."""

COSINE_FORMS = ("1-cos", "neg-cos", "mse-normalized")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss and the facts the trainer needs to feed it."""

    name: str
    fn: Callable[..., Tensor]
    feature: str  # one of FEATURES; "qkv" = per-head queries, keys and values (`kdistill.distill.features.QKV`)
    needs_teacher: bool  # False only for hard-label losses ("ce")
    per_layer: bool  # applied to each mapped (student, teacher) layer pair
    projectable: bool  # a learnable Linear(student_width -> teacher_width) may be needed
    token_aligned: bool  # student and teacher must see the same tokens (feature losses)
    # set-up check (student probe, teacher probe, loss params) -> None, raising KDistillError: refuses at
    # set-up what would fail at step 1 (e.g. head counts or relation heads that do not fit both models)
    check: Callable[[Any, Any, dict[str, Any]], None] | None = None
    # task types whose outputs the loss can compare (`kdistill.tasks`); None = every one (feature losses, logit MSE)
    tasks: frozenset[str] | None = None

    def accepts(self, param: str) -> bool:
        """Whether `fn` takes keyword `param`, so the trainer passes `temperature` only where it applies."""
        params = inspect.signature(self.fn).parameters
        return param in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


LOSSES: Registry[LossSpec] = Registry("loss")


def register_loss(
    name: str,
    *,
    feature: str,
    needs_teacher: bool = True,
    per_layer: bool = False,
    projectable: bool = False,
    token_aligned: bool | None = None,
    check: Callable[[Any, Any, dict[str, Any]], None] | None = None,
    tasks: set[str] | frozenset[str] | None = None,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator registering `fn` under `name`; returns `fn` unchanged so one function can carry two names.

    `token_aligned` defaults to True for every feature except "logits" and "labels", since only the
    prediction-level losses can compare models with different tokenisers. `check(student, teacher, params)`
    (two `ModelProbe`s and the loss's keyword arguments) runs when the objective is built. `tasks` names the task
    types the loss fits ("classification", "regression", "multilabel"; None = all): a softmax KL compares class
    distributions, which a regression task does not have, so the objective refuses it there at set-up.
    """
    if feature not in FEATURES:
        raise KDistillError(f"loss '{name}': unknown feature '{feature}' (valid: {', '.join(FEATURES)})")
    aligned = feature not in ("logits", "labels") if token_aligned is None else token_aligned

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        LOSSES.add(name, LossSpec(name=name, fn=fn, feature=feature, needs_teacher=needs_teacher,
                                  per_layer=per_layer, projectable=projectable, token_aligned=aligned,
                                  check=check, tasks=frozenset(tasks) if tasks is not None else None))
        return fn

    return deco


def get_loss(name: str) -> LossSpec:
    """The spec registered as `name`; a miss is a KDistillError listing the valid names."""
    return LOSSES.get(name)


# ----------------------------------------------------------------------------------------------- helpers


def as_f32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 so softmax, squares and sums don't overflow or lose precision."""
    return x.float() if x.is_floating_point() and x.dtype != torch.float64 else x


def _same_shape(loss: str, s: Tensor, t: Tensor, what: str = "shape") -> None:
    if s.shape != t.shape:
        raise KDistillError(f"{loss}: student {what} {tuple(s.shape)} != teacher {what} {tuple(t.shape)}")


def valid_tokens(mask: Tensor | None, lead: torch.Size, loss: str, device: torch.device) -> Tensor:
    """Boolean mask over the leading dims (all True without a mask); 1 = real token.

    Raises KDistillError, naming `loss`, when the mask's shape is not `lead`.
    """
    if mask is None:
        return torch.ones(lead, dtype=torch.bool, device=device)
    if tuple(mask.shape) != tuple(lead):
        raise KDistillError(f"{loss}: mask shape {tuple(mask.shape)} does not match inputs {tuple(lead)}")
    return mask.to(device) != 0


def _check_flag(loss: str, name: str, value: object) -> None:
    """A loss parameter given in YAML as a yes/no switch must be a boolean ("maybe" is not silently true)."""
    if not isinstance(value, bool):
        raise KDistillError(f"{loss}: parameter '{name}' must be true or false, got {value!r}")


def _heads_match(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """With different head counts, compare head-averaged maps (a common 1-head view of both)."""
    if s.shape[1] != t.shape[1]:
        return s.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
    return s, t


def _attn_checks(loss: str, s: Tensor, t: Tensor) -> None:
    if s.dim() != 4 or t.dim() != 4:
        raise KDistillError(f"{loss}: expects (batch, heads, L, L) maps, "
                            f"got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
        raise KDistillError(f"{loss}: student maps {tuple(s.shape)} and teacher maps {tuple(t.shape)} "
                            "differ in batch or sequence length")


def _pair_mask(mask: Tensor | None, s: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """(B,1,L,L) valid (query, key) pairs and (B,1,L) valid queries."""
    b, _, lq, lk = s.shape
    if lq != lk:
        raise KDistillError(f"{loss}: attention maps must be square, got {tuple(s.shape)}")
    tok = valid_tokens(mask, torch.Size((b, lq)), loss, s.device)
    return tok[:, None, :, None] & tok[:, None, None, :], tok[:, None, :]


# ------------------------------------------------------------------------------------- prediction losses


@register_loss("kl", feature="logits", tasks={"classification"})
def kl_div(s_logits: Tensor, t_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Hinton KD: KL(p_t || p_s) with p = softmax(logits / T), summed over classes, mean over rows, times T².

    T² keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015). Rows are the batch
    ("batchmean"); with extra leading dims (e.g. tokens) every leading position counts as a row.
    """
    _same_shape("kl", s_logits, t_logits)
    c = s_logits.shape[-1]
    log_ps = F.log_softmax(as_f32(s_logits).reshape(-1, c) / temperature, dim=-1)
    log_pt = F.log_softmax(as_f32(t_logits).reshape(-1, c) / temperature, dim=-1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * temperature**2


@register_loss("soft_targets", feature="logits")
def soft_targets(s_logits: Tensor, t_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """The task type's own soft-target loss, so one recipe fits every task (the default losses and `--preset`).

    A run resolves the name through `kdistill.tasks.Task.loss_spec` to `kl` (classification; per labelled token for
    NER), `span_kl` (QA: start and end distributions), `logit_mse` (regression: one output, no distribution, so the
    temperature is unused) or `bce_soft` (multi-label: per-label sigmoids at T). Called directly it is `kl`.
    """
    return kl_div(s_logits, t_logits, temperature=temperature)


@register_loss("soft_ce", feature="logits", tasks={"classification"})
def soft_cross_entropy(s_logits: Tensor, t_logits: Tensor, *, temperature: float = 1.0,
                       t2_scale: bool = False) -> Tensor:
    """Cross-entropy with soft targets, -sum_c p_t log p_s, summed over classes and mean over rows.

    TinyBERT's `soft_cross_entropy` additionally averages over the C classes (`.mean()` of the whole
    matrix), so its value is this one divided by C. `t2_scale=True` multiplies by T² as in `kl_div`.
    Differs from `kl_div` only by the teacher entropy, a constant w.r.t. the student.
    """
    _same_shape("soft_ce", s_logits, t_logits)
    c = s_logits.shape[-1]
    log_ps = F.log_softmax(as_f32(s_logits).reshape(-1, c) / temperature, dim=-1)
    pt = F.softmax(as_f32(t_logits).reshape(-1, c) / temperature, dim=-1)
    loss = -(pt * log_ps).sum(dim=-1).mean()
    return loss * temperature**2 if t2_scale else loss


@register_loss("logit_mse", feature="logits")
def logit_mse(s_logits: Tensor, t_logits: Tensor) -> Tensor:
    """Mean squared error over all logit elements (Ba & Caruana); no temperature needed."""
    _same_shape("logit_mse", s_logits, t_logits)
    return F.mse_loss(as_f32(s_logits), as_f32(t_logits), reduction="mean")


@register_loss("ce", feature="labels", needs_teacher=False, tasks={"classification"})
def hard_ce(s_logits: Tensor, labels: Tensor) -> Tensor:
    """Ordinary cross-entropy with the gold labels, mean over examples (labels -100 are ignored).

    In a run, `ce` names the task's gold-label loss: this one for classification, `mse` for regression and `bce`
    for multi-label (`kdistill.tasks.Task.loss_spec`).
    """
    return F.cross_entropy(as_f32(s_logits), labels.long(), reduction="mean")


@register_loss("bce_soft", feature="logits", tasks={"multilabel"})
def bce_soft(s_logits: Tensor, t_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Multi-label soft targets: binary cross-entropy of sigmoid(s/T) against the teacher's sigmoid(t/T), per label.

    -[p_t log p_s + (1 - p_t) log(1 - p_s)] with p = sigmoid(logits / T), mean over rows and labels (as
    `BCEWithLogitsLoss`), times T²: for large T, sigmoid(s/T) - sigmoid(t/T) ~ (s - t) / 4T, so without T² the
    gradient would shrink as 1/T², as Hinton et al. (2015) argue for the softmax. Each label is its own two-class
    distribution; a softmax across labels (`kl`) would make them compete.
    """
    _same_shape("bce_soft", s_logits, t_logits)
    pt = torch.sigmoid(as_f32(t_logits) / temperature)
    loss = F.binary_cross_entropy_with_logits(as_f32(s_logits) / temperature, pt, reduction="mean")
    return loss * temperature**2


@register_loss("mse", feature="labels", needs_teacher=False, tasks={"regression"})
def gold_mse(s_logits: Tensor, labels: Tensor) -> Tensor:
    """Regression: squared error between the student's one output (B, 1) and the gold score (B,), mean over rows.

    What Hugging Face's `problem_type="regression"` head computes (`MSELoss` on the squeezed output).
    """
    s = as_f32(s_logits).reshape(labels.shape[0], -1)
    if s.shape[1] != 1:
        raise KDistillError(f"mse: a regression model has one output, got {s.shape[1]}")
    return F.mse_loss(s[:, 0], labels.to(s.dtype), reduction="mean")


@register_loss("bce", feature="labels", needs_teacher=False, tasks={"multilabel"})
def gold_bce(s_logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label: binary cross-entropy of sigmoid(logits) (B, K) against the gold 0/1 rows (B, K), mean over all
    elements, as Hugging Face's `problem_type="multi_label_classification"` head (`BCEWithLogitsLoss`)."""
    _same_shape("bce", s_logits, labels)
    return F.binary_cross_entropy_with_logits(as_f32(s_logits), labels.to(torch.float32), reduction="mean")


# ---------------------------------------------------------------------------------------- feature losses


@register_loss("embedding_mse", feature="embeddings", per_layer=True, projectable=True)
@register_loss("hidden_mse", feature="hidden", per_layer=True, projectable=True)
def hidden_mse(s: Tensor, t: Tensor, *, mask: Tensor | None = None, center: bool = False) -> Tensor:
    """TinyBERT hidden/embedding loss on (B, L, H) states: squared error summed over real tokens and all H dims /
    (n_tokens * H).

    Unlike a plain `mse_loss`, padding neither adds error nor dilutes the mean, so the loss does not
    depend on how much a batch is padded. Different widths need a projection first (the spec is projectable).
    center=False (the default) is TinyBERT's loss as published (Jiao et al. 2020, eq. 8). center=True first
    subtracts the batch-mean error (over real tokens, per dim) from every token's error: that shared vector pushes
    every token state of a narrow random-init student the same way until all are one vector and the classifier reads
    a constant (benchmarks/collapse.py, tests/test_collapse.py); centring makes that collapse rarer, a smaller weight
    against the prediction losses too, and neither alone prevented it on SST-2's 2-layer, 192-wide student.
    """
    s, t = as_f32(s), as_f32(t)
    if s.shape[-1] != t.shape[-1]:
        raise KDistillError(f"hidden_mse: student width {s.shape[-1]} != teacher width {t.shape[-1]}; "
                            "project the student states first")
    _same_shape("hidden_mse", s, t)
    _check_flag("hidden_mse", "center", center)
    valid = valid_tokens(mask, s.shape[:-1], "hidden_mse", s.device)[..., None]
    diff = torch.where(valid, s - t, torch.zeros((), dtype=s.dtype, device=s.device))
    if center:
        dims = tuple(range(s.dim() - 1))
        mean = diff.sum(dim=dims) / valid.sum(dim=dims).clamp_min(1)
        diff = torch.where(valid, diff - mean, torch.zeros((), dtype=s.dtype, device=s.device))
    n = valid.sum().clamp_min(1) * s.shape[-1]
    return diff.pow(2).sum() / n


@register_loss("attn_mse", feature="attn_scores", per_layer=True)
def attention_mse(s: Tensor, t: Tensor, *, mask: Tensor | None = None, center: bool = False) -> Tensor:
    """TinyBERT attention loss on raw pre-softmax scores (B, heads, L, L).

    Mean of squared error over heads and valid (query, key) pairs, valid = mask[b,q] & mask[b,k]; the mask
    replaces TinyBERT's trick of zeroing scores <= -100, which also hits genuinely low real scores.
    With different head counts the head-averaged maps are compared. center=True subtracts each query row's mean
    error over its valid keys first: softmax ignores a constant added to a row, so the loss then does too.
    """
    s, t = as_f32(s), as_f32(t)
    _attn_checks("attn_mse", s, t)
    s, t = _heads_match(s, t)
    _check_flag("attn_mse", "center", center)
    pairs, _ = _pair_mask(mask, s, "attn_mse")
    diff = torch.where(pairs, s - t, torch.zeros((), dtype=s.dtype, device=s.device))
    if center:
        row = diff.sum(-1, keepdim=True) / pairs.sum(-1, keepdim=True).clamp_min(1)
        diff = torch.where(pairs, diff - row, torch.zeros((), dtype=s.dtype, device=s.device))
    n = pairs.sum().clamp_min(1) * s.shape[1]
    return diff.pow(2).sum() / n


@register_loss("attn_kl", feature="attn_probs", per_layer=True)
def attention_kl(s_probs: Tensor, t_probs: Tensor, *, mask: Tensor | None = None,
                 eps: float = 1e-12) -> Tensor:
    """MiniLM-style attention loss on probabilities (B, heads, L, L).

    Per head and query row, KL(t_row || s_row) summed over valid keys (xlogy makes t = 0 contribute 0;
    s is clamped to `eps` before the log), then mean over heads and valid query tokens. With different
    head counts the head-averaged distributions are compared.
    """
    s, t = as_f32(s_probs), as_f32(t_probs)
    _attn_checks("attn_kl", s, t)
    s, t = _heads_match(s, t)
    pairs, queries = _pair_mask(mask, s, "attn_kl")
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    t = torch.where(pairs, t, zero)
    s = torch.where(pairs, s, torch.ones((), dtype=s.dtype, device=s.device)).clamp_min(eps)
    per_key = torch.where(pairs, torch.xlogy(t, t) - torch.xlogy(t, s), zero)
    per_row = per_key.sum(dim=-1)  # (B, heads, L)
    n = queries.sum().clamp_min(1) * s.shape[1]
    return torch.where(queries, per_row, zero).sum() / n


@register_loss("hidden_cosine", feature="hidden", per_layer=True, projectable=True)
def cosine_loss(s: Tensor, t: Tensor, *, mask: Tensor | None = None, form: str = "1-cos") -> Tensor:
    """Direction-only loss per vector over the last dim, mean over valid tokens (or over rows for 2-D input).

    form: "1-cos" (DistilBERT's cosine embedding loss), "neg-cos" (-cos, same gradient) or
    "mse-normalized" (squared error between L2-normalised vectors summed over the dim, = 2 - 2cos).
    Scale-free, so it suits students whose hidden norms differ from the teacher's.
    """
    if form not in COSINE_FORMS:
        raise KDistillError(f"cosine loss: unknown form '{form}' (valid: {', '.join(COSINE_FORMS)})")
    s, t = as_f32(s), as_f32(t)
    if s.shape[-1] != t.shape[-1]:
        raise KDistillError(f"cosine loss: student width {s.shape[-1]} != teacher width {t.shape[-1]}; "
                            "project the student states first")
    _same_shape("cosine loss", s, t)
    valid = valid_tokens(mask, s.shape[:-1], "cosine loss", s.device)
    one = torch.ones((), dtype=s.dtype, device=s.device)
    # Padded vectors become all-ones in both, so normalising them is well defined (cos = 1, finite grads).
    s_n = F.normalize(torch.where(valid[..., None], s, one), dim=-1, eps=1e-8)
    t_n = F.normalize(torch.where(valid[..., None], t, one), dim=-1, eps=1e-8)
    if form == "mse-normalized":
        per = (s_n - t_n).pow(2).sum(dim=-1)
    else:
        cos = (s_n * t_n).sum(dim=-1)
        per = 1.0 - cos if form == "1-cos" else -cos
    per = torch.where(valid, per, torch.zeros((), dtype=s.dtype, device=s.device))
    return per.sum() / valid.sum().clamp_min(1)


def first_real_token(x: Tensor, mask: Tensor | None, loss: str = "cls_cosine") -> Tensor:
    """(B, L, H) states -> (B, H): each row's first real token by `mask` ([CLS], whichever side is padded);
    position 0 without a mask. Raises KDistillError, naming `loss`, when the mask's shape is not (B, L)."""
    if mask is None:
        return x[:, 0]
    first = valid_tokens(mask, x.shape[:-1], loss, x.device).to(torch.int64).argmax(dim=1)  # first True
    return x[torch.arange(x.shape[0], device=x.device), first]


@register_loss("cls_cosine", feature="hidden", per_layer=True, projectable=True, token_aligned=False)
def cls_cosine(s: Tensor, t: Tensor, *, form: str = "1-cos", mask: Tensor | None = None,
               t_mask: Tensor | None = None) -> Tensor:
    """`cosine_loss` between the first real token ([CLS]) of the student's and of the teacher's (B, L, H) states;
    2-D (B, H) input is taken as already pooled.

    `mask` is the student's attention mask, `t_mask` the teacher's (default: `mask`). They differ for a teacher
    with another tokenizer, whose states are on its own tokens (`kdistill.teachers.other_tokenizer`); the
    objective passes both. Without masks position 0 is taken, which right padding makes [CLS].
    """
    s0 = first_real_token(s, mask) if s.dim() == 3 else s
    t0 = first_real_token(t, mask if t_mask is None else t_mask) if t.dim() == 3 else t
    return cosine_loss(s0, t0, form=form)


# The mean-pooled, CKA and relation losses register themselves on import; imported last because their modules use
# the helpers above (a partly initialised `kdistill.distill.losses` already defines them when it is imported first).
from kdistill.distill import cka as _cka  # noqa: E402, F401
from kdistill.distill import pooled_losses as _pooled_losses  # noqa: E402, F401
from kdistill.distill import relations as _relations  # noqa: E402, F401
