"""`kdistill label` with command, HTTP and python teachers for regression and multi-label data (`task_type`).

The teachers are real subprocesses (`sys.executable -c ...`), a real HTTP server on 127.0.0.1 and plain functions;
the models are tiny and built here or in conftest.py.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import DATA, make_tiny_bert

from kdistill import api
from kdistill.answers import AnswerLog, TeacherAnswer
from kdistill.blackbox import CallableTeacher, CommandTeacher, label_file, make_source
from kdistill.cli import main
from kdistill.config import DataConfig, DistillConfig, LabelConfig, LossConfig, StudentConfig, TrainConfig
from kdistill.data import load_task_data
from kdistill.errors import KDistillError

EMOTIONS = ["anger", "joy", "surprise", "neutral"]

# a regression teacher: a score from the lengths of the two texts, in three accepted shapes (number, object, string)
SCORER = """
import json, sys
for i, line in enumerate(sys.stdin):
    r = json.loads(line)
    x = (len(r["text"]) + len(r.get("text_pair", ""))) % 50 / 10
    print(json.dumps([x, {"score": x}, str(x)][i % 3]))
"""

# a multi-label teacher answering in each accepted shape in turn: "a,b", a list of names, ids, per-label probs
TAGGER = """
import json, sys
answers = ["joy, Surprise", ["anger"], {"labels": [0, 3]}, {"probs": [0.9, 0.2, 0.6, 0.1]}]
for i, line in enumerate(sys.stdin):
    print(json.dumps(answers[i % 4]))
"""

# TAGGER, but a batch holding the word "later" fails (exit code 3) while the file named by argv[1] exists
FAILS_LATER = """
import json, os, sys
lines = sys.stdin.read().splitlines()
if any("later" in line for line in lines) and os.path.exists(sys.argv[1]):
    sys.exit(3)
answers = ["joy, Surprise", ["anger"], {"labels": [0, 3]}, {"probs": [0.9, 0.2, 0.6, 0.1]}]
for i, line in enumerate(lines):
    print(json.dumps(answers[i % 4]))
