"""Regression (STS-B-like) and multi-label (GoEmotions-like) data end to end, with tiny models built here.

Each run: fine-tune a bare encoder, distill a narrowed student from teacher layers with feature losses (from the
teacher-output cache, whose outputs are checked against the live teacher's), evaluate, export to ONNX with parity,
report, label text with the student, and load the saved student with `pipeline("text-classification")`.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import DATA, make_tiny_bert
from safetensors.torch import load_file

from kdistill import api
from kdistill.config import (
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    LabelConfig,
    LossConfig,
    ReportConfig,
    StudentConfig,
    TrainConfig,
)
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest
from kdistill.evaluate import predict
from kdistill.models import load_classifier, load_tokenizer
from kdistill.teachers import CachedTeacher

TRAIN = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False, "save_steps": 1000,
         "device": "cpu", "threads": 2}


def _tsv(path: Path, source: Path, n: int, skip: int = 0) -> Path:
    with open(source, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([rows[0], *rows[1 + skip:1 + skip + n]])
    return path


@pytest.fixture(scope="module")
def bare_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT encoder without a head (what `kdistill finetune` starts from), with its tokenizer."""
    built = make_tiny_bert(tmp_path_factory.mktemp("enc") / "with-head")
    out = built.parent / "bare"
    load_classifier(str(built)).bert.save_pretrained(out)
    for f in built.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, out / f.name)
    return out


def _runs(tmp: Path, bare: Path, data: dict[str, Any], losses: list[LossConfig]) -> dict[str, Path]:
    """Fine-tune, then distill a narrowed 2-layer student from the teacher-output cache."""
    teacher, student = tmp / "teacher", tmp / "student"
    api.finetune(FinetuneConfig(model=str(bare), data=DataConfig(**data), train=TrainConfig(**TRAIN), out=str(teacher)))
    api.distill(DistillConfig(teacher=str(teacher), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                              student=StudentConfig(num_layers=2, hidden_size=16), losses=losses, teacher_cache=True,
                              out=str(student)))
    return {"teacher": teacher, "student": student}


