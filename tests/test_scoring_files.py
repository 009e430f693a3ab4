"""Scoring a trained model on a lone local test file, and JSON-array data files.

`kdistill evaluate --model m --test-file t.csv` must score `t.csv` (it once fell back to the default shipped task,
SST-2, and ignored the file), mapping text labels through the model's own `id2label`: a test file need not hold
every class, so its sorted labels cannot name the classes. Training commands refuse a test file without a
training file instead of ignoring it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_tiny_bert

from kdistill import api, cli
from kdistill.config import DataConfig, EvaluateConfig
from kdistill.data import load_task_data
from kdistill.errors import KDistillError

TEXTS = ["a fine film", "great acting", "lovely score", "moving and warm", "a joy", "well made", "bright"]


@pytest.fixture(scope="module")
def named_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("named") / "m", num_layers=1, label_names=["negative", "positive"])


def _csv(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return str(path)


def test_a_lone_test_file_is_scored_with_the_models_class_names(tmp_path: Path, named_model: Path) -> None:
    test = _csv(tmp_path / "test.csv", [(t, "positive") for t in TEXTS])  # one class only: "positive" is id 1
    lone = api.evaluate(EvaluateConfig(model=str(named_model), speed=False,
                                       data={"task": None, "test_file": test, "max_length": 16}))
    named = api.evaluate(EvaluateConfig(model=str(named_model), speed=False, split="test", data={
        "task": None, "train_file": test, "test_file": test, "label_names": ["negative", "positive"],
        "max_length": 16}))
    assert lone["model"]["split"] == "test" and lone["task"] == "test"
    assert lone["model"]["score"] == pytest.approx(named["model"]["score"])
    # 7 examples of one class: read as id 0 (sorted names of the file) the accuracy would be 1 - this one
    data = load_task_data(DataConfig(task=None, test_file=test, label_names=["negative", "positive"]), scoring=True)
    assert list(data.splits["test"]["label"]) == [1] * len(TEXTS) and data.label_names == ["negative", "positive"]


def test_the_default_task_does_not_hide_a_lone_test_file(tmp_path: Path, named_model: Path) -> None:
    test = _csv(tmp_path / "mine.csv", [(t, "positive") for t in TEXTS])
    result = api.evaluate(EvaluateConfig(model=str(named_model), speed=False, data={"test_file": test,
                                                                                    "max_length": 16}))
    assert result["task"] == "mine"  # not the default task's (sst2) 872 dev sentences


def test_training_refuses_a_test_file_without_a_training_file(tmp_path: Path, named_model: Path, capsys) -> None:
    test = _csv(tmp_path / "test.csv", [(t, "positive") for t in TEXTS])
    code = cli.main(["finetune", "--model", str(named_model), "--test-file", test, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data.test_file without data.train_file" in err, err
    assert not (tmp_path / "o").exists()


def test_test_files_do_not_go_with_a_dataset() -> None:
    with pytest.raises(ValueError, match="go with data.train_file, not data.dataset"):
        DataConfig(dataset="glue", test_file="t.csv")


@pytest.mark.parametrize("layout", ["objects", "arrays"])
def test_a_json_array_of_records_reads_like_jsonl(tmp_path: Path, layout: str) -> None:
    rows = [(t, i % 2) for i, t in enumerate(TEXTS)]
    records = ([{"sentence": t, "label": y} for t, y in rows] if layout == "objects" else [[t, y] for t, y in rows])
    whole = tmp_path / "train.json"
    whole.write_text(json.dumps(records), encoding="utf-8")  # one line, as pandas' to_json(orient="records")
    lines = tmp_path / "train.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    a = load_task_data(DataConfig(task=None, train_file=str(whole), validation_fraction=0.3))
    b = load_task_data(DataConfig(task=None, train_file=str(lines), validation_fraction=0.3))
    for split in ("train", "validation"):
        assert a.splits[split].to_dict() == b.splits[split].to_dict()
    assert sorted([*a.splits["train"]["text_a"], *a.splits["validation"]["text_a"]]) == sorted(TEXTS)


@pytest.mark.parametrize(("content", "message"), [
    ('[{"sentence": {"a": 1}, "label": "pos"}, {"sentence": "fine", "label": "neg"}]',
     "line 1: text column 'sentence' holds a JSON object, not text"),
    ('{"sentence": ["a", "b"], "label": ["pos", "neg"]}', "text column 'sentence' holds a JSON array, not text"),
    ('{"sentence": {"0": "a", "1": "b"}, "label": {"0": "pos", "1": "neg"}}',
     "holds one JSON object of columns (sentence, label), not rows"),
    ("[1, 2, 3]", "is a JSON array of 3 values, not rows"),
])
def test_json_that_is_not_rows_of_text_is_refused_in_one_line(tmp_path: Path, capsys, content: str,
                                                               message: str) -> None:
    f = tmp_path / "train.json"
    f.write_text(content, encoding="utf-8")
    code = cli.main(["finetune", "--task", "null", "--train-file", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_folder_given_as_a_file_says_so(tmp_path: Path, capsys) -> None:
    (tmp_path / "d").mkdir()
    cases = ((["finetune", "--task", "null", "--train-file", str(tmp_path / "d")], "is a folder, not a data file"),
             (["finetune", "--config", str(tmp_path / "d")], "is a folder, not a YAML file"))
    for argv, message in cases:
        assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_errors_in_a_lone_test_file_name_the_test_split_and_the_models_classes(tmp_path: Path, named_model: Path,
                                                                             capsys) -> None:
    cases = (([("a fine film", "positive"), ("", "negative")], "1 such row(s) in the test split"),
             ([("a fine film", "positive"), ("dull", "meh")], "label 'meh' in "),
             )
    for rows, message in cases:
        test = _csv(tmp_path / "t.csv", rows)
        code = cli.main(["evaluate", "--model", str(named_model), "--test-file", test, "--speed", "false"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert "is not one of the named classes (negative, positive)" in err


def test_a_lone_test_file_is_read_as_the_models_head_reads_it(tmp_path: Path, named_model: Path) -> None:
    # whole-number scores read alone would be classes; for a regression model they are scores
    reg = make_tiny_bert(tmp_path / "reg", num_layers=1, num_labels=1, problem_type="regression")
    test = _csv(tmp_path / "ints.csv", [(t, str(i % 5)) for i, t in enumerate(TEXTS)])
    result = api.evaluate(EvaluateConfig(model=str(reg), speed=False, data={"task": None, "test_file": test,
                                                                             "max_length": 16}))
    assert result["model"]["metric"] == "pearson" and set(result["model"]["metrics"]) == {"pearson", "spearman"}
    # decimal scores for a classifier: refused as labels outside its classes, not as "label_names names 2"
    scores = _csv(tmp_path / "scores.csv", [(t, f"{i / 3:.2f}") for i, t in enumerate(TEXTS)])
    with pytest.raises(KDistillError, match=r"label '0.00' in .*scores.csv line 2 is not one of the named classes "
                                            r"\(negative, positive\)"):
        api.evaluate(EvaluateConfig(model=str(named_model), speed=False, data={"task": None, "test_file": scores,
                                                                               "max_length": 16}))
