"""SQuAD v1.1 exact match and F1, computed as the official `evaluate-v1.1.py` computes them.

Why not a library: `evaluate.load("squad")` fetches its metric script from the Hugging Face Hub, so it fails
offline (checked: "Couldn't find a module script at .../squad/squad.py ... doesn't exist on the Hugging Face Hub"),
and transformers 5 no longer ships `transformers.data.metrics.squad_metrics`. The functions below follow the
official script of Rajpurkar et al. (2016), "Official evaluation script for v1.1 of the SQuAD dataset"
(rajpurkar.github.io/SQuAD-explorer, `evaluate-v1.1.py`), step by step:

- `normalize_answer`: lower-case, delete every character of `string.punctuation`, replace the words a/an/the
  (`\\b(a|an|the)\\b`) by a space, then collapse whitespace;
- `exact_match_score`: normalised strings equal;
- `f1_score`: token F1 over the normalised, whitespace-split tokens, counting repeated tokens (a multiset
  intersection); no common token gives 0, so an empty prediction or reference scores 0;
- each question takes the maximum over its reference answers; a question without a prediction scores 0 (the
  official script prints "Unanswered question ... will receive score 0."); predictions for unknown ids are ignored;
  the means over questions are multiplied by 100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from kdistill.errors import KDistillError

__all__ = ["normalize_answer", "exact_match_score", "f1_score", "max_over_references", "squad_scores"]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, remove punctuation, articles (a, an, the) and extra whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, reference: str) -> bool:
    """Whether the normalised prediction equals the normalised reference."""
    return normalize_answer(prediction) == normalize_answer(reference)


def f1_score(prediction: str, reference: str) -> float:
    """Token-level F1 of the normalised prediction against the normalised reference, in [0, 1]."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_over_references(metric: Callable[[str, str], float | bool], prediction: str,
                        references: Sequence[str]) -> float:
    """The best score of `prediction` against any of `references` (a question may have several right answers)."""
    return max(float(metric(prediction, ref)) for ref in references)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over the questions of `references` (question id -> reference answers).

    `predictions` maps question ids to answer texts (`qa_postprocess.postprocess`). Raises `KDistillError` for no
    questions and for a question without reference answers (the official script would fail on it).
    """
    if not references:
        raise KDistillError("SQuAD metric: no questions to score")
    em = f1 = 0.0
    for qid, refs in references.items():
        if isinstance(refs, str) or len(refs) == 0:
            raise KDistillError(f"SQuAD metric: question {qid!r} needs a list of reference answers, got {refs!r}")
        if qid not in predictions:
            continue  # scored 0, as the official script does
        em += max_over_references(exact_match_score, predictions[qid], refs)
        f1 += max_over_references(f1_score, predictions[qid], refs)
    return {"exact_match": 100.0 * em / len(references), "f1": 100.0 * f1 / len(references)}