def _cache_is_the_live_teacher(runs: dict[str, Path], data: dict[str, Any]) -> None:
    """The cached teacher outputs (row i = training example i) are the teacher's own outputs on the training split,
    as trained: a multi-label teacher's folded decision threshold t is undone (+ logit(t) on every output)."""
    folder = json.loads((runs["student"] / "metrics.json").read_text())["teacher_cache"]["folder"]
    cached = CachedTeacher(folder, FeatureRequest()).logits
    live, _ = _logits(runs["teacher"], data, "train")
    t = json.loads((runs["teacher"] / "config.json").read_text()).get("kdistill_threshold")
    shift = 0.0 if t is None else math.log(t / (1 - t))
    assert cached.shape == live.shape and np.allclose(cached.numpy(), live + shift, atol=1e-5)


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def _logits(model_dir: Path, data: dict[str, Any], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    from kdistill.tokenized import make_loader, tokenize_splits

    d = load_task_data(DataConfig(**data))
    tok = load_tokenizer(str(model_dir))
    ds = tokenize_splits(d, tok, data["max_length"])[split]
    return predict(load_classifier(str(model_dir)), make_loader(ds, tok, 64))


def test_regression_end_to_end(tmp_path: Path, bare_encoder: Path) -> None:
    train = _tsv(tmp_path / "train.tsv", DATA / "stsb" / "train.tsv", 96)
    test = _tsv(tmp_path / "test.tsv", DATA / "stsb" / "test.tsv", 40)
    data = {"task": None, "train_file": str(train), "test_file": str(test), "max_length": 32}  # scores: detected
    runs = _runs(tmp_path, bare_encoder, data, [LossConfig(name="logit_mse"), LossConfig(name="ce"),
                                                LossConfig(name="hidden_mse"), LossConfig(name="attn_kl")])
    teacher_cfg = json.loads((runs["teacher"] / "config.json").read_text())
    assert (teacher_cfg["problem_type"], len(teacher_cfg["id2label"])) == ("regression", 1)
    student_cfg = json.loads((runs["student"] / "config.json").read_text())
    assert (student_cfg["problem_type"], student_cfg["hidden_size"], student_cfg["num_hidden_layers"]) == (
        "regression", 16, 2)
    metrics = json.loads((runs["student"] / "metrics.json").read_text())
    assert metrics["method"].startswith("1*logit_mse + 1*ce:mse + 1*hidden_mse")
    assert set(metrics["test"]) == {"pearson", "spearman"} and metrics["teacher_cache"]["built"]
    _cache_is_the_live_teacher(runs, data)

    # evaluate: Pearson of the student's outputs against the gold scores, computed here by hand
    result = api.evaluate(EvaluateConfig(model=str(runs["student"]), teacher=str(runs["teacher"]),
                                         data=DataConfig(**data), repeats=2, warmup=0, batch_sizes=[1, 4]))
    out, gold = _logits(runs["student"], data)
    assert out.shape == (40, 1)
    assert result["model"]["metrics"]["pearson"] == pytest.approx(np.corrcoef(out[:, 0], gold)[0, 1], abs=1e-6)
    assert "| Pearson | Retention |" in result["table"].splitlines()[0]

    # export: ONNX Runtime gives the PyTorch score
    exported = api.export(ExportConfig(model=str(runs["student"]), quantize=True))
    assert exported["max_abs_diff"] <= 1e-4 and exported["metric"] == "pearson"

    # report: a scatter of student vs gold scores, no confusion matrix
    report = api.report(ReportConfig(runs=[str(runs["student"])], out=str(tmp_path / "report"), speed=False))
    page = Path(report["html"]).read_text()
    assert page.count("predicted vs gold scores</figcaption>") == 2 and "confusion" not in page
    student = next(m for m in report["models"] if not m["teacher"])
    assert student["gold"] == pytest.approx(gold.tolist(), abs=1e-4) and "confusion" not in student

    # the saved student is an ordinary text-classification model whose score is its output
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(runs["student"]), device="cpu")
    rows = [r for r in csv.DictReader(open(test, encoding="utf-8"), delimiter="\t")][:3]
    got = pipe([{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in rows], function_to_apply="none")
    assert [g["score"] for g in got] == pytest.approx(out[:3, 0].tolist(), abs=1e-4)
    card = (runs["student"] / "README.md").read_text()
    assert 'function_to_apply="none"' in card and "a regression task" in card and "pearsonr" in card

    # kdistill label: the student as teacher writes scores, which distill reads back as regression data
    labeled = api.label(LabelConfig(teacher=str(runs["student"]), input=str(test), out=str(tmp_path / "l.jsonl"),
                                    device="cpu"))
    lines = [json.loads(x) for x in Path(labeled["out"]).read_text().splitlines()]
    assert [x["label"] for x in lines] == pytest.approx(out[:, 0].tolist(), abs=1e-4)
    assert lines[0]["logits"] == [lines[0]["label"]] and "label_id" not in lines[0] and labeled["scores"]
    back = load_task_data(DataConfig(task=None, train_file=labeled["out"], text_columns=["text", "text_pair"]))
    assert back.task_type == "regression"


def test_regression_stored_answers_train_the_live_teachers_student(tmp_path: Path, regression_teacher: Path) -> None:
    test = _tsv(tmp_path / "pairs.tsv", DATA / "stsb" / "train.tsv", 48)
    labeled = api.label(LabelConfig(teacher=str(regression_teacher), input=str(test), out=str(tmp_path / "l.jsonl"),
                                    device="cpu", max_length=32))
    data = {"task": None, "train_file": labeled["out"], "text_columns": ["text", "text_pair"], "max_length": 32}
    outs = []
    for name, answers in (("answers", labeled["out"]), ("live", None)):
        outs.append(tmp_path / name)
        api.distill(DistillConfig(teacher=str(regression_teacher), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                                  losses=[LossConfig(name="logit_mse")], teacher_answers=answers,
                                  student=StudentConfig(num_layers=2), out=str(outs[-1])))
    _same_weights(*outs)


def test_multilabel_end_to_end(tmp_path: Path, bare_encoder: Path) -> None:
    train = _tsv(tmp_path / "train.tsv", DATA / "goemotions" / "train.tsv", 112)
    test = _tsv(tmp_path / "test.tsv", DATA / "goemotions" / "test.tsv", 40)
    names = (DATA / "goemotions" / "labels.txt").read_text().split()
    data = {"task": None, "train_file": str(train), "test_file": str(test), "task_type": "multilabel",
            "label_names": names, "max_length": 32}
    runs = _runs(tmp_path, bare_encoder, data, [LossConfig(name="bce_soft", temperature=2.0),
                                                LossConfig(name="ce"), LossConfig(name="hidden_mse")])
    cfg = json.loads((runs["student"] / "config.json").read_text())
    assert (cfg["problem_type"], len(cfg["id2label"]), cfg["id2label"]["27"]) == ("multi_label_classification", 28,
                                                                                  "neutral")
    metrics = json.loads((runs["student"] / "metrics.json").read_text())
    assert metrics["method"].startswith("1*bce_soft[T=2] + 1*ce:bce") and set(metrics["test"]) == {"macro_f1",
                                                                                                  "micro_f1"}
    # the decision threshold tuned on validation is recorded and folded into the saved head
    decision = metrics["decision"]
    assert decision["threshold"] == cfg["kdistill_threshold"] and 0.05 <= decision["threshold"] <= 0.95
    assert decision["validation_tuned"] >= decision["validation_at_0.5"]
    assert f"the validation split, {decision['threshold']:g}, is folded" in (runs["student"] / "README.md").read_text()
    _cache_is_the_live_teacher(runs, data)

    result = api.evaluate(EvaluateConfig(model=str(runs["student"]), teacher=str(runs["teacher"]),
                                         data=DataConfig(**data), speed=False))
    out, gold = _logits(runs["student"], data)
    from sklearn.metrics import f1_score

    preds = (1 / (1 + np.exp(-out)) >= 0.5).astype(int)
    assert result["model"]["metrics"]["micro_f1"] == pytest.approx(f1_score(gold, preds, average="micro"))
    assert result["model"]["metrics"]["macro_f1"] == pytest.approx(
        f1_score(gold, preds, average="macro", zero_division=0))

    exported = api.export(ExportConfig(model=str(runs["student"])))
    assert exported["max_abs_diff"] <= 1e-4

    report = api.report(ReportConfig(runs=[str(runs["student"])], out=str(tmp_path / "report"), speed=False))
    page = Path(report["html"]).read_text()
    assert "Confusion matrices" not in page and "confusion</figcaption>" not in page  # ("confusion" is a label)
    assert page.count("Per-label F1 at probability 0.5") == 2 and "<td>neutral</td>" in page

    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(runs["student"]), device="cpu")
    text = next(csv.DictReader(open(test, encoding="utf-8"), delimiter="\t"))["text"]
    scores = {r["label"]: r["score"] for r in pipe(text, top_k=None, function_to_apply="sigmoid")}
    assert len(scores) == 28
    assert [scores[n] for n in names] == pytest.approx((1 / (1 + np.exp(-out[0]))).tolist(), abs=1e-4)
    assert 'function_to_apply="sigmoid", top_k=None' in (runs["student"] / "README.md").read_text()

    labeled = api.label(LabelConfig(teacher=str(runs["student"]), input=str(test), out=str(tmp_path / "l.jsonl"),
                                    device="cpu"))
    first = json.loads(Path(labeled["out"]).read_text().splitlines()[0])
    assert first["label"] == [n for n, p in zip(names, first["probs"], strict=True) if p >= 0.5]
    assert len(first["probs"]) == 28 and len(first["logits"]) == 28


