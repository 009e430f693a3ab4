"""The teachers `kdistill label` can only query: the `Teacher` contract and the HTTP, command and python sources.

The request and answer protocol is in `kdistill.blackbox`'s docstring (which re-exports everything here). This module
also reads what these sources answer for each task type (`read_answer`): a class (`kdistill.answers.to_answer`), one
score per example (regression: `3.8`, `"3.8"`, `{"score": 3.8}`, `{"label": 3.8}`, `{"logits": [3.8]}`) or a label
set (multi-label: `"joy,surprise"`, `["joy", "surprise"]`, ids `[0, 3]`, `{"labels": [...]}`, per-label
`{"probs": [...]}` in 0..1 or `{"logits": [...]}`), the same shapes that `kdistill distill --data.task_type` reads
from a label cell. A bad answer is a one-line `KDistillError`; `Teacher.answer` adds the example's name and text.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from kdistill.answers import TeacherAnswer, finite_numbers, parse_json, shorten, to_answer
from kdistill.errors import KDistillError
from kdistill.labels import label_key, norm_label
from kdistill.tasks import Task, get_task
from kdistill.tasks.multilabel import label_items
from kdistill.tasks.regression import as_score

__all__ = ["Teacher", "CallableTeacher", "CommandTeacher", "HttpTeacher", "ANSWER_TASKS", "answer_task",
           "read_answer", "score_answer", "label_set_answer"]

Example = Sequence[str]  # one text, or (text, text_pair)
ANSWER_TASKS = ("classification", "regression", "multilabel")  # one answer per example: what `kdistill label` keeps


def _quoted(value: Any, n: int = 60) -> str:
    """An answer's value for a message: a string as it is, anything else as JSON (NaN, true, null, [1, 2])."""
    return shorten(value if isinstance(value, str) else json.dumps(value), n)


def answer_task(task_type: str, label_names: Sequence[str] | None, where: str) -> Task:
    """The task type a command, HTTP or python teacher answers for (`LabelConfig.task_type`), checked at set-up.

    Raises `KDistillError` for a type without one answer per example, a regression teacher given several label
    names, or a multi-label teacher given none (its answers name labels, and the student needs one output each).
    """
    if task_type not in ANSWER_TASKS:
        raise KDistillError(f"{where}: task_type {task_type!r} is not one kdistill label serves "
                            f"({', '.join(ANSWER_TASKS)})")
    if task_type == "regression" and label_names and len(label_names) > 1:
        raise KDistillError(f"{where} answers one score per example (task_type regression), but label_names names "
                            f"{len(label_names)} ({', '.join(label_names)}): give one name or none")
    if task_type == "multilabel" and not label_names:
        raise KDistillError(f"{where} answers label sets (task_type multilabel): set label_names, every label in id "
                            'order, e.g. --label_names "[joy, sadness, surprise]"')
    return get_task(task_type)


def score_answer(raw: Any, where: str) -> TeacherAnswer:
    """A regression answer -> `TeacherAnswer` whose one logit is the score (as a regression model teacher's).

    Accepted: a number or numeric string, ``{"score": x}``, ``{"label": x}``, ``{"logits": [x]}`` or ``[x]``.
    Raises `KDistillError` for anything else, several numbers, or a value that is not finite (NaN, inf).
    """
    value = raw
    if isinstance(raw, dict):
        key = next((k for k in ("score", "label", "logits") if k in raw), None)
        if key is None:
            raise KDistillError(f"{where} answered an object without 'score', 'label' or 'logits' (a regression "
                                f"teacher answers one score): {shorten(json.dumps(raw))}")
        value = raw[key]
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise KDistillError(f"{where} answered {len(value)} numbers; a regression teacher answers one score per "
                                "example")
        value = value[0]
    score = as_score(value)
    if score is None:
        raise KDistillError(f"{where} answered {_quoted(value)}, not a finite number: a regression "
                            'teacher answers one score per example, e.g. 3.8 or {"score": 3.8}')
    return TeacherAnswer(0, None, [score])


