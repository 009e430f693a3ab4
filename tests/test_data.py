"""Data loading, label handling, tokenisation cache and batching, with a tiny offline tokenizer."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
from transformers import BertTokenizerFast

from kdistill import data as kd
from kdistill import tokenized
from kdistill.config import DataConfig
from kdistill.data import TASKS, load_task_data
from kdistill.errors import KDistillError
from kdistill.labels import check_labels
from kdistill.tokenized import make_loader, tokenize_splits

DATA = Path(kd.__file__).parent / "datasets"


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


def make_tokenizer(folder: Path, words: int = 300) -> BertTokenizerFast:
    """WordPiece vocab of the most common SST-2 words; no hub access needed."""
    counts = Counter(w for row in _rows(DATA / "sst2" / "train.tsv") for w in row[0].lower().split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in counts.most_common(words)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BertTokenizerFast:
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def sst2_small() -> kd.TaskData:
    return load_task_data(DataConfig(task="sst2", max_train_examples=64, max_eval_examples=32))


def col(ds: datasets.Dataset, name: str) -> list:
    return list(ds[name])


def both(d: kd.TaskData, name: str) -> list:
    """A column over train + carved validation, i.e. over every row of the train file."""
    return col(d.splits["train"], name) + col(d.splits["validation"], name)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- shipped tasks


@pytest.mark.parametrize("task,n_train,n_test,pair,metric", [
    ("sst2", 6920, 1821, False, "accuracy"),
    ("cola", 8551, 516, False, "matthews"),
    ("mrpc", 3668, 408, True, "f1"),
    ("rte", 2490, 277, True, "accuracy"),
])
def test_shipped_tasks(task: str, n_train: int, n_test: int, pair: bool, metric: str) -> None:
    d = load_task_data(DataConfig(task=task))
    assert set(d.splits) == {"train", "validation", "test"}
    assert len(d.splits["train"]) + len(d.splits["validation"]) == n_train
    assert len(d.splits["validation"]) == round(n_train * 0.1)
    assert len(d.splits["test"]) == n_test
    assert d.is_pair is pair and d.metric == metric and d.num_labels == 2
    assert d.label_names == list(TASKS.get(task).label_names)
    cols = ["text_a", "text_b", "label"] if pair else ["text_a", "label"]
    assert d.splits["train"].column_names == cols
    assert set(col(d.splits["test"], "label")) == {0, 1}


def test_rte_label_names_and_first_row() -> None:
    d = load_task_data(DataConfig(task="rte"))
    assert d.label_names == ["entailment", "not_entailment"]
    first = _rows(DATA / "rte" / "dev.tsv")[0]
    assert d.splits["test"][0] == {"text_a": first[0], "text_b": first[1], "label": int(first[2])}


def test_carve_is_deterministic_and_disjoint() -> None:
    a = load_task_data(DataConfig(task="sst2", seed=1))
    b = load_task_data(DataConfig(task="sst2", seed=1))
    c = load_task_data(DataConfig(task="sst2", seed=2))
    assert col(a.splits["validation"], "text_a") == col(b.splits["validation"], "text_a")
    assert col(a.splits["validation"], "text_a") != col(c.splits["validation"], "text_a")
    file_rows = Counter((r[0], int(r[1])) for r in _rows(DATA / "sst2" / "train.tsv"))
    tr, va = a.splits["train"], a.splits["validation"]
    carved = Counter(zip(col(tr, "text_a"), col(tr, "label"), strict=True)) + Counter(
        zip(col(va, "text_a"), col(va, "label"), strict=True))
    assert carved == file_rows  # every row lands on exactly one side


def test_truncation_after_carving() -> None:
    full = load_task_data(DataConfig(task="mrpc"))
    d = load_task_data(DataConfig(task="mrpc", max_train_examples=50, max_eval_examples=20))
    assert [len(d.splits[s]) for s in ("train", "validation", "test")] == [50, 20, 20]
    assert col(d.splits["train"], "text_a") == col(full.splits["train"], "text_a")[:50]
    assert col(d.splits["validation"], "text_b") == col(full.splits["validation"], "text_b")[:20]


def test_unknown_task() -> None:
    with pytest.raises(KDistillError, match="unknown task 'nope'.*sst2"):
        load_task_data(DataConfig(task="nope"))


# ---------------------------------------------------------------- local files


def test_csv_header_by_names_string_labels(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", 'id,review,sentiment\n1,"good, really",pos\n2,bad,neg\n'
                  '3,,pos\n4,fine,neu\n5,awful,neg\n6,ok,pos\n')
    test = write(tmp_path / "test.csv", "id,review,sentiment\n9,great,pos\n")
    cfg = DataConfig(task=None, train_file=train, test_file=test, text_columns=["review"],
                     label_column="sentiment", validation_fraction=0.2)
    with pytest.raises(KDistillError, match=r"train.csv line 4: empty, null or NaN text \(text_a\); 1 such row"):
        load_task_data(cfg)
    d = load_task_data(cfg.model_copy(update={"skip_empty": True}))
    assert d.label_names == ["neg", "neu", "pos"] and not d.is_pair and d.metric == "accuracy"
    got = dict(zip(both(d, "text_a"), both(d, "label"), strict=True))
    assert got == {"good, really": 2, "bad": 0, "fine": 1, "awful": 0, "ok": 2}
    assert d.splits["test"][0] == {"text_a": "great", "label": 2}


def test_csv_default_columns(tmp_path: Path) -> None:
    train = write(tmp_path / "t.csv", "sentence1,sentence2,label,extra\na,b,1,x\nc,d,0,y\ne,f,1,z\n")
    d = load_task_data(DataConfig(task=None, train_file=train, metric="f1"))
    assert d.is_pair and d.metric == "f1" and d.label_names == ["0", "1"]
    assert len(d.splits["train"]) + len(d.splits["validation"]) == 3


def test_tsv_no_header_by_indices(tmp_path: Path) -> None:
    train = write(tmp_path / "train.tsv", "1\tpremise one\thyp one\n0\tpremise two\thyp two\n"
                  "1\tp3\th3\n0\tp4\th4\n")
    val = write(tmp_path / "val.tab", "0\tvp\tvh\n")
    d = load_task_data(DataConfig(task=None, train_file=train, validation_file=val,
                                  text_columns=[1, 2], label_column=0))
    assert d.is_pair and len(d.splits["train"]) == 4 and "test" not in d.splits
    assert d.splits["train"][0] == {"text_a": "premise one", "text_b": "hyp one", "label": 1}
    assert d.splits["validation"][0] == {"text_a": "vp", "text_b": "vh", "label": 0}


def test_header_detected_with_indices(tmp_path: Path) -> None:
    train = write(tmp_path / "train.tsv", "text\tlabel\nfoo\t0\nbar\t1\nbaz\t1\n")
    d = load_task_data(DataConfig(task=None, train_file=train, validation_fraction=0.3))
    assert sorted(both(d, "text_a")) == ["bar", "baz", "foo"]  # the "text/label" row is a header
    no_head = write(tmp_path / "nohead.tsv", "foo\t0\nbar\t1\nbaz\t1\n")
    d = load_task_data(DataConfig(task=None, train_file=no_head, validation_fraction=0.3))
    assert len(d.splits["train"]) + len(d.splits["validation"]) == 3


def test_forced_header_and_json_objects_by_index(tmp_path: Path) -> None:
    train = write(tmp_path / "t.tsv", "whatever\t0\nfoo\t0\nbar\t1\n")
    d = load_task_data(DataConfig(task=None, train_file=train, header=True, text_columns=[0],
                                  label_column=1, validation_fraction=0.4))
    assert sorted(both(d, "text_a")) == ["bar", "foo"]
    objs = write(tmp_path / "o.jsonl", '{"y": "a", "x": "t1"}\n{"y": "b", "x": "t2"}\n')
    d = load_task_data(DataConfig(task=None, train_file=objs, text_columns=[1], label_column=0,
                                  validation_fraction=0.5))
    assert sorted(both(d, "text_a")) == ["t1", "t2"] and d.label_names == ["a", "b"]


def test_integer_labels_are_ids_even_with_a_class_missing(tmp_path: Path) -> None:
    train = write(tmp_path / "t.tsv", "a\t3\nb\t1\nc\t3\nd\t1\ne\t7\n")
    d = load_task_data(DataConfig(task=None, train_file=train, header=False, validation_fraction=0.2))
    assert d.label_names == [str(i) for i in range(8)]
    got = dict(zip(both(d, "text_a"), both(d, "label"), strict=True))
    assert got == {"a": 3, "b": 1, "c": 3, "d": 1, "e": 7}
    # labels 0 and 2 for a 3-class model: 2 stays 2 (it used to become 1), and the model fits
    train = write(tmp_path / "u.csv", "sentence,label\nx,0\ny,2\nz,2\nw,0\n")
    d = load_task_data(DataConfig(task=None, train_file=train, validation_fraction=0.25))
    assert d.label_names == ["0", "1", "2"] and sorted(both(d, "label")) == [0, 0, 2, 2]
    check_labels(d, 3, {0: "neg", 1: "neu", 2: "pos"}, model_name="m")
    # negative integers cannot be ids: they keep their order
    train = write(tmp_path / "v.csv", "sentence,label\nx,-1\ny,1\nz,1\nw,-1\n")
    d = load_task_data(DataConfig(task=None, train_file=train, validation_fraction=0.25))
    assert d.label_names == ["-1", "1"] and sorted(both(d, "label")) == [0, 0, 1, 1]


def test_a_model_with_more_named_classes_than_the_data_is_refused(sst2_small) -> None:
    with pytest.raises(KDistillError, match=r"model 'big' has 3 classes \(a, b, c\), the data has 2 "
                                           r"\(negative, positive\): give data.label_names"):
        check_labels(sst2_small, 3, {0: "a", 1: "b", 2: "c"}, model_name="big")
    check_labels(sst2_small, 2, {0: "negative", 1: "positive"})


@pytest.mark.parametrize("rows,pattern", [
    ([{"text": "fine", "label": 1}, {"text": None, "label": 0}], r"line 2: empty, null or NaN text"),
    ([{"text": "fine", "label": 1}, {"text": float("nan"), "label": 0}], r"line 2: empty, null or NaN text"),
    ([{"text": "fine", "label": 1}, {"text": "   ", "label": 0}], r"line 2: empty, null or NaN text"),
])
def test_empty_null_and_nan_texts_are_refused_or_skipped(tmp_path: Path, rows: list, pattern: str) -> None:
    rows = rows + [{"text": f"t{i}", "label": i % 2} for i in range(6)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(KDistillError, match=pattern):
        load_task_data(DataConfig(task=None, train_file=str(path)))
    d = load_task_data(DataConfig(task=None, train_file=str(path), skip_empty=True, validation_fraction=0.2))
    assert len(d.splits["train"]) + len(d.splits["validation"]) == len(rows) - 1
    assert all(t.strip() for t in both(d, "text_a"))


def test_empty_second_text_of_a_pair_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\nc\t\t0\ne\tf\t1\n")
    with pytest.raises(KDistillError, match=r"p.tsv line 3: empty, null or NaN text \(text_b\)"):
        load_task_data(DataConfig(task=None, train_file=path))


def test_jsonl_objects_and_arrays(tmp_path: Path) -> None:
    objs = [{"text": "nice", "label": "yes"}, {"text": "so so", "label": "no"}, {"text": "meh", "label": "no"}]
    train = write(tmp_path / "t.jsonl", "\n".join(json.dumps(o) for o in objs) + "\n\n")
    d = load_task_data(DataConfig(task=None, train_file=train, validation_fraction=0.3))
    assert d.label_names == ["no", "yes"]
    assert sorted(both(d, "text_a")) == ["meh", "nice", "so so"]
    arrs = write(tmp_path / "a.json", "\n".join(json.dumps(r) for r in [[1, "x"], [0, "y"], [1, "z"]]))
    d = load_task_data(DataConfig(task=None, train_file=arrs, text_columns=[1], label_column=0,
                                  validation_fraction=0.3))
    assert d.label_names == ["0", "1"]
    assert sorted(both(d, "text_a")) == ["x", "y", "z"]


@pytest.mark.parametrize("kwargs,content,pattern", [
    ({"train_file": "MISSING"}, None, "data file not found: .*missing.csv"),
    ({"text_columns": ["review"]}, "sentence,label\na,1\nb,0\n",
     r"column 'review' not found in .*t.csv \(available: sentence, label\)"),
    ({"label_column": "gold"}, "sentence,label\na,1\nb,0\n", "column 'gold' not found"),
    ({"text_columns": [5]}, "a,1\nb,0\n", "column index 5 out of range for .*t.csv"),
    ({}, "", "data file is empty: .*t.csv"),
    ({}, "sentence,label\na,1\nb\n", r"t.csv line 3: row has 1 cells, the header has 2"),
    ({}, "sentence,label\na,1\nb,0,extra\n", r"t.csv line 3: row has 3 cells, the header has 2"),
    ({"header": False}, "a,1\nb,0,extra\n", r"t.csv line 2: row has 3 cells, the first row has 2"),
    ({}, "sentence,label\na,1\nb,\n", "t.csv line 3: empty label"),
    ({}, "review,score\na,1\n", r"no text column found .*available: review, score"),
    ({"header": False, "text_columns": ["sentence"]}, "a,1\nb,0\n", "has no header row"),
    ({"text_columns": [1]}, "a,1\nb,0\n", "used as both text and label"),
])
def test_file_errors(tmp_path: Path, kwargs: dict, content: str | None, pattern: str) -> None:
    path = tmp_path / "t.csv"
    if content is not None:
        write(path, content)
    kwargs = {"train_file": str(path), **kwargs}
    if kwargs["train_file"] == "MISSING":
        kwargs["train_file"] = str(tmp_path / "missing.csv")
    with pytest.raises(KDistillError, match=pattern):
        load_task_data(DataConfig(task=None, **kwargs))


def test_unseen_label_and_bad_extension(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "sentence,label\na,pos\nb,neg\n")
    test = write(tmp_path / "test.csv", "sentence,label\nc,maybe\n")
    with pytest.raises(KDistillError, match=r"label 'maybe' in .*test.csv line 2 is not among the training"):
        load_task_data(DataConfig(task=None, train_file=train, test_file=test))
    with pytest.raises(KDistillError, match="unsupported data file type '.xlsx'"):
        load_task_data(DataConfig(task=None, train_file=write(tmp_path / "t.xlsx", "x")))


# ---------------------------------------------------------------- datasets folders


def test_dataset_dict_folder_with_classlabel(tmp_path: Path) -> None:
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["bad", "good"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["a", "b", "c", "d"], "label": [0, 1, 1, 0]}, feats),
        "validation": datasets.Dataset.from_dict({"sentence": ["e"], "label": [1]}, feats),
        "test": datasets.Dataset.from_dict({"sentence": ["f", "g"], "label": [-1, -1]}, feats),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    d = load_task_data(DataConfig(task=None, dataset=str(tmp_path / "dd")))
    assert d.label_names == ["bad", "good"] and d.metric == "accuracy"
    assert set(d.splits) == {"train", "validation"}  # unlabeled test (-1) dropped
    assert col(d.splits["train"], "label") == [0, 1, 1, 0] and d.splits["validation"][0]["text_a"] == "e"


def test_single_dataset_folder_by_names(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"q": ["x", "y", "z", "w"], "ans": ["p", "q", "r", "s"],
                                     "tag": ["no", "yes", "yes", "no"]})
    ds.save_to_disk(str(tmp_path / "one"))
    d = load_task_data(DataConfig(task=None, dataset=str(tmp_path / "one"), text_columns=["q", "ans"],
                                  label_column="tag", validation_fraction=0.25))
    assert d.is_pair and d.label_names == ["no", "yes"]
    assert len(d.splits["train"]) == 3 and len(d.splits["validation"]) == 1
    with pytest.raises(KDistillError, match=r"column 'nope' not found in dataset .*available: q, ans, tag"):
        load_task_data(DataConfig(task=None, dataset=str(tmp_path / "one"), text_columns=["nope"],
                                  label_column="tag"))


def test_dataset_load_failure(tmp_path: Path) -> None:
    with pytest.raises(KDistillError, match="could not load dataset .*nothing_here"):
        load_task_data(DataConfig(task=None, dataset=str(tmp_path / "nothing_here")))
    broken = tmp_path / "broken"
    broken.mkdir()
    write(broken / "state.json", "{not json")
    with pytest.raises(KDistillError, match="could not load dataset .*broken"):
        load_task_data(DataConfig(task=None, dataset=str(broken)))


# ---------------------------------------------------------------- tokenisation and batching


def test_tokenize_cache_hit(tmp_path: Path, tokenizer: BertTokenizerFast, sst2_small: kd.TaskData,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = tokenize_splits(sst2_small, tokenizer, max_length=16, cache_dir=str(cache))
    assert set(first) == {"train", "validation", "test"}
    assert first["train"].column_names == ["input_ids", "token_type_ids", "attention_mask", "labels"]
    assert col(first["train"], "labels") == col(sst2_small.splits["train"], "label")
    lengths = {len(x) for x in col(first["train"], "input_ids")}
    assert max(lengths) == 16 and len(lengths) > 1  # truncated, not padded
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 3 and not any(n.startswith(".") for n in entries)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache miss: tokenised again")

    monkeypatch.setattr(tokenized, "_tokenize", boom)
    second = tokenize_splits(sst2_small, tokenizer, max_length=16, cache_dir=str(cache))
    for split in first:
        assert second[split][:] == first[split][:]
    with pytest.raises(AssertionError, match="cache miss"):  # another max_length is another key
        tokenize_splits(sst2_small, tokenizer, max_length=17, cache_dir=str(cache))
    assert sorted(p.name for p in cache.iterdir()) == entries  # the failed write left nothing


def test_tokenize_pairs(tmp_path: Path, tokenizer: BertTokenizerFast) -> None:
    d = load_task_data(DataConfig(task="rte", max_train_examples=8, max_eval_examples=4))
    tok = tokenize_splits(d, tokenizer, max_length=24, cache_dir=str(tmp_path))
    ex = tok["train"][0]
    assert len(ex["input_ids"]) <= 24 and 1 in ex["token_type_ids"]
    assert ex["input_ids"].count(tokenizer.sep_token_id) == 2


def test_make_loader_pads_dynamically(tmp_path: Path, tokenizer: BertTokenizerFast,
                                      sst2_small: kd.TaskData) -> None:
    tok = tokenize_splits(sst2_small, tokenizer, max_length=64, cache_dir=str(tmp_path))
    loader = make_loader(tok["validation"], tokenizer, batch_size=8)
    lens = [len(x) for x in col(tok["validation"], "input_ids")]
    for i, batch in enumerate(loader):
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        longest = max(lens[i * 8:(i + 1) * 8])
        assert batch["input_ids"].shape == (min(8, len(lens) - i * 8), longest)
        assert batch["labels"].dtype == torch.long
        assert batch["attention_mask"].sum(1).tolist() == lens[i * 8:(i + 1) * 8]
    assert max(lens) < 64
    a = [b["labels"].tolist() for b in make_loader(tok["train"], tokenizer, 16, shuffle=True, seed=3)]
    b = [b["labels"].tolist() for b in make_loader(tok["train"], tokenizer, 16, shuffle=True, seed=3)]
    assert a == b and sum(len(x) for x in a) == 64


# ---------------------------------------------------------------- label checks


def test_check_labels(sst2_small: kd.TaskData) -> None:
    check_labels(sst2_small, 2)
    check_labels(sst2_small, 2, {0: "LABEL_0", 1: "LABEL_1"})
    check_labels(sst2_small, 2, {"0": "NEGATIVE", "1": "Positive"})
    rte = kd.TaskData("rte", ["entailment", "not_entailment"], "accuracy", True, {})
    check_labels(rte, 3, {0: "Entailment", 1: "not entailment", 2: "neutral"})
    with pytest.raises(KDistillError, match=r"data has 2 classes \(negative: \d+ rows, positive: \d+ rows\), model "
                                            r"'m' has 1"):
        check_labels(sst2_small, 1, model_name="m")
    with pytest.raises(KDistillError, match="label names differ"):
        check_labels(sst2_small, 2, {0: "positive", 1: "negative"})


def test_label_names_fix_the_class_order_of_text_labels(tmp_path: Path) -> None:
    """A pseudo-labelled file may lack a class; label_names keeps the teacher's ids anyway."""
    f = tmp_path / "labeled.jsonl"
    rows = [{"text": f"example {i}", "label": "positive" if i % 2 else "Neutral"} for i in range(20)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    base = {"task": None, "train_file": str(f), "text_columns": ["text"], "label_column": "label"}
    plain = load_task_data(DataConfig(**base))
    assert plain.label_names == ["Neutral", "positive"]  # sorted: ids shift when a class is missing
    named = load_task_data(DataConfig(**base, label_names=["negative", "positive", "neutral"]))
    assert named.label_names == ["negative", "positive", "neutral"] and named.num_labels == 3
    ids = list(named.splits["train"]["label"]) + list(named.splits["validation"]["label"])
    assert sorted(set(ids)) == [1, 2]
    by_text = dict(zip(list(named.splits["train"]["text_a"]), list(named.splits["train"]["label"]), strict=True))
    assert all(by_text[r["text"]] == (1 if r["label"] == "positive" else 2) for r in rows if r["text"] in by_text)
    with pytest.raises(KDistillError, match="'positive' .* not one of the named classes"):
        load_task_data(DataConfig(**base, label_names=["negative", "neutral"]))