"""

# answers GOOD (a JSON text) for every line, BAD for a line whose text holds the word BAD
ONE_BAD = """
import json, sys
bad, good = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    print(bad if "BAD" in json.loads(line)["text"] else good)
"""


def _command(script: str, *args: str) -> str:
    return "command:" + shlex.join([sys.executable, "-c", script, *args])


def _pairs(path: Path, n: int) -> Path:
    """The first `n` STS-B training pairs, without their scores: unlabeled sentence pairs."""
    with open(DATA / "stsb" / "train.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:n + 1]
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([["sentence1", "sentence2"], *[r[:2] for r in rows]])
    return path


def _texts(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def _rows(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def _cfg(tmp_path: Path, teacher: str, inp: Path, **kw: Any) -> LabelConfig:
    return LabelConfig(**{"teacher": teacher, "input": str(inp), "out": str(tmp_path / "labeled.jsonl"), **kw})


def _score(text: str, pair: str) -> float:
    return (len(text) + len(pair)) % 50 / 10


def test_command_teacher_scores_pairs_and_a_regression_student_learns_those_scores(
        tmp_path: Path, regression_teacher: Path) -> None:
    pairs = _pairs(tmp_path / "pairs.tsv", 24)
    result = label_file(_cfg(tmp_path, _command(SCORER), pairs, task_type="regression", batch_size=8))
    rows = _rows(result["out"])
    expected = [_score(r["text"], r["text_pair"]) for r in rows]
    assert len(rows) == 24 and len(set(expected)) > 5  # the scores differ from row to row
    # written as a regression model teacher's answers are: label = the one logit = the score, no class fields
    assert [r["label"] for r in rows] == pytest.approx(expected) and all(r["logits"] == [r["label"]] for r in rows)
    assert not any("label_id" in r or "probs" in r for r in rows)
    assert result["scores"]["min"] == pytest.approx(min(expected)) and result["labels"] == {}
    assert "| scores | mean" in result["table"]

    # a regression student (no dropout, so a training step computes what eval mode does) loads the file as its
    # teacher's outputs: the first step's logit_mse is the mean squared gap between its outputs and those scores
    student = make_tiny_bert(tmp_path / "student", num_layers=1, num_labels=1, problem_type="regression")
    config = json.loads((student / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (student / "config.json").write_text(json.dumps(config))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(student).eval()
    enc = AutoTokenizer.from_pretrained(student)([r["text"] for r in rows], [r["text_pair"] for r in rows],
                                                 truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**enc).logits[:, 0]
    want = float(((outputs - torch.tensor(expected)) ** 2).mean())

    losses: list[float] = []
    data = DataConfig(task=None, train_file=result["out"], validation_file=result["out"], task_type="regression",
                      text_columns=["text", "text_pair"], max_length=32)
    cfg = DistillConfig(
        teacher=str(regression_teacher), teacher_answers=result["out"], data=data,
        student=StudentConfig(init="path", path=str(student)), losses=[LossConfig(name="logit_mse")],
        train=TrainConfig(epochs=1, batch_size=32, eval_batch_size=32, lr=1e-3, progress=False, device="cpu",
                          save_steps=1000), out=str(tmp_path / "run"))
    summary = api.distill(cfg, callbacks=[lambda d: losses.append(d.last_loss)])
    assert summary["steps"] == 1 and losses[0] == pytest.approx(want, rel=1e-4)
    assert want > 0.5  # a wrong or missing score would show (the student's outputs are near 0, the scores up to 4.9)


def test_multilabel_command_teacher_writes_label_sets_that_read_back(tmp_path: Path) -> None:
    texts = [f"the {w} example number {i}" for i, w in enumerate(["first", "second", "third", "fourth"] * 2)]
    result = label_file(_cfg(tmp_path, _command(TAGGER), _texts(tmp_path / "in.txt", texts), task_type="multilabel",
                             label_names=EMOTIONS, batch_size=8))
    rows = _rows(result["out"])
    sets = [["joy", "surprise"], ["anger"], ["anger", "neutral"], ["anger", "surprise"]] * 2
    assert [r["label"] for r in rows] == sets
    assert [("probs" in r) for r in rows] == [False, False, False, True] * 2  # probabilities only where given
    assert rows[3]["probs"] == [0.9, 0.2, 0.6, 0.1] and "label_id" not in rows[0]
    assert result["labels"] == {"anger": 6, "joy": 2, "surprise": 4, "neutral": 2}

    loaded = load_task_data(DataConfig(task=None, train_file=result["out"], text_columns=["text"],
                                       task_type="multilabel", label_names=EMOTIONS, validation_fraction=0.25))
    assert loaded.task_type == "multilabel" and loaded.label_names == EMOTIONS
    by_text = {r["text"]: [1.0 if n in r["label"] else 0.0 for n in EMOTIONS] for r in rows}
    for split in loaded.splits.values():
        for text, label in zip(split["text_a"], split["label"], strict=True):
            assert label == by_text[text]


def test_label_sets_survive_a_failed_run_and_are_reused(tmp_path: Path) -> None:
    """A failed batch keeps the label sets already answered; a rerun asks only for the rest."""
    flag = tmp_path / "fail"
    flag.write_text("")
    texts = ["one first text", "two second text", "a later text", "another later text"]
    cfg = _cfg(tmp_path, _command(FAILS_LATER, str(flag)), _texts(tmp_path / "in.txt", texts), task_type="multilabel",
               label_names=EMOTIONS, batch_size=2, concurrency=1)
    with pytest.raises(KDistillError, match="exited with code 3.*2 of 4 answers are kept"):
        label_file(cfg)
    flag.unlink()
    again = label_file(cfg)
    assert again["reused"] == 2 and again["asked"] == 2
    assert [r["label"] for r in _rows(again["out"])] == [["joy", "surprise"], ["anger"]] * 2
    # the log keeps a label set as ids; a log of another task type is not mixed in
    log = AnswerLog(tmp_path / "log.jsonl", {"teacher": "t", "task_type": "multilabel"})
    log.append([("1:ab", TeacherAnswer(1, labels=(1, 2))), ("2:cd", TeacherAnswer(0, labels=()))])
    log.close()
    assert AnswerLog(tmp_path / "log.jsonl", {"teacher": "t", "task_type": "multilabel"}).answers == {
        "1:ab": TeacherAnswer(1, labels=(1, 2)), "2:cd": TeacherAnswer(0, labels=())}
    with pytest.raises(KDistillError, match="task_type 'multilabel'"):
        AnswerLog(tmp_path / "log.jsonl", {"teacher": "t", "task_type": "regression"})


@pytest.mark.parametrize(("task_type", "bad", "message"), [
    ("regression", '"high"', "answered 'high', not a finite number"),
    ("regression", "NaN", "answered 'NaN', not a finite number"),
    ("regression", "[1.0, 2.0]", "answered 2 numbers; a regression teacher answers one score"),
    ("regression", '{"probs": [0.2, 0.8]}', "without 'score', 'label' or 'logits'"),
    ("multilabel", '"joy,fear"', "answered label 'fear', not one of the 4 labels"),
    ("multilabel", "[7]", "answered label '7', not one of the 4 labels"),
    ("multilabel", '{"probs": [0.5, 0.5]}', "answered 2 probs for 4 label names"),
    ("multilabel", '{"probs": [0.5, 1.5, 0, 0]}', "per-label probs outside 0..1"),
    ("multilabel", "2.5", "a multi-label teacher answers a label set"),
])
def test_a_bad_answer_names_its_example_and_keeps_the_good_ones(tmp_path: Path, task_type: str, bad: str,
                                                                 message: str) -> None:
    good = "3.5" if task_type == "regression" else '["joy"]'
    texts = ["a good text", "another good text", "a BAD text here", "good again"]
    names = EMOTIONS if task_type == "multilabel" else None
    cfg = _cfg(tmp_path, _command(ONE_BAD, bad, good), _texts(tmp_path / "in.txt", texts), task_type=task_type,
               label_names=names, batch_size=2, concurrency=1)
    with pytest.raises(KDistillError) as err:
        label_file(cfg)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{tmp_path / 'in.txt'} line 3 'a BAD text here': teacher command")
    assert message in text and "2 of 4 answers are kept" in text


def test_python_and_http_teachers_answer_scores_and_label_sets(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NO_PROXY", "no_proxy"):  # a proxy set in the environment must not intercept 127.0.0.1
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    inp = _texts(tmp_path / "in.txt", ["short", "a longer text", "the longest text of all"])

    def scores(requests: list[dict[str, str]]) -> list[Any]:
        return [torch.tensor([len(r["text"]) / 10]) for r in requests]  # a one-element tensor: `.tolist()` -> [x]

    got = label_file(_cfg(tmp_path, "python:x:y", inp, task_type="regression"),
                     source=CallableTeacher(scores, task_type="regression"))
    assert [r["label"] for r in _rows(got["out"])] == pytest.approx([0.5, 1.3, 2.3])

    nan = CallableTeacher(lambda rs: [float("nan")] * len(rs), task_type="regression")
    with pytest.raises(KDistillError, match=r"line 1 'short': teacher function .* answered 'NaN', not a finite"):
        label_file(_cfg(tmp_path, "python:x:z", inp, task_type="regression", out=str(tmp_path / "n.jsonl")),
                   source=nan)

    with _server({"outputs": ["surprise", {"labels": ["JOY", "anger"]}, []]}) as url:
        teacher = make_source(url, label_names=EMOTIONS, task_type="multilabel", retries=0)
        assert teacher.task.name == "multilabel"
        got = label_file(_cfg(tmp_path, url, inp, task_type="multilabel", label_names=EMOTIONS,
                              out=str(tmp_path / "h.jsonl"), retries=0))
    assert [r["label"] for r in _rows(got["out"])] == [["surprise"], ["anger", "joy"], []]


@contextmanager
def _server(reply: dict[str, Any]) -> Iterator[str]:
    """A JSON endpoint on 127.0.0.1 answering every POST with `reply`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


