"""Imitation data written by the teacher: ask a chat LLM for new examples of each label, filter, optionally relabel.

The brief's imitation learning collects data by querying the teacher: here each request asks the teacher (a
`ChatTeacher`) to write `per_request` examples of one label, one per line, guided by a prompt template and optional
seed examples. Every reply is appended to a log beside the output as it arrives (one JSON line per request), so a
rerun after an interrupt asks only for the requests not yet answered; the filtering runs afterwards over all
replies in a fixed order, so an interrupted and an uninterrupted run write the same file.

Filters, each counted with its reason: empty or too short (fewer than `min_words` words) or too long, exact
duplicates (after lower-casing and collapsing whitespace and punctuation), near duplicates (word-set Jaccard
similarity >= `near_duplicate` with an example already kept, the standard shingling test of Broder 1997 on
unigrams), and, with `relabel`, examples the teacher itself puts under another label (dropped, not moved: a
generation the teacher disowns is a bad example of both labels). Requests are seeded (`seed` + label + request
index), so a server that honours `seed` gives the same data again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from kdistill.atomic import atomic_write_text
from kdistill.errors import KDistillError
from kdistill.teachers.chat import ChatTeacher

__all__ = ["DEFAULT_GENERATE_PROMPT", "GenerationLog", "generate_examples", "generate_file", "load_generate_prompt",
           "split_reply", "normalise", "filter_generations"]

DEFAULT_GENERATE_PROMPT = (
    "Write {n} different, realistic examples of text whose label is \"{label}\" (labels: {labels}).\n"
    "{examples}Write one example per line, with no numbering and no explanation.")
"""`str.format` fields: {n}, {label}, {labels}, {examples} (seed examples of the label, one per line, or empty)."""

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")


def split_reply(reply: str) -> list[str]:
    """A reply -> candidate examples: one per non-empty line, list markers and wrapping quotes removed."""
    out = []
    for line in reply.splitlines():
        text = _BULLET.sub("", line).strip().strip('"“”').strip()
        if text:
            out.append(text)
    return out


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the key of the exact-duplicate test."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _words(text: str) -> frozenset[str]:
    return frozenset(normalise(text).split())


class GenerationLog:
    """Append-only JSONL of replies: line 1 the settings they depend on, then `{"label", "request", "reply"}`.

    A log written under other settings is refused; bytes after the last newline (a write cut short by a kill) are
    dropped before the next append.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.header = path, json.loads(json.dumps(header))
        self.replies: dict[tuple[str, int], str] = {}
        if path.is_file():
            data = path.read_bytes()
            whole = data[:data.rfind(b"\n") + 1]
            lines = whole.decode("utf-8").splitlines()
            if lines:
                if json.loads(lines[0]) != self.header:
                    raise KDistillError(f"{path} holds generations made under other settings; rerun with those, or "
                                        "delete it to generate afresh")
                for line in lines[1:]:
                    rec = json.loads(line)
                    self.replies[(rec["label"], rec["request"])] = rec["reply"]
            if len(whole) != len(data):
                with path.open("r+b") as f:
                    f.truncate(len(whole))
        if not self.path.is_file() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.header) + "\n", encoding="utf-8")

    def add(self, label: str, request: int, reply: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"label": label, "request": request, "reply": reply}, ensure_ascii=False) + "\n")
            f.flush()
        self.replies[(label, request)] = reply


def filter_generations(candidates: Sequence[tuple[str, str]], *, min_words: int, max_words: int,
                       near_duplicate: float, seen: Sequence[str] = ()) -> tuple[list[tuple[str, str]], Counter[str]]:
    """(label, text) candidates in order -> the kept ones and a count of rejections by reason.

    `seen` (e.g. the seed examples) counts as already kept for the duplicate tests but is not returned.
    """
    kept: list[tuple[str, str]] = []
    keys = {normalise(t) for t in seen}
    bags = [_words(t) for t in seen]
    rejected: Counter[str] = Counter()
    for label, text in candidates:
        n = len(normalise(text).split())
        if n < min_words:
            rejected["too short"] += 1
            continue
        if n > max_words:
            rejected["too long"] += 1
            continue
        key, bag = normalise(text), _words(text)
        if key in keys:
            rejected["exact duplicate"] += 1
            continue
        if any(len(bag & b) / len(bag | b) >= near_duplicate for b in bags):
            rejected["near duplicate"] += 1
            continue
        keys.add(key)
        bags.append(bag)
        kept.append((label, text))
    return kept, rejected


def _seed(seed: int, label: str, request: int) -> int:
    return int(hashlib.sha256(f"{seed}:{label}:{request}".encode()).hexdigest()[:8], 16)


