"""KDTrainer: kdistill's objective inside transformers.Trainer, checked against `kdistill distill` itself."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainingArguments, pipeline

from kdistill import api
from kdistill.config import DataConfig, DistillConfig, StudentConfig, build
from kdistill.data import load_task_data
from kdistill.distill.kdtrainer import KDTrainer
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, load_tokenizer
from kdistill.students.build import build_student
from kdistill.tokenized import tokenize_splits

LOSSES = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
          {"name": "hidden_mse", "weight": 1.0}]
DATA = {"task": "sst2", "max_train_examples": 16, "max_eval_examples": 16, "max_length": 24}


@pytest.fixture(scope="module")
def still_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny teacher without dropout: two training loops can then agree to float rounding."""
    out = make_tiny_bert(tmp_path_factory.mktemp("kdt") / "teacher", seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(out)
    return out


def _train_set(teacher: Path):
    data = load_task_data(build(DataConfig, DATA))
    return tokenize_splits(data, load_tokenizer(str(teacher)), DATA["max_length"], None)["train"]


def _args(out: Path, epochs: int, batch: int, **more) -> TrainingArguments:
    return TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=epochs,
                             learning_rate=1e-3, weight_decay=0.01, warmup_steps=0.1, max_grad_norm=1.0,
                             optim="adamw_torch", lr_scheduler_type="linear", seed=42, report_to=[],
                             logging_steps=1, use_cpu=True, disable_tqdm=True, **{"save_strategy": "no", **more})


def _trainer(teacher: Path, out: Path, student_cfg: dict, epochs: int, batch: int, **more) -> KDTrainer:
    t = load_classifier(str(teacher))
    torch.manual_seed(0)  # projections, when a narrowed student needs them, are drawn from here
    student = build_student(build(StudentConfig, student_cfg), t, single_sentence=True)
    return KDTrainer(model=student, teacher=t, distill={"losses": LOSSES}, args=_args(out, epochs, batch, **more),
                     train_dataset=_train_set(teacher), processing_class=load_tokenizer(str(teacher)))


def test_kdtrainer_trains_the_same_student_as_kdistill_distill(still_teacher: Path, tmp_path: Path) -> None:
    # One full batch per epoch: both loops then see the same examples per step whatever their sampler; no dropout.
    # Observed here: identical weights (difference 0.0); the tolerance 1e-5 leaves room for another optimizer
    # kernel (fused/foreach AdamW) on other hardware. 10 steps
    # also make the warm-up 1 step in both (Trainer rounds 10% of the steps up, kdistill down).
    cfg = build(DistillConfig, {
        "teacher": str(still_teacher), "student": {"num_layers": 2}, "data": DATA, "losses": LOSSES,
        "out": str(tmp_path / "cli"), "train": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01,
                                                "warmup_ratio": 0.1, "eval_every_epoch": False, "progress": False,
                                                "device": "cpu", "seed": 42}})
    api.distill(cfg)
    via_cli = load_file(str(tmp_path / "cli" / "model.safetensors"))
    trainer = _trainer(still_teacher, tmp_path / "trainer", {"num_layers": 2}, epochs=10, batch=16)
    trainer.train()
    trainer.save_model(str(tmp_path / "exported"))
    via_trainer = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert via_cli.keys() == via_trainer.keys()
    initial = AutoModelForSequenceClassification.from_pretrained(still_teacher).state_dict()
    moved = max(float((via_cli[k] - initial[k]).abs().max()) for k in via_cli if k in initial
                and "layer.1." not in k)
    assert moved > 1e-3  # training changed the weights, so agreeing below is not agreeing on the start
    gap = max(float((via_trainer[k] - via_cli[k]).abs().max()) for k in via_cli)
    print(f"largest weight difference, KDTrainer vs kdistill distill: {gap:.2e}")
    assert gap < 1e-5
    logged = [r for r in trainer.state.log_history if "loss" in r]
    assert logged and all({"kd/kl", "kd/ce", "kd/hidden_mse"} <= r.keys() for r in logged)


