"""Answer questions with an extractive QA model (`*ForQuestionAnswering`): windows -> model -> post-processing.

transformers 5.2x removed `pipeline("question-answering")` (its `REMOVED_TASKS` says to use a chat model with
`text-generation` instead), so a saved QA student is served with these functions, which do what that pipeline did:
cut each context into question + context windows, run the model over them in batches, and keep the best span over
a question's windows. They are also the evaluation path: `answer_questions` then `qa_metric.squad_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kdistill.errors import KDistillError
from kdistill.tasks.qa_data import QAExample
from kdistill.tasks.qa_postprocess import SpanPrediction, postprocess_spans
from kdistill.tasks.qa_windows import QAWindows, make_windows

__all__ = ["window_logits", "answer_spans", "answer_questions", "answer"]


def window_logits(model: Any, tokenizer: Any, windows: QAWindows, *, batch_size: int = 32,
                  device: str | torch.device | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window, unpadded: two lists of (L_w,) float32 arrays, L_w = its real tokens.

    `model` is a `*ForQuestionAnswering` (outputs `start_logits`, `end_logits` (B, L)); it runs in eval mode under
    `torch.inference_mode`, batches padded on the right by `tokenizer.pad`. Raises `KDistillError` for a model
    without start/end logits.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    try:
        for a in range(0, len(windows), batch_size):
            rows = [windows.model_inputs(i) for i in range(a, min(a + batch_size, len(windows)))]
            batch = tokenizer.pad(rows, padding=True, return_tensors="pt")
            with torch.inference_mode():
                out = model(**{k: v.to(device) for k, v in batch.items()})
            if getattr(out, "start_logits", None) is None or getattr(out, "end_logits", None) is None:
                raise KDistillError(f"{type(model).__name__} gives no start/end logits: extractive QA needs a "
                                    "question-answering model (AutoModelForQuestionAnswering)")
            for j, row in enumerate(rows):
                n = len(row["input_ids"])  # right padding: the window's own tokens come first
                starts.append(out.start_logits[j, :n].float().cpu().numpy())
                ends.append(out.end_logits[j, :n].float().cpu().numpy())
    finally:
        model.train(was_training)
    return starts, ends


def answer_spans(model: Any, tokenizer: Any, examples: Sequence[QAExample], *, max_length: int = 384,
                 doc_stride: int = 128, n_best: int = 20, max_answer_length: int = 30, batch_size: int = 32,
                 device: str | torch.device | None = None) -> list[SpanPrediction]:
    """The best answer span of each example (text, score, characters, window), in example order.

    Windows as `make_windows` (no labels needed); post-processing as `postprocess_spans`.
    """
    windows = make_windows(examples, tokenizer, max_length=max_length, doc_stride=doc_stride, labels=False)
    starts, ends = window_logits(model, tokenizer, windows, batch_size=batch_size, device=device)
    return postprocess_spans([ex.context for ex in examples], windows, starts, ends, n_best=n_best,
                             max_answer_length=max_answer_length)


def answer_questions(model: Any, tokenizer: Any, examples: Sequence[QAExample], **kw: Any) -> dict[str, str]:
    """Question id -> answer text (the predictions `squad_scores` takes); keywords as `answer_spans`."""
    spans = answer_spans(model, tokenizer, examples, **kw)
    return {ex.id: p.text for ex, p in zip(examples, spans, strict=True)}


def answer(model: Any, tokenizer: Any, question: str, context: str, **kw: Any) -> SpanPrediction:
    """One question about one context: what `pipeline("question-answering")(question=..., context=...)` gave.

    Raises `KDistillError` for an empty question or context (no span to find: the pipeline refuses them too).
    """
    for name, text in (("question", question), ("context", context)):
        if not str(text).strip():
            raise KDistillError(f"answer: the {name} is empty")
    return answer_spans(model, tokenizer, [QAExample("question", question, context, (), ())], **kw)[0]
