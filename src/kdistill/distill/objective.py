"""The objective: named, weighted loss terms over mapped layer pairs, with the projections they own.

Everything a run will need is checked here, when the run is set up: loss names, their parameters,
whether each prediction loss fits the task type (`kdistill.tasks`: no softmax KL on a regression task),
layers the mapping names, whether teacher and student tokenise alike for token-level losses (feature losses, and
the response losses of a per-token task such as NER), and each
loss's own set-up check (e.g. relation heads that must divide both widths). The task also says what the
prediction losses compare (`Task.targets`) and what `ce` means (cross-entropy, MSE or BCE on the gold labels).
Projections live here (not on the student), so exporting the student never carries them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from kdistill.config import LossConfig, MappingConfig
from kdistill.distill.features import FeatureRequest, Features
from kdistill.distill.losses import COSINE_FORMS, LOSSES, LossSpec
from kdistill.distill.mapping import LayerPair, build_map
from kdistill.errors import KDistillError
from kdistill.models import ModelProbe
from kdistill.tasks import Task, get_task

RESPONSE_FEATURES = ("logits", "labels")
MASKS = ("mask", "t_mask")  # passed by the objective, never by a config


@dataclass(frozen=True)
class Active:
    """What a schedule switches on now: which student layers' losses, and the prediction losses."""

    layers: frozenset[int] | None = None  # None = every mapped layer
    prediction: bool = True


@dataclass
class Term:
    key: str  # unique name in logs ("kl", "hidden_mse", "hidden_mse_2" when repeated)
    cfg: LossConfig
    spec: LossSpec
    pairs: list[LayerPair]
    kwargs: dict = field(default_factory=dict)
    takes_mask: bool = False  # resolved once: the step loop must not inspect signatures
    takes_t_mask: bool = False  # pools the teacher's states with the teacher's own mask (per-example losses)

    def describe(self) -> str:
        name = self.cfg.name if self.spec.name == self.cfg.name else f"{self.cfg.name}:{self.spec.name}"
        shown = [f"T={self.cfg.temperature:g}"] if "temperature" in self.kwargs else []
        shown += [f"{k}={v}" for k, v in self.cfg.params.items()]  # so centred and plain runs read differently
        extra = ", ".join(shown)
        if self.pairs:
            pairs = ", ".join(f"{p.student}<-{'+'.join(map(str, p.teacher))}" for p in self.pairs)
            extra = f"{extra}; " if extra else ""
            extra += f"layers {pairs}"
        return f"{self.cfg.weight:g}*{name}" + (f"[{extra}]" if extra else "")


@dataclass
class LossOutput:
    total: Tensor
    terms: dict[str, Tensor]  # unweighted, detached: for logs and the NaN check
    layer_terms: dict[str, dict[int, float]]  # term -> student layer -> value (for schedules)


def _loss_kwargs(cfg: LossConfig, spec: LossSpec) -> dict:
    params = inspect.signature(spec.fn).parameters
    kwargs = dict(cfg.params)
    unknown = [k for k in kwargs if k not in params or k in MASKS]
    if unknown:
        valid = [p for p in params if params[p].kind == inspect.Parameter.KEYWORD_ONLY and p not in MASKS]
        raise KDistillError(f"loss '{cfg.name}' has no parameter(s) {unknown} (valid: {valid})")
    if "temperature" in kwargs:
        raise KDistillError(f"loss '{cfg.name}': give the temperature as the term's own field "
                            f"({{name: {cfg.name}, temperature: ...}}), not in params")
    for key, value in kwargs.items():
        _check_param(cfg.name, key, value, params[key].annotation)
    if "temperature" in params:
        kwargs["temperature"] = cfg.temperature
    elif cfg.temperature != 1.0 and cfg.name != "soft_targets":  # a recipe's T, unused where the task has none
        raise KDistillError(f"loss '{cfg.name}' takes no temperature")
    return kwargs


_PARAM_TYPES = {"bool": ((bool,), "true or false"), "float": ((int, float), "a number"), "int": ((int,), "an integer"),
                "str": ((str,), "a string")}


def _check_param(loss: str, key: str, value: object, annotation: object) -> None:
    """A loss parameter's value against the loss function's annotation, at set-up rather than at the first step.

    Annotations are strings here (`from __future__ import annotations` in the loss modules); anything but a plain
    bool/float/int/str is left to the loss. `form` must be one of the cosine forms.
    """
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if kind in _PARAM_TYPES:
        types, words = _PARAM_TYPES[kind]
        if not isinstance(value, types) or (kind != "bool" and isinstance(value, bool)):
            raise KDistillError(f"loss '{loss}': parameter '{key}' must be {words}, got {value!r}")
    if key == "form" and value not in COSINE_FORMS:
        raise KDistillError(f"loss '{loss}': unknown form {value!r} (valid: {', '.join(COSINE_FORMS)})")