def label_set_answer(raw: Any, names: Sequence[str], where: str) -> TeacherAnswer:
    """A multi-label answer -> `TeacherAnswer`: per-label probs (in 0..1, not a distribution) or logits, else a
    label set (`TeacherAnswer.labels`) of names (case- and separator-insensitive) or ids, read as a label cell is
    (`kdistill.tasks.multilabel.label_items`: "a,b" split at commas, a JSON list as it is).

    Raises `KDistillError` for a label not among `names`, a wrong number of probs or logits, or another shape.
    """
    if isinstance(raw, dict):
        if "probs" in raw:
            probs = finite_numbers(raw["probs"], "probs", names, where)
            if min(probs) < 0 or max(probs) > 1:
                raise KDistillError(f"{where} answered per-label probs outside 0..1 ({min(probs):.4g} to "
                                    f"{max(probs):.4g}); send unbounded scores as 'logits'")
            return TeacherAnswer(max(range(len(probs)), key=probs.__getitem__), probs)
        if "logits" in raw:
            return to_answer({"logits": raw["logits"]}, names, where, get_task("multilabel"))
        key = next((k for k in ("labels", "label") if k in raw), None)
        if key is None:
            raise KDistillError(f"{where} answered an object without 'labels', 'probs' or 'logits': "
                                f"{shorten(json.dumps(raw))}")
        raw = raw[key]
    if isinstance(raw, bool) or not isinstance(raw, list | tuple | str | int):
        raise KDistillError(f"{where} answered {_quoted(raw)}: a multi-label teacher answers a label "
                            'set ("joy,surprise" or a JSON list of names or ids), probs or logits')
    lookup = {norm_label(n): i for i, n in enumerate(names)}
    ids = set()
    for item in label_items(raw):
        k = label_key(item)
        i = k if isinstance(k, int) and 0 <= k < len(names) else lookup.get(norm_label(str(k)))
        if i is None:
            hint = ' (per-label probabilities go in {"probs": [...]})' if isinstance(item, float) else ""
            shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
            raise KDistillError(f"{where} answered label {_quoted(item, 40)}, not one of the "
                                f"{len(names)} labels ({shown}){hint}")
        ids.add(i)
    labels = tuple(sorted(ids))
    return TeacherAnswer(labels[0] if labels else 0, labels=labels)


def read_answer(raw: Any, names: Sequence[str] | None, where: str, task: Task) -> TeacherAnswer:
    """One raw answer -> `TeacherAnswer` for `task`: `score_answer` (regression), `label_set_answer` (multi-label),
    else `kdistill.answers.to_answer` (a class: probs, logits, a label id or name, generated text)."""
    if task.name == "regression":
        return score_answer(raw, where)
    if task.name == "multilabel":
        if not names:
            raise KDistillError(f"{where} answered a label set but no label names are known: set label_names")
        return label_set_answer(raw, names, where)
    return to_answer(raw, names, where, task)


def _retry_after(headers: Any) -> float:
    value = str(headers.get("Retry-After") or "").strip()  # seconds; the HTTP-date form is ignored
    return min(60.0, float(value)) if re.fullmatch(r"\d+(\.\d+)?", value) else 0.0