def generate_examples(teacher: ChatTeacher, *, out: str | Path, per_label: int, per_request: int = 10,
                      prompt: str = DEFAULT_GENERATE_PROMPT, seed_examples: dict[str, list[str]] | None = None,
                      relabel: bool = False, temperature: float = 1.0, seed: int = 42, min_words: int = 3,
                      max_words: int = 128, near_duplicate: float = 0.8, progress: bool = True) -> dict[str, Any]:
    """Ask `teacher` for `per_label` examples of each of its labels; write the kept ones as JSONL to `out`.

    Each output line is `{"text", "label"}`, a training file for `kdistill distill --data.task null
    --data.train_file OUT` (or `--data.augment_file OUT`). Returns counts: requests asked and reused, candidates,
    kept per label, rejected by reason. Raises `KDistillError` when the teacher fails (the replies so far are kept
    in OUT.log.jsonl) or answers nothing usable for a label.
    """
    out = Path(out)
    labels = list(teacher.label_names or [])
    seeds = seed_examples or {}
    requests = -(-per_label // per_request)
    log = GenerationLog(out.with_name(out.stem + ".log.jsonl"), {
        "teacher": teacher.where, "prompt": prompt, "per_request": per_request, "temperature": temperature,
        "seed": seed, "seed_examples": seeds})
    todo = [(label, i) for label in labels for i in range(requests) if (label, i) not in log.replies]
    reused = len(labels) * requests - len(todo)
    for label, i in tqdm(todo, desc="[generate] teacher", unit="req", disable=not progress):
        shots = "Examples:\n" + "\n".join(seeds[label]) + "\n" if seeds.get(label) else ""
        text = prompt.format(n=per_request, label=label, labels=", ".join(labels), examples=shots)
        reply, _ = teacher.chat(text, temperature=temperature, max_tokens=max(64, 48 * per_request),
                                seed=_seed(seed, label, i))
        log.add(label, i, reply)
    candidates = [(label, t) for label in labels for i in range(requests) for t in split_reply(log.replies[(label, i)])]
    kept, rejected = filter_generations(candidates, min_words=min_words, max_words=max_words,
                                        near_duplicate=near_duplicate,
                                        seen=[t for ts in seeds.values() for t in ts])
    if relabel and kept:
        answers = teacher.answer([(t,) for _, t in kept])
        agree = [(label, t) for (label, t), a in zip(kept, answers, strict=True) if labels[a.label_id] == label]
        rejected["teacher gave another label"] += len(kept) - len(agree)
        kept = agree
    per = Counter(label for label, _ in kept)
    kept = [x for label in labels for x in [k for k in kept if k[0] == label][:per_label]]
    missing = [label for label in labels if not per[label]]
    if missing:
        raise KDistillError(f"the teacher wrote no usable example for label(s) {missing} (rejected: "
                            f"{dict(rejected) or 'none'}); check the prompt, or raise per_label")
    atomic_write_text(out, "".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n"
                                   for label, t in kept))
    return {"out": str(out), "asked": len(todo), "reused": reused, "candidates": len(candidates),
            "kept": {label: min(per[label], per_label) for label in labels}, "rejected": dict(rejected),
            "requests_sent": teacher.requests_sent}


def _seed_examples(path: str | None, labels: Sequence[str]) -> dict[str, list[str]]:
    if path is None:
        return {}
    p = Path(path).expanduser()
    if not p.is_file():
        raise KDistillError(f"seed examples file not found: {p}")
    out: dict[str, list[str]] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise KDistillError(f"{p} line {n}: not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or row.get("label") not in labels:
            raise KDistillError(f"{p} line {n}: needs {{\"text\": ..., \"label\": one of {list(labels)}}}")
        out.setdefault(row["label"], []).append(row["text"])
    return out


def generate_file(cfg: Any) -> dict[str, Any]:
    """`kdistill generate` (a `GenerateConfig`): build the chat teacher from the config and run `generate_examples`."""
    from kdistill.answers import check_out_file
    from kdistill.teachers.chat import chat_settings

    if not cfg.teacher.startswith("openai:"):
        raise KDistillError(f"teacher '{cfg.teacher}': generation needs a chat teacher, openai:BASE_URL")
    check_out_file(cfg.out)
    settings = chat_settings(cfg.teacher_model, None, None, cfg.api_key_env)
    teacher = ChatTeacher(cfg.teacher[len("openai:"):], label_names=cfg.label_names, timeout=cfg.timeout,
                          retries=cfg.retries, **settings)
    prompt = DEFAULT_GENERATE_PROMPT if cfg.prompt is None else load_generate_prompt(cfg.prompt)
    return generate_examples(teacher, out=cfg.out, per_label=cfg.per_label, per_request=cfg.per_request,
                             prompt=prompt, seed_examples=_seed_examples(cfg.seed_examples, cfg.label_names),
                             relabel=cfg.relabel, temperature=cfg.temperature, seed=cfg.seed,
                             min_words=cfg.min_words, max_words=cfg.max_words, near_duplicate=cfg.near_duplicate,
                             progress=cfg.progress)


def load_generate_prompt(path: str) -> str:
    """A generation template: the file's text; unknown `{fields}` or unbalanced braces are a `KDistillError`."""
    import string

    p = Path(path).expanduser()
    if not p.is_file():
        raise KDistillError(f"prompt template not found: {p}")
    template = p.read_text(encoding="utf-8")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise KDistillError(f"prompt template {p}: {err} (write literal braces as {{{{ and }}}})") from None
    unknown = fields - {"n", "label", "labels", "examples"}
    if unknown:
        raise KDistillError(f"prompt template {p} has unknown field(s) {sorted(unknown)}; valid: examples, label, "
                            "labels, n")
    return template
