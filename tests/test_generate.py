"""Imitation data generation through a chat teacher: filters, relabelling, resume, against a local server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_chat_teacher import NAMES, ChatServer

from kdistill.errors import KDistillError
from kdistill.generate import filter_generations, generate_examples, split_reply
from kdistill.teachers.chat import ChatTeacher

REPLIES = {
    "positive": "1. a good film , truly\n2. A GOOD film, truly!\n3. good\n- what a good and lovely movie\n"
                "4) a good film , truly indeed",
    "negative": "\"a dull and tiring plot\"\n* a good cast wasted on a bad script\n\nthe worst two hours of my year",
}


def _writer(calls: list[dict[str, Any]], fail_after: int | None = None):
    def write(body: dict[str, Any]) -> str:
        calls.append(body)
        if fail_after is not None and len(calls) > fail_after:
            raise ConnectionError("server gone")  # the handler dies: the client sees a dropped connection
        label = "positive" if '"positive"' in body["messages"][0]["content"] else "negative"
        return REPLIES[label]
    return write


def _teacher(url: str) -> ChatTeacher:
    return ChatTeacher(url, model="tiny-llm", label_names=NAMES, backoff=0.01, retries=1)


def test_generation_filters_and_counts_each_rejection(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    server = ChatServer(writer=_writer(calls))
    try:
        result = generate_examples(_teacher(server.url), out=tmp_path / "gen.jsonl", per_label=5, per_request=5,
                                   seed=7, progress=False)
    finally:
        server.httpd.shutdown()
    rows = [json.loads(x) for x in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert rows == [{"text": "a dull and tiring plot", "label": "negative"},
                    {"text": "a good cast wasted on a bad script", "label": "negative"},
                    {"text": "the worst two hours of my year", "label": "negative"},
                    {"text": "a good film , truly", "label": "positive"},
                    {"text": "what a good and lovely movie", "label": "positive"}]
    assert result["rejected"] == {"exact duplicate": 1, "too short": 1, "near duplicate": 1}
    assert result["kept"] == {"negative": 3, "positive": 2} and result["candidates"] == 8
    assert len(calls) == 2 and {c["seed"] for c in calls} != {None} and all(c["temperature"] == 1.0 for c in calls)


def test_relabel_drops_what_the_teacher_puts_under_another_label(tmp_path: Path) -> None:
    server = ChatServer(writer=_writer([]))  # the server's classifier says 'positive' for any text with 'good'
    try:
        result = generate_examples(_teacher(server.url), out=tmp_path / "gen.jsonl", per_label=5, per_request=5,
                                   relabel=True, progress=False)
    finally:
        server.httpd.shutdown()
    texts = [json.loads(x)["text"] for x in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert "a good cast wasted on a bad script" not in texts and len(texts) == 4
    assert result["rejected"]["teacher gave another label"] == 1


def test_an_interrupted_generation_resumes_without_asking_again(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    server = ChatServer(writer=_writer(calls, fail_after=1))
    try:
        with pytest.raises(KDistillError, match="failed after 2 tries"):
            generate_examples(_teacher(server.url), out=tmp_path / "gen.jsonl", per_label=5, per_request=5,
                              progress=False)
        assert not (tmp_path / "gen.jsonl").exists()
        server.writer = _writer(calls)
        result = generate_examples(_teacher(server.url), out=tmp_path / "gen.jsonl", per_label=5, per_request=5,
                                   progress=False)
    finally:
        server.httpd.shutdown()
    assert result["reused"] == 1 and result["asked"] == 1
    uninterrupted = tmp_path / "again"
    server2 = ChatServer(writer=_writer([]))
    try:
        generate_examples(_teacher(server2.url), out=uninterrupted / "gen.jsonl", per_label=5, per_request=5,
                          progress=False)
    finally:
        server2.httpd.shutdown()
    assert (tmp_path / "gen.jsonl").read_text() == (uninterrupted / "gen.jsonl").read_text()


def test_reply_splitting_and_near_duplicates() -> None:
    assert split_reply('1. "one two three"\n\n(2) four five six\n• seven') == ["one two three", "four five six",
                                                                              "seven"]
    kept, rejected = filter_generations([("a", "the cat sat on the mat"), ("a", "the cat sat on a mat")],
                                        min_words=1, max_words=50, near_duplicate=0.6)
    assert kept == [("a", "the cat sat on the mat")] and rejected == {"near duplicate": 1}
    kept, _ = filter_generations([("a", "seen before , yes")], min_words=1, max_words=50, near_duplicate=0.9,
                                 seen=["Seen before, yes!"])
    assert kept == []


def test_kdistill_generate_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kdistill.cli import main

    calls: list[dict[str, Any]] = []
    server = ChatServer(writer=_writer(calls))
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"text": "the worst two hours of my year", "label": "negative"}\n', encoding="utf-8")
    try:
        code = main(["generate", "--teacher", f"openai:{server.url}", "--teacher_model", "tiny-llm", "--label_names",
                     "[negative, positive]", "--per_label", "5", "--per_request", "5", "--seed_examples", str(seeds),
                     "--progress", "false", "--out", str(tmp_path / "gen.jsonl")])
        assert main(["generate", "--teacher", "http://x", "--teacher_model", "m", "--label_names", "[a]",
                     "--out", str(tmp_path / "bad.jsonl")]) == 2
    finally:
        server.httpd.shutdown()
    assert code == 0
    texts = [json.loads(x)["text"] for x in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert "the worst two hours of my year" not in texts  # a seed example is never output as generated
    assert "Examples:\nthe worst two hours of my year" in calls[0]["messages"][0]["content"]
    assert '"kept"' in capsys.readouterr().out