class Teacher:
    """A source of teacher answers. Subclasses implement `raw` for one batch of requests.

    `answer` reads each raw answer for `task` (`read_answer`): a class, a score or a label set.
    """

    kind = "teacher"
    where = "teacher"
    concurrency = 1
    label_names: list[str] | None = None
    task: Task = get_task("classification")  # set by `task_type` (`answer_task`); a model teacher's by its head

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        raise NotImplementedError

    def answer(self, examples: Sequence[Example], names: Sequence[str] | None = None) -> list[TeacherAnswer]:
        """One batch of examples -> one normalised answer each, in order.

        `names` says where each example comes from ("in.txt line 7"); a bad answer is reported with that name and
        the start of the example's text, so the culprit can be found. Raises `KDistillError` for a bad batch.
        """
        requests = [{"text": e[0], **({"text_pair": e[1]} if len(e) > 1 else {})} for e in examples]
        raw = self.raw(requests)
        if len(raw) != len(requests):
            raise KDistillError(f"{self.where} gave {len(raw)} answers for {len(requests)} examples")
        names = names or [f"example {i} of {len(examples)} in the batch" for i in range(1, len(examples) + 1)]
        out = []
        for r, ex, name in zip(raw, examples, names, strict=True):
            try:
                out.append(read_answer(r, self.label_names, self.where, self.task))
            except KDistillError as err:
                raise KDistillError(f"{name} {shorten(' / '.join(ex), 60)}: {err}") from None
        return out

    def answer_batches(self, batches: Sequence[Sequence[Example]], names: Sequence[Sequence[str] | None] | None = None
                       ) -> Iterator[tuple[int, list[TeacherAnswer]]]:
        """(batch index, answers) for each batch as soon as it is answered; up to `concurrency` are asked at once.

        With concurrency the order is that of completion, so one slow or failing batch does not hold back the
        answers of the others. On the first failure no further batch is started, the batches already in flight
        are awaited and yielded (they may have been paid for), and then the first error is raised.
        """
        names = names or [None] * len(batches)
        if self.concurrency <= 1 or len(batches) <= 1:
            for i, batch in enumerate(batches):
                yield i, self.answer(batch, names[i])
            return
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="kdistill-teacher")
        todo = iter(range(len(batches)))
        running: dict[Future[list[TeacherAnswer]], int] = {}
        error: BaseException | None = None
        try:
            while True:
                while error is None and len(running) < self.concurrency and (i := next(todo, None)) is not None:
                    running[pool.submit(self.answer, batches[i], names[i])] = i
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in sorted(done, key=running.__getitem__):
                    i = running.pop(f)
                    if f.exception() is not None:
                        error = error or f.exception()
                    else:
                        yield i, f.result()
        finally:  # the caller stopped early (or an interrupt): start nothing more, do not wait for those in flight
            pool.shutdown(wait=False, cancel_futures=True)
        if error is not None:
            raise error


