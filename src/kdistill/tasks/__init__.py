"""Task types behind one interface (`Task`): how labels are read, which head and losses fit, how outputs are scored.

- `classification.Classification`: one class per example (SST-2, CoLA, MRPC, RTE); `MaskedLM` for pretraining;
- `regression.Regression`: one score per example (STS-B);
- `multilabel.MultiLabel`: a set of labels per example (GoEmotions);
- `token.TokenClassification`: a tag per word (NER, CoNLL-2003), read by `conll` from CoNLL or JSONL files;
- `qa.QuestionAnswering`: an answer span in a context (SQuAD v1.1), read by `qa_data`, cut into windows.

`get_task(name)` gives the registered instance; `detect_task_type` reads a task type off a file's label cells when
`data.task_type` is null, and `detect_file_task` off a file's own format (CoNLL columns); `task_of_config` reads it
off a model's config. `readers` reads tables into raw splits and `shipped` lists the tasks shipped with kdistill
(`--task sst2`, `--task stsb`, `--task goemotions`, `--task conll2003`, `--task squad`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdistill.errors import KDistillError
from kdistill.labels import label_key
from kdistill.registry import Registry
from kdistill.tasks.base import (
    HEADS,
    PROBLEM_TYPES,
    SEQUENCE_HEAD,
    Target,
    Task,
    head_of_config,
    task_of_config,
    task_of_model,
)
from kdistill.tasks.classification import Classification, MaskedLM
from kdistill.tasks.multilabel import MultiLabel, json_list
from kdistill.tasks.qa import QuestionAnswering
from kdistill.tasks.regression import Regression, as_score
from kdistill.tasks.token import TokenClassification

__all__ = ["TASK_TYPES", "PROBLEM_TYPES", "HEADS", "SEQUENCE_HEAD", "Task", "Target", "get_task", "task_of_config",
           "task_of_model", "head_of_config", "detect_task_type", "detect_file_task", "Classification", "Regression",
           "MultiLabel", "MaskedLM", "TokenClassification", "QuestionAnswering"]

TASK_TYPES: Registry[Task] = Registry("task type")
for _task in (Classification(), Regression(), MultiLabel(), MaskedLM(), TokenClassification(), QuestionAnswering()):
    TASK_TYPES.add(_task.name, _task)


def get_task(name: str) -> Task:
    """The registered task type `name` ("classification", "regression", "multilabel", "masked_lm",
    "token_classification", "question_answering")."""
    return TASK_TYPES.get(name)


def detect_file_task(path: str | Path) -> str | None:
    """The task type whose own file format `path` evidently is (`Task.sniff`: CoNLL columns, token JSONL), or None
    for a table of text and label columns."""
    for name in TASK_TYPES:
        if TASK_TYPES.get(name).sniff(Path(path)):
            return name
    return None


def detect_task_type(labels: Sequence[Any], texts: Sequence[Any] = (), where: Sequence[str] = ()) -> str:
    """The task type a column of label cells (and of texts) implies when `data.task_type` is null.

    Texts that are lists (a `datasets` column of words) mean token classification; SQuAD answers (objects with
    "answer_start") extractive QA; a list in any label cell (a JSON
    array, a `datasets` sequence) means multi-label; labels that are all numbers and not all integers (3.8, "4.25")
    mean regression; anything else is classification (integer ids or text labels).
    A comma-separated cell is not taken as a label set on its own: set data.task_type: multilabel for that.
    `where` names each cell's place (file and line) for the error raised when most labels are decimal scores and some
    are not finite numbers (KDistillError: read as classes, each score would become a class).
    """
    if any(isinstance(v, list | tuple) for v in texts):
        return "token_classification"
    if any(isinstance(v, dict) and "answer_start" in v for v in labels):  # answers of a `datasets` squad split
        return "question_answering"
    if any(isinstance(v, list | tuple) or json_list(v) is not None for v in labels):
        return "multilabel"
    keys = [label_key(v) for v in labels]
    if keys and not all(isinstance(k, int) for k in keys) and all(
            isinstance(k, int) or as_score(k) is not None for k in keys):
        return "regression"
    decimals = sum(not isinstance(k, int) and as_score(k) is not None for k in keys)
    if decimals and 5 * decimals >= 4 * len(keys):  # scores with a few bad cells: not 21 classes named "0.14", ...
        i = next(i for i, k in enumerate(keys) if not isinstance(k, int) and as_score(k) is None)
        at = f" in {where[i]}" if i < len(where) else ""
        raise KDistillError(f"the labels look like regression scores ({decimals} of {len(keys)} are decimal numbers) "
                            f"but {keys[i]!r}{at} is not a finite number: fix that cell, or set data.task_type "
                            "(classification reads every distinct value as a class)")
    return "classification"
