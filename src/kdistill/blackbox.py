"""Teachers you can only query: label unlabeled text with any teacher, for imitation and pseudo-labelling.

Why: a teacher may be a local model (white-box), a service giving probabilities or logits (gray-box), or one giving
only a label or generated text (black-box). Every source takes a batch of examples and returns one `TeacherAnswer`
each, so `label_file` does not care which kind it talks to.

Request per example: ``{"text": str}``, plus ``"text_pair": str`` for pairs. Answer per example, any of:
``{"probs": [...]}`` (a distribution), ``{"logits": [...]}`` (softmaxed here), ``{"label": "positive" | 1}``, or a
bare string or int. A string that is not exactly a label name (case-insensitive) is generated text: it maps to the
one label name it holds as whole words ("Answer: Positive." -> positive); none or several is an error. String
answers need `label_names`; a model teacher brings its own.

`task_type` (`LabelConfig.task_type`, default classification) says what an HTTP, command or python teacher answers
instead (`kdistill.teachers.label_sources.read_answer`): regression, one score per example (``3.8``, ``"3.8"``,
``{"score": 3.8}``, ``{"logits": [3.8]}``), written as a regression model teacher's (label = logits[0] = the score);
multilabel, a label set (``"joy,surprise"``, ``["joy", "surprise"]``, ids ``[0, 3]``, ``{"labels": [...]}``; needs
`label_names`) or per-label ``{"probs": [...]}`` / ``{"logits": [...]}``, written as a multi-label model teacher's
(label = the list of names, plus probs when given). A model teacher's head sets its task type (task_type, when
given, must agree); an ``openai:`` chat teacher answers classes only.

- ``http(s)://URL`` -> `HttpTeacher`: POST ``{"inputs": [request, ...]}``; the reply must be 2xx JSON
  ``{"outputs": [answer, ...]}``, one per input, in order. Connection errors, timeouts, 429 and 5xx are retried
  with exponential backoff (a numeric Retry-After is honoured, up to 60 s); any other status or a malformed reply
  fails at once, quoting the status and the start of the body. Up to `concurrency` batches are in flight.
- ``command:CMD`` -> `CommandTeacher`: CMD (split like a shell, run without one) runs once per batch, reads one
  request line per example on stdin until EOF, writes one answer line per example on stdout, exits 0. One process
  per batch, not a long-lived one, because that is any Unix filter's contract: no flush after every line, no
  framing, no deadlock on full pipes, and a hang or crash stays in one batch, reported with exit code and stderr.
  Raise `batch_size` to pay a slow start-up (loading a model) fewer times.
- ``python:module:function`` -> `CallableTeacher`: ``function(requests) -> answers``, the same shapes. An exception
  it raises fails the batch like an HTTP error, on one line naming the function and the batch's first input line.
- anything else -> `ModelTeacher`: a local folder or hub name of a sequence classifier, batched, under no_grad.

`label_file` never loses an answer it was given (a teacher may cost money per request): each answered batch is
appended as it arrives to a partial file beside OUT (``labeled.jsonl`` -> ``labeled.partial.jsonl``), and a rerun
after a failure or a kill asks only for the rest (`kdistill.answers.AnswerLog`). A bad answer names the input line and
the start of its text.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from kdistill.answers import (
    AnswerLog,
    TeacherAnswer,
    check_out_file,
    partial_path,
    read_examples,
    read_numbered_examples,
    row_key,
    text_to_label,
    write_labeled,
)
from kdistill.config import LabelConfig
from kdistill.errors import KDistillError
from kdistill.tasks import get_task, task_of_config
from kdistill.teachers.label_sources import CallableTeacher, CommandTeacher, HttpTeacher, Teacher

# the query-only sources live in kdistill.teachers.label_sources, read_examples, TeacherAnswer and text_to_label in
# kdistill.answers; re-exported for callers
__all__ = ["Teacher", "CallableTeacher", "CommandTeacher", "HttpTeacher", "ModelTeacher", "make_source", "label_file",
           "check_task", "TeacherAnswer", "read_examples", "text_to_label", "BACKOFF_SECONDS"]

BACKOFF_SECONDS = 0.5  # wait before the first HTTP retry; doubles with each further retry (`HttpTeacher`'s default)


class ModelTeacher(Teacher):
    """A local or hub sequence classifier (white-box); answers logits, hence probabilities.

    Its head says its task type (`kdistill.tasks.task_of_config`): a regression model answers scores and a
    multi-label model a probability per label, which `label_file` writes as a score or a list of labels.
    """

    kind = "model"

    def __init__(self, name: str, *, max_length: int = 128, device: str = "auto",
                 label_names: Sequence[str] | None = None) -> None:
        from kdistill.models import load_classifier, load_tokenizer, pick_device

        self.device, self.max_length = pick_device(device), max_length
        self.model = load_classifier(name).eval().to(self.device)
        self.task = get_task(task_of_config(self.model.config))
        self.task.check_label()  # one answer per example: a token-classification teacher is refused here
        self.tokenizer = load_tokenizer(name)
        n, id2label = self.model.config.num_labels, self.model.config.id2label or {}
        if label_names and len(label_names) != n:
            raise KDistillError(f"label_names has {len(label_names)} names; model '{name}' has {n} classes")
        own = [str(id2label.get(i, f"LABEL_{i}")) for i in range(n)]
        if label_names and list(label_names) != own and own != [f"LABEL_{i}" for i in range(n)]:
            # names in another order would write "negative" on what the model calls positive; only a model with
            # transformers' placeholder names (LABEL_0, ...) has names to give
            raise KDistillError(f"label_names {list(label_names)} differ from model '{name}''s own classes {own} "
                                "(id2label in its config.json): drop label_names, a model teacher names its classes")
        self.label_names = list(label_names or own)
        self.where = f"teacher model {name}"

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        import torch

        pairs = [r["text_pair"] for r in requests] if "text_pair" in requests[0] else None
        enc = self.tokenizer([r["text"] for r in requests], pairs, truncation=True, max_length=self.max_length,
                             padding=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            logits = self.model(**enc).logits.float().cpu()
        return [{"logits": row} for row in logits.tolist()]


def _chat_task(task_type: str | None) -> None:
    if task_type not in (None, "classification"):  # its prompt asks for one label name and parses one
        raise KDistillError(f"an openai: chat teacher answers one class per example, not task_type {task_type} "
                            f"({get_task(task_type).doc}): use a command:, http(s):// or python: teacher")


def check_task(teacher: Teacher, task_type: str | None) -> None:
    """Raise `KDistillError` when `task_type` (None: any) is set and `teacher` answers another task type."""
    if task_type is not None and teacher.task.name != task_type:
        raise KDistillError(f"task_type is {task_type}, but {teacher.where} is {teacher.task.doc}"
                            + (" (its head decides)" if teacher.kind == "model" else ""))


def make_source(spec: str, *, label_names: Sequence[str] | None = None, timeout: float = 30.0, retries: int = 3,
                concurrency: int = 4, max_length: int = 128, device: str = "auto",
                chat: dict[str, Any] | None = None, task_type: str | None = None) -> Teacher:
    """`LabelConfig.teacher` -> a source: http(s)://, command:, python:module:function, openai:BASE_URL (`chat`
    holds `kdistill.teachers.chat.ChatTeacher`'s model, prompt, few_shot and api_key_env), else a model.

    `task_type` is what the source answers (`kdistill.teachers.label_sources.answer_task`; None = classification);
    a model's head decides its own, which must then agree. Raises `KDistillError` for an openai: teacher asked for
    anything but classification, or a model of another task type.
    """
    s = spec.strip()
    answers = task_type or "classification"
    if s.startswith("openai:"):
        _chat_task(task_type)
        from kdistill.teachers.chat import ChatTeacher  # imports this module: load it only when asked for

        return ChatTeacher(s[len("openai:"):], label_names=label_names, timeout=timeout, retries=retries,
                           concurrency=concurrency, **(chat or {}))
    if s.startswith(("http://", "https://")):
        return HttpTeacher(s, timeout=timeout, retries=retries, concurrency=concurrency, label_names=label_names,
                           task_type=answers)
    if s.startswith("command:"):
        return CommandTeacher(s[len("command:"):], timeout=timeout, label_names=label_names, task_type=answers)
    if s.startswith("python:"):
        module, _, attr = s[len("python:"):].rpartition(":")
        if not module or not attr:
            raise KDistillError(f"teacher '{spec}': write python:module:function")
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            raise KDistillError(f"teacher '{spec}': cannot import module '{module}': {err}") from None
        fn = getattr(mod, attr, None)
        if not callable(fn):
            raise KDistillError(f"teacher '{spec}': module '{module}' has no function '{attr}'")
        return CallableTeacher(fn, label_names=label_names, name=f"{module}:{attr}", task_type=answers)
    model = ModelTeacher(s, max_length=max_length, device=device, label_names=label_names)
    check_task(model, task_type)
    return model


def _ask(cfg: LabelConfig, teacher: Teacher, examples: list[tuple[str, ...]], lines: list[int],
         answers: list[TeacherAnswer | None], log: AnswerLog) -> None:
    """Fill the `None` slots of `answers`, appending every answered batch to `log` as it arrives."""
    todo = [i for i, a in enumerate(answers) if a is None]
    batches = [todo[j:j + cfg.batch_size] for j in range(0, len(todo), cfg.batch_size)]
    names = [[f"{cfg.input} line {lines[i]}" for i in b] for b in batches]
    with tqdm(total=len(todo), desc="[label] teacher", unit="ex", dynamic_ncols=True) as bar:
        for b, got in teacher.answer_batches([[examples[i] for i in b] for b in batches], names):
            log.append((row_key(lines[i], examples[i]), a) for i, a in zip(batches[b], got, strict=True))
            for i, a in zip(batches[b], got, strict=True):
                answers[i] = a
            bar.update(len(got))
            _check_probs(cfg, teacher, got)


def _check_probs(cfg: LabelConfig, teacher: Teacher, answers: Sequence[TeacherAnswer | None]) -> None:
    if cfg.min_confidence is not None and teacher.task.name != "classification":  # scores or label sets
        raise KDistillError(f"min_confidence keeps confident class predictions; {teacher.where} is {teacher.task.doc}")
    if cfg.min_confidence is not None and any(a is not None and a.probs is None for a in answers):
        raise KDistillError(f"min_confidence needs probabilities, but {teacher.where} answered only labels; "
                            "drop min_confidence or have the teacher answer 'probs' or 'logits'")


def label_file(cfg: LabelConfig, source: Teacher | None = None) -> dict[str, Any]:
    """Label `cfg.input` with the teacher; write JSONL that `kdistill distill --data.train_file` reads directly.

    Each line: text[, text_pair], label (the name), label_id, and with probabilities: probs, confidence (and logits
    when the teacher gave logits), and teacher (`cfg.teacher`, with the chat model for an LLM teacher); for
    regression label and logits are the score, for multi-label label is the list of names (plus probs when given).
    `cfg.task_type` says what a non-model teacher answers. Answers are appended as they arrive to a partial file
    beside the output (`kdistill.answers.partial_path`, `kdistill.answers.AnswerLog`);
    a rerun after a failure or a kill reuses them and asks the teacher only for the rows still unanswered (same input
    line and text, same teacher, label names and task type). The output appears atomically once every row is
    answered, and the partial file is then removed. Raises `KDistillError` for bad input, an `out` that cannot be
    written (checked before the teacher is built or asked), a teacher of another task type than `cfg.task_type`, or
    a teacher that fails; the message says how many answers were kept.
    """
    examples, lines = read_numbered_examples(cfg.input, cfg.text_columns)
    examples, lines = examples[:cfg.max_examples], lines[:cfg.max_examples]
    out = check_out_file(cfg.out)  # before any teacher is built or asked: its answers may be paid for
    chat = None
    if cfg.teacher.strip().startswith("openai:"):
        from kdistill.teachers.chat import chat_settings

        _chat_task(cfg.task_type)  # before its prompt files are read
        chat = chat_settings(cfg.teacher_model, cfg.prompt, cfg.few_shot, cfg.api_key_env)
    teacher = source or make_source(cfg.teacher, label_names=cfg.label_names, timeout=cfg.timeout,
                                    retries=cfg.retries, concurrency=cfg.concurrency,
                                    max_length=cfg.max_length, device=cfg.device, chat=chat,
                                    task_type=cfg.task_type)
    check_task(teacher, cfg.task_type)
    # a non-model teacher's answers are read for the task type: answers kept under another type are not reused
    asked_for = teacher.task.name if teacher.kind != "model" and teacher.task.name != "classification" else None
    header = {"teacher": cfg.teacher, "label_names": teacher.label_names,
              **({"task_type": asked_for} if asked_for else {}),
              **({"max_length": cfg.max_length} if teacher.kind == "model" else {}),
              **({"teacher_model": chat["model"], "prompt": chat["prompt"], "few_shot": chat["few_shot"]}
                 if chat and teacher.kind == "openai" else {})}
    log = AnswerLog(partial_path(out), header)
    keys = [row_key(n, ex) for n, ex in zip(lines, examples, strict=True)]
    answers: list[TeacherAnswer | None] = [log.answers.get(k) for k in keys]
    reused, stale = sum(a is not None for a in answers), len(set(log.answers) - set(keys))
    if reused or stale or log.damaged:
        print(f"[label] {log.path}: reusing {reused} answers, asking the teacher for {len(examples) - reused}"
              + (f"; {stale} stored answers match no row asked for now (input edited?), not used" if stale else "")
              + (f"; {log.damaged} damaged lines ignored" if log.damaged else ""), file=sys.stderr, flush=True)
    _check_probs(cfg, teacher, answers)
    start = time.perf_counter()
    try:
        _ask(cfg, teacher, examples, lines, answers, log)
    except Exception as err:
        kept = sum(a is not None for a in answers)
        note = (f"{kept} of {len(examples)} answers are kept in {log.path}; a rerun asks the teacher only for the "
                f"other {len(examples) - kept}")
        if isinstance(err, KDistillError):
            raise KDistillError(f"{err}; {note}") from err
        print(f"[label] {note}", file=sys.stderr, flush=True)  # not a teacher's failure but a bug: keep its traceback
        raise
    finally:
        log.close()
    seconds = time.perf_counter() - start
    done = [a for a in answers if a is not None]
    who = f"{cfg.teacher} ({chat['model']})" if chat and teacher.kind == "openai" else cfg.teacher
    result = write_labeled(out, examples, done, teacher.label_names, cfg.min_confidence, teacher.task, teacher=who)
    log.remove()
    asked = len(examples) - reused
    rate = asked / seconds if seconds > 0 else float("inf")
    rows: list[tuple[str, Any]] = [("teacher", f"{teacher.kind}: {cfg.teacher}"), ("examples read", len(examples))]
    if reused:
        rows.append(("reused from an earlier run", reused))
    rows.append(("kept", result["kept"]))
    if cfg.min_confidence is not None:
        rows.append((f"dropped (confidence < {cfg.min_confidence:g})", len(examples) - result["kept"]))
    shares = ", ".join(f"{k} {v} ({v / max(result['kept'], 1):.1%})" for k, v in result["labels"].items())
    scores = "mean {mean:.3f}, min {min:.3f}, max {max:.3f}".format(**result["scores"]) if result["scores"] else ""
    rows += [("scores", scores) if scores else ("labels", shares), ("seconds", f"{seconds:.2f}"),
             ("examples/s", f"{rate:.1f}"), ("written to", str(out))]
    if result["warning"]:
        rows.append(("warning", result["warning"]))
    table = "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    return {"table": table, "out": str(out), "source": teacher.kind, "read": len(examples), "reused": reused,
            "asked": asked, "dropped": len(examples) - result["kept"], "seconds": seconds,
            "examples_per_second": rate, **result}