class CallableTeacher(Teacher):
    """A Python function ``fn(requests) -> answers``.

    Answers go through JSON (numpy and torch values via `.tolist()`), so the contract is exactly the HTTP one. An
    exception the function raises is a failed batch like an HTTP error: a `KDistillError` naming the function, the
    batch's first input line and the exception's one-line message (the original is its ``__cause__``), so
    `label_file` keeps the answers already given and a rerun asks only for the rest. `task_type` says what it
    answers (`answer_task`, `read_answer`).
    """

    kind = "python"

    def __init__(self, fn: Callable[[list[dict[str, str]]], Sequence[Any]], *,
                 label_names: Sequence[str] | None = None, name: str | None = None,
                 task_type: str = "classification") -> None:
        self.fn, self.label_names = fn, list(label_names) if label_names else None
        self.where = f"teacher function {name or getattr(fn, '__qualname__', repr(fn))}"
        self.task = answer_task(task_type, self.label_names, self.where)

    def answer(self, examples: Sequence[Example], names: Sequence[str] | None = None) -> list[TeacherAnswer]:
        """`Teacher.answer`; an exception from the function becomes a one-line `KDistillError` (see the class)."""
        try:
            return super().answer(examples, names)
        except KDistillError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the user's function raises is reported on one line
            first = names[0] if names else f"example 1 of {len(examples)} in the batch"
            lines = str(err).strip().splitlines()
            msg = f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__
            batch = f" (first of a batch of {len(examples)})" if len(examples) > 1 else ""
            raise KDistillError(f"{first} {shorten(' / '.join(examples[0]), 60)}{batch}: {self.where} failed "
                                f"with {msg}") from err

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        out = self.fn(requests)
        if not isinstance(out, list | tuple):
            raise KDistillError(f"{self.where} returned {type(out).__name__}, expected a list of answers")
        return json.loads(json.dumps(list(out), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class CommandTeacher(Teacher):
    """A command that reads JSONL requests on stdin and writes JSONL answers on stdout, one process per batch."""

    kind = "command"

    def __init__(self, command: str | Sequence[str], *, timeout: float = 30.0,
                 label_names: Sequence[str] | None = None, task_type: str = "classification") -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise KDistillError("teacher 'command:' names no command")
        self.timeout, self.label_names = timeout, list(label_names) if label_names else None
        line = " ".join(shlex.join(self.argv).split())  # one line, a -c script too
        # a long command keeps its start (the program) and its end (the script or model, what the user wrote last)
        self.where = f"teacher command '{line if len(line) <= 120 else line[:50] + ' ... ' + line[-65:]}'"
        self.task = answer_task(task_type, self.label_names, self.where)

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        stdin = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
        try:
            proc = subprocess.run(self.argv, input=stdin, capture_output=True, text=True, encoding="utf-8",
                                  errors="replace", timeout=self.timeout)
        except FileNotFoundError:
            raise KDistillError(f"{self.where}: command not found: {self.argv[0]}") from None
        except PermissionError:
            raise KDistillError(f"{self.where}: {self.argv[0]} is not executable") from None
        except subprocess.TimeoutExpired:
            raise KDistillError(f"{self.where} did not finish a batch of {len(requests)} within "
                                f"{self.timeout:g} s (raise timeout)") from None
        if proc.returncode != 0:
            err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise KDistillError(f"{self.where} exited with code {proc.returncode}"
                                + (f"; last stderr line: {shorten(err[-1])}" if err else ""))
        lines = [ln for ln in proc.stdout.split("\n") if ln.strip()]  # not splitlines: U+2028 is text
        if len(lines) != len(requests):
            raise KDistillError(f"{self.where} wrote {len(lines)} answer lines for {len(requests)} request lines")
        return [parse_json(line, f"{self.where} output line {n} is not JSON") for n, line in enumerate(lines, 1)]


class HttpTeacher(Teacher):
    """A JSON endpoint (contract in `kdistill.blackbox`'s docstring), with timeouts, retries and a concurrency limit.

    `backoff` (seconds before the first retry, doubling after) defaults to `kdistill.blackbox.BACKOFF_SECONDS`,
    read when the teacher is built, so that setting stays where the label command's other settings are.
    """

    kind = "http"

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 3, concurrency: int = 4,
                 backoff: float | None = None, label_names: Sequence[str] | None = None,
                 headers: dict[str, str] | None = None, task_type: str = "classification") -> None:
        from kdistill import blackbox  # imports this module: read its setting only once both are loaded

        self.url, self.timeout, self.retries, self.concurrency = url, timeout, retries, concurrency
        self.backoff = blackbox.BACKOFF_SECONDS if backoff is None else backoff
        self.label_names = list(label_names) if label_names else None
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.where = f"teacher endpoint {url}"
        self.task = answer_task(task_type, self.label_names, self.where)

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        body = json.dumps({"inputs": requests}, ensure_ascii=False).encode()
        last, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
            wait = self.backoff * 2 ** attempt
            req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    status, payload = resp.status, resp.read()
            except urllib.error.HTTPError as err:
                status, payload = err.code, err.read() if err.fp else b""
                if status == 429 or status >= 500:
                    last, wait = f"HTTP {status} {shorten(payload)}", max(wait, _retry_after(err.headers))
                    continue
                raise KDistillError(f"{self.where} answered HTTP {status}: {shorten(payload)}") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                last = str(getattr(err, "reason", err) or type(err).__name__)
                continue
            return self._outputs(status, payload)
        raise KDistillError(f"{self.where} failed after {self.retries + 1} tries; last: {last}")

    def _outputs(self, status: int, payload: bytes) -> list[Any]:
        obj = parse_json(payload, f"{self.where} answered HTTP {status} with a body that is not JSON")
        if not isinstance(obj, dict) or not isinstance(obj.get("outputs"), list):
            raise KDistillError(f"{self.where} answered HTTP {status} without "
                                f'{{"outputs": [one answer per input]}}: {shorten(payload)}')
        return obj["outputs"]