class Objective(nn.Module):
    """A weighted sum of loss terms; `str(objective)` prints the formula.

    `task` (default: classification) decides which prediction losses fit, what `ce` means and what the prediction
    losses compare (`Task.targets`); a loss that does not fit the task is refused here, naming the ones that do.
    """

    def __init__(self, losses: list[LossConfig], mapping: MappingConfig, *, student: ModelProbe,
                 teacher: ModelProbe | None, same_tokens: bool = True, task: Task | None = None) -> None:
        super().__init__()
        self.task = task or get_task("classification")
        self.terms: list[Term] = []
        self.projections = nn.ModuleDict()
        if losses and all(cfg.weight == 0 for cfg in losses):
            raise KDistillError("every loss weight is 0: nothing would train the student (give one term a weight > 0)")
        seen: dict[str, int] = {}
        for cfg in losses:
            spec = self.task.loss_spec(LOSSES.get(cfg.name))
            if spec.needs_teacher and teacher is None:
                raise KDistillError(f"loss '{cfg.name}' needs a teacher")
            if spec.feature == "logits" and self.task.per_token and not same_tokens:
                raise KDistillError(
                    f"loss '{cfg.name}' compares the teacher's outputs token by token ({self.task.doc}), but the "
                    "teacher and student tokenizers have different vocabularies: use a student with the teacher's "
                    "tokenizer (or only the gold-label loss ce)")
            if spec.token_aligned and not same_tokens:
                works = ", ".join(n for n, other in ((n, LOSSES.get(n)) for n in LOSSES)
                                  if not other.token_aligned and self.task.fits(other))
                raise KDistillError(
                    f"loss '{cfg.name}' compares token by token, but the teacher and student tokenizers have "
                    f"different vocabularies; across tokenizers use per-example losses: {works}")
            pairs: list[LayerPair] = []
            if spec.per_layer:
                assert teacher is not None
                if spec.feature == "embeddings":
                    pairs = [LayerPair(0, (0,))]
                else:
                    pairs = build_map(cfg.mapping or mapping, teacher.num_layers, student.num_layers)
            if spec.check is not None and teacher is not None:
                spec.check(student, teacher, dict(cfg.params))
            seen[cfg.name] = seen.get(cfg.name, 0) + 1
            key = cfg.name if seen[cfg.name] == 1 else f"{cfg.name}_{seen[cfg.name]}"
            term = Term(key=key, cfg=cfg, spec=spec, pairs=pairs, kwargs=_loss_kwargs(cfg, spec),
                        takes_mask=spec.accepts("mask"), takes_t_mask=spec.accepts("t_mask"))
            if spec.projectable and teacher is not None and teacher.hidden_size != student.hidden_size:
                self.projections[key] = nn.Linear(student.hidden_size, teacher.hidden_size)
            self.terms.append(term)

    def __str__(self) -> str:
        return " + ".join(t.describe() for t in self.terms)

    def _request(self, side: str) -> FeatureRequest:
        wanted: dict[str, set[int]] = {"hidden": set(), "attn_scores": set(), "attn_probs": set(), "qkv": set()}
        for term in self.terms:
            kind = term.spec.feature
            if kind in RESPONSE_FEATURES:
                continue
            kind = "hidden" if kind in ("embeddings", "cls") else kind
            for p in term.pairs:
                wanted[kind].update([p.student] if side == "student" else p.teacher)
        return FeatureRequest(**{k: frozenset(v) for k, v in wanted.items()})

    @property
    def student_request(self) -> FeatureRequest:
        return self._request("student")

    @property
    def teacher_request(self) -> FeatureRequest:
        return self._request("teacher")

    @property
    def needs_teacher(self) -> bool:
        return any(t.spec.needs_teacher for t in self.terms)

    def _pair_loss(self, term: Term, s: Features, t: Features, pair: LayerPair) -> Tensor:
        kind = term.spec.feature
        kind = "hidden" if kind == "cls" else kind
        sx = s.get(kind, pair.student)
        if term.key in self.projections:
            sx = self.projections[term.key](sx)
        extra = {"mask": s.mask} if term.takes_mask else {}
        if term.takes_t_mask:  # the teacher's own tokens' mask: another tokenizer's differs from the student's
            extra["t_mask"] = t.mask
        losses = [term.spec.fn(sx, t.get(kind, ti), **extra, **term.kwargs) for ti in pair.teacher]
        return torch.stack(losses).mean() if len(losses) > 1 else losses[0]

    def forward(self, s: Features, t: Features | None, labels: Tensor | None,
                active: Active | None = None, batch: Mapping[str, Tensor] | None = None) -> LossOutput:
        """The weighted loss of one batch; `batch` (model inputs, labels, the task's `batch_columns`) goes to
        `Task.targets`, for tasks whose targets need more than the labels."""
        active = active or Active()
        total = s.logits.new_zeros(())
        terms: dict[str, Tensor] = {}
        layer_terms: dict[str, dict[int, float]] = {}
        targets = None
        for term in self.terms:
            feature = term.spec.feature
            if feature in RESPONSE_FEATURES:
                if not active.prediction:
                    continue
                if feature == "labels" and labels is None:
                    raise KDistillError(f"loss '{term.cfg.name}' needs labels but the batch has none")
                if targets is None:  # what the prediction losses compare: the task decides (rows, masks, spans)
                    targets = self.task.targets(s.logits, t.logits if t is not None else None, labels, batch)
                values = []
                for target in targets:
                    other = target.labels if feature == "labels" else target.teacher
                    assert other is not None
                    extra = {"mask": target.mask} if term.takes_mask and target.mask is not None else {}
                    values.append(term.spec.fn(target.student, other, **extra, **term.kwargs))
                value = values[0] if len(values) == 1 else torch.stack(values).mean()
            else:
                assert t is not None
                pairs = [p for p in term.pairs if active.layers is None or p.student in active.layers]
                if not pairs:
                    continue
                per_layer = [self._pair_loss(term, s, t, p) for p in pairs]
                layer_terms[term.key] = {p.student: float(v.detach()) for p, v in zip(pairs, per_layer, strict=True)}
                value = torch.stack(per_layer).sum()  # summed over layers, as TinyBERT does
            terms[term.key] = value.detach()
            total = total + term.cfg.weight * value
        return LossOutput(total=total, terms=terms, layer_terms=layer_terms)
