"""QA post-processing (`kdistill.tasks.qa_postprocess`) on hand-written windows and logits, answers worked out by hand.

The context "aa bb cc dd ee ff" is cut into two windows of four context tokens, [CLS] q [SEP] ... [SEP]:
window 0 holds aa bb cc dd (tokens 3-6), window 1 holds cc dd ee ff (tokens 3-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from kdistill.errors import KDistillError
from kdistill.tasks.qa_data import QAExample
from kdistill.tasks.qa_postprocess import SpanPrediction, best_span, postprocess, postprocess_spans
from kdistill.tasks.qa_windows import QAWindows

CONTEXT = "aa bb cc dd ee ff"
W0 = [None, None, None, (0, 2), (3, 5), (6, 8), (9, 11), None]
W1 = [None, None, None, (6, 8), (9, 11), (12, 14), (15, 17), None]


def windows(offsets: list, example_index: list[int], ids: list[str]) -> QAWindows:
    n = [len(o) for o in offsets]
    return QAWindows(input_ids=[[0] * k for k in n], attention_mask=[[1] * k for k in n], token_type_ids=None,
                     example_index=example_index, example_ids=ids, offsets=offsets,
                     span_mask=[[int(o is not None) for o in offs] for offs in offsets], cls_index=[0] * len(n))


def row(**at: float) -> np.ndarray:
    """Logits of one window: 0 everywhere, `at` = {"t3": 5.0} sets token 3."""
    x = np.zeros(8)
    for k, v in at.items():
        x[int(k[1:])] = v
    return x


EX = QAExample("q", "q", CONTEXT, ("bb",), (3,))


def answer(start: np.ndarray, end: np.ndarray, **kw) -> SpanPrediction:
    return postprocess_spans([CONTEXT], windows([W0], [0], ["q"]), [start], [end], **kw)[0]


def test_best_pair_skips_question_and_special_tokens() -> None:
    # CLS (0), the question (1) and [SEP] (2, 7) hold the largest logits; they cannot start or end an answer.
    # Valid pairs: bb+cc = 3 + 2 = 5 (best), bb+dd = 4, aa+cc = 3, bb+bb = 3.
    start = row(t0=9, t1=8, t2=9, t3=1, t4=3, t7=9)
    end = row(t0=9, t1=9, t2=9, t5=2, t6=1, t7=9)
    assert answer(start, end) == SpanPrediction("bb cc", 5.0, 3, 8, 0)
    assert best_span(start, end, W0) == (4, 5, 5.0)


def test_end_before_start_is_skipped() -> None:
    # the pair dd..aa would score 4 + 5 = 9 but ends before it starts; aa alone scores 1 + 5 = 6, dd alone 4 + 1 = 5
    start, end = row(t3=1, t6=4), row(t3=5, t6=1)
    assert answer(start, end) == SpanPrediction("aa", 6.0, 0, 2, 0)


def test_max_answer_length_in_tokens() -> None:
    start, end = row(t3=5, t4=2), row(t5=1, t6=5)
    assert answer(start, end).text == "aa bb cc dd"  # 5 + 5 = 10, four tokens
    assert answer(start, end, max_answer_length=3) == SpanPrediction("bb cc dd", 7.0, 3, 11, 0)  # 2 + 5
    # one token at most: aa (5 + 0) and dd (0 + 5) tie at 5; the earlier start wins
    assert answer(start, end, max_answer_length=1) == SpanPrediction("aa", 5.0, 0, 2, 0)


def test_n_best_limits_the_candidates() -> None:
    # the top start (dd) and the top end (aa) make no valid pair: with n_best 1 nothing is left; with 2, aa alone
    start, end = row(t6=5, t3=1), row(t3=5, t4=1)
    assert best_span(start, end, W0, n_best=1) is None
    assert answer(start, end, n_best=1) == SpanPrediction("", float("-inf"), 0, 0, -1)
    assert answer(start, end, n_best=2) == SpanPrediction("aa", 6.0, 0, 2, 0)


def test_padding_beyond_the_window_is_ignored() -> None:
    start = np.concatenate([row(t4=1), [50.0, 50.0]])  # a batch padded to 10 tokens
    end = np.concatenate([row(t5=1), [50.0, 50.0]])
    assert answer(start, end).text == "bb cc"


def test_best_over_windows_and_examples() -> None:
    ex2 = QAExample("r", "q", "xx yy", ("yy",), (3,))
    w = windows([W0, W1, [None, None, (0, 2), (3, 5), None]], [0, 0, 1], ["q", "q", "r"])
    # window 0's best is bb (1 + 2 = 3); window 1's is ee ff (2 + 2 = 4, characters 12-17); example r: yy
    starts = [row(t4=1), row(t5=2), np.array([9.0, 9.0, 0.0, 1.0, 9.0])]
    ends = [row(t4=2), row(t6=2), np.array([9.0, 9.0, 0.0, 1.0, 9.0])]
    spans = postprocess_spans([CONTEXT, ex2.context], w, starts, ends)
    assert spans == [SpanPrediction("ee ff", 4.0, 12, 17, 1), SpanPrediction("yy", 2.0, 3, 5, 2)]
    assert postprocess([EX, ex2], w, starts, ends) == {"q": "ee ff", "r": "yy"}
    # the same logits as one padded (W, L) array
    padded = np.full((3, 8), -1.0)
    for i, x in enumerate(starts):
        padded[i, :len(x)] = x
    padded_end = np.full((3, 8), -1.0)
    for i, x in enumerate(ends):
        padded_end[i, :len(x)] = x
    assert postprocess([EX, ex2], w, padded, padded_end) == {"q": "ee ff", "r": "yy"}


def test_mismatches_are_one_line_errors() -> None:
    w = windows([W0, W1], [0, 0], ["q", "q"])
    with pytest.raises(KDistillError, match="2 windows but 1 start and 1 end logit rows"):
        postprocess([EX], w, [row()], [row()])
    other = QAExample("other", "q", CONTEXT, ("bb",), (3,))
    with pytest.raises(KDistillError, match="window 0 belongs to question 'q', which is not example 0"):
        postprocess([other], w, [row(), row()], [row(), row()])
    with pytest.raises(KDistillError, match="max_answer_length must be >= 1"):
        best_span(row(), row(), W0, max_answer_length=0)