def test_set_up_refusals_are_one_line_and_ask_nothing(tmp_path: Path, regression_teacher: Path) -> None:
    inp = _texts(tmp_path / "in.txt", ["a text", "another text"])
    marker = tmp_path / "asked"
    asks = _command(f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x'); print(1); print(2)")
    cases = [
        (_cfg(tmp_path, asks, inp, task_type="regression", min_confidence=0.9),
         "min_confidence keeps confident class predictions; teacher command .* is a regression task"),
        (_cfg(tmp_path, asks, inp, task_type="multilabel"), "answers label sets .*: set label_names"),
        (_cfg(tmp_path, asks, inp, task_type="regression", label_names=["low", "high"]),
         "answers one score per example .* label_names names 2"),
        (_cfg(tmp_path, "openai:http://127.0.0.1:9/v1", inp, task_type="regression", teacher_model="m",
              label_names=["a", "b"]), "openai: chat teacher answers one class per example, not task_type regression"),
        (_cfg(tmp_path, str(regression_teacher), inp, task_type="classification", device="cpu"),
         "task_type is classification, but teacher model .* is a regression task .*its head decides"),
    ]
    for cfg, message in cases:
        with pytest.raises(KDistillError, match=message) as err:
            label_file(cfg)
        assert "\n" not in str(err.value)
    assert not marker.exists()
    with pytest.raises(KDistillError, match="not task_type multilabel"):
        make_source("openai:http://127.0.0.1:9/v1", label_names=EMOTIONS, task_type="multilabel")
    with pytest.raises(KDistillError, match="task_type 'token_classification' is not one kdistill label serves"):
        CommandTeacher("cat", task_type="token_classification")
    # a model teacher's own head is its task type when task_type agrees or is left out
    assert make_source(str(regression_teacher), task_type="regression", device="cpu").task.name == "regression"


def test_cli_label_with_task_type_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = str(_texts(tmp_path / "in.txt", ["one", "three"]))
    out = str(tmp_path / "o.jsonl")
    teacher = _command(ONE_BAD, "0", '{"score": 2.5}')
    assert main(["label", "--teacher", teacher, "--input", inp, "--out", out, "--task_type", "regression"]) == 0
    assert [r["label"] for r in _rows(out)] == [2.5, 2.5] and "| scores | mean 2.500" in capsys.readouterr().out
    for args, start in (
            (["--task_type", "multilabel"], "kdistill: error: teacher command"),
            (["--task_type", "token_classification"], "kdistill: error:"),
            (["--task_type", "regression", "--teacher", "openai:http://127.0.0.1:9/v1", "--teacher_model", "m",
              "--label_names", "[a, b]"], "kdistill: error: an openai: chat teacher answers one class")):
        code = main(["label", "--teacher", teacher, "--input", inp, "--out", str(tmp_path / "x.jsonl"), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(start) and err.count("\n") == 1, (args, err)
