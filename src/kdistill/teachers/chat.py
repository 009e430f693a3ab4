"""An LLM teacher behind an OpenAI-compatible chat-completions API (vLLM, llama.cpp's server, Ollama, hosted APIs).

Why: the black-box teachers users have today are hosted LLMs that answer text. Each example becomes one chat
request built from a prompt template; the reply's text is parsed to a label (exactly one label name in it, or JSON
`{"label": ...}`), and when the server returns `logprobs`, the probabilities of the label names' first tokens at the
answer's first position become soft targets (gray-box): renormalised over the labels, so a label the server did not
list among its `top_logprobs` gets 0.

Protocol (the subset every such server speaks): POST `{base}/chat/completions` with `{"model", "messages":
[{"role": "user", "content": prompt}], "temperature": 0, "max_tokens", "logprobs": true, "top_logprobs": 20}`;
the reply's `choices[0].message.content` is the answer and `choices[0].logprobs.content[0].top_logprobs` (a list of
`{"token", "logprob"}`) the first position's alternatives. Connection errors, timeouts, 429 and 5xx are retried with
exponential backoff (a numeric Retry-After is honoured, up to 60 s); other statuses fail at once. The API key comes
from an environment variable and is sent only in the Authorization header: never logged, never in an error.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdistill.answers import parse_json, shorten
from kdistill.blackbox import Teacher
from kdistill.errors import KDistillError

__all__ = ["DEFAULT_PROMPT", "ChatTeacher", "chat_settings", "load_prompt", "render_prompt", "label_probs"]

DEFAULT_PROMPT = ("Classify the text into exactly one of these labels: {labels}.\n"
                  "Answer with the label only.\n\nText: {text}")
"""`str.format` fields: {labels} (comma-separated names), {text}, {text_pair} (pairs), {examples} (few-shot)."""
_FIELDS = {"labels", "text", "text_pair", "examples"}
BACKOFF_SECONDS = 0.5


def load_prompt(path: str | None) -> str:
    """The prompt template: the file's text, or `DEFAULT_PROMPT`. Raises `KDistillError` for a missing file or
    a template with an unknown `{field}` or unbalanced braces."""
    if path is None:
        return DEFAULT_PROMPT
    p = Path(path).expanduser()
    if not p.is_file():
        raise KDistillError(f"prompt template not found: {p}")
    template = p.read_text(encoding="utf-8")
    try:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise KDistillError(f"prompt template {p}: {err} (write literal braces as {{{{ and }}}})") from None
    unknown = fields - _FIELDS
    if unknown:
        raise KDistillError(f"prompt template {p} has unknown field(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")
    if "text" not in fields:
        raise KDistillError(f"prompt template {p} never uses {{text}}: the teacher would not see the example")
    return template


def chat_settings(model: str | None, prompt: str | None, few_shot: str | None, api_key_env: str) -> dict[str, Any]:
    """`ChatTeacher` keyword arguments from the config's fields: the template and few-shot text read from files."""
    shots = ""
    if few_shot is not None:
        path = Path(few_shot).expanduser()
        if not path.is_file():
            raise KDistillError(f"few-shot examples file not found: {path}")
        shots = path.read_text(encoding="utf-8")
    return {"model": model or "", "prompt": load_prompt(prompt), "few_shot": shots, "api_key_env": api_key_env}


def render_prompt(template: str, request: dict[str, str], labels: Sequence[str], examples: str = "") -> str:
    """The user message for one example (`request` has "text" and maybe "text_pair")."""
    return template.format(labels=", ".join(labels), text=request["text"], text_pair=request.get("text_pair", ""),
                           examples=examples)


