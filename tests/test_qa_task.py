"""Extractive QA as a kdistill task type: reading, windows, losses, scoring, bad input, and one run end to end.

The run fine-tunes a tiny bare encoder into a QA model on a slice of the shipped SQuAD (windows of 96 tokens that
share 24, so answers cross window boundaries), distills a narrowed student from its output cache with `kl` (the
span KL) + `ce`, checks the cached teacher logits against the live teacher, scores EM/F1 against predictions made
here with `qa_predict`, exports to ONNX with parity on start and end logits, reports and writes the model card.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, make_tiny_bert

from kdistill import api, cli
from kdistill.config import (
    BenchConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    LabelConfig,
    LossConfig,
    MappingConfig,
    ReportConfig,
    StudentConfig,
    TrainConfig,
)
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest, Features
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.evaluate import predict
from kdistill.models import ModelProbe, load_classifier, load_tokenizer
from kdistill.tasks import detect_file_task, get_task, task_of_config
from kdistill.tasks.qa import window_predictions
from kdistill.tasks.qa_data import read_squad
from kdistill.tasks.qa_losses import masked_kl
from kdistill.tasks.qa_metric import squad_scores
from kdistill.tasks.qa_predict import answer_questions
from kdistill.teachers import CachedTeacher
from kdistill.tokenized import make_loader, tokenize_splits

TASK = get_task("question_answering")
TRAIN = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False, "save_steps": 1000,
         "device": "cpu", "threads": 2}
MAX_LENGTH, STRIDE = 96, 24


def _squad_slice(src: str, articles: int, per_article: int, out: Path) -> Path:
    """The first `per_article` questions of the first paragraphs of the first `articles` articles of shipped SQuAD."""
    obj = json.loads((DATA / "squad" / src).read_text(encoding="utf-8"))
    data = []
    for article in obj["data"][:articles]:
        paras, n = [], 0
        for para in article["paragraphs"]:
            if n >= per_article:
                break
            qas = para["qas"][:per_article - n]
            n += len(qas)
            paras.append({"context": para["context"], "qas": qas})
        data.append({"title": article["title"], "paragraphs": paras})
    out.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return out


def _squad(path: Path, qas: list[dict], context: str = "the film is a funny and touching story .") -> Path:
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}),
                    encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- reading


def test_shipped_squad() -> None:
    d = load_task_data(DataConfig(task="squad"))
    assert (d.task_type, d.metric, d.label_names, d.num_labels) == ("question_answering", "squad_f1",
                                                                    ["start", "end"], 2)
    sizes = {k: len(v) for k, v in d.splits.items()}
    assert sizes["train"] + sizes["validation"] == 4371 and sizes["test"] == 10570
    titles = {k: set(v["title"]) for k, v in d.splits.items()}
    assert titles["validation"] and not titles["validation"] & titles["train"]  # carved by whole articles


def test_squad_files_are_detected_and_carved_by_title(tmp_path: Path) -> None:
    train = _squad_slice("train.json", 4, 10, tmp_path / "train.json")
    assert detect_file_task(train) == "question_answering"
    d = load_task_data(DataConfig(task=None, train_file=str(train), validation_fraction=0.25, doc_stride=7))
    assert d.task_type == "question_answering" and len(d.splits["train"]) + len(d.splits["validation"]) == 40
    assert len(set(d.splits["validation"]["title"])) == 1 and len(d.splits["validation"]) == 10
    assert not set(d.splits["validation"]["title"]) & set(d.splits["train"]["title"])
    assert set(d.splits["train"]["doc_stride"]) == {7}


def test_a_datasets_folder_in_squad_layout(tmp_path: Path) -> None:
    import datasets

    exs = read_squad(_squad_slice("train.json", 3, 4, tmp_path / "train.json"))
    rows = [{"id": e.id, "title": e.title, "context": e.context, "question": e.question,
             "answers": {"text": list(e.answers), "answer_start": list(e.answer_starts)}} for e in exs]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:8]),
                          "validation": datasets.Dataset.from_list(rows[8:])}).save_to_disk(str(tmp_path / "ds"))
    d = load_task_data(DataConfig(task=None, dataset=str(tmp_path / "ds")))
    assert (d.task_type, d.metric, len(d.splits["train"]), len(d.splits["validation"])) == (
        "question_answering", "squad_f1", 8, 4)
    assert d.splits["validation"][0]["label"]["text"] == list(exs[8].answers)
    bad = [dict(rows[0], answers={"text": ["nowhere to be found"], "answer_start": [0]})]
    datasets.Dataset.from_list(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(KDistillError, match=f"question '{exs[0].id}': answer 0 'nowhere to be found' is not at"):
        load_task_data(DataConfig(task=None, dataset=str(tmp_path / "bad")))


def test_augment_is_refused_for_spans(tmp_path: Path) -> None:
    from kdistill.augment import augment_task
    from kdistill.config import AugmentConfig, build

    train = _squad_slice("train.json", 2, 3, tmp_path / "train.json")
    cfg = build(AugmentConfig, {"data": {"task": None, "train_file": str(train)}, "mlm": str(tmp_path / "no-mlm"),
                                "out": str(tmp_path / "aug.jsonl")})
    with pytest.raises(KDistillError, match="answer spans would no longer line up: an extractive question-answering"):
        augment_task(cfg)


def test_encode_windows_collate_and_targets(tmp_path: Path, tiny_teacher: Path) -> None:
    train = _squad_slice("train.json", 2, 6, tmp_path / "train.json")
    d = load_task_data(DataConfig(task=None, train_file=str(train), max_length=MAX_LENGTH, doc_stride=STRIDE))
    tok = load_tokenizer(str(tiny_teacher))
    enc = tokenize_splits(d, tok, MAX_LENGTH, cache_dir=str(tmp_path / "cache"))["train"]
    assert len(enc) > len(d.splits["train"])  # several windows per question
    assert max(len(x) for x in enc["input_ids"]) == MAX_LENGTH
    for row in enc.select(range(8)):
        s, e = row["labels"]
        assert row["span_mask"][s] == 1 and row["span_mask"][e] == 1 and s <= e
    batch = next(iter(make_loader(enc, tok, 5, task=d.task)))
    assert set(batch) >= {"input_ids", "attention_mask", "labels", "span_mask"} and "example_id" not in batch
    assert batch["labels"].shape == (5, 2) and batch["span_mask"].shape == batch["input_ids"].shape
    assert not bool((batch["span_mask"].bool() & ~batch["attention_mask"].bool()).any())  # padding is outside


def test_kl_means_the_span_kl_and_ce_the_span_ce() -> None:
    probe = ModelProbe("bert", 2, 8, 2, "bert.encoder.layer", True)
    obj = Objective([LossConfig(name="kl", temperature=2.0), LossConfig(name="ce")], MappingConfig(),
                    student=probe, teacher=probe, task=TASK)
    assert str(obj) == "1*kl:span_kl[T=2] + 1*ce:span_ce"
    torch.manual_seed(0)
    s, t = torch.randn(3, 6, 2), torch.randn(3, 6, 2)
    mask = torch.tensor([[1, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 0]])
    t[..., 5, :] = float("nan")  # outside every window but the second one's mask: must not count where masked
    t[1, 5, :] = 0.0
    labels = torch.tensor([[2, 3], [0, 0], [2, 2]])
    out = obj(Features(logits=s, mask=torch.ones(3, 6)), Features(logits=t, mask=torch.ones(3, 6)), labels,
              batch={"span_mask": mask})
    kl = (masked_kl(s[..., 0], t[..., 0], mask=mask, temperature=2.0)
          + masked_kl(s[..., 1], t[..., 1], mask=mask, temperature=2.0)) / 2
    ce = (torch.nn.functional.cross_entropy(s[..., 0], labels[:, 0])
          + torch.nn.functional.cross_entropy(s[..., 1], labels[:, 1])) / 2
    assert float(out.terms["kl"]) == pytest.approx(float(kl)) and float(out.terms["ce"]) == pytest.approx(float(ce))
    for name in ("bce", "logit_mse"):  # logit_mse would match the question and padding positions too
        with pytest.raises(KDistillError, match=f"loss '{name}' does not fit an extractive question-answering task "
                                                r"\(.*\); its prediction losses are ce, kl, soft_targets, span_ce, "
                                                r"span_kl \("):
            Objective([LossConfig(name=name)], MappingConfig(), student=probe, teacher=probe, task=TASK)


def test_several_teachers_average_over_positions() -> None:
    a, b = torch.randn(2, 5, 2), torch.randn(2, 5, 2)
    avg = TASK.average_teachers([a, b], [0.25, 0.75])
    assert torch.allclose(avg.softmax(-2), 0.25 * a.softmax(-2) + 0.75 * b.softmax(-2), atol=1e-6)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("qa", "message"), [
    ({"id": "q7", "question": "what ?", "answers": [{"text": "funny", "answer_start": 3}]},
     r"question 'q7': answer 0 'funny' is not at context\[3:\]"),
    ({"id": "q8", "question": "what ?", "answers": []}, r"question 'q8' has no answers"),
    ({"id": "q9", "question": "", "answers": [{"text": "funny", "answer_start": 14}]},
     r"question 'q9': field 'question' is empty"),
])
def test_bad_squad_exits_2_with_one_line_naming_the_question(capsys, tmp_path: Path, qa: dict, message: str) -> None:
    good = {"id": "q1", "question": "what is it ?", "answers": [{"text": "funny", "answer_start": 14}]}
    train = _squad(tmp_path / "train.json", [good])
    dev = _squad(tmp_path / "dev.json", [good, qa])
    code = cli.main(["finetune", "--data.task", "null", "--data.train_file", str(train), "--data.validation_file",
                     str(dev), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"kdistill: error: .*dev.json: " + message, err), err


def test_one_article_cannot_be_carved_by_title(tmp_path: Path) -> None:
    qas = [{"id": f"q{i}", "question": "what is it ?", "answers": [{"text": "funny", "answer_start": 14}]}
           for i in range(5)]
    with pytest.raises(KDistillError, match="same title .* give data.validation_file"):
        load_task_data(DataConfig(task=None, train_file=str(_squad(tmp_path / "t.json", qas))))


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bare_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = make_tiny_bert(tmp_path_factory.mktemp("enc") / "with-head")
    out = built.parent / "bare"
    load_classifier(str(built)).bert.save_pretrained(out)
    for f in built.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, out / f.name)
    return out


def test_qa_end_to_end(tmp_path: Path, bare_encoder: Path) -> None:
    train = _squad_slice("train.json", 3, 8, tmp_path / "train.json")
    test = _squad_slice("dev.json", 2, 4, tmp_path / "test.json")
    data = {"task": None, "train_file": str(train), "test_file": str(test), "max_length": MAX_LENGTH,
            "doc_stride": STRIDE}
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    api.finetune(FinetuneConfig(model=str(bare_encoder), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                                out=str(teacher)))
    assert json.loads((teacher / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert task_of_config(load_classifier(str(teacher)).config) == "question_answering"

    # some training answer crosses a window boundary: one window holds its start token but not its end
    d = load_task_data(DataConfig(**data))
    t_tok = load_tokenizer(str(teacher))
    rows = tokenize_splits(d, t_tok, MAX_LENGTH)["train"]
    starts = {(q["id"], q["label"]["answer_start"][0]) for q in d.splits["train"]}
    crossing = [r for r in rows if r["labels"] == [0, 0] and any(
        o[0] <= a < o[1] for qid, a in starts if qid == r["example_id"] for o in r["offset_mapping"])]
    assert crossing, "no answer crosses a window boundary"

    losses = [LossConfig(name="kl", temperature=2.0), LossConfig(name="ce")]
    api.distill(DistillConfig(teacher=str(teacher), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                              student=StudentConfig(num_layers=2, hidden_size=16), losses=losses, teacher_cache=True,
                              out=str(student)))
    s_cfg = json.loads((student / "config.json").read_text())
    assert (s_cfg["architectures"], s_cfg["num_hidden_layers"], s_cfg["hidden_size"]) == (
        ["BertForQuestionAnswering"], 2, 16)
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["method"].startswith("1*kl:span_kl[T=2] + 1*ce:span_ce")
    assert set(metrics["test"]) == {"squad_f1", "exact_match"}

    # the cache holds, per training window, the live teacher's start/end logits at each of its real tokens
    cached = CachedTeacher(metrics["teacher_cache"]["folder"], FeatureRequest())
    t_model = load_classifier(str(teacher)).eval()
    assert cached.per_token
    for i in range(0, len(rows), 11):
        with torch.no_grad():
            out = t_model(input_ids=torch.tensor([rows[i]["input_ids"]]),
                          token_type_ids=torch.tensor([rows[i]["token_type_ids"]]))
        live = torch.stack([out.start_logits[0], out.end_logits[0]], dim=-1)
        assert cached.example_logits(i).shape == live.shape
        assert torch.allclose(cached.example_logits(i), live, atol=1e-5)

    # evaluate: EM/F1 of answers computed here with qa_predict (windows, model, best span) and the official script
    result = api.evaluate(EvaluateConfig(model=str(student), teacher=str(teacher), data=DataConfig(**data),
                                         speed=False, split="test"))
    examples = read_squad(test)
    own = answer_questions(load_classifier(str(student)), load_tokenizer(str(student)), examples,
                           max_length=MAX_LENGTH, doc_stride=STRIDE)
    expected = squad_scores(own, {e.id: list(e.answers) for e in examples})
    got = result["model"]["metrics"]
    assert got["squad_f1"] == pytest.approx(expected["f1"] / 100)
    assert got["exact_match"] == pytest.approx(expected["exact_match"] / 100)
    windows = tokenize_splits(d, load_tokenizer(str(student)), MAX_LENGTH)["test"]
    logits, labels = predict(load_classifier(str(student)), make_loader(windows, t_tok, 7, task=d.task))
    assert window_predictions(logits, windows)[0] == own  # the same answer text for every question
    # logits that point at each window's gold start/end (CLS where the answer is not whole in it): every question
    # gets its first answer back from the window that holds it, EM = F1 = 1
    oracle = np.zeros_like(logits)
    for w, (s, e) in enumerate(labels):
        oracle[w, s, 0] = oracle[w, e, 1] = 10.0 if s else 0.0
    assert TASK.score("exact_match", oracle, labels, windows) == {"exact_match": 1.0, "squad_f1": 1.0}
    assert TASK.collapse_warning(oracle, labels, windows) is None
    assert "collapsed" in TASK.collapse_warning(np.zeros_like(logits), labels, windows)

    # export: ONNX Runtime's start and end logits match PyTorch's
    exported = api.export(ExportConfig(model=str(student), quantize=True))
    assert exported["max_abs_diff"] <= 1e-4 and exported["metric"] == "squad_f1"  # int8 scored per question
    questions = sum(len(par["qas"]) for art in json.loads(test.read_text())["data"] for par in art["paragraphs"])
    assert exported["scored_examples"] == questions  # questions, not the windows they are cut into
    import onnxruntime as ort

    sess = ort.InferenceSession(str(student / "onnx" / "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["start_logits", "end_logits"]

    # bench times the QA model in PyTorch and on the exported graph
    timed = api.bench(BenchConfig(model=[str(student)], batch_sizes=[2], seq_lengths=[32], warmup=0, repeats=1,
                                  device="cpu", out_json=None))
    assert {r["backend"] for r in timed["rows"]} == {"pytorch", "onnxruntime"}

    # report: the QA table, no confusion matrix
    report = api.report(ReportConfig(runs=[str(student)], out=str(tmp_path / "report"), speed=False))
    page = Path(report["html"]).read_text()
    assert "Extractive QA" in page and "confusion" not in page.lower()

    # the model card shows qa_predict.answer (transformers 5 has no question-answering pipeline)
    card = (student / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "from kdistill.tasks.qa_predict import answer" in card
    snippet = card.split("```python\n")[1].split("```")[0]
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the card's own usage code, run as a reader would
    assert isinstance(scope["span"].text, str) and scope["span"].window >= 0

    # kdistill label and one-output students are refused at set-up, naming the task type
    txt = tmp_path / "in.txt"
    txt.write_text("what is it ?\n", encoding="utf-8")
    with pytest.raises(KDistillError, match="one answer per example; an extractive question-answering task"):
        api.label(LabelConfig(teacher=str(teacher), input=str(txt), out=str(tmp_path / "l.jsonl"), device="cpu"))
    with pytest.raises(KDistillError, match="student.init bilstm builds a classifier"):
        api.distill(DistillConfig(teacher=str(teacher), data=DataConfig(**data), train=TrainConfig(**TRAIN),
                                  losses=[LossConfig(name="kl")], out=str(tmp_path / "refused"),
                                  student=StudentConfig(init="bilstm")))
