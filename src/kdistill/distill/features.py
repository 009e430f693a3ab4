"""Feature capture: embeddings, hidden states, attention probabilities and raw scores, by name.

Losses name tensors with a `FeatureKey`-style kind ("hidden", "attn_scores", ...) and a layer index,
never with tuple positions. Hidden states come from `output_hidden_states`; attention maps come
from an attention function registered with transformers' `AttentionInterface`, which records the
raw pre-softmax scores and the pre-dropout probabilities (eager attention returns only
post-dropout probabilities and never the scores). Models outside that interface (MPNet, DeBERTa)
get a forward pre-hook on the dropout applied to their attention softmax: its input is the same
pre-dropout probabilities, still in the autograd graph. Their raw scores are never materialised as
a module input, so asking for them (attn_mse) is refused when the run is set up.

The relation losses (`kdistill.distill.relations`) need each mapped layer's queries, keys and values after the
linear projections and before attention ("qkv"): the recording attention function receives exactly
those; MPNet gets forward hooks on its q/k/v Linear modules instead; DeBERTa is refused at set-up.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from kdistill.errors import KDistillError
from kdistill.models import ModelProbe

ATTN_IMPL = "kdistill"
FEATURE_KINDS = ("logits", "embeddings", "hidden", "attn_scores", "attn_probs", "qkv")


class QKV(NamedTuple):
    """One layer's attention inputs per head, after the query/key/value projections and before attention.

    Each is (batch, heads, L, head_dim), as the attention function receives it (unscaled), and keeps its
    autograd graph on the student side.
    """

    query: Tensor
    key: Tensor
    value: Tensor


@dataclass
class _Recorder:
    layers: set[int] | None  # 1-based layers whose maps to keep; None keeps all
    qkv_layers: set[int] = field(default_factory=set)  # 1-based layers whose q/k/v to keep
    scores: dict[int, Tensor] = field(default_factory=dict)
    probs: dict[int, Tensor] = field(default_factory=dict)
    qkv: dict[int, QKV] = field(default_factory=dict)
    projections: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # hooked families: (B, L, width)
    calls: int = 0
    projection_calls: dict[str, int] = field(default_factory=dict)

    def add(self, scores: Tensor | None, probs: Tensor, qkv: QKV | None = None) -> None:
        """Record one attention call; an encoder calls its layers in order, once each per forward."""
        self.calls += 1
        layer = self.calls
        if self.layers is None or layer in self.layers:
            if scores is not None:
                self.scores[layer] = scores
            self.probs[layer] = probs
        if qkv is not None and layer in self.qkv_layers:
            self.qkv[layer] = qkv

    def add_projection(self, part: str, out: Tensor) -> None:
        """Record one q/k/v Linear output ("query", "key" or "value"); each is called once per layer, in order."""
        layer = self.projection_calls[part] = self.projection_calls.get(part, 0) + 1
        if layer in self.qkv_layers:
            self.projections.setdefault(layer, {})[part] = out


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
        rec.add(scores, probs, QKV(query, key, value))
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register(ATTN_IMPL, _recording_attention)
AttentionMaskInterface.register(ATTN_IMPL, eager_mask)  # without it the mask arrives as None

# Families outside AttentionInterface: the nn.Dropout their self-attention applies to the softmax output,
# as a path inside each transformer layer (transformers 5.x module names). Its input is the pre-dropout map.
ATTENTION_DROPOUT: dict[str, str] = {
    "mpnet": "attention.attn.dropout",
    "deberta": "attention.self.dropout",
    "deberta-v2": "attention.self.dropout",
}
_HOOKED = "_kdistill_attn_dropout_hook"


def _record_dropout_input(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook on an attention dropout: record its input, the probabilities before dropout."""
    rec = _ACTIVE.get()
    if rec is not None and args:
        rec.add(None, args[0])


def _hook_attention_dropout(model: nn.Module, probe_: ModelProbe, role: str) -> None:
    """Record each layer's pre-dropout attention probabilities through a pre-hook on its attention dropout.

    Idempotent, and safe across `copy.deepcopy` (students are copies of teachers): the hook carries no layer
    index (layers are numbered in call order, as for the AttentionInterface path) and the marker that stops a
    second registration lives on the dropout module itself, so it is copied along with the hook.
    Raises KDistillError when the family's attention dropout is not known or not where expected.
    """
    path = ATTENTION_DROPOUT.get(probe_.family)
    layers = model.get_submodule(probe_.layers_path)
    drops: list[nn.Module] = []
    if path is not None:
        try:
            drops = [layer.get_submodule(path) for layer in layers]
        except AttributeError:
            drops = []
    if not drops or not all(isinstance(d, nn.Dropout) for d in drops):
        raise KDistillError(
            f"attention maps cannot be captured before dropout from the {role} ({probe_.family}); "
            "drop the attention losses (attn_kl, attn_mse): the hidden-state and prediction losses work")
    for d in drops:
        if not getattr(d, _HOOKED, False):
            d.register_forward_pre_hook(_record_dropout_input)
            setattr(d, _HOOKED, True)
    setattr(model, _HOOKED, True)


