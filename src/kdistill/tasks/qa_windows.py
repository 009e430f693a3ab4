"""Question + context windows for extractive QA, as Hugging Face's question-answering examples build them.

A context longer than `max_length` is cut into overlapping windows: each window is `[CLS] question [SEP] part of
the context [SEP]`, consecutive windows share `doc_stride` context tokens (`tokenizer(question, context,
truncation="only_second", stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)`, as in
`transformers/examples/pytorch/question-answering/run_qa.py`, `prepare_train_features` and
`prepare_validation_features`). Each window keeps:

- its example (`example_index`, `example_ids`): post-processing merges a question's windows;
- `offsets`: the character span in the context of each context token, None for every other token (question,
  special tokens, padding), so only context tokens can start or end an answer;
- `span_mask`: 1 where a start or end label can be, the context tokens and the CLS token: the distillation loss's
  distributions run over these positions;
- for training, `start_positions` / `end_positions`: the first and last token of the (first) answer when the
  window holds all of it, else the CLS index for both (HF's convention: "the answer is not in this window").

The tokenizer is an argument (teacher and student share it) and must be a fast one: offsets come from the Rust
tokenizers library only. The question comes first, so the tokenizer must pad on the right (every BERT-family
tokenizer does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdistill.errors import KDistillError
from kdistill.tasks.qa_data import QAExample

__all__ = ["QAWindows", "make_windows", "check_tokenizer", "answer_tokens"]

Offset = tuple[int, int]


@dataclass
class QAWindows:
    """The windows of a list of examples; every list has one entry per window, in example order.

    Token lists are unpadded unless `make_windows` was asked to pad to `max_length`.
    """

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None  # None for tokenizers without segment ids (RoBERTa, DistilBERT)
    example_index: list[int]  # position of the window's example among those given to `make_windows` (in a batched
    # `datasets` map: within the batch; `example_ids` is the key that holds across batches)
    example_ids: list[str]
    offsets: list[list[Offset | None]]  # (start, end) characters in the context for context tokens, else None
    span_mask: list[list[int]]  # 1 at context tokens and at the CLS token
    cls_index: list[int]
    start_positions: list[int] | None = None  # token index of the answer's start, or cls_index (None: no labels)
    end_positions: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def model_inputs(self, i: int | None = None) -> dict[str, Any]:
        """The tokenizer's outputs (input_ids, attention_mask, token_type_ids when present): all windows or window i."""
        cols = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            cols["token_type_ids"] = self.token_type_ids
        return {k: v if i is None else v[i] for k, v in cols.items()}

    def columns(self) -> dict[str, list[Any]]:
        """Every field as columns (for `datasets.Dataset.from_dict` or a batched `map`), labels when present.

        `start_positions` / `end_positions` keep the names `*ForQuestionAnswering.forward` takes, so a collator can
        pass them straight to the model.
        """
        cols: dict[str, list[Any]] = dict(self.model_inputs())
        cols.update(example_id=self.example_ids, example_index=self.example_index, offset_mapping=self.offsets,
                    span_mask=self.span_mask, cls_index=self.cls_index)
        if self.start_positions is not None and self.end_positions is not None:
            cols.update(start_positions=self.start_positions, end_positions=self.end_positions)
        return cols


def check_tokenizer(tokenizer: Any) -> None:
    """Raise a one-line `KDistillError` unless `tokenizer` can build QA windows: fast, padding on the right."""
    if not getattr(tokenizer, "is_fast", False):
        raise KDistillError(f"extractive QA needs a fast tokenizer (character offsets of each token); "
                            f"{type(tokenizer).__name__} is a slow one: load it with AutoTokenizer (use_fast=True)")
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise KDistillError("extractive QA puts the question first and needs a tokenizer that pads on the right "
                            "(set tokenizer.padding_side = 'right')")