def test_resume_from_a_trainer_checkpoint_restores_projections_and_gives_the_same_student(
        still_teacher: Path, tmp_path: Path) -> None:
    narrow = {"num_layers": 2, "hidden_size": 16}  # hidden_mse then needs a 16 -> 32 projection
    full = _trainer(still_teacher, tmp_path / "full", narrow, epochs=3, batch=8, save_strategy="steps", save_steps=2)
    full.train()
    ckpt = tmp_path / "full" / "checkpoint-4"
    saved = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("objective.") for k in saved)  # projections are in the checkpoint
    assert not any("teacher" in k for k in saved)
    resumed = _trainer(still_teacher, tmp_path / "resumed", narrow, epochs=3, batch=8, save_strategy="no")
    with torch.no_grad():  # a different start, so only the checkpoint can make the two agree
        for p in resumed.model.objective.parameters():
            p.add_(1.0)
    resumed.train(resume_from_checkpoint=str(ckpt))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)


def test_the_exported_student_is_a_plain_model_that_pipeline_loads(still_teacher: Path, tmp_path: Path) -> None:
    trainer = _trainer(still_teacher, tmp_path / "t", {"num_layers": 2, "hidden_size": 16}, epochs=1, batch=16)
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    keys = load_file(str(tmp_path / "student" / "model.safetensors")).keys()
    assert not any(k.startswith(("objective", "student.")) for k in keys)
    clf = pipeline("text-classification", model=str(tmp_path / "student"), device=-1)
    out = clf("a gripping , funny film")
    assert out[0]["label"] in {"LABEL_0", "LABEL_1"} and 0.0 <= out[0]["score"] <= 1.0


def test_a_teacher_with_another_vocabulary_is_refused(still_teacher: Path, tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    other = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64))
    student = load_classifier(str(still_teacher))
    with pytest.raises(KDistillError, match="same vocabulary"):
        KDTrainer(model=student, teacher=other, args=_args(tmp_path, 1, 8))


def _qa_pair():
    from transformers import BertConfig, BertForQuestionAnswering

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # the loss compared by hand
    torch.manual_seed(0)
    return BertForQuestionAnswering(cfg), BertForQuestionAnswering(cfg)


def _by_hand(s_logits: torch.Tensor, t_logits: torch.Tensor, keep: torch.Tensor, gold: torch.Tensor, t: float):
    """0.5 x KL(teacher || student) at T over the kept positions x T² + 0.5 x CE of the gold position, each the mean of
    the start and end terms, written out with plain torch ops."""
    kls, ces = [], []
    for k in (0, 1):
        s, te = s_logits[..., k], t_logits[..., k]
        neg = torch.finfo(s.dtype).min
        ps = torch.log_softmax((s / t).masked_fill(~keep, neg), -1)
        pt = torch.softmax((te / t).masked_fill(~keep, neg), -1)
        kl = (pt * (torch.log(pt.clamp_min(1e-30)) - ps)).masked_fill(~keep, 0).sum(-1).mean() * t * t
        kls.append(kl)
        ces.append(torch.nn.functional.cross_entropy(s, gold[:, k]))
    return 0.5 * torch.stack(kls).mean() + 0.5 * torch.stack(ces).mean()


@pytest.mark.parametrize("with_span_mask", [False, True])
def test_a_question_answering_student_learns_from_start_and_end_distributions(tmp_path: Path,
                                                                              with_span_mask: bool) -> None:
    from transformers import AutoModelForQuestionAnswering

    student, teacher = _qa_pair()
    ids = torch.randint(5, 100, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 9:] = 0  # padding: never a position to match
    span = mask.clone()
    span[:, 1:4] = 0  # the question's tokens (kdistill's own span mask leaves them out)
    gold = torch.tensor([[5, 6], [4, 8], [0, 0], [7, 10]])
    batch = {"input_ids": ids, "attention_mask": mask, "start_positions": gold[:, 0], "end_positions": gold[:, 1]}
    if with_span_mask:
        batch["span_mask"] = span
    rows = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    trainer = KDTrainer(model=student, teacher=teacher, args=TrainingArguments(
        output_dir=str(tmp_path / "qa"), per_device_train_batch_size=4, max_steps=3, report_to=[], use_cpu=True,
        learning_rate=1e-3), train_dataset=rows)
    assert trainer.label_names == ["start_positions", "end_positions"]
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        s_logits = torch.stack([student(input_ids=ids, attention_mask=mask).start_logits,
                                student(input_ids=ids, attention_mask=mask).end_logits], -1)
        t_logits = torch.stack([teacher(input_ids=ids, attention_mask=mask).start_logits,
                                teacher(input_ids=ids, attention_mask=mask).end_logits], -1)
    keep = (span if with_span_mask else mask).bool()
    torch.testing.assert_close(loss.detach(), _by_hand(s_logits, t_logits, keep, gold, 2.0), atol=1e-5, rtol=1e-5)
    pred = trainer.predict(rows)  # as a plain Trainer over *ForQuestionAnswering: (start, end) logits and positions
    assert isinstance(pred.predictions, tuple) and [p.shape for p in pred.predictions] == [(4, 12), (4, 12)]
    assert [list(x) for x in pred.label_ids] == [gold[:, 0].tolist(), gold[:, 1].tolist()]
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    trainer.save_model(str(tmp_path / "student"))
    again = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "student")
    assert again.config.num_hidden_layers == 2