# Families outside AttentionInterface whose query/key/value projections are separate nn.Linear modules,
# called once per layer on the layer input (paths inside each transformer layer, transformers 5.x names).
# DeBERTa is absent: v1 projects q/k/v with one fused Linear, v2 calls its query/key Linear a second time on
# the relative-position embeddings, so call order would not number layers.
QKV_PROJECTIONS: dict[str, dict[str, str]] = {
    "mpnet": {"query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v"},
}
_QKV_HOOKED = "_kdistill_qkv_hook"
_QKV_PART = "_kdistill_qkv_part"


def _record_projection(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
    """Forward hook on a q/k/v Linear: record its output (B, L, width) under the part the module is marked with."""
    rec = _ACTIVE.get()
    if rec is not None:
        rec.add_projection(getattr(module, _QKV_PART), output)


def _hook_qkv_projections(model: nn.Module, probe_: ModelProbe, role: str) -> None:
    """Record each layer's q/k/v projections by forward hooks on their Linears; idempotent and copy-safe like
    `_hook_attention_dropout`. Raises KDistillError, naming the family, when they are not known."""
    paths = QKV_PROJECTIONS.get(probe_.family)
    layers = model.get_submodule(probe_.layers_path)
    found: list[tuple[str, nn.Module]] = []
    if paths is not None:
        try:
            found = [(part, layer.get_submodule(path)) for layer in layers for part, path in paths.items()]
        except AttributeError:
            found = []
    if not found or not all(isinstance(m, nn.Linear) for _, m in found):
        raise KDistillError(
            f"queries, keys and values cannot be captured from the {role} ({probe_.family}); drop the relation "
            "losses (value_relation, minilmv2_relations): they need BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, "
            "DistilBERT or MPNet")
    for part, lin in found:
        if not getattr(lin, _QKV_HOOKED, False):
            lin.register_forward_hook(_record_projection)
            setattr(lin, _QKV_HOOKED, True)
            setattr(lin, _QKV_PART, part)
    setattr(model, _QKV_HOOKED, True)


@dataclass
class Features:
    """What one forward pass exposed. Layer dicts are keyed 0 (embeddings) .. L (last layer)."""

    logits: Tensor
    mask: Tensor
    hidden: dict[int, Tensor] = field(default_factory=dict)
    attn_scores: dict[int, Tensor] = field(default_factory=dict)
    attn_probs: dict[int, Tensor] = field(default_factory=dict)
    qkv: dict[int, QKV] = field(default_factory=dict)

    def get(self, kind: str, layer: int) -> Any:
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
    qkv: frozenset[int] = frozenset()  # layers whose queries, keys and values the relation losses compare

    @property
    def attention_layers(self) -> frozenset[int]:
        return self.attn_scores | self.attn_probs

    def __bool__(self) -> bool:
        return bool(self.hidden or self.attention_layers or self.qkv)


def prepare_for_capture(model: nn.Module, probe_: ModelProbe, request: FeatureRequest, role: str) -> None:
    """Make `model` expose the requested attention features, always before attention dropout.

    Families using transformers' AttentionInterface (BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, DistilBERT)
    switch to the recording attention function (raw scores and probabilities). MPNet and DeBERTa get a
    pre-hook on their attention dropout (probabilities only). Fails at set-up, not at step 1, with a
    KDistillError when a layer is out of range, when raw scores (attn_mse) are asked of a family outside
    the interface, or when a family's pre-dropout probabilities cannot be reached at all. Queries, keys
    and values ("qkv", relation losses) come from the recording attention function, from forward hooks on
    MPNet's q/k/v Linear modules, and are refused for the other families (DeBERTa).
    """
    bad = [i for kind in ("hidden", "attn_scores", "attn_probs", "qkv") for i in getattr(request, kind)
           if not 0 <= i <= probe_.num_layers or (kind != "hidden" and i == 0)]
    if bad:
        raise KDistillError(f"the {role} has {probe_.num_layers} layers; cannot capture layer(s) {sorted(bad)}")
    if not request.attention_layers and not request.qkv:
        return
    if probe_.supports_attention_interface:
        model.set_attn_implementation(ATTN_IMPL)
        return
    if request.attn_scores:
        raise KDistillError(
            f"raw attention scores (attn_mse) cannot be captured from the {role} ({probe_.family}: it does not "
            "use transformers' AttentionInterface); attn_kl and the hidden-state and prediction losses work")
    if request.qkv:
        _hook_qkv_projections(model, probe_, role)
    if request.attention_layers:
        _hook_attention_dropout(model, probe_, role)
    model.set_attn_implementation("eager")


@contextmanager
def _recording(layers: set[int] | None, qkv_layers: set[int]) -> Iterator[_Recorder]:
    rec = _Recorder(layers=layers, qkv_layers=qkv_layers)
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


def model_logits(out: Any) -> Tensor:
    """A model output's logits as one tensor: `logits` ((B, C) per example, (B, L, C) per token), or a
    question-answering head's start and end logits stacked on a last axis of 2 ((B, L, 2): [..., 0] start)."""
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits
    start, end = getattr(out, "start_logits", None), getattr(out, "end_logits", None)
    if start is None or end is None:
        raise KDistillError(f"the model's output ({type(out).__name__}) has no logits")
    return torch.stack([start, end], dim=-1)


def forward_features(model: nn.Module, batch: Mapping[str, Tensor], request: FeatureRequest) -> Features:
    """Run `model` once and return logits plus exactly the requested features.

    Attention maps are [B, heads, L, L], pre-dropout, and keep their autograd graph; so do `QKV` records.
    Raises KDistillError when attention is asked of a model in train mode that `prepare_for_capture` did not
    set up (its `output_attentions` would be post-dropout), when queries/keys/values are asked of a model it
    did not set up, or when a requested layer's attention or q/k/v was not recorded.
    """
    inputs = model_inputs(model, batch)
    interface = getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTN_IMPL
    recorded = interface or getattr(model, _HOOKED, False)
    need_attn = bool(request.attention_layers)
    want_hidden = bool(request.hidden)
    if need_attn and not recorded and model.training:
        # output_attentions in train mode returns maps after attention dropout
        raise KDistillError("attention features of a model in train mode need prepare_for_capture first")
    if request.qkv and not (interface or getattr(model, _QKV_HOOKED, False)):
        raise KDistillError("queries, keys and values (relation losses) need prepare_for_capture first")
    with (_recording(set(request.attention_layers) if need_attn else set(), set(request.qkv)) as rec,
          _token_rows(batch)):
        out = model(**inputs, output_hidden_states=want_hidden,
                    output_attentions=need_attn and not recorded, return_dict=True)
    feats = Features(logits=model_logits(out), mask=batch["attention_mask"])
    if want_hidden:
        states = out.hidden_states
        feats.hidden = {i: states[i] for i in request.hidden}
    if need_attn:
        if recorded:
            missing = sorted((set(request.attn_probs) - set(rec.probs))
                             | (set(request.attn_scores) - set(rec.scores)))
            if missing:
                raise KDistillError(f"attention of layer(s) {missing} was not recorded ({rec.calls} attention calls)")
            feats.attn_scores = {i: rec.scores[i] for i in request.attn_scores}
            feats.attn_probs = {i: rec.probs[i] for i in request.attn_probs}
        else:
            atts = out.attentions
            if not atts:
                raise KDistillError("the model returned no attention maps; load it with eager attention")
            feats.attn_probs = {i: atts[i - 1] for i in request.attn_probs}
    if request.qkv:
        feats.qkv = _collect_qkv(rec, request.qkv, interface, model)
    return feats


def _collect_qkv(rec: _Recorder, layers: frozenset[int], interface: bool, model: nn.Module) -> dict[int, QKV]:
    """The recorded QKV per layer; hooked projections (B, L, width) are split into the model's heads."""
    if not interface:
        heads = int(model.config.num_attention_heads)
        for layer, parts in rec.projections.items():
            if len(parts) == 3:  # (B, L, heads * d) -> (B, heads, L, d), as the model splits them
                rec.qkv[layer] = QKV(*(x.view(*x.shape[:2], heads, -1).transpose(1, 2)
                                       for x in (parts[p] for p in QKV._fields)))
    missing = sorted(set(layers) - set(rec.qkv))
    if missing:
        calls = max(rec.calls, *rec.projection_calls.values()) if rec.projection_calls else rec.calls
        raise KDistillError(f"queries/keys/values of layer(s) {missing} were not recorded ({calls} attention calls)")
    return {i: rec.qkv[i] for i in layers}


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
    token_labels = labels is not None and labels.dim() == 2 and not labels.is_floating_point()  # not 0/1 label rows
    return only_rows(labels != -100 if token_labels else None)
