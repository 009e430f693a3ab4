"""Which teacher answers for a distillation run: the one place that decides between the kinds of teacher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel

from kdistill.checkpoints import RUN_STATE, RunState, latest_checkpoint
from kdistill.config import DistillConfig
from kdistill.data import TaskData
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.models import load_tokenizer, same_vocabulary
from kdistill.teachers.answers import StoredAnswers
from kdistill.teachers.cached import cached_teacher
from kdistill.teachers.multi import MultiTeacher
from kdistill.teachers.other_tokenizer import OtherTokenizerTeacher
from kdistill.teachers.source import TeacherSource
from kdistill.tokenized import tokenize_splits


@dataclass
class TeacherPlan:
    """How a run gets its teacher signal: a live model the distiller runs itself, or a `TeacherSource`.

    `train_set` is the student's training split, with an `idx` column when the source looks examples up.
    `live` and `source` are never both set; both are None when no loss needs the teacher.
    """

    kind: str  # "none", "live", "several", "answers", "cached" or "other tokenizer"
    train_set: Dataset
    live: PreTrainedModel | None = None
    source: TeacherSource | None = None
    cache_info: dict[str, Any] | None = None  # the cache's summary for metrics.json, when one serves the run
    note: str = ""  # for the log: where the teacher's outputs come from, when not from the live teacher

    @staticmethod
    def with_idx(train: Dataset) -> Dataset:
        """`train` plus `idx`, each example's row, by which cached and other-tokenizer teachers find it."""
        return train.add_column("idx", list(range(len(train))))


def finished_run(out: Path, resume: bool) -> bool:
    """A finished run is only re-exported: building a teacher cache for it would be wasted work."""
    ckpt = latest_checkpoint(out) if resume else None
    return ckpt is not None and RunState.load(ckpt / RUN_STATE).finished


def _several(cfg: DistillConfig, teacher: PreTrainedModel, teacher_tokenizer: Any, data: TaskData,
             objective: Objective, load_teacher: Callable[[str], PreTrainedModel]) -> MultiTeacher:
    others = []
    for name in cfg.extra_teachers:
        other = load_teacher(name)
        data.task.check_model(data, other.config, name)
        if other.config.num_labels != teacher.config.num_labels:
            raise KDistillError(f"extra teacher '{name}' has {other.config.num_labels} classes, "
                                f"teacher '{cfg.teacher}' has {teacher.config.num_labels}")
        if not same_vocabulary(load_tokenizer(name), teacher_tokenizer):  # all of them read the same batch
            raise KDistillError(f"extra teacher '{name}' has another tokenizer than teacher '{cfg.teacher}'; "
                                "extra_teachers must share the teacher's vocabulary")
        others.append(other)
    weights = cfg.teacher_weights or [1.0] * (1 + len(others))
    return MultiTeacher([teacher, *others], weights, objective.teacher_request, data.task)


def answered_note(written_by: list[str], teacher: str | None) -> str:
    """The log's account of stored answers: who wrote them, and whether the run's teacher folder is someone else
    (then that folder gives the run only its tokenizer, label names or layers, never its outputs)."""
    note = "answered by teacher_answers" + (f" (written by {', '.join(written_by)})" if written_by else "")
    if teacher is not None and written_by and not any(same_model(teacher, w) for w in written_by):
        note += f"; note: not by {teacher}, whose outputs this run never reads"
    return note


def same_model(a: str, b: str) -> bool:
    """Whether two model names (folders or hub names) are the same model: folders compared resolved."""
    pa, pb = Path(a), Path(b)
    return pa.resolve() == pb.resolve() if pa.exists() and pb.exists() else a == b


def choose_teacher_source(cfg: DistillConfig, *, teacher: PreTrainedModel, teacher_tokenizer: Any,
                          student_tokenizer: Any, data: TaskData, train: Dataset, objective: Objective, out: Path,
                          load_teacher: Callable[[str], PreTrainedModel], same_tokens: bool = True) -> TeacherPlan:
    """The teacher signal `cfg` asks for, set up: several live teachers (`extra_teachers`), a labelled file
    (`teacher_answers`), the output cache (`teacher_cache`), else the live teacher; with `same_tokens` False
    (the student has its own tokenizer), the teacher reads the texts through its own tokenizer.

    `train` is the training split tokenised by the student's tokenizer; `load_teacher(name)` loads an extra
    teacher. Raises KDistillError for an extra teacher with other classes or another tokenizer, stored answers
    with feature losses or for a task type without them (`Task.check_label`), several teachers for a student of
    another tokenizer, or any teacher of another tokenizer for a per-token task.
    """
    if cfg.teacher_answers is not None:
        data.task.check_label()  # a per-token task has no stored answers: refused even before any loss is looked at
    if not objective.needs_teacher:
        if cfg.teacher_cache is not False:
            print("[distill] note: teacher_cache is set but no loss needs the teacher; nothing to cache")
        return TeacherPlan("none", train)
    if data.task.per_token and not same_tokens:
        raise KDistillError(f"{data.task.doc} is taught token by token: a teacher with another tokenizer than the "
                            "student's cannot teach it (use a student with the teacher's tokenizer)")
    if cfg.extra_teachers:
        if not same_tokens:
            raise KDistillError("extra_teachers read the student's tokens: not with a student of another tokenizer")
        return TeacherPlan("several", train, source=_several(cfg, teacher, teacher_tokenizer, data, objective,
                                                             load_teacher), note="averaged with extra_teachers")
    if cfg.teacher_answers is not None:
        if objective.teacher_request:
            raise KDistillError("teacher_answers holds the teacher's outputs only: use response losses "
                                "(kl, soft_ce, logit_mse, ce), not hidden or attention losses")
        # matched by the student's tokenization of the same texts, so any student tokenizer works
        answers = StoredAnswers(cfg.teacher_answers, student_tokenizer, cfg.data.max_length, data.task,
                                num_outputs=data.num_labels)
        answers.check_covers(train)
        return TeacherPlan("answers", train, note=answered_note(answers.teachers, cfg.teacher), source=answers)
    caching = cfg.teacher_cache is not False and not finished_run(out, cfg.train.resume)
    if same_tokens and not caching:
        return TeacherPlan("live", train, live=teacher)
    # the cache and a teacher of another tokenizer both read the teacher's own tokenization of the texts
    t_train = train if same_tokens else tokenize_splits(replace(data, splits={"train": data.splits["train"]}),
                                                        teacher_tokenizer, cfg.data.max_length,
                                                        cfg.data.cache_dir)["train"]
    if not caching:
        return TeacherPlan("other tokenizer", TeacherPlan.with_idx(train), note="reading the texts with its own "
                           "tokenizer", source=OtherTokenizerTeacher(teacher, teacher_tokenizer, t_train,
                                                                     objective.teacher_request))
    location = out / "teacher_cache" if cfg.teacher_cache is True else Path(str(cfg.teacher_cache))
    source, info = cached_teacher(location, teacher, teacher_tokenizer, data.splits["train"], t_train,
                                  max_length=cfg.data.max_length, request=objective.teacher_request,
                                  dtype=cfg.teacher_cache_dtype, device=cfg.train.device,
                                  batch_size=cfg.train.eval_batch_size, progress=cfg.train.progress,
                                  teacher_name=cfg.teacher, per_example=not same_tokens,
                                  per_token=data.task.per_token)
    return TeacherPlan("cached", TeacherPlan.with_idx(train), source=source, cache_info=info,
                       note="served from its output cache")