def label_probs(top_logprobs: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[float] | None:
    """First-position alternatives -> a distribution over `labels`, or None when no alternative starts a label.

    A token counts for the label whose (lower-cased) name starts with the token's stripped text; a token that
    starts several names (a shared prefix such as "not") is ambiguous and not counted. Probabilities of tokens of
    one label add up; the result is renormalised over the labels.
    """
    names = [n.lower() for n in labels]
    mass = [0.0] * len(labels)
    for alt in top_logprobs:
        token = str(alt.get("token", "")).strip().lower()
        logprob = alt.get("logprob")
        if not token or not isinstance(logprob, int | float) or not math.isfinite(logprob):
            continue
        hits = [i for i, n in enumerate(names) if n.startswith(token)]
        if len(hits) == 1:
            mass[hits[0]] += math.exp(logprob)
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else None


def _retry_after(headers: Any) -> float:
    value = str(headers.get("Retry-After") or "").strip()  # seconds; the HTTP-date form is ignored
    return min(60.0, float(value)) if re.fullmatch(r"\d+(\.\d+)?", value) else 0.0


class ChatTeacher(Teacher):
    """A chat-completions endpoint as a `kdistill.blackbox.Teacher`: one request per example, batches in parallel.

    Args:
        base_url: the API root, e.g. `http://127.0.0.1:8000/v1` (`/chat/completions` is appended).
        model: the served model's name (`--teacher_model`).
        label_names: the labels the answers must name (required: a chat model brings none).
        prompt: the template (`load_prompt`), few_shot: text put in its {examples} field.
        api_key_env: environment variable holding the key (absent or empty: no Authorization header).
        logprobs: ask for first-token logprobs (soft targets); a server that ignores the field is fine.
    """

    kind = "openai"

    def __init__(self, base_url: str, *, model: str, label_names: Sequence[str] | None, prompt: str = DEFAULT_PROMPT,
                 few_shot: str = "", api_key_env: str = "OPENAI_API_KEY", logprobs: bool = True,
                 timeout: float = 30.0, retries: int = 3, concurrency: int = 4, backoff: float | None = None,
                 max_tokens: int = 16) -> None:
        if not label_names:
            raise KDistillError("an openai: teacher needs label_names (the labels its answers must name)")
        if not model:
            raise KDistillError("an openai: teacher needs teacher_model (the served model's name)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.prompt, self.few_shot, self.logprobs = model, prompt, few_shot, logprobs
        self.label_names = list(label_names)
        self.timeout, self.retries, self.concurrency, self.max_tokens = timeout, retries, concurrency, max_tokens
        self.backoff = BACKOFF_SECONDS if backoff is None else backoff
        key = os.environ.get(api_key_env, "")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         **({"Authorization": f"Bearer {key}"} if key else {})}
        self.where = f"chat teacher {model} at {base_url}"
        self.requests_sent = 0

    def raw(self, requests: list[dict[str, str]]) -> list[Any]:
        return [self._one(r) for r in requests]

    def chat(self, prompt: str, *, temperature: float = 0.0, max_tokens: int | None = None, seed: int | None = None,
             logprobs: bool = False) -> tuple[str, dict[str, Any]]:
        """One user message -> (the reply's text, `choices[0]`). Raises `KDistillError` for a reply without text."""
        body: dict[str, Any] = {"model": self.model, "temperature": temperature,
                                "max_tokens": max_tokens or self.max_tokens,
                                "messages": [{"role": "user", "content": prompt}]}
        if seed is not None:
            body["seed"] = seed
        if logprobs:
            body.update(logprobs=True, top_logprobs=20)
        reply = self._post(json.dumps(body, ensure_ascii=False).encode())
        try:
            choice = reply["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise KDistillError(f"{self.where} replied without choices[0].message.content: "
                                f"{shorten(json.dumps(reply))}") from None
        if not isinstance(content, str):
            raise KDistillError(f"{self.where} replied with a non-text message: {shorten(json.dumps(content))}")
        return content, choice

    def _one(self, request: dict[str, str]) -> Any:
        prompt = render_prompt(self.prompt, request, self.label_names, self.few_shot)
        content, choice = self.chat(prompt, logprobs=self.logprobs)
        answer: Any = content
        stripped = content.strip()
        if stripped.startswith("{"):
            parsed = parse_json(stripped.encode(), f"{self.where} answered JSON that does not parse")
            answer = parsed.get("label", parsed) if isinstance(parsed, dict) else parsed
        alternatives = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
        probs = label_probs(alternatives, self.label_names) if alternatives else None
        if probs is not None:
            return {"probs": probs}
        return answer

    def _post(self, body: bytes) -> dict[str, Any]:
        last, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait)
            wait = self.backoff * 2 ** attempt
            req = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
            self.requests_sent += 1
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
            obj = parse_json(payload, f"{self.where} answered HTTP {status} with a body that is not JSON")
            if not isinstance(obj, dict):
                raise KDistillError(f"{self.where} answered HTTP {status} with JSON that is not an object")
            return obj
        raise KDistillError(f"{self.where} failed after {self.retries + 1} tries; last: {last}")