def test_finetune_starts_a_new_multilabel_head_at_the_label_priors_and_keeps_a_trained_one(
        tmp_path: Path, bare_encoder: Path) -> None:
    train = _tsv(tmp_path / "train.tsv", DATA / "goemotions" / "train.tsv", 64)
    names = (DATA / "goemotions" / "labels.txt").read_text().split()
    data = {"task": None, "train_file": str(train), "task_type": "multilabel", "label_names": names,
            "max_length": 16}
    still = {**TRAIN, "lr": 1e-9, "weight_decay": 0.0}  # training barely moves the head: its start shows
    api.finetune(FinetuneConfig(model=str(bare_encoder), data=DataConfig(**data), train=TrainConfig(**still),
                                out=str(tmp_path / "t")))
    y = torch.tensor(load_task_data(DataConfig(**data)).splits["train"]["label"])
    prior = y.mean(0).clamp(1e-3, 1 - 1e-3)
    bias = load_file(str(tmp_path / "t" / "model.safetensors"))["classifier.bias"]
    # the saved head also carries the decision threshold tuned at the end (folded in as bias - logit(t))
    t = json.loads((tmp_path / "t" / "config.json").read_text())["kdistill_threshold"]
    torch.testing.assert_close(bias + math.log(t / (1 - t)), prior.log() - (1 - prior).log(), atol=1e-4, rtol=0)
    # fine-tuning the fine-tuned model again keeps its head (a trained head is not reset to the priors)
    api.finetune(FinetuneConfig(model=str(tmp_path / "t"), data=DataConfig(**{**data, "max_train_examples": 8}),
                                train=TrainConfig(**still), out=str(tmp_path / "t2")))
    again = load_file(str(tmp_path / "t2" / "model.safetensors"))["classifier.bias"]
    t2 = json.loads((tmp_path / "t2" / "config.json").read_text())["kdistill_threshold"]
    assert torch.allclose(again + math.log(t2 / (1 - t2)), bias, atol=1e-4)