def test_kdistills_own_qa_encoding_and_unlabelled_batches_evaluate_and_predict(tmp_path: Path) -> None:
    student, teacher = _qa_pair()
    ids = torch.randint(5, 100, (4, 10))
    gold = torch.tensor([[3, 4], [0, 0], [5, 7], [2, 2]])
    span = torch.ones(4, 10, dtype=torch.long)
    # kdistill's encoding (tokenize_splits + the QA collator): `labels` (B, 2) = (start, end), plus the span mask
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(10, dtype=torch.long), "labels": gold[i],
             "span_mask": span[i]} for i in range(4)]
    trainer = KDTrainer(model=student, teacher=teacher, args=TrainingArguments(
        output_dir=str(tmp_path / "qa"), per_device_eval_batch_size=4, report_to=[], use_cpu=True),
        train_dataset=rows, eval_dataset=rows)
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0
    pred = trainer.predict(rows)
    assert [list(x) for x in pred.label_ids] == [gold[:, 0].tolist(), gold[:, 1].tolist()]
    with torch.no_grad():
        want = student(input_ids=ids).start_logits
    torch.testing.assert_close(torch.as_tensor(pred.predictions[0]), want, atol=1e-5, rtol=1e-5)
    unlabelled = [{k: v for k, v in r.items() if k != "labels"} for r in rows]
    pred = trainer.predict(unlabelled)  # the plain Trainer would run the objective without a teacher
    assert pred.label_ids is None and pred.predictions[0].shape == (4, 10)
    torch.testing.assert_close(torch.as_tensor(pred.predictions[1]), student(input_ids=ids).end_logits.detach(),
                               atol=1e-5, rtol=1e-5)


def test_a_span_mask_row_without_positions_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    student, teacher = _qa_pair()
    ids = torch.randint(5, 100, (2, 8))
    span = torch.ones(2, 8, dtype=torch.long)
    span[1] = 0  # a window whose soft targets would otherwise add nothing to the loss
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "start_positions": torch.tensor([1, 0]),
             "end_positions": torch.tensor([2, 0]), "span_mask": span}
    trainer = KDTrainer(model=student, teacher=teacher, args=TrainingArguments(
        output_dir=str(tmp_path / "qa"), report_to=[], use_cpu=True))
    with pytest.raises(KDistillError, match="span_mask: a window has no position to match"):
        trainer.compute_loss(trainer.model, dict(batch))
    span[1, 0] = 1  # CLS alone ("not in this window") is a distribution
    assert torch.isfinite(trainer.compute_loss(trainer.model, {**batch, "span_mask": span}))


def test_a_teacher_of_another_task_type_or_label_count_is_refused_when_the_trainer_is_built(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    student, _ = _qa_pair()
    cfg = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    args = TrainingArguments(output_dir=str(tmp_path / "x"), report_to=[], use_cpu=True)
    with pytest.raises(KDistillError, match="the student is a question_answering model but the teacher a "
                                            "classification model"):
        KDTrainer(model=student, teacher=BertForSequenceClassification(BertConfig(**cfg)), args=args)
    tagger = BertForTokenClassification(BertConfig(**cfg, num_labels=5))
    with pytest.raises(KDistillError, match=r"the teacher has 3 outputs \(per token\) and the student 5"):
        KDTrainer(model=tagger, teacher=BertForTokenClassification(BertConfig(**cfg, num_labels=3)), args=args)
