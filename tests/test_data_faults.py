"""Missing cells in CSV/TSV files ("NaN", "null", "None", ""): refused or dropped like a JSONL null, text and label.

pandas and `datasets` read such cells as NaN/None while Python's csv module keeps the word; kdistill must neither
train on the text "NaN" nor accept a row without a label, whichever source the file goes through.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdistill.answers import read_examples
from kdistill.cells import is_missing
from kdistill.cli import main
from kdistill.config import DataConfig
from kdistill.data import TaskData, load_task_data
from kdistill.errors import KDistillError

GOOD = ["a fine film", "dull and slow", "great acting", "weak plot", "lovely score", "tedious", "moving", "flat"]


def _table(path: Path, header: list[str], rows: list[list[str]]) -> str:
    sep = "\t" if path.suffix == ".tsv" else ","
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def _texts(d: TaskData) -> list[str]:
    return sorted(t for s in d.splits.values() for t in s["text_a"])


@pytest.mark.parametrize("marker", ["NaN", "nan", "null", "None", "", "NULL", "  NaN  "])
@pytest.mark.parametrize("ext", ["csv", "tsv"])
def test_a_missing_text_cell_is_refused_naming_file_line_column_and_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], marker: str, ext: str) -> None:
    rows = [[t, str(i % 2)] for i, t in enumerate(GOOD)]
    rows[2][0] = rows[5][0] = marker  # file lines 4 and 7
    path = _table(tmp_path / f"train.{ext}", ["review", "label"], rows)
    cfg = DataConfig(task=None, train_file=path, text_columns=["review"], validation_fraction=0.25)
    with pytest.raises(KDistillError) as err:
        load_task_data(cfg)
    assert str(err.value) == (f"{path} line 4: empty, null or NaN text (text_a); 2 such row(s) in the train split "
                              "(column 'review': 2): fix them, or set --data.skip_empty true to drop them")
    d = load_task_data(cfg.model_copy(update={"skip_empty": True}))
    assert _texts(d) == sorted(t for i, t in enumerate(GOOD) if i not in (2, 5))
    assert "dropped 2 of 8 train rows with empty, null or NaN text or label" in capsys.readouterr().out


def test_csv_markers_and_jsonl_nulls_give_the_same_rows_and_errors(tmp_path: Path) -> None:
    texts: list[str | float | None] = list(GOOD)
    texts[1], texts[6] = None, float("nan")
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t, "label": i % 2}) for i, t in enumerate(texts)) + "\n")
    csv = _table(tmp_path / "t.csv", ["text", "label"],
                 [["null" if t is None else "NaN" if t != t else t, str(i % 2)] for i, t in enumerate(texts)])
    for path in (str(jl), csv):
        with pytest.raises(KDistillError, match=r"line [23]: empty, null or NaN text \(text_a\); 2 such row"):
            load_task_data(DataConfig(task=None, train_file=path))
    kept = [_texts(load_task_data(DataConfig(task=None, train_file=p, skip_empty=True, validation_fraction=0.3)))
            for p in (str(jl), csv)]
    assert kept[0] == kept[1] == sorted(t for i, t in enumerate(GOOD) if i not in (1, 6))


@pytest.mark.parametrize("marker", ["NaN", "null", "None", ""])
def test_a_missing_label_cell_is_refused_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       marker: str) -> None:
    rows = [[t, "pos" if i % 2 else "neg"] for i, t in enumerate(GOOD)]
    rows[3][1] = marker  # line 5
    path = _table(tmp_path / "train.csv", ["sentence", "sentiment"], rows)
    cfg = DataConfig(task=None, train_file=path, label_column="sentiment", validation_fraction=0.25)
    with pytest.raises(KDistillError) as err:
        load_task_data(cfg)
    assert str(err.value) == (f"{path} line 5: empty label (empty, null or NaN); 1 such row(s) in the train split "
                              "(column 'sentiment': 1): fix them, or set --data.skip_empty true to drop them")
    d = load_task_data(cfg.model_copy(update={"skip_empty": True}))
    assert d.label_names == ["neg", "pos"]  # "NaN" never becomes a class
    assert _texts(d) == sorted(t for i, t in enumerate(GOOD) if i != 3)
    assert "dropped 1 of 8 train rows" in capsys.readouterr().out


def test_pairs_headerless_files_and_validation_files_name_their_column(tmp_path: Path) -> None:
    pair = _table(tmp_path / "p.tsv", ["sentence1", "sentence2", "label"],
                  [["a", "b", "1"], ["c", "None", "0"], ["NaN", "f", "1"], ["g", "h", "0"]])
    with pytest.raises(KDistillError, match=r"p.tsv line 3: empty, null or NaN text \(text_b\); 2 such row\(s\) in "
                                            r"the train split \(column 'sentence1': 1, column 'sentence2': 1\)"):
        load_task_data(DataConfig(task=None, train_file=pair))
    bare = _table(tmp_path / "bare.csv", ["x", "1"], [["y", "0"], ["null", "1"], ["z", "null"]])
    with pytest.raises(KDistillError, match=r"bare.csv line 3: empty, null or NaN text \(text_a\); 2 such row\(s\) "
                                            r"in the train split \(column 0: 1, column 1: 1\)"):
        load_task_data(DataConfig(task=None, train_file=bare, header=False))
    train = _table(tmp_path / "train.csv", ["sentence", "label"], [[t, str(i % 2)] for i, t in enumerate(GOOD)])
    val = _table(tmp_path / "val.csv", ["sentence", "label"], [["ok", "1"], ["nan", "0"]])
    with pytest.raises(KDistillError, match=r"val.csv line 3: .* in the validation split \(column 'sentence': 1\)"):
        load_task_data(DataConfig(task=None, train_file=train, validation_file=val))


def test_real_words_are_not_taken_for_missing_values(tmp_path: Path) -> None:
    words = ["none", "NaN bread", "null and void", "None of it worked", "nan", "Null"]
    assert [is_missing(w) for w in words] == [False, False, False, False, True, True]
    assert [is_missing(v) for v in (0, 0.0, False, None, float("nan"), " \t")] == [False] * 3 + [True] * 3
    path = _table(tmp_path / "t.csv", ["sentence", "label"], [[w, str(i % 2)] for i, w in enumerate(words[:4])])
    d = load_task_data(DataConfig(task=None, train_file=path, validation_fraction=0.25))
    assert _texts(d) == sorted(words[:4])


def test_label_input_refuses_missing_text_cells_before_asking_the_teacher(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    inp = _table(tmp_path / "in.csv", ["id", "sentence"], [["1", "fine"], ["2", "NaN"], ["3", "ok"], ["4", "null"]])
    with pytest.raises(KDistillError) as err:
        read_examples(inp)
    assert str(err.value) == (f"{inp} line 3: empty or missing text in column 'sentence' (empty, null or NaN); "
                              "2 such row(s) in the file: fix or remove them")
    (tmp_path / "kd_cells_teacher.py").write_text(
        "ASKED = []\ndef teach(reqs):\n    ASKED.extend(reqs)\n    return [1 for _ in reqs]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["label", "--teacher", "python:kd_cells_teacher:teach", "--input", inp,
                 "--out", str(tmp_path / "o.jsonl")])
    err_text = capsys.readouterr().err
    import kd_cells_teacher  # the module the teacher spec imported

    assert code == 2 and err_text.count("\n") == 1 and "in.csv line 3: empty or missing text" in err_text
    assert kd_cells_teacher.ASKED == [] and not (tmp_path / "o.jsonl").exists()


def test_doc_stride_on_a_task_without_windows_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(8)))
    cfg = DataConfig(task=None, train_file=str(path), validation_fraction=0.25)
    assert len(load_task_data(cfg).splits["train"]) == 6  # without the flag the same file loads
    with pytest.raises(KDistillError, match="data.doc_stride applies to question answering only"):
        load_task_data(cfg.model_copy(update={"doc_stride": 32}))


def test_a_stray_label_value_is_named_with_its_count_when_the_model_has_fewer_classes(tmp_path: Path) -> None:
    from kdistill.labels import check_labels

    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{'NA' if i == 5 else i % 2}\n" for i in range(12)))
    data = load_task_data(DataConfig(task=None, train_file=str(path), validation_fraction=0.25))
    with pytest.raises(KDistillError, match=r"data has 3 classes \(0: 6 rows, 1: 5 rows, NA: 1 row\), model 'm' "
                                            r"has 2: a stray label value"):
        check_labels(data, 2, model_name="m")
