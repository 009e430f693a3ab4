"""Teachers you can only query: label unlabeled text with any teacher, for imitation and pseudo-labelling.

Why: a teacher may be a local model (white-box), a service giving probabilities or logits (gray-box), or one giving
only a label or generated text (black-box). Every source takes a batch of examples and returns one `TeacherAnswer`
each, so `label_file` does not care which kind it talks to.

Request per example: ``{"text": str}``, plus ``"text_pair": str`` for pairs. Answer per example, any of:
``{"probs": [...]}`` (a distribution), ``{"logits": [...]}`` (softmaxed here), ``{"label": "positive" | 1}``, or a
bare string or int. A string that is not exactly a label name (case-insensitive) is generated text: it maps to the
one label name it holds as whole words ("Answer: Positive." -> positive); none or several is an error. String
answers need `label_names`; a model teacher brings its own.

- ``http(s)://URL`` -> `HttpTeacher`: POST ``{"inputs": [request, ...]}``; the reply must be 2xx JSON
  ``{"outputs": [answer, ...]}``, one per input, in order. Connection errors, timeouts, 429 and 5xx are retried
  with exponential backoff (a numeric Retry-After is honoured, up to 60 s); any other status or a malformed reply
  fails at once, quoting the status and the start of the body. Up to `concurrency` batches are in flight.
- ``command:CMD`` -> `CommandTeacher`: CMD (split like a shell, run without one) runs once per batch, reads one
  request line per example on stdin until EOF, writes one answer line per example on stdout, exits 0. One process
  per batch, not a long-lived one, because that is any Unix filter's contract: no flush after every line, no
  framing, no deadlock on full pipes, and a hang or crash stays in one batch, reported with exit code and stderr.
  Raise `batch_size` to pay a slow start-up (loading a model) fewer times.
- ``python:module:function`` -> `CallableTeacher`: ``function(requests) -> answers``, the same shapes.
- anything else -> `ModelTeacher`: a local folder or hub name of a sequence classifier, batched, under no_grad.
"""

from __future__ import annotations

import http.client
import importlib
import json
import math
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kdistill.config import LabelConfig
from kdistill.errors import KDistillError
from kdistill.features import Features

Example = Sequence[str]  # one text, or (text, text_pair)
BACKOFF_SECONDS = 0.5  # wait before the first HTTP retry; doubles with each further retry


