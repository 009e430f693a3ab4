"""Reading SQuAD v1.1 JSON and JSONL rows (`kdistill.tasks.qa_data`): the shipped files, and bad input refused in
one line that names the file and the question."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from kdistill.errors import KDistillError
from kdistill.tasks.qa_data import QAExample, from_columns, parse_rows, parse_squad, read_squad, to_columns
from kdistill.tasks.shipped import DATA_DIR

CONTEXT = "Denver Broncos beat the Carolina Panthers 24-10 in Santa Clara."
SQUAD: dict[str, Any] = {"version": "1.1", "data": [{"title": "Super_Bowl", "paragraphs": [{
    "context": CONTEXT,
    "qas": [
        {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0},
                                                         {"text": "Broncos", "answer_start": 7}]},
        {"id": "q2", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 51}]},
    ]}]}]}


def write(tmp_path: Path, obj: Any, name: str = "qa.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def one_line_error(path: Path, **kw: Any) -> str:
    with pytest.raises(KDistillError) as err:
        read_squad(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_reads_nested_squad_json(tmp_path: Path) -> None:
    examples = read_squad(write(tmp_path, SQUAD))
    assert examples == [
        QAExample("q1", "Who won?", CONTEXT, ("Denver Broncos", "Broncos"), (0, 7), "Super_Bowl"),
        QAExample("q2", "Where?", CONTEXT, ("Santa Clara",), (51,), "Super_Bowl"),
    ]


def test_reads_jsonl_rows_in_hf_layout_and_round_trips_columns(tmp_path: Path) -> None:
    rows = [{"id": "q1", "question": "Who won?", "context": CONTEXT,
             "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}},
            {"id": "q2", "question": "Where?", "context": CONTEXT, "title": "t",
             "answers": [{"text": "Santa Clara", "answer_start": 51}]}]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    examples = read_squad(path)
    assert [e.id for e in examples] == ["q1", "q2"]
    assert examples[0].answers == ("Denver Broncos", "Broncos") and examples[0].answer_starts == (0, 7)
    assert examples[1].title == "t" and examples[1].answers == ("Santa Clara",)
    # the same examples survive a trip through a datasets.Dataset in HF squad layout
    ds = datasets.Dataset.from_dict(to_columns(examples))
    assert from_columns(ds[:]) == examples


def test_shipped_squad_files_read_whole() -> None:
    dev = read_squad(DATA_DIR / "squad" / "dev.json")
    assert len(dev) == 10570 and sum(len(e.answers) for e in dev) == 34726
    assert dev[0].id == "56be4db0acb8001400a502ec" and dev[0].answers[0] == "Denver Broncos"
    train = read_squad(DATA_DIR / "squad" / "train.json")
    assert len(train) == 4371 and all(len(e.answers) == 1 for e in train)
    assert not {e.title for e in train} & {e.title for e in dev}


def broken(edit: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SQUAD)
    edit(obj["data"][0]["paragraphs"][0])
    return obj


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda p: p["qas"][1]["answers"][0].update(answer_start=50), "question 'q2': answer 0 'Santa Clara' is not at "
                                                                  "context[50:], which reads ' Santa Clar'"),
    (lambda p: p["qas"][1]["answers"][0].update(text="Santa Barbara"), "question 'q2': answer 0 'Santa Barbara'"),
    (lambda p: p["qas"][1]["answers"][0].update(answer_start=500), "context[500:], which reads nothing"),
    (lambda p: p["qas"][1]["answers"][0].update(answer_start="51"), "question 'q2': answer 0 has answer_start '51'"),
    (lambda p: p["qas"][1].update(answers=[]), "question 'q2' has no answers"),
    (lambda p: p["qas"][1].update(answers=[], is_impossible=True), "unanswerable SQuAD 2.0 question"),
    (lambda p: p["qas"][1].pop("answers"), "question 'q2': field 'answers' is missing"),
    (lambda p: p["qas"][1].pop("question"), "question 'q2': field 'question' is missing"),
    (lambda p: p["qas"][1].update(question="  "), "question 'q2': field 'question' is empty"),
    (lambda p: p.pop("context"), "question 'q1': field 'context' is missing"),
    (lambda p: p["qas"][1]["answers"][0].pop("text"), "question 'q2': answer 0 needs fields 'text' and "
                                                       "'answer_start'"),
    (lambda p: p["qas"][1].pop("id"), "article 0 paragraph 0 question 1 has no question id"),
    (lambda p: p["qas"][1].update(id="q1"), "question id 'q1' appears more than once"),
])
def test_bad_question_is_one_line_naming_file_and_question(tmp_path: Path, edit: Any, expected: str) -> None:
    path = write(tmp_path, broken(edit))
    msg = one_line_error(path)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg


def test_questions_without_answers_pass_when_not_required(tmp_path: Path) -> None:
    obj = broken(lambda p: [qa.pop("answers") for qa in p["qas"]])
    examples = read_squad(write(tmp_path, obj), require_answers=False)
    assert [e.answers for e in examples] == [(), ()]


@pytest.mark.parametrize(("content", "expected"), [
    ({"sentence": "a", "label": 1}, "is not SQuAD JSON"),
    ([{"id": "q1"}], "is not SQuAD JSON"),
    ({"data": [{"title": "x"}]}, "article 0 has no \"paragraphs\" list"),
    ({"data": []}, "holds no questions"),
])
def test_non_squad_json_is_refused(tmp_path: Path, content: Any, expected: str) -> None:
    path = write(tmp_path, content)
    msg = one_line_error(path)
    assert str(path) in msg and expected in msg, msg


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [', encoding="utf-8")
    assert "is not valid JSON (line 1" in one_line_error(bad)
    assert "QA data file not found" in one_line_error(tmp_path / "missing.json")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "a", "question": "Who?", "context": CONTEXT,
                                "answers": {"text": ["Denver"], "answer_start": [0]}}) + "\n"
                    + json.dumps({"question": "Who?", "context": CONTEXT}) + "\n", encoding="utf-8")
    assert one_line_error(rows) == f"{rows}: line 2 has no question id (field 'id')"
    rows.write_text("{not json}\n", encoding="utf-8")
    assert one_line_error(rows).startswith(f"{rows}:1: not a JSON object")


def test_parse_functions_name_their_source() -> None:
    with pytest.raises(KDistillError, match=r"^my rows: question 'x': answer 0 'Broncos' is not at context\[0:\]"):
        parse_rows([{"id": "x", "question": "Who?", "context": CONTEXT,
                     "answers": {"text": ["Broncos"], "answer_start": [0]}}], "my rows")
    with pytest.raises(KDistillError, match=r"^my rows: question 'x': 'answers' has 2 texts but 1 answer_start"):
        parse_rows([{"id": "x", "question": "Who?", "context": CONTEXT,
                     "answers": {"text": ["Denver", "Broncos"], "answer_start": [0]}}], "my rows")
    assert len(parse_squad(SQUAD, "obj")) == 2
