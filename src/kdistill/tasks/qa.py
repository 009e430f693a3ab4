"""Extractive question answering (SQuAD v1.1) as a task type: windows in, answer text out, scored by EM and F1.

Reading (`qa_data`): SQuAD JSON, or JSONL rows in Hugging Face's `squad` layout; every answer is checked against its
context. A split's rows are questions (`id`, `title`, `question`, `context`, and the answers in `label`); encoding
(`qa_windows.make_windows`) cuts each into question + context windows of `data.max_length` tokens that overlap by
`data.doc_stride`, so an encoded split has one row per window: model inputs, `labels` = the (start, end) token of
the first answer (CLS when the window does not hold it whole, as Hugging Face labels), `span_mask` (context tokens
and CLS), and what post-processing needs (`example_id`, `offset_mapping` with [-1, -1] off the context, `context`,
`answers`).

Losses: `kl` (or `span_kl`) is DistilBERT's SQuAD soft-target loss, the KL at temperature T between the teacher's and
the student's start distributions and between their end distributions over each window's `span_mask`, averaged and
times T² (`qa_losses.masked_kl`); `ce` is the model's own QA loss, cross-entropy of the start and of the end position
(`span_ce`). Evaluation is per question: the best span over its windows (`qa_postprocess`), scored with the official
SQuAD v1.1 exact match and F1 (`qa_metric`), as fractions. Teacher and student must tokenise identically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.distill.losses import LOSSES, LossSpec, as_f32, register_loss
from kdistill.errors import KDistillError
from kdistill.metrics import METRICS
from kdistill.tasks.base import Target, Task
from kdistill.tasks.qa_data import JSONL_SUFFIXES, QAExample, read_squad
from kdistill.tasks.qa_losses import masked_kl
from kdistill.tasks.qa_metric import squad_scores
from kdistill.tasks.qa_postprocess import postprocess_spans
from kdistill.tasks.qa_windows import QAWindows, make_windows

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks.readers import RawSplit

__all__ = ["QuestionAnswering", "QA_LABELS", "window_predictions", "qa_split", "dataset_splits"]

NAME = "question_answering"
QA_LABELS = ("start", "end")
"""The two outputs per token of a question-answering head, in order."""
_SNIFF_BYTES = 65536


# ------------------------------------------------------------------------------------------ losses and metrics


@register_loss("span_kl", feature="logits", tasks={NAME})
def span_kl_loss(s_logits: Tensor, t_logits: Tensor, *, mask: Tensor | None = None,
                 temperature: float = 1.0) -> Tensor:
    """KL at temperature T between the teacher's and the student's distribution over a window's positions (start or
    end logits (B, L)), over `mask` (the window's span mask), times T² (`qa_losses.masked_kl`)."""
    return masked_kl(s_logits, t_logits, mask=mask, temperature=temperature)


@register_loss("span_ce", feature="labels", needs_teacher=False, tasks={NAME})
def span_ce_loss(s_logits: Tensor, positions: Tensor) -> Tensor:
    """Cross-entropy of the gold start (or end) position (B,) under logits (B, L), as `*ForQuestionAnswering`'s loss:
    a position outside [0, L) is ignored. The objective averages the start and end terms (`qa_losses.span_ce`)."""
    length = s_logits.shape[-1]
    return F.cross_entropy(as_f32(s_logits), positions.reshape(-1).long().clamp(0, length), ignore_index=length)


def _squad(first: str):  # noqa: ANN202 - a metric factory
    def metric(preds: Mapping[str, str], refs: Mapping[str, Sequence[str]], **_: Any) -> dict[str, float]:
        got = squad_scores(preds, refs)  # percent, as the official script prints
        out = {"squad_f1": got["f1"] / 100, "exact_match": got["exact_match"] / 100}
        return {first: out[first], **out}

    metric.__doc__ = f"SQuAD v1.1 {first.replace('_', ' ')} (official script), as a fraction; predictions and " \
                     "references are dicts keyed by question id."
    return metric


for _name in ("squad_f1", "exact_match"):
    if _name not in METRICS:
        METRICS.add(_name, _squad(_name))


# ------------------------------------------------------------------------------------------------ helpers


def _example_of(row: Mapping[str, Any]) -> QAExample:
    ans = row["label"]
    return QAExample(str(row["id"]), row["question"], row["context"], tuple(ans["text"]),
                     tuple(int(x) for x in ans["answer_start"]), row.get("title") or "")


def window_predictions(logits: np.ndarray | Sequence, encoded: Any, *, n_best: int = 20,
                       max_answer_length: int = 30) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Start/end logits of the encoded windows (N, L, 2) -> (question id -> predicted text, id -> reference answers).

    `encoded` is the windows dataset the logits belong to, same order (`QuestionAnswering.encode`); logits past a
    window's own tokens (batch padding) are ignored. Raises `KDistillError` when they do not fit.
    """
    if encoded is None or "offset_mapping" not in getattr(encoded, "column_names", ()):
        raise KDistillError("scoring extractive QA needs its encoded windows (offsets, contexts, answers)")
    out = np.asarray(logits, dtype=np.float32)
    if out.ndim != 3 or out.shape[-1] != 2 or len(out) != len(encoded):
        raise KDistillError(f"extractive QA: outputs {out.shape} do not fit the {len(encoded)} encoded windows "
                            "(start/end logits (windows, tokens, 2))")
    cols = encoded.select_columns(["example_id", "offset_mapping", "context", "answers"])[:]
    order: dict[str, int] = {}
    contexts: list[str] = []
    refs: dict[str, list[str]] = {}
    for qid, ctx, answers in zip(cols["example_id"], cols["context"], cols["answers"], strict=True):
        if qid not in order:
            order[qid] = len(contexts)
            contexts.append(ctx)
            refs[qid] = list(answers)
    offsets = [[None if o[0] < 0 else (int(o[0]), int(o[1])) for o in offs] for offs in cols["offset_mapping"]]
    windows = QAWindows(input_ids=[[0] * len(o) for o in offsets], attention_mask=[], token_type_ids=None,
                        example_index=[order[q] for q in cols["example_id"]], example_ids=list(cols["example_id"]),
                        offsets=offsets, span_mask=[], cls_index=[])
    spans = postprocess_spans(contexts, windows, out[..., 0], out[..., 1], n_best=n_best,
                              max_answer_length=max_answer_length)
    return {qid: spans[i].text for qid, i in order.items()}, refs


def qa_split(source: str, examples: Sequence[QAExample]) -> RawSplit:
    """Checked examples (`qa_data`) as a `RawSplit`: questions in text_a, contexts in text_b, answers in labels, ids
    and titles in `extra` (a row's "line" is its question's place, from 1)."""
    from kdistill.tasks.readers import RawSplit

    return RawSplit(source, [e.question for e in examples], [e.context for e in examples],
                    [{"text": list(e.answers), "answer_start": list(e.answer_starts)} for e in examples],
                    list(range(1, len(examples) + 1)), ("question", "context", "answers"),
                    {"id": [e.id for e in examples], "title": [e.title for e in examples]})


def dataset_splits(dsets: Mapping[str, Any], chosen: Mapping[str, str | None], name: str) -> dict[str, RawSplit]:
    """`datasets` splits in Hugging Face's `squad` layout (id, title, context, question, answers) as QA splits.

    `chosen` maps our split names to theirs (None: absent). Bad rows raise `KDistillError` naming the question.
    """
    from kdistill.tasks.qa_data import parse_rows

    out = {}
    for ours, theirs in chosen.items():
        ds = dsets[theirs] if theirs else None
        if ds is not None and len(ds):
            where = f"dataset {name} split '{theirs}'"
            out[ours] = qa_split(where, parse_rows(ds.to_list(), where, require_answers=True))
    return out


# ---------------------------------------------------------------------------------------------- the task


class QuestionAnswering(Task):
    """Extractive QA: a `*ForQuestionAnswering` head (start and end logits per token), windows merged per question."""

    name = NAME
    metrics = ("squad_f1", "exact_match")
    gold_loss = "span_ce"
    soft_loss = "span_kl"
    doc = "an extractive question-answering task (an answer span in a context, SQuAD)"
    head = "ForQuestionAnswering"
    pipeline_tag = "question-answering"
    per_token = True
    output_names = ("start_logits", "end_logits")
    batch_columns = ("span_mask",)
    carve_key = "title"  # a carved validation split takes whole articles: windows of one context must not leak

    # ------------------------------------------------------------------------------------- reading

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """A .json file that opens as SQuAD (`{"data": [... "paragraphs" ...`), or JSONL rows with question and
        context."""
        suffix = path.suffix.lower()
        if suffix not in (".json", *JSONL_SUFFIXES) or not path.is_file():
            return False
        try:
            with path.open(encoding="utf-8-sig") as f:
                head = f.read(_SNIFF_BYTES)
        except (OSError, UnicodeDecodeError):
            return False
        if suffix == ".json":
            return head.lstrip().startswith("{") and '"data"' in head and '"paragraphs"' in head
        first = next((ln for ln in head.splitlines() if ln.strip()), "")
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(row, dict) and "question" in row and "context" in row

    def read_file(self, path: Path) -> RawSplit | None:
        """A SQuAD file as a `RawSplit`: questions in text_a, contexts in text_b, answers in labels, ids and titles in
        `extra`. Bad input raises `KDistillError` naming the file and the question id (`qa_data.read_squad`)."""
        return qa_split(str(path), read_squad(path))

    def split_columns(self, split: RawSplit) -> dict[str, list[Any]]:
        return {"id": list(split.extra["id"]), "title": list(split.extra["title"]), "question": split.text_a,
                "context": split.text_b or [], "label": split.labels}

    def option_columns(self, cfg: Any, n: int) -> dict[str, list[Any]]:
        """`data.doc_stride`, by default a third of `data.max_length` (Hugging Face's 128 of 384): a fixed 128 would
        leave no room in windows of kdistill's default 128 tokens."""
        stride = cfg.doc_stride if cfg.doc_stride is not None else cfg.max_length // 3
        return {"doc_stride": [int(stride)] * n}

    def split_features(self, is_pair: bool, names: Sequence[str]) -> Any:
        text = datasets.Value("string")
        return datasets.Features({"id": text, "title": text, "question": text, "context": text,
                                  "label": {"text": datasets.Sequence(text),
                                            "answer_start": datasets.Sequence(datasets.Value("int32"))},
                                  "doc_stride": datasets.Value("int32")})

    def label_feature(self, num_labels: int) -> Any:
        return datasets.Sequence(datasets.Value("int64"), length=2)

    def read_labels(self, raw: dict[str, RawSplit], names: list[str] | None,
                    named: bool) -> tuple[list[str], dict[str, RawSplit]]:
        """The answers are checked when read (`read_file`); the head's outputs are named start and end."""
        return list(QA_LABELS), raw

    def num_labels(self, names: Sequence[str]) -> int:
        return 2

    def check_augment(self) -> None:
        raise KDistillError(f"kdistill augment replaces words, so the answer spans would no longer line up: {self.doc} "
                            "is not supported (nor data.augment_file)")

    def check_label(self) -> None:
        raise KDistillError(f"kdistill label and teacher_answers keep one answer per example; {self.doc} has start "
                            "and end logits per token: distill from the live teacher, or from its output cache "
                            "(teacher_cache)")

    def check_student(self, init: str) -> None:
        if init in ("bilstm", "cnn", "mobilebert"):
            raise KDistillError(f"student.init {init} builds a classifier with one output per example; {self.doc} "
                                "needs start and end logits per token: use teacher_layers, config or path")

    def check_classes(self, data: TaskData, config: Any, model_name: str) -> None:
        if int(config.num_labels) != 2:
            raise KDistillError(f"model '{model_name}' has {config.num_labels} outputs per token; a question-answering "
                                "head has 2 (start and end logits)")

    # ------------------------------------------------------------------------------------ encoding

    def encode(self, rows: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
        """Questions -> windows (`qa_windows.make_windows` with the rows' `doc_stride`), one encoded row per window."""
        exs = [_example_of({k: rows[k][i] for k in rows}) for i in range(len(rows["id"]))]
        stride = int(rows["doc_stride"][0]) if rows.get("doc_stride") else 128
        win = make_windows(exs, tokenizer, max_length=max_length, doc_stride=stride, labels=True)
        out: dict[str, list[Any]] = dict(win.model_inputs())
        assert win.start_positions is not None and win.end_positions is not None
        out["labels"] = [[s, e] for s, e in zip(win.start_positions, win.end_positions, strict=True)]
        out["span_mask"] = win.span_mask
        out["example_id"] = win.example_ids
        out["offset_mapping"] = [[[-1, -1] if o is None else list(o) for o in offs] for offs in win.offsets]
        out["context"] = [exs[i].context for i in win.example_index]
        out["answers"] = [list(exs[i].answers) for i in win.example_index]
        return out

    def encoded_features(self, columns: Iterable[str], label_feature: Any) -> Any:
        text = datasets.Value("string")
        own = {"labels": datasets.Sequence(datasets.Value("int64"), length=2), "example_id": text, "context": text,
               "answers": datasets.Sequence(text), "span_mask": datasets.Sequence(datasets.Value("int8")),
               "offset_mapping": datasets.Sequence(datasets.Sequence(datasets.Value("int32"), length=2))}
        return datasets.Features({c: own.get(c, datasets.Sequence(datasets.Value("int32"))) for c in columns})

    def encoding_key(self, split: Any) -> list[Any]:
        stride = split["doc_stride"][0] if len(split) else None
        return [self.name, stride]

    def collator(self, tokenizer: Any) -> Any:
        """Model inputs padded by the tokenizer (on the right), `span_mask` padded with 0, labels (B, 2) as they are."""
        def collate(rows: list[dict[str, Any]]) -> dict[str, Tensor]:
            masks = [r.get("span_mask") for r in rows]
            batch = tokenizer.pad([{k: v for k, v in r.items() if k != "span_mask"} for r in rows],
                                  padding=True, return_tensors="pt")
            if masks[0] is not None:
                width = batch["input_ids"].shape[1]
                batch["span_mask"] = torch.tensor([list(m) + [0] * (width - len(m)) for m in masks])
            return dict(batch)

        return collate

    # ---------------------------------------------------------------------------------------- losses

    def fits(self, spec: LossSpec) -> bool:
        """As `Task.fits`, but a teacher-output loss for every task type must take `mask`: positions outside a window's
        span mask (question, padding: zeros in a teacher cache) are no answer distribution to match."""
        if spec.feature == "logits" and spec.tasks is None and not spec.accepts("mask"):
            return False
        return super().fits(spec)

    def valid_losses(self) -> list[str]:
        return sorted({*super().valid_losses(), "kl"})  # `kl` is read as span_kl (`loss_spec`)

    def loss_spec(self, spec: LossSpec) -> LossSpec:
        """`kl` means `span_kl` here (the soft-target loss on the start and end distributions), `ce` `span_ce`."""
        if spec.name == "kl" and spec.feature == "logits":
            spec = LOSSES.get("span_kl")
        return super().loss_spec(spec)

    def targets(self, student: Tensor, teacher: Tensor | None, labels: Tensor | None,
                batch: Any = None) -> list[Target]:
        """Two targets, start and end: logits (B, L) each, gold positions (B,), masked to each window's span mask."""
        if batch is None or "span_mask" not in batch:
            raise KDistillError(f"{self.doc} needs each window's span_mask in the batch")
        if student.dim() != 3 or student.shape[-1] != 2:
            raise KDistillError(f"{self.doc} needs start/end logits (B, L, 2), got {tuple(student.shape)}")
        mask = batch["span_mask"].to(student.device).bool()[:, :student.shape[1]]
        return [Target(student[..., k], teacher[..., k] if teacher is not None else None,
                       labels[:, k] if labels is not None else None, mask=mask) for k in (0, 1)]

    def average_teachers(self, logits: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """Log of the weighted average position distribution (softmax over tokens, dim -2), each (B, L, 2)."""
        probs = sum(w * lg.float().softmax(-2) for w, lg in zip(weights, logits, strict=True))
        return torch.as_tensor(probs).clamp_min(1e-12).log()

    def answer_logits(self, row: dict[str, Any], where: str) -> Tensor:
        self.check_label()
        return torch.empty(0)

    # --------------------------------------------------------------------------------------- outputs

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """(N, L, 2) -> the best start and end token of each window separately (N, 2)."""
        return np.asarray(logits).argmax(axis=-2)

    def score(self, metric: str, logits: np.ndarray | Sequence, labels: np.ndarray | Sequence,
              encoded: Any = None) -> dict[str, float]:
        self.check_metric(metric)
        preds, refs = window_predictions(logits, encoded)
        if not refs:
            raise KDistillError(f"metric '{metric}': no questions to score")
        return METRICS.get(metric)(preds, refs)

    def collapse_warning(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> str | None:
        """A warning when every window's best start and end token are the same positions although the gold ones
        vary (a head that ignores its input points at one place, such as CLS, whatever the question)."""
        best = self.predictions(np.asarray(logits))
        gold = np.asarray(labels)
        if len(best) < 2 or len(np.unique(gold, axis=0)) < 2 or len(np.unique(best, axis=0)) > 1:
            return None
        return (f"every one of the {len(best)} validation windows has its best start at token {int(best[0, 0])} and "
                f"end at token {int(best[0, 1])}: the model has collapsed to one position")

    def detail(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> dict[str, Any]:
        preds, refs = window_predictions(logits, encoded)
        scores = squad_scores(preds, refs)
        return {"qa": {"questions": len(refs), "windows": len(encoded), "exact_match": round(scores["exact_match"], 3),
                       "f1": round(scores["f1"], 3), "empty": sum(not p for p in preds.values())}}

    def tables(self, detail: dict[str, Any], classes: Sequence[str]) -> list[tuple[str, list[str], list[list[str]]]]:
        qa = detail["qa"]
        return [("Extractive QA (official SQuAD v1.1 exact match and F1, best span over each question's windows)",
                 ["Questions", "Windows", "Exact match", "F1", "No answer found"],
                 [[str(qa["questions"]), str(qa["windows"]), f"{qa['exact_match']:.2f}", f"{qa['f1']:.2f}",
                   str(qa["empty"])]])]

    def answer_probs(self, logits: Sequence[float]) -> list[float] | None:
        self.check_label()
        return None

    def labeled_fields(self, label_id: int, probs: Sequence[float] | None, logits: Sequence[float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
        self.check_label()
        return {}
