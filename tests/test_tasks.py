"""Task types: labels read per type, the losses and metrics they take, and bad input refused in one line.

The end-to-end runs of regression and multi-label data are in `test_task_runs.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdistill import cli
from kdistill.config import AugmentConfig, DataConfig, LossConfig, MappingConfig, build
from kdistill.data import load_task_data
from kdistill.distill.losses import LOSSES, bce_soft, gold_bce, gold_mse
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.metrics import METRICS
from kdistill.models import ModelProbe
from kdistill.tasks import detect_task_type, get_task, task_of_config
from kdistill.teachers.multi import MultiTeacher

PROBE = ModelProbe("bert", 2, 8, 2, "bert.encoder.layer", True)


def _file(path: Path, header: str | None, rows: list[str]) -> Path:
    path.write_text("".join(f"{r}\n" for r in ([header] if header else []) + rows), encoding="utf-8")
    return path


def _data(path: Path, **kw) -> DataConfig:
    return DataConfig(task=None, train_file=str(path), **kw)


# ------------------------------------------------------------------------------------------- losses


def test_bce_soft_matches_a_hand_computation() -> None:
    s = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]])
    t = torch.tensor([[1.0, 0.0, -2.0], [0.3, -0.7, 1.2]])
    temp = 2.0
    ps, pt = 1 / (1 + np.exp(-s.numpy() / temp)), 1 / (1 + np.exp(-t.numpy() / temp))
    per = -(pt * np.log(ps) + (1 - pt) * np.log(1 - ps))  # BCE per (row, label)
    expected = per.sum() / per.size * temp**2  # mean over rows and labels, times T²
    assert float(bce_soft(s, t, temperature=temp)) == pytest.approx(expected, rel=1e-6)
    # a student equal to its teacher is at the minimum: no gradient
    same = t.clone().requires_grad_(True)
    bce_soft(same, t, temperature=temp).backward()
    assert same.grad is not None and float(same.grad.abs().max()) < 1e-7


def test_gold_losses_match_hand_computations() -> None:
    out = torch.tensor([[1.0], [2.5], [-0.5]])
    score = torch.tensor([1.5, 2.0, 0.5])
    assert float(gold_mse(out, score)) == pytest.approx((0.25 + 0.25 + 1.0) / 3)
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.5]])
    gold = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = 1 / (1 + np.exp(-logits.numpy()))
    by_hand = -(gold.numpy() * np.log(p) + (1 - gold.numpy()) * np.log(1 - p)).mean()
    assert float(gold_bce(logits, gold)) == pytest.approx(by_hand, rel=1e-6)


def test_ce_means_the_tasks_gold_loss_and_unfit_losses_are_refused() -> None:
    reg = Objective([LossConfig(name="logit_mse"), LossConfig(name="ce")], MappingConfig(), student=PROBE,
                    teacher=PROBE, task=get_task("regression"))
    assert str(reg) == "1*logit_mse + 1*ce:mse"
    assert reg.terms[1].spec.fn is gold_mse
    multi = Objective([LossConfig(name="bce_soft", temperature=2.0), LossConfig(name="ce")], MappingConfig(),
                      student=PROBE, teacher=PROBE, task=get_task("multilabel"))
    assert str(multi) == "1*bce_soft[T=2] + 1*ce:bce"
    for task, loss, valid in (("regression", "kl", {"ce", "logit_mse", "mse", "soft_targets"}),
                              ("regression", "soft_ce", {"ce", "logit_mse", "mse", "soft_targets"}),
                              ("multilabel", "kl", {"bce", "bce_soft", "ce", "logit_mse", "soft_targets"}),
                              ("classification", "bce_soft", {"ce", "kl", "logit_mse", "soft_ce", "soft_targets"}),
                              ("classification", "mse", {"ce", "kl", "logit_mse", "soft_ce", "soft_targets"})):
        with pytest.raises(KDistillError, match=f"loss '{loss}' does not fit ") as err:
            Objective([LossConfig(name=loss)], MappingConfig(), student=PROBE, teacher=PROBE, task=get_task(task))
        assert "\n" not in str(err.value)
        assert _named_losses(str(err.value)) & set(LOSSES.names()) - {"explodes"} == valid  # tests may add losses


def _named_losses(message: str) -> set[str]:
    """The loss names a refusal lists as the valid ones."""
    return set(message.split("its prediction losses are ")[1].split(" (")[0].split(", "))


def test_response_losses_compare_the_tasks_targets() -> None:
    from kdistill.distill.features import Features

    obj = Objective([LossConfig(name="logit_mse"), LossConfig(name="ce", weight=2.0)], MappingConfig(),
                    student=PROBE, teacher=PROBE, task=get_task("regression"))
    mask = torch.ones(3, 4)
    s = Features(logits=torch.tensor([[1.0], [2.0], [3.0]]), mask=mask)
    t = Features(logits=torch.tensor([[1.5], [2.0], [2.0]]), mask=mask)
    out = obj(s, t, torch.tensor([0.0, 2.0, 4.0]))
    assert float(out.terms["logit_mse"]) == pytest.approx((0.25 + 0 + 1) / 3)
    assert float(out.terms["ce"]) == pytest.approx((1 + 0 + 1) / 3)
    assert float(out.total) == pytest.approx((0.25 + 1) / 3 + 2 * 2 / 3)


# ------------------------------------------------------------------------------------------ metrics


def test_pearson_and_spearman_match_hand_computations() -> None:
    preds = np.array([1.0, 2.0, 3.0, 5.0])
    gold = np.array([2.0, 1.0, 4.0, 4.0])
    # Pearson: sum of co-deviations over the root of the product of squared deviations (means 2.75 and 2.75)
    dp, dg = preds - 2.75, gold - 2.75
    pearson = (dp * dg).sum() / np.sqrt((dp**2).sum() * (dg**2).sum())
    # Spearman: Pearson of the ranks, ties averaged (gold 4.0 and 4.0 share ranks 3 and 4 -> 3.5)
    rp, rg = np.array([1, 2, 3, 4.0]), np.array([2, 1, 3.5, 3.5])
    rp, rg = rp - rp.mean(), rg - rg.mean()
    spearman = (rp * rg).sum() / np.sqrt((rp**2).sum() * (rg**2).sum())
    got = METRICS.get("pearson")(preds, gold)
    assert list(got) == ["pearson", "spearman"]
    assert got["pearson"] == pytest.approx(pearson) and got["spearman"] == pytest.approx(spearman)
    assert list(METRICS.get("spearman")(preds, gold)) == ["spearman", "pearson"]
    # a model that answers one constant scores 0, not NaN: it must still compare as the worst epoch
    assert METRICS.get("pearson")(np.full(4, 2.0), gold) == {"pearson": 0.0, "spearman": 0.0}
    # through the task: outputs (N, 1) are the scores
    scored = get_task("regression").score("pearson", preds[:, None], gold)
    assert scored["pearson"] == pytest.approx(pearson)


def test_micro_and_macro_f1_match_hand_computations() -> None:
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    preds = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    # label 0: tp 2 fp 0 fn 0 -> F1 1; label 1: tp 1 fp 0 fn 1 -> 2/3; label 2: tp 1 fp 1 fn 1 -> 1/2
    macro = (1 + 2 / 3 + 1 / 2) / 3
    micro = 2 * 4 / (2 * 4 + 1 + 2)  # pooled: tp 4, fp 1, fn 2
    got = METRICS.get("macro_f1")(preds, gold)
    assert list(got) == ["macro_f1", "micro_f1"]
    assert got["macro_f1"] == pytest.approx(macro) and got["micro_f1"] == pytest.approx(micro)
    # through the task: a label is predicted at probability >= 0.5, i.e. logit >= 0
    logits = np.where(preds == 1, 0.0, -0.01)
    assert get_task("multilabel").score("micro_f1", logits, gold)["micro_f1"] == pytest.approx(micro)


def test_collapse_warnings_per_task() -> None:
    reg, multi = get_task("regression"), get_task("multilabel")
    gold = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert "collapsed to a constant" in reg.collapse_warning(np.full((5, 1), 2.5), gold)
    assert reg.collapse_warning(np.array([[1.0], [2.0], [2.5], [3.0], [4.5]]), gold) is None
    # a correlation that cannot rank the epochs: too few validation rows, or every gold score the same
    assert "has 2 example(s)" in reg.collapse_warning(np.array([[1.0], [2.0]]), np.array([1.0, 3.0]))
    assert "every validation gold score is 3: a correlation is undefined" in reg.collapse_warning(
        np.arange(5.0).reshape(5, 1), np.full(5, 3.0))
    same = np.array([[1.0, -1.0], [1.0, -1.0]])
    assert "same label set (0)" in multi.collapse_warning(same, np.array([[1, 0], [0, 1]]))
    assert multi.collapse_warning(same, np.array([[1, 0], [1, 0]])) is None
    assert "none of the 2 validation examples has a label" in multi.collapse_warning(same, np.zeros((2, 2)))


# --------------------------------------------------------------------------------------- reading


def test_float_labels_are_detected_as_regression(tmp_path: Path) -> None:
    assert detect_task_type(["0.5", "3", "4.25"]) == "regression"
    assert detect_task_type([0.5, 3, 4]) == "regression"
    assert detect_task_type(["1", 2, 3.0]) == "classification"  # all integers: class ids
    assert detect_task_type(["positive", "0.5"]) == "classification"
    assert detect_task_type([["anger"], []]) == "multilabel"
    csv_file = _file(tmp_path / "scores.csv", "sentence1,sentence2,label",
                     [f"a cat {i},a dog {i},{i % 5 + 0.25 * (i % 3)}" for i in range(20)])
    d = load_task_data(_data(csv_file))
    assert (d.task_type, d.metric, d.num_labels, d.label_names, d.is_pair) == ("regression", "pearson", 1,
                                                                                ["score"], True)
    assert sorted([*d.splits["train"]["label"], *d.splits["validation"]["label"]]) == pytest.approx(
        sorted(i % 5 + 0.25 * (i % 3) for i in range(20)))
    # without a header, a first row whose score appears nowhere else is still data
    tsv = _file(tmp_path / "noheader.tsv", None, [f"text {i}\t{i / 7:.3f}" for i in range(12)])
    d = load_task_data(_data(tsv, validation_fraction=0.25))
    assert d.task_type == "regression" and len(d.splits["train"]) + len(d.splits["validation"]) == 12
    # whole-number scores read as classes unless the task type says otherwise
    ints = _file(tmp_path / "ints.csv", "text,label", [f"t {i},{i % 6}" for i in range(24)])
    assert load_task_data(_data(ints)).task_type == "classification"
    d = load_task_data(_data(ints, task_type="regression", metric="spearman"))
    assert (d.task_type, d.num_labels, d.metric) == ("regression", 1, "spearman")
    # ... and a fractional score outside them says so, naming the setting that reads them as scores
    val = _file(tmp_path / "val.csv", "text,label", ["u,4.5", "v,2"])
    with pytest.raises(KDistillError, match=r"label '4.5' in .*val.csv line 2 is not among the training labels \(0, "
                                            r"1, 2, 3, 4, 5\); scores, not classes\? set data.task_type regression"):
        load_task_data(_data(ints, validation_file=str(val)))
    val.write_text("text,label\nu,9\nv,2\n")  # an id outside the named classes is an unknown class, no score
    with pytest.raises(KDistillError, match=r"label '9' in .*val.csv line 2 is not one of the named classes "
                                            r"\(a, b, c, d, e, f\)$"):
        load_task_data(_data(ints, validation_file=str(val), label_names=list("abcdef")))


def test_label_sets_are_read_from_names_or_ids(tmp_path: Path) -> None:
    names = ["joy", "anger", "fear"]
    f = _file(tmp_path / "m.tsv", "text\tlabels", ["a\tjoy", "b\tanger,Fear", "c\t0,2", "d\tfear", "e\tjoy,anger"])
    d = load_task_data(_data(f, task_type="multilabel", label_names=names, validation_fraction=0.2))
    assert (d.task_type, d.metric, d.num_labels) == ("multilabel", "macro_f1", 3)
    rows = {r["text_a"]: r["label"] for split in d.splits.values() for r in split}
    assert rows == {"a": [1, 0, 0], "b": [0, 1, 1], "c": [1, 0, 1], "d": [0, 0, 1], "e": [1, 1, 0]}
    # JSON lists need no setting: a list in a label cell means label sets (names sorted when not given)
    j = tmp_path / "m.jsonl"
    j.write_text("".join(json.dumps({"text": f"t{i}", "label": lab}) + "\n"
                         for i, lab in enumerate([["b"], ["a", "b"], [], ["c"], ["a"]] * 2)))
    d = load_task_data(_data(j))
    assert d.task_type == "multilabel" and d.label_names == ["a", "b", "c"]
    # ... and so does a JSON list in a CSV/TSV cell, whose commas are the list's, not a label's
    t = _file(tmp_path / "j.tsv", "text\tlabels", [f"t{i}\t{json.dumps(lab)}" for i, lab in
                                                   enumerate([["joy", "love"], [], ["love"], ["joy"], [2]] * 2)])
    d = load_task_data(_data(t, label_names=["joy", "love", "fear"], validation_fraction=0.2))
    assert d.task_type == "multilabel"
    rows = {r["text_a"]: r["label"] for split in d.splits.values() for r in split}
    assert (rows["t0"], rows["t1"], rows["t4"]) == ([1, 1, 0], [0, 0, 0], [0, 0, 1])
    # a 0/1 flag per label (a pandas export) is read as flags, not as the ids 1, 0, 0
    v = _file(tmp_path / "v.tsv", "text\tlabels", [f"t{i}\t{json.dumps(flags)}" for i, flags in
                                                   enumerate([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]] * 2)])
    d = load_task_data(_data(v, validation_fraction=0.25))
    rows = {r["text_a"]: r["label"] for split in d.splits.values() for r in split}
    assert d.label_names == ["0", "1", "2"] and (rows["t0"], rows["t3"]) == ([1, 0, 0], [1, 1, 0])
    d = load_task_data(_data(v, label_names=["joy", "love", "fear"], validation_fraction=0.25))
    rows = {r["text_a"]: r["label"] for split in d.splits.values() for r in split}
    assert d.label_names == ["joy", "love", "fear"] and (rows["t2"], rows["t3"]) == ([0, 0, 1], [1, 1, 0])
    with pytest.raises(KDistillError, match=r"0/1 vectors of 3 flags but 2 label names"):
        load_task_data(_data(v, label_names=["joy", "love"]))
    dup = _file(tmp_path / "dup.tsv", "text\tlabels", ["a\tjoy,joy", "b\tlove", "c\tjoy", "d\tlove"])
    with pytest.raises(KDistillError, match=r"dup.tsv line 2 \(cell 'joy,joy'\) lists a label twice"):
        load_task_data(_data(dup, task_type="multilabel", label_names=["joy", "love"]))


def test_dataset_folders_of_scores_and_label_sets(tmp_path: Path) -> None:
    import datasets

    text = datasets.Value("string")
    scores = datasets.Features({"sentence1": text, "sentence2": text, "label": datasets.Value("float32")})
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence1": list("abcd"), "sentence2": list("efgh"),
                                             "label": [0.5, 4.0, 2.25, 3.0]}, scores),
        "validation": datasets.Dataset.from_dict({"sentence1": ["i"], "sentence2": ["j"], "label": [1.5]}, scores),
        "test": datasets.Dataset.from_dict({"sentence1": ["k"], "sentence2": ["l"], "label": [-1.0]}, scores),
    }).save_to_disk(str(tmp_path / "stsb"))
    d = load_task_data(DataConfig(task=None, dataset=str(tmp_path / "stsb")))
    assert d.task_type == "regression" and set(d.splits) == {"train", "validation"}  # GLUE's unscored test: dropped
    sets = datasets.Features({"text": text, "labels": datasets.Sequence(datasets.ClassLabel(names=["x", "y", "z"]))})
    datasets.Dataset.from_dict({"text": list("abcd"), "labels": [[0], [1, 2], [], [2]]}, sets).save_to_disk(
        str(tmp_path / "emo"))
    d = load_task_data(DataConfig(task=None, dataset=str(tmp_path / "emo"), validation_fraction=0.25))
    assert (d.task_type, d.label_names) == ("multilabel", ["x", "y", "z"])
    assert sorted(map(tuple, [*d.splits["train"]["label"], *d.splits["validation"]["label"]])) == [
        (0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 0, 0)]


def test_shipped_stsb_and_goemotions() -> None:
    s = load_task_data(DataConfig(task="stsb"))
    assert (s.task_type, s.metric, s.is_pair, s.num_labels) == ("regression", "pearson", True, 1)
    assert {k: len(v) for k, v in s.splits.items()} == {"train": 5749, "validation": 1500, "test": 1379}
    scores = np.array(s.splits["train"]["label"])
    assert scores.min() == 0 and scores.max() == 5 and scores.mean() == pytest.approx(2.70, abs=0.005)
    g = load_task_data(DataConfig(task="goemotions"))
    assert (g.task_type, g.metric, g.is_pair, g.num_labels) == ("multilabel", "macro_f1", False, 28)
    assert {k: len(v) for k, v in g.splits.items()} == {"train": 43410, "validation": 5426, "test": 5427}
    assert g.label_names[0] == "admiration" and g.label_names[27] == "neutral"
    rows = np.array(g.splits["train"]["label"])
    assert int((rows.sum(axis=1) >= 2).sum()) == 7102 and int(rows[:, 27].sum()) == 14219
    assert rows.sum(axis=1).min() == 1 and rows.sum(axis=1).max() == 5


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("rows", "kw", "message"), [
    (["a b\tc d\t2.5", "e f\tg h\tNaN"], {}, r"line 3: empty label"),
    (["a b\tc d\t2.5", "e f\tg h\thigh"], {"task_type": "regression"}, r"label 'high' in .* line 3 is not a finite"),
    (["a b\tc d\t2.5", "e f\tg h\tinf"], {"task_type": "regression"}, r"'inf' in .* line 3 is not a finite number"),
    (["a b\tc d\tjoy", "e f\tg h\tjoy,joyful"], {"task_type": "multilabel", "label_names": ["joy", "anger"]},
     r"label 'joyful' in .* line 3 \(cell 'joy,joyful'\) is not one of the 2 labels \(joy, anger\)"),
    (["a b\tc d\t2.5", "e f\tg h\t1.5"], {"metric": "accuracy"}, r"metric 'accuracy' does not score a regression"),
    (["a b\tc d\t2.5", "e f\tg h\t1.5"], {"label_names": ["a", "b"]}, r"a regression task has one output"),
    # scores with one bad cell: refused, not read as one class per distinct score
    (["a b\tc d\t2.5", "e f\tg h\t3.8", "i\tj\t0.4", "k\tl\t1.2", "m n\to p\thigh"], {},
     r"look like regression scores \(4 of 5 are decimal numbers\) but 'high' in .* line 6 is not a finite number"),
    (["a b\tc d\t2.5", "e f\tg h\t3.8", "i\tj\t0.4", "k\tl\t1.2", "m n\to p\tinf"], {},
     r"but 'inf' in .* line 6 is not a finite number"),
    # label sets: entries that are no label id or name, and a training split without a positive
    (['a b\tc d\t["joy", ""]', 'e f\tg h\t["joy"]'], {"task_type": "multilabel"}, r"line 2 .* an empty label name"),
    (['a b\tc d\t[["joy"]]', 'e f\tg h\t["joy"]'], {"task_type": "multilabel"}, r"\['joy'\] is not a label id"),
    (['a b\tc d\t[1.5]', 'e f\tg h\t[2]'], {"task_type": "multilabel"}, r"label 1.5 is a decimal number, not a"),
    (["a b\tc d\t0.08", "e f\tg h\t0.46"], {"task_type": "multilabel"}, r"'0.08' is a decimal number.*regression"),
    (["a b\tc d\t[]", "e f\tg h\t[]"], {"task_type": "multilabel"}, r"no row of .* lists a label \(2 empty"),
    (["a b\tc d\tjoy,0", "e f\tg h\tanger"], {"task_type": "multilabel"}, r"mix ids \(0\) and names \('joy'\)"),
    (["a b\tc d\t[]", "e f\tg h\t[]"], {"task_type": "multilabel", "label_names": ["joy", "anger"]},
     r"no row of .* lists a label"),
])
def test_bad_labels_are_one_line_naming_the_row(tmp_path: Path, rows: list[str], kw: dict, message: str) -> None:
    f = _file(tmp_path / "bad.tsv", "sentence1\tsentence2\tlabel", rows * 1)
    with pytest.raises(KDistillError, match=message) as err:
        load_task_data(_data(f, **kw))
    assert "\n" not in str(err.value)


def test_a_shipped_task_keeps_its_type() -> None:
    with pytest.raises(KDistillError, match="task stsb is a regression task .* data.task_type classification"):
        load_task_data(DataConfig(task="stsb", task_type="classification"))


def test_model_task_types_are_read_as_hugging_face_reads_them() -> None:
    from transformers import BertConfig

    assert task_of_config(BertConfig(num_labels=1)) == "regression"
    assert task_of_config(BertConfig(num_labels=3)) == "classification"
    assert task_of_config(BertConfig(num_labels=3, problem_type="multi_label_classification")) == "multilabel"
    assert task_of_config(BertConfig(num_labels=2, problem_type="regression")) == "regression"


def test_wrong_teacher_type_and_unfit_losses_exit_2_with_one_line(capsys, tmp_path: Path, tiny_teacher: Path,
                                                                  regression_teacher: Path) -> None:
    stsb = ["--task", "stsb", "--max_train_examples", "16", "--max_eval_examples", "8", "--max_length", "16"]
    cases = [
        (["distill", "--teacher", str(regression_teacher), "--task", "sst2", "--max_train_examples", "16"],
         r"is a regression task \(one score per example\), but the data is a classification task"),
        (["distill", "--teacher", str(tiny_teacher), *stsb, "--losses", "[{name: logit_mse}]"],
         r"is a classification task \(one class per example\), but the data is a regression task"),
        (["distill", "--teacher", str(regression_teacher), *stsb, "--losses", "[{name: kl}, {name: ce}]"],
         r"loss 'kl' does not fit a regression task .* its prediction losses are ce, (.*, )?logit_mse, mse"),
        (["finetune", "--model", str(tiny_teacher), *stsb],
         r"model '.*' is a classification task .*, but the data is a regression task"),
    ]
    for argv, message in cases:
        code = cli.main([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("kdistill: error:") and "Traceback" not in err, err
        import re

        assert re.search(message, err), (message, err)
        assert not (tmp_path / "out" / "kdistill.yaml").exists()  # refused at set-up, before the run is recorded


def test_augment_refuses_label_sets_before_any_work(tmp_path: Path) -> None:
    f = _file(tmp_path / "m.tsv", "text\tlabels", ["a b\tjoy", "c d\tjoy,anger", "e f\tanger"])
    cfg = build(AugmentConfig, {"data": {"task": None, "train_file": str(f), "task_type": "multilabel"},
                                "mlm": str(tmp_path / "no-mlm"), "out": str(tmp_path / "aug.jsonl")})
    from kdistill.augment import augment_task

    with pytest.raises(KDistillError, match="multi-label tasks are not supported"):
        augment_task(cfg)
    assert not (tmp_path / "aug.jsonl").exists()


# ------------------------------------------------------------------------------- several teachers


def test_several_teachers_average_per_task_type() -> None:
    a, b = torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[3.0, 0.0], [-0.5, 1.0]])
    reg = get_task("regression").average_teachers([a[:, :1], b[:, :1]], [0.25, 0.75])
    assert torch.allclose(reg, 0.25 * a[:, :1] + 0.75 * b[:, :1])
    multi = get_task("multilabel").average_teachers([a, b], [0.25, 0.75])
    assert torch.allclose(multi.sigmoid(), 0.25 * a.sigmoid() + 0.75 * b.sigmoid(), atol=1e-6)
    cls = get_task("classification").average_teachers([a, b], [0.25, 0.75])
    assert torch.allclose(cls.softmax(-1), 0.25 * a.softmax(-1) + 0.75 * b.softmax(-1), atol=1e-6)

    class Fixed(torch.nn.Module):
        def __init__(self, out: torch.Tensor) -> None:
            super().__init__()
            self.out, self.config = out, None

        def forward(self, **_: object) -> object:
            return type("Out", (), {"logits": self.out})()

    from kdistill.distill.features import FeatureRequest

    source = MultiTeacher([Fixed(a), Fixed(b)], [1.0, 3.0], FeatureRequest(), get_task("multilabel"))
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)}
    assert torch.allclose(source.signals(batch).logits, multi, atol=1e-6)


def test_stored_answers_per_task_type() -> None:
    row = {"text": "x", "probs": [0.9, 0.2]}
    multi = get_task("multilabel").answer_logits(row, "f line 1")
    assert torch.allclose(multi.sigmoid(), torch.tensor([0.9, 0.2]))
    assert get_task("regression").answer_logits({"logits": [3.25]}, "f line 1").tolist() == [3.25]
    with pytest.raises(KDistillError, match="f line 2 has no probs or logits"):
        get_task("regression").answer_logits({"label": 3.2}, "f line 2")


def test_loss_registry_declares_task_types() -> None:
    assert LOSSES.get("kl").tasks == frozenset({"classification"})
    assert LOSSES.get("logit_mse").tasks is None and LOSSES.get("hidden_mse").tasks is None
    assert LOSSES.get("bce_soft").tasks == frozenset({"multilabel"})


def test_a_new_multilabel_head_starts_at_the_label_priors() -> None:
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    labels = [[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]]  # frequencies 3/4, 1/4, 0 (clamped to 1e-3)
    want = torch.tensor([np.log(3), -np.log(3), np.log(1e-3 / (1 - 1e-3))], dtype=torch.float32)
    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 num_labels=3, problem_type="multi_label_classification")
    for model, head in ((BertForSequenceClassification(BertConfig(**small)), "classifier"),
                        (RobertaForSequenceClassification(RobertaConfig(**small)), "classifier.out_proj")):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        get_task("multilabel").init_head(model, {"label": labels})
        torch.testing.assert_close(model.get_submodule(head).bias, want)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
        assert changed == [f"{head}.bias"]  # the encoder and the head's weights are untouched
    bert = BertForSequenceClassification(BertConfig(**{**small, "num_labels": 2}))
    before = bert.classifier.bias.clone()
    get_task("classification").init_head(bert, {"label": [0, 1, 1]})  # other task types keep their random start
    assert torch.equal(before, bert.classifier.bias)


def test_tables_show_a_correlation_x100_and_a_share_as_a_percentage() -> None:
    from kdistill.metrics import format_score

    assert format_score("pearson", 0.80398) == "80.4" and format_score("spearman", -0.029) == "-2.9"
    assert format_score("accuracy", 0.8781) == "87.8%" and format_score("squad_f1", 0.4417) == "44.2%"
    assert format_score("macro_f1", None) == "-"
