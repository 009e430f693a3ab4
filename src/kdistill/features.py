"""Feature capture: embeddings, hidden states, attention probabilities and raw scores, by name.

Losses name tensors with a `FeatureKey`-style kind ("hidden", "attn_scores", ...) and a layer index,
never with tuple positions. Hidden states come from `output_hidden_states`; attention maps come
from an attention function registered with transformers' `AttentionInterface`, which records the
raw pre-softmax scores and the pre-dropout probabilities (eager attention returns only
post-dropout probabilities and never the scores). Models outside that interface (MPNet, DeBERTa)
fall back to `output_attentions` for probabilities and refuse raw scores when the run is set up.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from kdistill.errors import KDistillError
from kdistill.models import ModelProbe

ATTN_IMPL = "kdistill"
FEATURE_KINDS = ("logits", "embeddings", "hidden", "attn_scores", "attn_probs")


@dataclass
class _Recorder:
    layers: set[int] | None  # 1-based layers to keep; None keeps all
    scores: dict[int, Tensor] = field(default_factory=dict)
    probs: dict[int, Tensor] = field(default_factory=dict)
    calls: int = 0


_ACTIVE: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar("kdistill_recorder", default=None)


def _recording_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Eager attention that also records scores (before the mask) and probabilities (before dropout)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    weights = scores + attention_mask if attention_mask is not None else scores
    probs = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    rec = _ACTIVE.get()
    if rec is not None:
        rec.calls += 1
        layer = rec.calls  # an encoder calls its layers in order, once each per forward
        if rec.layers is None or layer in rec.layers:
            rec.scores[layer] = scores
            rec.probs[layer] = probs
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register(ATTN_IMPL, _recording_attention)
AttentionMaskInterface.register(ATTN_IMPL, eager_mask)  # without it the mask arrives as None


@dataclass
class Features:
    """What one forward pass exposed. Layer dicts are keyed 0 (embeddings) .. L (last layer)."""

    logits: Tensor
    mask: Tensor
    hidden: dict[int, Tensor] = field(default_factory=dict)
    attn_scores: dict[int, Tensor] = field(default_factory=dict)
    attn_probs: dict[int, Tensor] = field(default_factory=dict)

    def get(self, kind: str, layer: int) -> Tensor:
        if kind == "embeddings":
            kind, layer = "hidden", 0
        table = getattr(self, kind)
        if layer not in table:
            raise KDistillError(f"feature {kind}[{layer}] was not captured")
        return table[layer]


@dataclass(frozen=True)
class FeatureRequest:
    """Which layers of which kinds a forward pass must expose (built from the objective)."""

    hidden: frozenset[int] = frozenset()
    attn_scores: frozenset[int] = frozenset()
    attn_probs: frozenset[int] = frozenset()

    @property
    def attention_layers(self) -> frozenset[int]:
        return self.attn_scores | self.attn_probs

    def __bool__(self) -> bool:
        return bool(self.hidden or self.attention_layers)


def prepare_for_capture(model: nn.Module, probe_: ModelProbe, request: FeatureRequest, role: str) -> None:
    """Switch attention to the recording function when attention features are needed.

    Fails at set-up, not at step 1, when a feature cannot be produced for this model family.
    """
    bad = [i for kind in ("hidden", "attn_scores", "attn_probs") for i in getattr(request, kind)
           if not 0 <= i <= probe_.num_layers or (kind != "hidden" and i == 0)]
    if bad:
        raise KDistillError(f"the {role} has {probe_.num_layers} layers; cannot capture layer(s) {sorted(bad)}")
    if not request.attention_layers:
        return
    if probe_.supports_attention_interface:
        model.set_attn_implementation(ATTN_IMPL)
        return
    if request.attn_scores:
        raise KDistillError(
            f"raw attention scores cannot be captured from the {role} ({probe_.family}: it does not use "
            "transformers' AttentionInterface); use attention probabilities (attn_kl) instead")
    model.set_attn_implementation("eager")


@contextmanager
def _recording(layers: set[int] | None) -> Iterator[_Recorder]:
    rec = _Recorder(layers=layers)
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        _ACTIVE.reset(token)


@functools.cache
def _forward_params(model_cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_cls.forward).parameters)


def model_inputs(model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Only the inputs this model accepts (DistilBERT takes no token_type_ids)."""
    accepted = _forward_params(type(model))
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
            and k in accepted}


def forward_features(model: nn.Module, batch: Mapping[str, Tensor], request: FeatureRequest) -> Features:
    """Run `model` once and return logits plus exactly the requested features."""
    inputs = model_inputs(model, batch)
    uses_interface = getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTN_IMPL
    need_attn = bool(request.attention_layers)
    want_hidden = bool(request.hidden)
    with _recording(set(request.attention_layers) if need_attn else set()) as rec, _token_rows(batch):
        out = model(**inputs, output_hidden_states=want_hidden,
                    output_attentions=need_attn and not uses_interface, return_dict=True)
    feats = Features(logits=out.logits, mask=batch["attention_mask"])
    if want_hidden:
        states = out.hidden_states
        feats.hidden = {i: states[i] for i in request.hidden}
    if need_attn:
        if uses_interface:
            feats.attn_scores = {i: rec.scores[i] for i in request.attn_scores}
            feats.attn_probs = {i: rec.probs[i] for i in request.attn_probs}
        else:
            atts = out.attentions
            if not atts:
                raise KDistillError("the model returned no attention maps; load it with eager attention")
            feats.attn_probs = {i: atts[i - 1] for i in request.attn_probs}
    return feats


def masked_positions(student: Features, teacher: Features | None, labels: Tensor
                     ) -> tuple[Features, Features | None, Tensor]:
    """Masked-LM runs: keep only the positions the collator masked (labels != -100), as rows.

    Token-level logits [B, L, V] become [N, V] (a head hooked by `score_masked_rows_only` already gives
    [N, V]) and labels [B, L] become [N], so the prediction losses (ce, kl, soft_ce) apply unchanged:
    DistilBERT's soft targets are taken at masked tokens. Hidden states and attention keep their shape.
    """
    keep = labels != -100
    s = dataclasses.replace(student, logits=student.logits[keep]) if student.logits.dim() == 3 else student
    t = teacher
    if teacher is not None and teacher.logits.dim() == 3:
        t = dataclasses.replace(teacher, logits=teacher.logits[keep])
    return s, t, labels[keep]


_ROWS: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar("kdistill_rows", default=None)
_MLM_HEADS = ("cls", "lm_head", "vocab_transform", "generator_predictions")


def _rows_only(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    rows = _ROWS.get()
    if rows is None or not args or args[0].dim() != 3:
        return None
    return (args[0][rows], *args[1:])


def score_masked_rows_only(model: nn.Module) -> bool:
    """Hook a masked-LM head so that, inside `forward_features` with token labels, it scores only the masked
    positions: the vocabulary projection is as costly as the encoder itself at full length, and only the masked
    rows are ever used. Weights and state-dict keys are untouched. False when no known head is found."""
    for name in _MLM_HEADS:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            if not getattr(head, "_kdistill_rows", False):
                head.register_forward_pre_hook(_rows_only)
                head._kdistill_rows = True
            return True
    return False


@contextmanager
def only_rows(rows: Tensor | None) -> Iterator[None]:
    """Inside, a head hooked by `score_masked_rows_only` scores only the positions where `rows` [B, L] is True."""
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)


def _token_rows(batch: Mapping[str, Tensor]) -> Any:
    labels = batch.get("labels")
    return only_rows(labels != -100 if labels is not None and labels.dim() == 2 else None)