def _check_lengths(examples: Sequence[QAExample], questions: list[str], tokenizer: Any, max_length: int,
                   doc_stride: int) -> None:
    """Refuse, naming the question, what the Rust tokenizer would reject with a panic (not a Python exception):
    a question that leaves no more than `doc_stride` context tokens in a window."""
    if doc_stride < 0:
        raise KDistillError(f"doc_stride must be >= 0, got {doc_stride}")
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    # Every token covers at least one UTF-8 byte, bar a word-start marker (SentencePiece's "▁"): a question of b
    # bytes has at most b + 1 tokens, so only questions that could be too long are tokenized here.
    risky = [i for i, q in enumerate(questions) if max_length - specials - len(q.encode()) - 1 <= doc_stride]
    if not risky:
        return
    lengths = [len(ids) for ids in tokenizer([questions[i] for i in risky], add_special_tokens=False)["input_ids"]]
    worst = max(range(len(risky)), key=lambda j: lengths[j])
    room = max_length - specials - lengths[worst]
    if room <= doc_stride:
        raise KDistillError(f"question {examples[risky[worst]].id!r} has {lengths[worst]} tokens, which leaves "
                            f"{room} context tokens per window with max_length {max_length}, but each window must "
                            f"hold more than doc_stride ({doc_stride}): raise max_length or lower doc_stride")


def answer_tokens(offsets: Sequence[Offset | None], start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last token of the answer `context[start_char:end_char]` in one window, or None when the window's
    context tokens (non-None offsets) do not cover it whole.

    The start is the last context token that begins at or before `start_char`, the end the first that ends at or
    after `end_char`: HF's `prepare_train_features` rule, kept to the context tokens (its scan can run past the
    window's last context token into [SEP] and padding when the answer begins in that token).
    """
    ctx = [(k, o) for k, o in enumerate(offsets) if o is not None]
    if not ctx or ctx[0][1][0] > start_char or ctx[-1][1][1] < end_char:
        return None
    i, j = 0, len(ctx) - 1
    while i < len(ctx) - 1 and ctx[i + 1][1][0] <= start_char:
        i += 1
    while j > 0 and ctx[j - 1][1][1] >= end_char:
        j -= 1
    return ctx[i][0], ctx[j][0]


def make_windows(examples: Sequence[QAExample], tokenizer: Any, *, max_length: int = 384, doc_stride: int = 128,
                 pad_to_max_length: bool = False, labels: bool = True) -> QAWindows:
    """Cut each example into question + context windows (HF `run_qa.py`; defaults are its 384 and 128).

    `labels=True` adds `start_positions` / `end_positions` from each example's first answer (an example without
    answers is refused); `labels=False` leaves them None (data to predict on). Questions lose their leading
    whitespace first, as HF does (some SQuAD questions start with many spaces, which would waste the window).
    Raises `KDistillError` for a slow tokenizer, left padding, a question too long for `max_length` and
    `doc_stride`, and (with `labels`) an example without answers.
    """
    check_tokenizer(tokenizer)
    if not examples:
        raise KDistillError("no QA examples to cut into windows")
    questions = [ex.question.lstrip() for ex in examples]
    _check_lengths(examples, questions, tokenizer, max_length, doc_stride)
    if labels:
        for ex in examples:
            if not ex.answers:
                raise KDistillError(f"question {ex.id!r} has no answers: a training example needs one")
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length" if pad_to_max_length else False)
    example_index = [int(i) for i in enc["overflow_to_sample_mapping"]]
    offsets: list[list[Offset | None]] = []
    span_mask: list[list[int]] = []
    cls_index: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for w, ids in enumerate(enc["input_ids"]):
        seq = enc.sequence_ids(w)
        offs: list[Offset | None] = [(int(o[0]), int(o[1])) if s == 1 else None
                                     for o, s in zip(enc["offset_mapping"][w], seq, strict=True)]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        offsets.append(offs)
        cls_index.append(cls)
        span_mask.append([int(o is not None or k == cls) for k, o in enumerate(offs)])
        if labels:
            ex = examples[example_index[w]]
            first = ex.answer_starts[0]
            found = answer_tokens(offs, first, first + len(ex.answers[0]))
            start, end = found if found is not None else (cls, cls)
            starts.append(start)
            ends.append(end)
    return QAWindows(
        input_ids=[list(x) for x in enc["input_ids"]],
        attention_mask=[list(x) for x in enc["attention_mask"]],
        token_type_ids=[list(x) for x in enc["token_type_ids"]] if "token_type_ids" in enc else None,
        example_index=example_index,
        example_ids=[examples[i].id for i in example_index],
        offsets=offsets,
        span_mask=span_mask,
        cls_index=cls_index,
        start_positions=starts if labels else None,
        end_positions=ends if labels else None,
    )
