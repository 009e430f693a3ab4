"""The Task seam: what a task type decides, so the rest of kdistill never branches on task names.

A task type says how labels are read and checked, which head the model has (`problem_type`, number of outputs),
which response losses are valid and what they compare (`targets`), how outputs become predictions, and how they
are scored, reported and served. The distiller, objective, evaluation, export, report and model card ask
`data.task` (or `task_of_config(model.config)`); each type is one module (`classification`, `regression`,
`multilabel`) registered by name in `kdistill.tasks.TASK_TYPES`.

Task types whose outputs are per token (`per_token`: NER, extractive QA) also decide how a split is read from its
own file format (`sniff`, `read_file`), what columns its examples hold (`split_columns`, `split_features`), how it is
encoded (`encode`: word-piece label alignment, question/context windows), how a batch is padded (`collator`), what
the response losses compare (`targets`: the labelled tokens' rows; start and end logits) and how the outputs of the
encoded rows become per-example predictions before scoring (`score(..., encoded=...)`: words cut by truncation, or
answer text merged over windows). The model's raw outputs are one tensor, `features.model_logits`: (B, C) per
example, (B, L, C) per token, and (B, L, 2) start/end logits for a question-answering head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from kdistill.distill.losses import LOSSES, LossSpec
from kdistill.errors import KDistillError
from kdistill.metrics import METRICS

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks.readers import RawSplit

__all__ = ["Target", "Task", "task_of_config", "PROBLEM_TYPES", "HEADS", "SEQUENCE_HEAD", "head_of_config"]

PROBLEM_TYPES = {"single_label_classification": "classification", "regression": "regression",
                 "multi_label_classification": "multilabel"}
"""Hugging Face `config.problem_type` -> kdistill task type."""

SEQUENCE_HEAD = "ForSequenceClassification"
HEADS = {SEQUENCE_HEAD: "AutoModelForSequenceClassification",
         "ForTokenClassification": "AutoModelForTokenClassification",
         "ForQuestionAnswering": "AutoModelForQuestionAnswering"}
"""Architecture name endings of the task heads kdistill trains -> the transformers Auto class that builds them."""


def head_of_config(config: Any) -> str | None:
    """The task head a saved config's `architectures` names ("ForTokenClassification", ...), or None (an encoder)."""
    for arch in getattr(config, "architectures", None) or []:
        for suffix in HEADS:
            if str(arch).endswith(suffix):
                return suffix
    return None


def task_of_model(model: Any) -> str:
    """The task type of a model instance: its class's head when the class names one (a model built in memory has no
    `architectures` yet), else `task_of_config(model.config)`."""
    name = type(model).__name__
    head = next((h for h in HEADS if name.endswith(h) and h != SEQUENCE_HEAD), None)
    return _task_of_head(head) if head is not None else task_of_config(model.config)


def _task_of_head(head: str) -> str:
    from kdistill.tasks import TASK_TYPES

    return next(n for n in TASK_TYPES if TASK_TYPES.get(n).head == head)


def task_of_config(config: Any) -> str:
    """The task type a model's head was built for, read as Hugging Face reads it.

    A token-classification or question-answering head (named by `architectures`) is that task type. Otherwise
    `problem_type` when set; otherwise one output means regression and more mean single-label classification
    (what `*ForSequenceClassification` infers from the output count when it computes a loss).
    """
    head = head_of_config(config)
    if head is not None and head != SEQUENCE_HEAD:
        return _task_of_head(head)
    problem = getattr(config, "problem_type", None)
    if problem in PROBLEM_TYPES:
        return PROBLEM_TYPES[problem]
    return "regression" if int(getattr(config, "num_labels", 2)) == 1 else "classification"


@dataclass
class Target:
    """What the response losses compare for one output: student and teacher logits as rows (N, C), gold labels.

    A sequence task has one target, the whole batch; a token task keeps its labelled tokens' rows (`tasks.token`);
    a span task gives one target for start and one for end logits (rows = windows, C = positions), with `mask`
    (N, C) naming the positions a loss that takes `mask` compares (the objective passes it; others ignore it).
    """

    student: Tensor
    teacher: Tensor | None
    labels: Tensor | None
    mask: Tensor | None = None  # which entries a loss that takes `mask` compares (a window's answer positions)


