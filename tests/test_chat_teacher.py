"""The OpenAI-compatible chat teacher against a real local server that speaks the chat-completions protocol."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kdistill.blackbox import label_file
from kdistill.config import LabelConfig, build
from kdistill.errors import KDistillError
from kdistill.teachers.chat import ChatTeacher, label_probs, load_prompt, render_prompt

NAMES = ["negative", "positive"]


class ChatServer:
    """A chat-completions server: 'positive' for texts with 'good', else 'negative'; special texts misbehave.

    'twice' -> an answer naming both labels; 'shrug' -> no label; 'busy' -> 429 (Retry-After 0) on the first
    try; 'drop' -> the connection closed without a reply on the first try; 'down' -> 500 until `down` is False.
    A prompt starting with "Write " (a generation request) is answered by `writer(request body)`.
    With `logprobs`, first-token alternatives give the chosen label 0.8.
    """

    def __init__(self, logprobs: bool = True, writer: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.logprobs, self.down, self.writer = logprobs, True, writer
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.seen: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.auth.append(self.headers.get("Authorization"))
                content = body["messages"][0]["content"]
                if server.writer is not None and content.startswith("Write "):
                    self._reply({"index": 0, "message": {"role": "assistant", "content": server.writer(body)}})
                    return
                text = content.rsplit("Text: ", 1)[-1]
                first = text not in server.seen
                server.seen.add(text)
                if "busy" in text and first:
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                if "drop" in text and first:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if "down" in text and server.down:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"overloaded")
                    return
                label = "positive" if "good" in text else "negative"
                content = {"twice": "positive or negative", "shrug": "I cannot tell"}.get(
                    next((k for k in ("twice", "shrug") if k in text), ""), label.capitalize() + ".")
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
                if server.logprobs and body.get("logprobs"):
                    other = "neg" if label == "positive" else "pos"
                    choice["logprobs"] = {"content": [{"token": label[:3], "logprob": math.log(0.8), "top_logprobs": [
                        {"token": label[:3], "logprob": math.log(0.8)}, {"token": other, "logprob": math.log(0.2)},
                        {"token": "The", "logprob": math.log(0.01)}]}]}
                self._reply(choice)

            def _reply(self, choice: dict[str, Any]) -> None:
                payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[ChatServer]:
    s = ChatServer()
    yield s
    s.httpd.shutdown()


def _input(tmp_path: Path, rows: list[str]) -> str:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def _teacher(url: str, **kw: Any) -> ChatTeacher:
    return ChatTeacher(url, model="tiny-llm", label_names=NAMES, backoff=0.01, **kw)


def _cfg(tmp_path: Path, rows: list[str], **kw: Any) -> LabelConfig:
    return build(LabelConfig, {"teacher": "openai", "input": _input(tmp_path, rows), "label_names": NAMES,
                               "out": str(tmp_path / "lab.jsonl"), "batch_size": 2, **kw})


def test_labels_and_logprob_soft_targets(server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    rows = ["a good film", "a dull film", "good fun , busy plot", "drop everything , it is bad"]
    result = label_file(_cfg(tmp_path, rows), _teacher(server.url))
    lines = [json.loads(x) for x in (tmp_path / "lab.jsonl").read_text().splitlines()]
    assert [x["label"] for x in lines] == ["positive", "negative", "positive", "negative"]
    assert [p for x in lines for p in x["probs"]] == pytest.approx([0.2, 0.8, 0.8, 0.2, 0.2, 0.8, 0.8, 0.2])
    assert result["kept"] == 4
    assert len(server.requests) == 6  # one per example, plus the 429 and the dropped connection, retried
    body = server.requests[0]
    assert body["model"] == "tiny-llm" and body["temperature"] == 0 and body["logprobs"] is True
    assert "negative, positive" in body["messages"][0]["content"]
    assert set(server.auth) == {"Bearer sk-secret-123"}
    assert "sk-secret" not in (tmp_path / "lab.jsonl").read_text() and "sk-secret" not in json.dumps(result)


def test_without_logprobs_the_answer_text_gives_a_hard_label(tmp_path: Path) -> None:
    plain = ChatServer(logprobs=False)
    try:
        label_file(_cfg(tmp_path, ["so good", "so bad"]), _teacher(plain.url))
    finally:
        plain.httpd.shutdown()
    lines = [json.loads(x) for x in (tmp_path / "lab.jsonl").read_text().splitlines()]
    assert [x["label"] for x in lines] == ["positive", "negative"] and "probs" not in lines[0]


@pytest.mark.parametrize(("row", "message"), [("twice as long", "several label names"),
                                              ("shrug", "contains no label name")])
def test_an_answer_with_no_label_or_two_names_the_line(server: ChatServer, tmp_path: Path, row: str,
                                                       message: str) -> None:
    server.logprobs = False
    with pytest.raises(KDistillError, match=rf"in.txt line 2 '{row}'.*{message}"):
        label_file(_cfg(tmp_path, ["good", row]), _teacher(server.url))


def test_a_failing_server_keeps_the_answers_and_a_rerun_asks_only_for_the_rest(server: ChatServer,
                                                                              tmp_path: Path) -> None:
    rows = ["good one", "bad one", "down again", "good two", "bad two"]
    cfg = _cfg(tmp_path, rows, concurrency=1)
    with pytest.raises(KDistillError, match=r"failed after 3 tries; last: HTTP 500 'overloaded'"):
        label_file(cfg, _teacher(server.url, retries=2, concurrency=1))
    asked_before = len(server.requests)
    server.down = False
    result = label_file(cfg, _teacher(server.url, retries=2, concurrency=1))
    assert result["reused"] == 2 and result["asked"] == 3
    asked = [r["messages"][0]["content"].rsplit("Text: ", 1)[-1] for r in server.requests[asked_before:]]
    assert sorted(asked) == ["bad two", "down again", "good two"]  # never the two answered before


def test_prompt_templates(tmp_path: Path) -> None:
    template = tmp_path / "p.txt"
    template.write_text("Examples:\n{examples}\nLabels: {labels}\nReview: {text}\nAnswer:", encoding="utf-8")
    text = render_prompt(load_prompt(str(template)), {"text": "nice"}, NAMES, examples="great -> positive")
    assert text == "Examples:\ngreat -> positive\nLabels: negative, positive\nReview: nice\nAnswer:"
    for body, message in [("{txt}", "unknown field"), ("Labels: {labels}", "never uses {text}"),
                          ("{text", "braces")]:
        template.write_text(body, encoding="utf-8")
        with pytest.raises(KDistillError, match=message):
            load_prompt(str(template))


def test_label_probs_from_first_token_alternatives() -> None:
    alts = [{"token": " Pos", "logprob": math.log(0.6)}, {"token": "positive", "logprob": math.log(0.1)},
            {"token": "neg", "logprob": math.log(0.1)}, {"token": "the", "logprob": math.log(0.2)}]
    assert label_probs(alts, NAMES) == pytest.approx([0.1 / 0.8, 0.7 / 0.8])
    assert label_probs([{"token": "the", "logprob": -0.1}], NAMES) is None
    assert label_probs([{"token": "not", "logprob": -0.1}], ["not_entailment", "not_sure"]) is None  # ambiguous


def test_kdistill_label_speaks_to_a_chat_server_from_the_command_line(server: ChatServer, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from kdistill.cli import main

    monkeypatch.setenv("MY_KEY", "sk-cli-456")
    template = tmp_path / "prompt.txt"
    template.write_text("Sentiment ({labels})? Text: {text}", encoding="utf-8")
    args = ["label", "--teacher", f"openai:{server.url}", "--teacher_model", "tiny-llm", "--label_names",
            "[negative, positive]", "--input", _input(tmp_path, ["good stuff", "awful"]), "--out",
            str(tmp_path / "cli.jsonl"), "--prompt", str(template), "--api_key_env", "MY_KEY"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (tmp_path / "cli.jsonl").read_text().splitlines()]
    assert [x["label"] for x in lines] == ["positive", "negative"] and lines[0]["probs"] == pytest.approx([0.2, 0.8])
    assert server.requests[0]["messages"][0]["content"] == "Sentiment (negative, positive)? Text: good stuff"
    assert set(server.auth) == {"Bearer sk-cli-456"}
    assert main([*args[:-4], "--prompt", str(tmp_path / "missing.txt")]) == 2  # one line, no traceback
