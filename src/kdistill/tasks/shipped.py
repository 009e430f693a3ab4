"""The tasks shipped under `kdistill/datasets/<name>/`, by name (`--task sst2`, `--task stsb`, `--task conll2003`).

GLUE's dev files serve as our "test" for the GLUE tasks (their test labels are hidden), and validation is carved
from train. STS-B, GoEmotions and CoNLL-2003 ship their own dev split (used for validation) and a test split with
public labels. CoNLL-2003's files are CoNLL columns (`token POS chunk NER`), read by its task type. SQuAD v1.1
ships a subset of train and the whole dev set (our test); validation is carved from train by article title.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdistill.errors import KDistillError
from kdistill.registry import Registry
from kdistill.tasks.token import CONLL2003_TAGS

DATA_DIR = Path(__file__).resolve().parents[1] / "datasets"

__all__ = ["DATA_DIR", "TaskSpec", "TASKS", "check_run_tasks", "declared_task_type"]


@dataclass(frozen=True)
class TaskSpec:
    """A task shipped under `kdistill/datasets/<name>/`: its columns, labels, task type, metric and files.

    `label_names` is empty when `labels_file` (one name a line, line i = label id i) lists them instead.
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    metric: str
    files: dict[str, str] = field(hash=False)
    task_type: str = "classification"
    labels_file: str | None = None

    def names(self) -> list[str]:
        """The label names in id order (read from `labels_file` when the spec names one)."""
        if self.labels_file is None:
            return list(self.label_names)
        text = (DATA_DIR / self.name / self.labels_file).read_text(encoding="utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]


TASKS: Registry[TaskSpec] = Registry("task")
_DEV = {"train": "train.tsv", "test": "dev.tsv"}
_DEV_TEST = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
for _spec in (
    TaskSpec("sst2", ("sentence",), "label", ("negative", "positive"), "accuracy",
             {"train": "train.tsv", "test": "test.tsv"}),
    TaskSpec("cola", ("sentence",), "label", ("unacceptable", "acceptable"), "matthews", _DEV),
    TaskSpec("mrpc", ("sentence1", "sentence2"), "label", ("not_paraphrase", "paraphrase"), "f1", _DEV),
    TaskSpec("rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), "accuracy", _DEV),
    TaskSpec("stsb", ("sentence1", "sentence2"), "label", ("score",), "pearson", _DEV_TEST, task_type="regression"),
    TaskSpec("goemotions", ("text",), "labels", (), "macro_f1", _DEV_TEST, task_type="multilabel",
             labels_file="labels.txt"),
    TaskSpec("conll2003", ("tokens",), "tags", CONLL2003_TAGS, "entity_f1",
             {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}, task_type="token_classification"),
    TaskSpec("squad", ("question", "context"), "answers", ("start", "end"), "squad_f1",
             {"train": "train.json", "test": "dev.json"}, task_type="question_answering"),
):
    TASKS.add(_spec.name, _spec)


def declared_task_type(task: str | None, task_type: str | None, *, from_files: bool) -> str | None:
    """The task type a data section names without reading any file: `data.task_type`, else the shipped task's
    (`task`, unless a local file or `datasets` name is the source: `from_files`); None when only the data can tell."""
    if task_type is not None:
        return task_type
    if from_files or task is None or task not in TASKS.names():
        return None
    return TASKS.get(task).task_type


def check_run_tasks(cfg: Any) -> None:
    """`kdistill run` (`cfg`: a `RunConfig`): its three steps' data must be one task type, or the fine-tuned teacher
    fits none of the later steps. Read off each section without its files (`declared_task_type`), so the check costs
    nothing and comes before the fine-tuning; sections given by a file or `datasets` name are left to their step.

    Raises:
        KDistillError: two steps whose data are of different task types, or a `doc_stride` (question answering's
            windows) given to a step of another declared type, naming `run`'s flags.
    """
    kinds: dict[str, tuple[str, str]] = {}
    for step in ("finetune", "distill", "evaluate"):
        data = getattr(cfg, step).data
        kind = declared_task_type(data.task, data.task_type, from_files=bool(data.train_file or data.dataset))
        if kind is not None:
            kinds[step] = (kind, kind if data.task_type else f"{data.task} ({kind})")
            if data.doc_stride is not None and kind != "question_answering":
                raise KDistillError(f"run: --{step}.data.doc_stride applies to question answering only; "
                                    f"--{step}.data is {kinds[step][1]} (drop --{step}.data.doc_stride)")
    if len({kind for kind, _ in kinds.values()}) > 1:
        said = ", ".join(f"--{step}.data is {shown}" for step, (_, shown) in kinds.items())
        raise KDistillError(f"run: {said}; the teacher fine-tuned on one task type cannot teach or be compared on "
                            "another: give every step the same --<step>.data.task (or data file)")
