"""SQuAD v1.1 exact match and F1 (`kdistill.tasks.qa_metric`) against examples scored by hand with the rules of the
official evaluate-v1.1.py."""

from __future__ import annotations

import pytest

from kdistill.errors import KDistillError
from kdistill.tasks.qa_metric import exact_match_score, f1_score, max_over_references, normalize_answer, squad_scores


@pytest.mark.parametrize(("text", "normal"), [
    ("The  Quick, brown-fox!", "quick brownfox"),  # lower, punctuation deleted (not spaced), article, whitespace
    ("an apple a day; theory", "apple day theory"),  # whole words only: "theory" keeps its "the"
    ("A", ""),
    ("Café—Bar “Zoë”", "café—bar “zoë”"),  # only ASCII punctuation (string.punctuation) goes, as in the script
    ("\tDenver\nBroncos ", "denver broncos"),
])
def test_normalize_answer(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_and_f1_hand_scored() -> None:
    assert exact_match_score("Denver Broncos.", "the denver broncos")
    assert not exact_match_score("Denver", "Denver Broncos")
    assert f1_score("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)  # P 2/2, R 2/4
    assert f1_score("Denver Broncos", "Broncos") == pytest.approx(2 / 3)  # P 1/2, R 1/1
    # repeated tokens count as often as they occur in both: 2 common of 3 and 3 (a set would give 1/3)
    assert f1_score("cat cat cat", "cat cat dog") == pytest.approx(2 / 3)
    assert f1_score("dog", "cat") == 0.0
    # the script's quirk: an answer that normalises to nothing matches exactly but has no common token
    assert exact_match_score("", "the") and f1_score("", "the") == 0.0
    assert max_over_references(f1_score, "Broncos", ["Carolina", "Denver Broncos", "Broncos!"]) == 1.0


def test_squad_scores_hand_scored() -> None:
    references = {
        "q1": ["Denver Broncos", "Broncos"],  # exact: EM 1, F1 1
        "q2": ["cat sat on the mat", "a dog"],  # best F1 2/3 (against the first), EM 0
        "q3": ["Santa Clara", "Levi's Stadium"],  # F1: P 2/3, R 2/2 -> 0.8, EM 0
        "q4": ["nothing"],  # no prediction: 0 and 0
    }
    predictions = {"q1": "denver broncos", "q2": "the cat sat", "q3": "Santa Clara, California", "extra": "x"}
    scores = squad_scores(predictions, references)
    assert list(scores) == ["exact_match", "f1"]
    assert scores["exact_match"] == pytest.approx(100 * 1 / 4)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0.8 + 0) / 4)


def test_squad_scores_refuses_what_cannot_be_scored() -> None:
    with pytest.raises(KDistillError, match="no questions to score"):
        squad_scores({"q": "a"}, {})
    with pytest.raises(KDistillError, match="question 'q' needs a list of reference answers"):
        squad_scores({"q": "a"}, {"q": []})
    with pytest.raises(KDistillError, match="question 'q' needs a list of reference answers"):
        squad_scores({"q": "a"}, {"q": "a"})