def _short(text: str | bytes, n: int = 160) -> str:
    """The start of a reply or line, on one line, for error messages."""
    text = " ".join((text.decode("utf-8", "replace") if isinstance(text, bytes) else text).split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


@dataclass(frozen=True)
class TeacherAnswer:
    """What the teacher said about one example: always a label id; probabilities (and logits) when given."""

    label_id: int
    probs: list[float] | None = None
    logits: list[float] | None = None

    @property
    def confidence(self) -> float | None:
        return max(self.probs) if self.probs else None


def _retry_after(headers: Any) -> float:
    value = str(headers.get("Retry-After") or "").strip()  # seconds; the HTTP-date form is ignored
    return min(60.0, float(value)) if re.fullmatch(r"\d+(\.\d+)?", value) else 0.0


def _json(text: str | bytes, error: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KDistillError(f"{error}: {_short(text)}") from None


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", s.lower()).split())


def text_to_label(text: str, names: Sequence[str], where: str = "teacher") -> int:
    """Generated text -> label id: a label name exactly (case-insensitive), else the single one it contains.

    A name inside a longer matched name does not count ("not_entailment" also contains "entailment").
    """
    t, normed = _norm(text), [_norm(n) for n in names]
    if t in normed:
        return normed.index(t)
    found = [i for i, n in enumerate(normed) if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", t)]
    found = [i for i in found if not any(j != i and normed[i] in normed[j] for j in found)]
    if len(found) == 1:
        return found[0]
    why = "no label name" if not found else "several label names (" + ", ".join(names[i] for i in found) + ")"
    raise KDistillError(f"{where} answered {_short(text, 80)}, which contains {why}; "
                        f"label names: {', '.join(names)}")


def _numbers(raw: Any, key: str, names: Sequence[str] | None, where: str) -> list[float]:
    ok = isinstance(raw, list) and raw and all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
    if not ok or not all(math.isfinite(x) for x in raw):
        raise KDistillError(f"{where} answered '{key}' that is not a list of finite numbers: {_short(str(raw))}")
    if names is not None and len(raw) != len(names):
        raise KDistillError(f"{where} answered {len(raw)} {key} for {len(names)} label names ({', '.join(names)})")
    return [float(x) for x in raw]


def to_answer(raw: Any, names: Sequence[str] | None, where: str) -> TeacherAnswer:
    """One raw answer (any shape in the module docstring) -> `TeacherAnswer`; bad shapes name `where`."""
    probs = logits = None
    if isinstance(raw, dict):
        if "probs" in raw:
            probs = _numbers(raw["probs"], "probs", names, where)
            if min(probs) < 0 or abs(sum(probs) - 1) > 1e-3:
                raise KDistillError(f"{where} answered probs that are not a distribution (sum {sum(probs):.4g}); "
                                    "send unnormalised scores as 'logits'")
        elif "logits" in raw:
            logits = _numbers(raw["logits"], "logits", names, where)
            top = max(logits)
            exp = [math.exp(x - top) for x in logits]
            probs = [e / sum(exp) for e in exp]
        elif "label" in raw:
            raw = raw["label"]
        else:
            raise KDistillError(f"{where} answered an object without 'probs', 'logits' or 'label': {_short(str(raw))}")
    if probs is not None:
        return TeacherAnswer(max(range(len(probs)), key=probs.__getitem__), probs, logits)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0 or (names is not None and raw >= len(names)):
            raise KDistillError(f"{where} answered label id {raw}, outside "
                                + (f"0..{len(names) - 1}" if names is not None else "0, 1, ..."))
        return TeacherAnswer(raw)
    if isinstance(raw, str):
        if not names:
            raise KDistillError(f"{where} answered the label {_short(raw, 40)} but no label names are known: "
                                'set label_names, e.g. --label_names "[negative, positive]"')
        return TeacherAnswer(text_to_label(raw, names, where))
    raise KDistillError(f"{where} answered {_short(repr(raw))}: expected probs, logits, a label or text")


class Teacher:
    """A source of teacher answers. Subclasses implement `raw` for one batch of requests."""

    kind = "teacher"
    where = "teacher"
    concurrency = 1
    label_names: list[str] | None = None

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        raise NotImplementedError

    def answer(self, examples: Sequence[Example]) -> list[TeacherAnswer]:
        """One batch of examples -> one normalised answer each, in order."""
        requests = [{"text": e[0], **({"text_pair": e[1]} if len(e) > 1 else {})} for e in examples]
        raw = self.raw(requests)
        if len(raw) != len(requests):
            raise KDistillError(f"{self.where} gave {len(raw)} answers for {len(requests)} examples")
        return [to_answer(r, self.label_names, self.where) for r in raw]

    def answer_batches(self, batches: Sequence[Sequence[Example]]) -> Iterator[list[TeacherAnswer]]:
        """Answers batch by batch, in order; up to `concurrency` batches are asked at once."""
        if self.concurrency <= 1 or len(batches) <= 1:
            yield from map(self.answer, batches)
            return
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="kdistill-teacher")
        futures = [pool.submit(self.answer, b) for b in batches]
        try:
            for f in futures:
                yield f.result()
        finally:  # on the first error, start no queued batch and do not wait for those in flight
            pool.shutdown(wait=False, cancel_futures=True)


class CallableTeacher(Teacher):
    """A Python function ``fn(requests) -> answers``; its own exceptions propagate (they are the user's bugs).

    Answers go through JSON (numpy and torch values via `.tolist()`), so the contract is exactly the HTTP one.
    """

    kind = "python"

    def __init__(self, fn: Callable[[list[dict[str, str]]], Sequence[Any]], *,
                 label_names: Sequence[str] | None = None, name: str | None = None) -> None:
        self.fn, self.label_names = fn, list(label_names) if label_names else None
        self.where = f"teacher function {name or getattr(fn, '__qualname__', repr(fn))}"

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        out = self.fn(requests)
        if not isinstance(out, list | tuple):
            raise KDistillError(f"{self.where} returned {type(out).__name__}, expected a list of answers")
        return json.loads(json.dumps(list(out), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class CommandTeacher(Teacher):
    """A command that reads JSONL requests on stdin and writes JSONL answers on stdout, one process per batch."""

    kind = "command"

    def __init__(self, command: str | Sequence[str], *, timeout: float = 30.0,
                 label_names: Sequence[str] | None = None) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise KDistillError("teacher 'command:' names no command")
        self.timeout, self.label_names = timeout, list(label_names) if label_names else None
        self.where = f"teacher command '{shlex.join(self.argv)[:120]}'"

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
                                + (f"; last stderr line: {_short(err[-1])}" if err else ""))
        lines = [ln for ln in proc.stdout.split("\n") if ln.strip()]  # not splitlines: U+2028 is text
        if len(lines) != len(requests):
            raise KDistillError(f"{self.where} wrote {len(lines)} answer lines for {len(requests)} request lines")
        return [_json(line, f"{self.where} output line {n} is not JSON") for n, line in enumerate(lines, 1)]


class HttpTeacher(Teacher):
    """A JSON endpoint (contract in the module docstring), with timeouts, retries and a concurrency limit."""

    kind = "http"

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 3, concurrency: int = 4,
                 backoff: float | None = None, label_names: Sequence[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.timeout, self.retries, self.concurrency = url, timeout, retries, concurrency
        self.backoff = BACKOFF_SECONDS if backoff is None else backoff
        self.label_names = list(label_names) if label_names else None
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.where = f"teacher endpoint {url}"

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
                    last, wait = f"HTTP {status} {_short(payload)}", max(wait, _retry_after(err.headers))
                    continue
                raise KDistillError(f"{self.where} answered HTTP {status}: {_short(payload)}") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                last = str(getattr(err, "reason", err) or type(err).__name__)
                continue
            return self._outputs(status, payload)
        raise KDistillError(f"{self.where} failed after {self.retries + 1} tries; last: {last}")

    def _outputs(self, status: int, payload: bytes) -> list[Any]:
        obj = _json(payload, f"{self.where} answered HTTP {status} with a body that is not JSON")
        if not isinstance(obj, dict) or not isinstance(obj.get("outputs"), list):
            raise KDistillError(f"{self.where} answered HTTP {status} without "
                                f'{{"outputs": [one answer per input]}}: {_short(payload)}')
        return obj["outputs"]


class ModelTeacher(Teacher):
    """A local or hub sequence classifier (white-box); answers logits, hence probabilities."""

    kind = "model"

    def __init__(self, name: str, *, max_length: int = 128, device: str = "auto",
                 label_names: Sequence[str] | None = None) -> None:
        from kdistill.models import load_classifier, load_tokenizer, pick_device

        self.device, self.max_length = pick_device(device), max_length
        self.model = load_classifier(name).eval().to(self.device)
        self.tokenizer = load_tokenizer(name)
        n, id2label = self.model.config.num_labels, self.model.config.id2label or {}
        if label_names and len(label_names) != n:
            raise KDistillError(f"label_names has {len(label_names)} names; model '{name}' has {n} classes")
        self.label_names = list(label_names or [str(id2label.get(i, f"LABEL_{i}")) for i in range(n)])
        self.where = f"teacher model {name}"

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        import torch

        pairs = [r["text_pair"] for r in requests] if "text_pair" in requests[0] else None
        enc = self.tokenizer([r["text"] for r in requests], pairs, truncation=True, max_length=self.max_length,
                             padding=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            logits = self.model(**enc).logits.float().cpu()
        return [{"logits": row} for row in logits.tolist()]


def make_source(spec: str, *, label_names: Sequence[str] | None = None, timeout: float = 30.0, retries: int = 3,
                concurrency: int = 4, max_length: int = 128, device: str = "auto") -> Teacher:
    """`LabelConfig.teacher` -> a source: http(s)://, command:, python:module:function, else a model."""
    s = spec.strip()
    if s.startswith(("http://", "https://")):
        return HttpTeacher(s, timeout=timeout, retries=retries, concurrency=concurrency, label_names=label_names)
    if s.startswith("command:"):
        return CommandTeacher(s[len("command:"):], timeout=timeout, label_names=label_names)
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
        return CallableTeacher(fn, label_names=label_names, name=f"{module}:{attr}")
    return ModelTeacher(s, max_length=max_length, device=device, label_names=label_names)


def read_examples(path: str, text_columns: Sequence[str | int] | None = None) -> list[tuple[str, ...]]:
    """Unlabeled examples: .txt is one per line (blanks skipped); tables use named or indexed text columns."""
    from kdistill.data import _default_text, _index, _read_rows

    p = Path(path)
    if not p.is_file():
        raise KDistillError(f"input file not found: {path}")
    if p.suffix.lower() == ".txt":
        if text_columns:
            raise KDistillError(f"text_columns is for tables; {path} is plain text, one example a line")
        try:
            lines = p.read_text(encoding="utf-8-sig").split("\n")  # not splitlines: U+2028 is text
        except (OSError, UnicodeDecodeError) as err:
            raise KDistillError(f"cannot read input file {path}: {err}") from None
        examples = [(ln.strip(),) for ln in lines if ln.strip()]
    else:
        rows, numbers, _ = _read_rows(p)
        columns: list[str] | None = None
        if isinstance(rows[0], dict):
            columns = list(dict.fromkeys(k for r in rows for k in r))
            rows = [[r.get(c) for c in columns] for r in rows]
        elif p.suffix.lower() in (".csv", ".tsv", ".tab"):  # tables carry a header row
            columns, rows, numbers = [str(c) for c in rows[0]], rows[1:], numbers[1:]
        spec: list[str | int] = list(text_columns or [])
        if not spec:
            try:
                spec = list(_default_text(columns or [], path))
            except KDistillError:
                spec = [0]  # no GLUE-style name: the first column
        idx = [_index(c, columns, len(rows[0]) if rows else 0, path) for c in spec]
        examples = []
        for row, ln in zip(rows, numbers, strict=True):
            cells = [row[i] if i < len(row) else None for i in idx]
            if any(c is None or not str(c).strip() for c in cells):
                raise KDistillError(f"{path} line {ln}: empty or missing text in column(s) {spec}")
            examples.append(tuple(str(c) for c in cells))
    if not examples:
        raise KDistillError(f"input file has no examples: {path}")
    return examples


def label_file(cfg: LabelConfig, source: Teacher | None = None) -> dict[str, Any]:
    """Label `cfg.input` with the teacher; write JSONL that `kdistill distill --data.train_file` reads directly.

    Each line: text[, text_pair], label (the name), label_id, and with probabilities: probs, confidence
    (and logits when the teacher gave logits). Written to a temporary file and renamed, so a failed run
    never leaves a partial file behind.
    """
    examples = read_examples(cfg.input, cfg.text_columns)[:cfg.max_examples]
    teacher = source or make_source(cfg.teacher, label_names=cfg.label_names, timeout=cfg.timeout,
                                    retries=cfg.retries, concurrency=cfg.concurrency,
                                    max_length=cfg.max_length, device=cfg.device)
    batches = [examples[i:i + cfg.batch_size] for i in range(0, len(examples), cfg.batch_size)]
    answers: list[TeacherAnswer] = []
    start = time.perf_counter()
    with tqdm(total=len(examples), desc="[label] teacher", unit="ex", dynamic_ncols=True) as bar:
        for batch in teacher.answer_batches(batches):
            if cfg.min_confidence is not None and any(a.probs is None for a in batch):
                raise KDistillError(f"min_confidence needs probabilities, but {teacher.where} answered only labels; "
                                    "drop min_confidence or have the teacher answer 'probs' or 'logits'")
            answers.extend(batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    width = max([len(a.probs) for a in answers if a.probs] + [a.label_id + 1 for a in answers])
    names = teacher.label_names or [str(i) for i in range(width)]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    kept: Counter[int] = Counter()
    with tmp.open("w", encoding="utf-8") as f:
        for ex, a in zip(examples, answers, strict=True):
            if cfg.min_confidence is not None and (a.confidence or 0.0) < cfg.min_confidence:
                continue
            row: dict[str, Any] = {"text": ex[0], **({"text_pair": ex[1]} if len(ex) > 1 else {}),
                                   "label": names[a.label_id], "label_id": a.label_id}
            if a.probs is not None:
                row.update(probs=[round(p, 6) for p in a.probs], confidence=round(max(a.probs), 6))
            if a.logits is not None:
                row["logits"] = [round(x, 6) for x in a.logits]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            kept[a.label_id] += 1
    tmp.replace(out)
    n_kept = sum(kept.values())
    dist = {names[i]: kept[i] for i in range(len(names))}
    rate = len(examples) / seconds if seconds > 0 else float("inf")
    rows: list[tuple[str, Any]] = [("teacher", f"{teacher.kind}: {cfg.teacher}"), ("examples read", len(examples)),
                                   ("kept", n_kept)]
    if cfg.min_confidence is not None:
        rows.append((f"dropped (confidence < {cfg.min_confidence:g})", len(examples) - n_kept))
    rows += [("labels", ", ".join(f"{k} {v} ({v / max(n_kept, 1):.1%})" for k, v in dist.items())),
             ("seconds", f"{seconds:.2f}"), ("examples/s", f"{rate:.1f}"), ("written to", str(out))]
    present, warning = [names[i] for i in sorted(kept)], None
    if present != sorted(present) or len(present) < len(names):  # training numbers string labels alphabetically
        warning = (f"kdistill distill will number these labels {', '.join(sorted(present))} (alphabetically, only "
                   f"those present), not as the teacher does ({', '.join(names)}): class ids will differ")
        rows.append(("warning", warning))
    table = "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    return {"table": table, "out": str(out), "source": teacher.kind, "read": len(examples), "kept": n_kept,
            "dropped": len(examples) - n_kept, "labels": dist, "seconds": seconds, "examples_per_second": rate,
            "warning": warning}


class StoredAnswers:
    """Gray-box distillation: a labelled file's probabilities (or logits) as the teacher's logits.

    Rows of a training batch are matched to the file by their token ids (the text tokenised as in training), so the
    order, shuffling and validation carve of the training data do not matter. A row the file does not answer, or
    answers without probabilities, is an error, never a silent hard label.
    """

    def __init__(self, path: str, tokenizer: Any, max_length: int) -> None:
        p = Path(path)
        if not p.is_file():
            raise KDistillError(f"teacher_answers file not found: {path}")
        self.by_ids: dict[tuple[int, ...], torch.Tensor] = {}
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            row = _json(line, f"{path} line {n} is not JSON")
            if not isinstance(row, dict) or "text" not in row:
                raise KDistillError(f"{path} line {n}: expected an object with 'text' (written by kdistill label)")
            if row.get("logits") is not None:
                logits = torch.tensor(row["logits"], dtype=torch.float32)
            elif row.get("probs") is not None:
                logits = torch.tensor(row["probs"], dtype=torch.float32).clamp_min(1e-12).log()
            else:
                raise KDistillError(f"{path} line {n} has no probs or logits: that teacher gave labels only "
                                    "(train on the label column with the ce loss instead)")
            pair = [row["text"]] + ([row["text_pair"]] if row.get("text_pair") is not None else [])
            ids = tokenizer(*pair, truncation=True, max_length=max_length)["input_ids"]
            self.by_ids[tuple(ids)] = logits

    def signals(self, batch: Mapping[str, torch.Tensor]) -> Features:
        mask = batch["attention_mask"]
        rows = []
        for ids, m in zip(batch["input_ids"].tolist(), mask.tolist(), strict=True):
            key = tuple(i for i, keep in zip(ids, m, strict=True) if keep)
            if key not in self.by_ids:
                raise KDistillError("a training example is not in teacher_answers; label the same file you train on "
                                    f"(first token ids: {list(key[:8])})")
            rows.append(self.by_ids[key])
        return Features(logits=torch.stack(rows).to(batch["input_ids"].device), mask=mask)