class Task:
    """One task type. Subclasses set the class attributes and the label, scoring and reporting methods."""

    name: ClassVar[str] = ""
    problem_type: ClassVar[str] = ""  # Hugging Face `config.problem_type` of the head
    loss_type: ClassVar[str] = ""  # the task type whose losses fit (`LossSpec.tasks`); default `name`
    metrics: ClassVar[tuple[str, ...]] = ()  # valid metric names; the first is the default
    gold_loss: ClassVar[str] = "ce"  # the registered gold-label loss that the name `ce` means for this task
    soft_loss: ClassVar[str] = "kl"  # the registered soft-target loss that the name `soft_targets` means here
    figure_heading: ClassVar[str | None] = None  # the report's heading for `figure`, None = no figure
    figure_caption: ClassVar[str] = ""  # the figure's caption after the model's name
    pipeline_kwargs: ClassVar[dict[str, Any]] = {}  # what a `pipeline("text-classification")` call should add
    doc: ClassVar[str] = ""  # one phrase for messages: "a regression task (one score per example)"
    fits_decision_rule: ClassVar[bool] = False  # `calibrate` fits something (a validation pass at the end of a run)
    head: ClassVar[str] = SEQUENCE_HEAD  # the architecture ending of the model's head (a key of `HEADS`)
    pipeline_tag: ClassVar[str] = "text-classification"  # the Hugging Face `pipeline()` task of a saved model
    per_token: ClassVar[bool] = False  # outputs per token (B, L, C): response losses need the student's tokens
    output_names: ClassVar[tuple[str, ...]] = ("logits",)  # the head's outputs, as the ONNX graph names them
    batch_columns: ClassVar[tuple[str, ...]] = ()  # encoded columns batched beside the model inputs for `targets`
    carve_key: ClassVar[str | None] = None  # a `RawSplit.extra` key: a carved validation split takes whole groups

    # ------------------------------------------------------------------------------------- reading

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """Whether a data file is evidently in this task type's own format (CoNLL columns, SQuAD JSON).

        Called for every registered type on a local training file when `data.task_type` is null; the default (a
        table of text and label columns, read by `kdistill.tasks.readers`) says no.
        """
        return False

    def read_file(self, path: Path) -> RawSplit | None:
        """One split read from this task type's own file format, or None: the file is a table (CSV, TSV, JSONL).

        Raises `KDistillError` naming the file and line of bad input.
        """
        return None

    def split_columns(self, split: RawSplit) -> dict[str, list[Any]]:
        """The columns of a `TaskData` split (after the labels are read): text_a[, text_b] and label by default."""
        cols: dict[str, list[Any]] = {"text_a": split.text_a}
        if split.text_b is not None:
            cols["text_b"] = split.text_b
        cols["label"] = split.labels
        return cols

    def option_columns(self, cfg: Any, n: int) -> dict[str, list[Any]]:
        """Data settings `encode` needs (QA's `data.doc_stride`) as constant columns of a split of `n` rows; {} here.

        Raises:
            KDistillError: `data.doc_stride` set for a task that has no windows (it would be ignored silently).
        """
        if getattr(cfg, "doc_stride", None) is not None:
            raise KDistillError(f"data.doc_stride applies to question answering only; this is a {self.name} task "
                                "(drop --data.doc_stride)")
        return {}

    def split_features(self, is_pair: bool, names: Sequence[str]) -> Any:
        """The `datasets.Features` of `split_columns`, for the label names `names`."""
        import datasets

        text = datasets.Value("string")
        return datasets.Features({"text_a": text, **({"text_b": text} if is_pair else {}),
                                  "label": self.label_feature(len(names))})

    # ------------------------------------------------------------------------------------ encoding

    def encode(self, rows: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
        """A chunk of a split's rows (`split_columns`) -> the encoded rows: the tokenizer's outputs and `labels`.

        Sequence tasks: one encoded row per example, truncated to `max_length` word-pieces. A task may give several
        rows per example (windows of a long context) and extra columns for its post-processing; extra columns
        never reach the model (`kdistill.tokenized.make_loader` keeps model inputs, labels and `idx`).
        """
        pair = "text_b" in rows
        args = [rows["text_a"], rows["text_b"]] if pair else [rows["text_a"]]
        out = {k: list(v) for k, v in tokenizer(*args, truncation=True, max_length=max_length).items()}
        out["labels"] = list(rows["label"])
        return out

    def encoded_features(self, columns: Iterable[str], label_feature: Any) -> Any:
        """`datasets.Features` of the encoded columns: int32 token sequences, `labels` as the task's label feature."""
        import datasets

        feats = {c: datasets.Sequence(datasets.Value("int32")) for c in columns if c != "labels"}
        feats["labels"] = label_feature
        return datasets.Features(feats)

    def encoding_key(self, split: Any) -> list[Any]:
        """What else, beside the split's content, tokenizer and max_length, the tokenisation cache key must hold (a
        task's name, label names kept in the features); [] for sequence tasks, whose keys predate task types."""
        return []

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Tensor]]:
        """The function that pads a list of encoded rows into a batch (dynamic padding to the longest row)."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---------------------------------------------------------------------------------------- labels

    def label_feature(self, num_labels: int) -> Any:
        """The `datasets` feature of the "label" column (class id, score, or a 0/1 row of `num_labels`)."""
        raise NotImplementedError

    def read_labels(self, raw: dict[str, RawSplit], names: list[str] | None,
                    named: bool) -> tuple[list[str], dict[str, RawSplit]]:
        """Raw label cells -> label values, plus the label names in id order.

        `names` comes from the source (shipped task, `datasets` ClassLabel, `data.label_names`); `named` says the
        user gave it (`data.label_names`). Raises `KDistillError` naming the file and line of a bad cell.
        """
        raise NotImplementedError

    def num_labels(self, names: Sequence[str]) -> int:
        """Outputs of the model's head for these label names."""
        return len(names)

    def augment_fields(self, label: Any, names: Sequence[str]) -> dict[str, Any]:
        """The label of a `kdistill augment` row, as written to its JSONL. A task type that augmentation cannot
        serve says so in `check_augment` and need not override this."""
        self.check_augment()
        raise NotImplementedError

    def augment_label(self, row: dict[str, Any], names: Sequence[str], where: str) -> Any:
        """The label value of one `data.augment_file` row (written by `augment_fields`); `where` names the line.
        As `augment_fields`, refused through `check_augment` where augmentation does not apply."""
        self.check_augment()
        raise NotImplementedError

    def check_augment(self) -> None:
        """Raise `KDistillError` when `kdistill augment` cannot keep this task's labels."""

    def check_label(self) -> None:
        """Raise `KDistillError` when `kdistill label` and `teacher_answers` cannot serve this task type."""

    def init_head(self, model: Any, train: Any) -> None:
        """Set a freshly initialised head from the training split (its "label" column) before fine-tuning; by
        default nothing."""

    def calibrate(self, model: Any, logits: np.ndarray, labels: np.ndarray, metric: str) -> dict[str, Any] | None:
        """Fit a decision rule on validation outputs into `model` at the end of a run (multi-label: the threshold);
        returns what was fitted, for metrics.json, or None (by default: nothing to fit)."""
        return None

    def uncalibrate(self, model: Any) -> float | None:
        """Undo in place what `calibrate` folded into a saved model, giving back its outputs as trained (a teacher's
        soft targets must be its own probabilities, not ones shifted to a decision rule); returns what was undone,
        or None (by default: nothing was folded)."""
        return None

    def check_student(self, init: str) -> None:
        """Raise `KDistillError` when a student of kind `init` (`student.init`) cannot give this task's outputs."""

    def check_metric(self, metric: str) -> None:
        """Raise a one-line `KDistillError` for a metric that does not score this task type."""
        METRICS.get(metric)
        if metric not in self.metrics:
            raise KDistillError(f"metric '{metric}' does not score {self.doc} (valid: {', '.join(self.metrics)})")

    # ----------------------------------------------------------------------------------------- model

    def check_model(self, data: TaskData, config: Any, model_name: str) -> None:
        """Fail before training when a model's head does not fit the data: another task type, or other labels.

        Raises `KDistillError` naming both task types (e.g. a regression teacher on a classification task), or
        the classes that differ (`check_classes`).
        """
        kind = task_of_config(config)
        if kind != self.name:
            from kdistill.tasks import get_task

            raise KDistillError(f"model '{model_name}' is {get_task(kind).doc}, but the data is {self.doc}: use a "
                                f"{self.name} model, or set data.task_type if the data was read as the wrong type")
        self.check_classes(data, config, model_name)

    def check_classes(self, data: TaskData, config: Any, model_name: str) -> None:
        """Raise `KDistillError` when the model's outputs cannot represent the data's labels."""

    # ---------------------------------------------------------------------------------------- losses

    def fits(self, spec: LossSpec) -> bool:
        """Whether the registered loss `spec` can compare this task's outputs (`ce` always can: see `loss_spec`)."""
        if spec.name == "ce" and spec.feature == "labels":
            return True
        return spec.tasks is None or (self.loss_type or self.name) in spec.tasks

    def valid_losses(self) -> list[str]:
        """The registered prediction losses (teacher outputs or gold labels) that fit this task, plus `ce` and
        `soft_targets` (this task type's gold-label and soft-target losses, see `loss_spec`)."""
        fitting = {n for n in LOSSES if LOSSES.get(n).feature in ("logits", "labels") and self.fits(LOSSES.get(n))}
        return sorted(fitting | {"ce", "soft_targets"})

    def loss_spec(self, spec: LossSpec) -> LossSpec:
        """The loss a run computes for `spec`: `ce` becomes this task's gold-label loss (`gold_loss`) and
        `soft_targets` its soft-target loss (`soft_loss`).

        Raises a one-line `KDistillError` naming the valid losses when `spec` does not fit this task type
        (e.g. `kl` on a regression task: there is no class distribution to compare).
        """
        if spec.name == "ce" and spec.feature == "labels":
            spec = LOSSES.get(self.gold_loss)
        if spec.name == "soft_targets":
            spec = LOSSES.get(self.soft_loss)
        if not self.fits(spec):
            raise KDistillError(f"loss '{spec.name}' does not fit {self.doc}; its prediction losses are "
                                f"{', '.join(self.valid_losses())} (feature losses such as hidden_mse work as well)")
        return spec

    def targets(self, student: Tensor, teacher: Tensor | None, labels: Tensor | None,
                batch: Mapping[str, Tensor] | None = None) -> list[Target]:
        """What the response losses compare: for a sequence task, the batch's logits and labels as they are.

        `batch` is the training batch (model inputs, labels and the task's `batch_columns`, e.g. a window's
        context mask), for a task whose targets depend on more than the labels.
        """
        return [Target(student, teacher, labels)]

    def average_teachers(self, logits: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """Several teachers' logits (each (B, C)) -> the logits of their weighted average prediction."""
        raise NotImplementedError

    def answer_logits(self, row: dict[str, Any], where: str) -> Tensor:
        """A `kdistill label` row's stored answer as teacher logits (gray-box distillation); `where` names the row."""
        if row.get("logits") is not None:
            return torch.tensor(row["logits"], dtype=torch.float32)
        raise KDistillError(f"{where} has no probs or logits: that teacher gave labels only (train on the label "
                            "column with the ce loss instead)")

    # --------------------------------------------------------------------------------------- outputs

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """Model outputs (N, C) -> predictions in the form the metrics take."""
        raise NotImplementedError

    def score(self, metric: str, logits: np.ndarray | Sequence, labels: np.ndarray | Sequence,
              encoded: Any = None) -> dict[str, float]:
        """The metric `metric` of outputs `logits` (N, C) against gold `labels`; headline figure first.

        `encoded` is the encoded split the outputs belong to (a `datasets.Dataset`, rows in the order of `logits`):
        a per-token task reads from it what its post-processing needs (each sentence's full gold tags, a window's
        question and offsets). Sequence tasks ignore it.
        """
        arr = np.asarray(logits, dtype=np.float64)
        gold = np.asarray(labels)
        if arr.ndim != 2:
            raise KDistillError(f"metric '{metric}' needs 2-D model outputs, got shape {arr.shape}")
        if len(arr) != len(gold):
            raise KDistillError(f"metric '{metric}': {len(arr)} predictions but {len(gold)} labels")
        if len(gold) == 0:
            raise KDistillError(f"metric '{metric}': no examples to score")
        self.check_metric(metric)
        return METRICS.get(metric)(self.predictions(arr), self.gold(gold), num_labels=int(arr.shape[1]))

    def gold(self, labels: np.ndarray) -> np.ndarray:
        """Gold labels in the form the metrics take."""
        return labels

    def collapse_warning(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> str | None:
        """A warning when every prediction is the same although the gold labels vary, else None."""
        return None

    # ------------------------------------------------------------------------------ report, card, label

    def detail(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> dict[str, Any]:
        """What the report shows beyond the metrics (JSON-able): a confusion matrix, score pairs, per-label F1."""
        return {}

    def figure(self, detail: dict[str, Any], classes: Sequence[str], title: str) -> bytes | None:
        """The report's figure for one model (a PNG), or None."""
        return None

    def tables(self, detail: dict[str, Any], classes: Sequence[str]) -> list[tuple[str, list[str], list[list[str]]]]:
        """The report's extra tables for one model: (caption, headers, rows)."""
        return []

    def answer_probs(self, logits: Sequence[float]) -> list[float] | None:
        """A model teacher's logits as the probabilities `kdistill label` writes (None: a score, not classes)."""
        raise NotImplementedError

    def labeled_fields(self, label_id: int, probs: Sequence[float] | None, logits: Sequence[float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
        """The label fields of one `kdistill label` output row; `kdistill distill` reads "label" back."""
        raise NotImplementedError
