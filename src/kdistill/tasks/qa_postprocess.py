"""Extractive QA post-processing: start/end logits of each window -> one answer text per question.

The method of Hugging Face's question-answering examples (`utils_qa.postprocess_qa_predictions`, SQuAD v1.1
branch): in each window take the `n_best` highest start and end logits, pair them, skip pairs that leave the
context, end before they start or are longer than `max_answer_length` tokens, score a pair by start logit + end
logit, and keep the best pair over all of the question's windows; its text is cut from the context by the tokens'
character offsets (so spacing and case are the context's own).

One difference: the n-best candidates are taken among the context tokens only, as transformers'
`pipeline("question-answering")` does (it masks the question and special tokens before its top k). `utils_qa` takes
them among all tokens and then skips the ones outside the context, so it can miss a valid answer when question
tokens fill its top n; whenever its top n holds a valid pair both give the same answer. A question with no valid
pair in any window gets the empty answer "" (utils_qa writes the word "empty"); both score 0 against any reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdistill.errors import KDistillError
from kdistill.tasks.qa_data import QAExample
from kdistill.tasks.qa_windows import Offset, QAWindows

__all__ = ["SpanPrediction", "best_span", "postprocess", "postprocess_spans"]


@dataclass(frozen=True)
class SpanPrediction:
    """The best answer of one question: its text, score (start + end logit), characters and window."""

    text: str
    score: float
    start_char: int
    end_char: int
    window: int  # index of the window (in `QAWindows`) the answer came from; -1 = no valid pair anywhere


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[Offset | None], *,
              n_best: int = 20, max_answer_length: int = 30) -> tuple[int, int, float] | None:
    """The best (start token, end token, score) of one window, or None when no pair is valid.

    `start_logits`, `end_logits`: (L,) for the window's tokens (padding beyond `len(offsets)` is ignored);
    `offsets[k]` is None for tokens outside the context. A pair is valid when both tokens are in the context,
    start <= end and end - start + 1 <= `max_answer_length`; its score is start_logits[s] + end_logits[e]. Ties keep
    the earlier start, then the earlier end.
    """
    if n_best < 1 or max_answer_length < 1:
        raise KDistillError(f"n_best and max_answer_length must be >= 1, got {n_best} and {max_answer_length}")
    n = min(len(offsets), len(start_logits), len(end_logits))
    ctx = np.array([k for k in range(n) if offsets[k] is not None], dtype=np.int64)
    if ctx.size == 0:
        return None
    s = np.asarray(start_logits, dtype=np.float64)
    e = np.asarray(end_logits, dtype=np.float64)
    # stable sort on the negated logits: highest first, ties in token order
    starts = np.sort(ctx[np.argsort(-s[ctx], kind="stable")[:n_best]])
    ends = np.sort(ctx[np.argsort(-e[ctx], kind="stable")[:n_best]])
    length = ends[None, :] - starts[:, None] + 1
    valid = (length >= 1) & (length <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, s[starts][:, None] + e[ends][None, :], -np.inf)
    # argmax takes the first maximum in row-major order: the earliest start, then the earliest end
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    if not valid[i, j]:  # every valid score is -inf (or NaN): no usable pair
        return None
    return int(starts[i]), int(ends[j]), float(scores[i, j])


def postprocess_spans(contexts: Sequence[str], windows: QAWindows, start_logits: Sequence[np.ndarray],
                      end_logits: Sequence[np.ndarray], *, n_best: int = 20,
                      max_answer_length: int = 30) -> list[SpanPrediction]:
    """The best answer of each example over all its windows, in example order (`contexts[i]` is example i's).

    `start_logits[w]`, `end_logits[w]`: window w's logits, (L_w,) each, padded or not (a (W, L) array works too).
    Raises `KDistillError` when the logits do not have one row per window.
    """
    if len(start_logits) != len(windows) or len(end_logits) != len(windows):
        raise KDistillError(f"QA post-processing: {len(windows)} windows but {len(start_logits)} start and "
                            f"{len(end_logits)} end logit rows")
    if windows.example_index and max(windows.example_index) >= len(contexts):
        raise KDistillError(f"QA post-processing: the windows come from {max(windows.example_index) + 1} or more "
                            f"examples, but {len(contexts)} contexts were given")
    best: list[SpanPrediction | None] = [None] * len(contexts)
    for w in range(len(windows)):
        found = best_span(np.asarray(start_logits[w]), np.asarray(end_logits[w]), windows.offsets[w],
                          n_best=n_best, max_answer_length=max_answer_length)
        if found is None:
            continue
        i, j, score = found
        ex, first, last = windows.example_index[w], windows.offsets[w][i], windows.offsets[w][j]
        current = best[ex]
        if first is not None and last is not None and (current is None or score > current.score):
            best[ex] = SpanPrediction(contexts[ex][first[0]:last[1]], score, first[0], last[1], w)
    return [p if p is not None else SpanPrediction("", float("-inf"), 0, 0, -1) for p in best]


def postprocess(examples: Sequence[QAExample], windows: QAWindows, start_logits: Sequence[np.ndarray],
                end_logits: Sequence[np.ndarray], *, n_best: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """Question id -> predicted answer text, for `squad_scores` (the official script's predictions file).

    `windows` must come from `make_windows(examples, ...)`; logits as `postprocess_spans` takes them.
    """
    for w, (i, qid) in enumerate(zip(windows.example_index, windows.example_ids, strict=True)):
        if i >= len(examples) or examples[i].id != qid:
            raise KDistillError(f"QA post-processing: window {w} belongs to question {qid!r}, which is not example "
                                f"{i} of those given: pass the examples the windows were made from")
    spans = postprocess_spans([ex.context for ex in examples], windows, start_logits, end_logits, n_best=n_best,
                              max_answer_length=max_answer_length)
    return {ex.id: p.text for ex, p in zip(examples, spans, strict=True)}
