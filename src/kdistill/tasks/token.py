"""Token classification (NER, CoNLL-2003): one tag per word, a head with one output per word-piece.

Words are split into word-pieces as Hugging Face's token-classification examples do (`is_split_into_words=True`):
each word's tag sits on its first piece and every other piece, special token and pad gets -100, which the losses
and the metric skip. Sentences longer than `data.max_length` pieces are truncated: the cut words are not trained
on, and evaluation counts each of them as predicted `O` against its gold tag, so seqeval scores every gold entity of
the file (an entity in the cut part is a missed one). A word the tokenizer turns into no piece at all (a lone
zero-width character) is counted the same way.

Response losses (`kl`, `soft_ce` at a temperature, `logit_mse`) compare the teacher's and the student's rows at the
labelled pieces only, averaged over those pieces (the batch's rows are those pieces, so `kl`'s batchmean is a mean
per labelled token); `ce` is token cross-entropy with -100 ignored. Teacher and student must tokenise identically.
Scored by entity-level micro F1 with seqeval (conlleval's definition: an entity counts only with its exact span
and type), with precision, recall and per-entity-type F1 in the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.labels import norm_names
from kdistill.metrics import METRICS
from kdistill.tasks.base import Target, Task
from kdistill.tasks.conll import TAG_RE, read_token_file, sniff_tokens

if TYPE_CHECKING:
    from kdistill.data import TaskData
    from kdistill.tasks.readers import RawSplit

__all__ = ["TokenClassification", "tag_names", "CONLL2003_TAGS"]

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
"""CoNLL-2003's 9 IOB2 tags in the order of Hugging Face's `conll2003` dataset (`ner_tags` ids 0-8)."""


def tag_names(tags: Iterable[str]) -> list[str]:
    """A label set read off the training tags: O first, then per entity type (sorted) its B- and I- tags, then the
    E- and S- tags the data uses (IOBES). Both B- and I- of a type are kept even when only one occurs in train."""
    seen = set(tags)
    types = sorted({t[2:] for t in seen if t != "O" and len(t) > 2 and t[1] == "-"})
    names = ["O"] if "O" in seen else []
    for kind in types:
        names += [f"{p}-{kind}" for p in "BIES" if p in "BI" or f"{p}-{kind}" in seen]
    return names + sorted(seen - set(names))


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")


class TokenClassification(Task):
    """Tags per word: a token-classification head (`*ForTokenClassification`), labels on first word-pieces."""

    name = "token_classification"
    loss_type = "classification"  # softmax over the tags at each labelled piece: kl, soft_ce, logit_mse, ce fit
    metrics = ("entity_f1",)
    gold_loss = "ce"
    pipeline_kwargs = {"aggregation_strategy": "simple"}
    doc = "a token-classification task (one tag per word, e.g. NER)"
    head = "ForTokenClassification"
    pipeline_tag = "token-classification"
    per_token = True

    # ------------------------------------------------------------------------------------- reading

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return sniff_tokens(path)

    def read_file(self, path: Path) -> RawSplit | None:
        return read_token_file(path)

    def split_features(self, is_pair: bool, names: Sequence[str]) -> Any:
        return datasets.Features({"text_a": datasets.Sequence(datasets.Value("string")),
                                  "label": datasets.Sequence(datasets.ClassLabel(names=list(names)))})

    def label_feature(self, num_labels: int) -> Any:
        return datasets.Sequence(datasets.Value("int64"))

    def read_labels(self, raw: dict[str, RawSplit], names: list[str] | None,
                    named: bool) -> tuple[list[str], dict[str, RawSplit]]:
        """Tag cells -> tag ids; names come from the source or are read off train (`tag_names`).

        Raises `KDistillError` naming the file and line of a tag outside the label set, of a tag id without label
        names, or of a tag seqeval cannot read (not O, B-X, I-X, E-X, S-X).
        """
        if names is None:
            train = raw["train"]
            for tags, lines in zip(train.labels, train.extra["tag_lines"], strict=True):
                for tag, ln in zip(tags, lines, strict=True):
                    if not isinstance(tag, str):
                        raise KDistillError(f"tag {tag!r} in {train.source} line {ln} is an id, but no tag names are "
                                            "known: give data.label_names (the tag of each id, in order)")
            names = tag_names(t for tags in train.labels for t in tags)
        bad = next((n for n in names if not TAG_RE.fullmatch(n)), None)
        if bad is not None:
            train = raw["train"]
            where = next((f" in {train.source} line {lines[tags.index(bad)]}" for tags, lines in
                          zip(train.labels, train.extra.get("tag_lines") or [], strict=False) if bad in tags), "")
            raise KDistillError(f"tag {bad!r}{where} is not an IOB tag (O, B-TYPE, I-TYPE, E-TYPE, S-TYPE): entities "
                                "could not be read off it; rename the tags in the data (or data.label_names)")
        lookup: dict[Any, int] = {n: i for i, n in enumerate(names)}
        lookup.update({i: i for i in range(len(names))})  # ids (a `datasets` ClassLabel, JSONL with label names)
        out = {}
        for split, s in raw.items():
            ids = []
            for k, tags in enumerate(s.labels):
                row = [lookup.get(t, -1) for t in tags]
                if -1 in row:
                    j = row.index(-1)
                    lines = s.extra.get("tag_lines")
                    ln = lines[k][j] if lines else s.lines[k]
                    raise KDistillError(f"tag {tags[j]!r} in {s.source} line {ln} is not in the label set "
                                        f"({_shown(names)})")
                ids.append(row)
            out[split] = s.with_labels(ids)
        return list(names), out

    def check_augment(self) -> None:
        raise KDistillError(f"kdistill augment replaces words, so the tags would no longer line up: {self.doc} is not "
                            "supported (nor data.augment_file)")

    def check_label(self) -> None:
        raise KDistillError(f"kdistill label and teacher_answers keep one answer per example; {self.doc} has one per "
                            "word: distill from the live teacher, or from its output cache (teacher_cache)")

    def check_student(self, init: str) -> None:
        if init in ("bilstm", "cnn", "mobilebert"):
            raise KDistillError(f"student.init {init} builds a classifier with one output per example; {self.doc} "
                                "needs one per token: use teacher_layers, config or path")

    def check_classes(self, data: TaskData, config: Any, model_name: str) -> None:
        n = int(config.num_labels)
        if n != data.num_labels:
            raise KDistillError(f"model '{model_name}' has {n} tags, the data has {data.num_labels} "
                                f"({_shown(data.label_names)}): a token-classification model needs one output per tag "
                                "(a file that lacks some tags: give data.label_names in the model's order)")
        id2label = config.id2label or {}
        model_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
        generic = all(m == f"LABEL_{i}" for i, m in enumerate(model_names))
        if not generic and norm_names(model_names) != norm_names(data.label_names):
            raise KDistillError(f"tag names differ: data has {_shown(data.label_names)} (by id), model "
                                f"'{model_name}' has {_shown(model_names)}: give data.label_names in the model's order")

    # ------------------------------------------------------------------------------------ encoding

    def encode(self, rows: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
        """Word-pieces of each sentence with the word's tag id on its first piece and -100 elsewhere (HF's
        `run_ner.py` with `label_all_tokens=False`); `word_tags` keeps every word's gold tag and `label_words`
        the word of each labelled piece, which the metric needs to count the words cut by truncation."""
        if not getattr(tokenizer, "is_fast", False):
            raise KDistillError(f"{self.doc} needs a fast tokenizer (it maps word-pieces to words); "
                                f"{type(tokenizer).__name__} is not one")
        try:
            enc = tokenizer(rows["text_a"], is_split_into_words=True, truncation=True, max_length=max_length)
        except ValueError as err:  # e.g. RoBERTa's byte-level BPE without add_prefix_space=True
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise KDistillError(f"the tokenizer cannot read words split in advance: {first}") from None
        out: dict[str, list[Any]] = {k: list(v) for k, v in enc.items()}
        labels, kept = [], []
        for i, tags in enumerate(rows["label"]):
            row, words, previous = [], [], None
            for w in enc.word_ids(i):
                if w is None or w == previous:
                    row.append(-100)
                else:
                    row.append(int(tags[w]))
                    words.append(w)
                previous = w
            labels.append(row)
            kept.append(words)
        out.update(labels=labels, word_tags=[list(t) for t in rows["label"]], label_words=kept)
        return out

    def encoded_features(self, columns: Iterable[str], label_feature: Any) -> Any:
        feats = {c: datasets.Sequence(datasets.Value("int32")) for c in columns}
        feats.update(labels=datasets.Sequence(datasets.Value("int64")), word_tags=label_feature)
        return datasets.Features(feats)

    def encoding_key(self, split: Any) -> list[Any]:
        return [self.name, list(split.features["label"].feature.names)]  # the tag names live in the features

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=-100)

    # ---------------------------------------------------------------------------------------- losses

    def targets(self, student: Tensor, teacher: Tensor | None, labels: Tensor | None,
                batch: Any = None) -> list[Target]:
        """The rows (N, C) of the labelled pieces (labels != -100), in batch then position order, for both models."""
        if labels is None or labels.dim() != 2:
            raise KDistillError(f"{self.doc} needs token labels (B, L) in the batch to pick the labelled pieces")
        keep = labels != -100
        return [Target(student[keep], teacher[keep] if teacher is not None else None, labels[keep])]

    def average_teachers(self, logits: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """Per token: log of the weighted average tag probability (each teacher's logits (B, L, C))."""
        probs = sum(w * lg.float().softmax(-1) for w, lg in zip(weights, logits, strict=True))
        return torch.as_tensor(probs).clamp_min(1e-12).log()

    def answer_logits(self, row: dict[str, Any], where: str) -> Tensor:
        self.check_label()  # raises: no stored answers for token tasks
        return torch.empty(0)

    # --------------------------------------------------------------------------------------- outputs

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits).argmax(axis=-1)

    def sentences(self, logits: np.ndarray | Sequence, labels: np.ndarray | Sequence,
                  encoded: Any) -> tuple[list[list[str]], list[list[str]]]:
        """Outputs (N, L, C) of the encoded sentences -> (predicted, gold) tags per sentence, every word included.

        A word without a labelled piece (cut by truncation, or no piece at all) is predicted O. Raises
        `KDistillError` when `encoded` is missing or does not hold these outputs' sentences.
        """
        if encoded is None or "word_tags" not in getattr(encoded, "column_names", ()):
            raise KDistillError(f"scoring {self.doc} needs its encoded split (each sentence's words and tags)")
        out, gold = np.asarray(logits), np.asarray(labels)
        if out.ndim != 3 or gold.ndim != 2 or len(out) != len(encoded) or len(gold) != len(out):
            raise KDistillError(f"{self.doc}: outputs {out.shape} and labels {gold.shape} do not fit the "
                                f"{len(encoded)} encoded sentences")
        names = encoded.features["word_tags"].feature.names
        best = out.argmax(axis=-1)
        preds, golds = [], []
        for i, (tags, words) in enumerate(zip(encoded["word_tags"], encoded["label_words"], strict=True)):
            positions = np.flatnonzero(gold[i] != -100)
            if len(positions) != len(words):
                raise KDistillError(f"{self.doc}: sentence {i} has {len(positions)} labelled pieces in the outputs "
                                    f"but {len(words)} in its encoding")
            pred = ["O"] * len(tags)
            for p, w in zip(positions, words, strict=True):
                pred[w] = names[int(best[i, p])]
            preds.append(pred)
            golds.append([names[t] for t in tags])
        return preds, golds

    def score(self, metric: str, logits: np.ndarray | Sequence, labels: np.ndarray | Sequence,
              encoded: Any = None) -> dict[str, float]:
        self.check_metric(metric)
        preds, golds = self.sentences(logits, labels, encoded)
        if not golds:
            raise KDistillError(f"metric '{metric}': no sentences to score")
        return METRICS.get(metric)(preds, golds)

    def collapse_warning(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> str | None:
        preds, golds = self.sentences(logits, labels, encoded)
        gold_entities = sum(t.startswith(("B-", "S-")) for g in golds for t in g)
        if len(preds) < 2 or not gold_entities or any(t != "O" for p in preds for t in p):
            return None
        return (f"none of the {len(preds)} validation sentences has a predicted entity (gold: {gold_entities} "
                "entities): the model has collapsed to tagging every word O")

    def detail(self, logits: np.ndarray, labels: np.ndarray, encoded: Any = None) -> dict[str, Any]:
        from seqeval.metrics import classification_report

        preds, golds = self.sentences(logits, labels, encoded)
        report = classification_report(golds, preds, output_dict=True, zero_division=0)
        rows = [{"type": k, "precision": round(float(v["precision"]), 5), "recall": round(float(v["recall"]), 5),
                 "f1": round(float(v["f1-score"]), 5), "support": int(v["support"])}
                for k, v in report.items() if not k.endswith(" avg")]
        return {"per_type": rows}

    def tables(self, detail: dict[str, Any], classes: Sequence[str]) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = [[r["type"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"])]
                for r in detail["per_type"]]
        return [("Per-entity-type F1 (seqeval, exact span and type)",
                 ["Type", "Precision", "Recall", "F1", "Gold entities"], rows)]

    def answer_probs(self, logits: Sequence[float]) -> list[float] | None:
        self.check_label()
        return None

    def labeled_fields(self, label_id: int, probs: Sequence[float] | None, logits: Sequence[float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
        self.check_label()
        return {}
