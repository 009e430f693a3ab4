"""MobileBERT-style students: built from a size spec, feature-map and attention transfer, save/load, ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, MobileBertForSequenceClassification

from kdistill import api
from kdistill.config import DistillConfig, build
from kdistill.distill.features import forward_features
from kdistill.errors import KDistillError
from kdistill.export import export_onnx, onnx_logits, onnx_session
from kdistill.models import load_classifier, load_tokenizer, probe
from kdistill.students.mobilebert import MobileBertSpec, mobilebert_student, svd_embeddings

SPEC = MobileBertSpec(num_layers=2, hidden_size=32, intra_bottleneck_size=16, num_heads=2, intermediate_size=32,
                      num_feedforward_networks=2, embedding_size=16)


def test_svd_embeddings_keep_the_teachers_geometry() -> None:
    torch.manual_seed(0)
    low_rank = torch.randn(200, 4) @ torch.randn(4, 32)  # rank 4: 4 dimensions hold all of it
    reduced = svd_embeddings(low_rank, 4)
    assert reduced.shape == (200, 4)
    centred = low_rank - low_rank.mean(0)
    r_centred = reduced - reduced.mean(0)
    scale = (r_centred.norm() / centred.norm()) ** 2
    torch.testing.assert_close(r_centred @ r_centred.T, scale * centred @ centred.T, atol=1e-3, rtol=1e-3)
    with pytest.raises(KDistillError, match="wider than the teacher"):
        svd_embeddings(low_rank, 64)


def test_a_mobilebert_student_is_built_trained_by_feature_maps_saved_and_exported(tiny_teacher: Path,
                                                                                  tmp_path: Path) -> None:
    teacher = load_classifier(str(tiny_teacher))
    student = mobilebert_student(teacher, SPEC)
    assert isinstance(student, MobileBertForSequenceClassification)
    p = probe(student)
    assert (p.family, p.num_layers, p.hidden_size, p.num_heads) == ("mobilebert", 2, 32, 2)
    assert student.config.normalization_type == "no_norm" and student.config.num_feedforward_networks == 2
    # feature-map transfer (hidden MSE, same 32 width here) and attention transfer (per-head KL) on one batch
    cfg = build(DistillConfig, {"teacher": str(tiny_teacher), "losses": [
        {"name": "kl", "temperature": 2.0}, {"name": "hidden_mse"}, {"name": "attn_kl"}]})
    objective = api.build_objective(cfg, teacher, student, True)
    tok = load_tokenizer(str(tiny_teacher))
    batch = dict(tok(["a gripping , funny film", "dull"], padding=True, return_tensors="pt"))
    student.train()
    with torch.no_grad():
        t = forward_features(teacher.eval(), batch, objective.teacher_request)
    out = objective(forward_features(student, batch, objective.student_request), t, None)
    assert {"kl", "hidden_mse", "attn_kl"} <= set(out.terms) and torch.isfinite(out.total)
    out.total.backward()
    grads = [q.grad for n, q in student.named_parameters() if "encoder.layer.0." in n and q.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)
    student.eval()
    student.save_pretrained(tmp_path / "mobile")
    tok.save_pretrained(tmp_path / "mobile")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mobile").eval()
    ids = batch["input_ids"]
    with torch.no_grad():
        want = student(input_ids=ids, attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(again(input_ids=ids, attention_mask=batch["attention_mask"]).logits, want)
    path = export_onnx(str(tmp_path / "mobile"), tmp_path / "onnx")
    got = onnx_logits(onnx_session(path), {k: v for k, v in batch.items()})
    assert abs(got - want.numpy()).max() < 1e-4


def test_a_bottleneck_that_heads_do_not_divide_is_refused(tiny_teacher: Path) -> None:
    with pytest.raises(KDistillError, match="not a multiple of student.num_heads"):
        mobilebert_student(load_classifier(str(tiny_teacher)), MobileBertSpec(intra_bottleneck_size=10, num_heads=4))


def test_progressive_transfer_freezes_the_layers_below_and_trains_all_in_the_final_stage(
        tiny_teacher: Path, tmp_path: Path) -> None:
    cfg = build(DistillConfig, {
        "teacher": str(tiny_teacher), "out": str(tmp_path / "pkt"),
        "student": {"init": "mobilebert", "num_layers": 2, "hidden_size": 32, "intra_bottleneck_size": 16,
                    "num_heads": 2, "intermediate_size": 32, "num_feedforward_networks": 2, "embedding_size": 16},
        "losses": [{"name": "hidden_mse"}, {"name": "attn_kl"}, {"name": "kl", "temperature": 2.0}],
        "schedule": {"name": "pid", "epochs_per_layer": 1, "freeze_below": True},
        "data": {"task": "sst2", "max_train_examples": 32, "max_eval_examples": 16, "max_length": 24},
        "train": {"epochs": 3, "batch_size": 16, "lr": 1e-3, "progress": False, "device": "cpu",
                  "eval_every_epoch": False}})
    seen: list[tuple[int, dict[str, torch.Tensor]]] = []

    def snapshot(d) -> None:
        groups = {"embeddings": "mobilebert.embeddings.", "layer 1": "mobilebert.encoder.layer.0.",
                  "layer 2": "mobilebert.encoder.layer.1."}
        params = dict(d.student.named_parameters())
        seen.append((d.schedule.state_dict()["stage"], {g: torch.cat([p.detach().flatten().clone() for n, p in
                                                                      params.items() if n.startswith(prefix)])
                                                         for g, prefix in groups.items()}))

    api.distill(cfg, callbacks=[snapshot])
    moved: dict[int, set[str]] = {}
    for (stage, a), (stage_b, b) in zip(seen, seen[1:], strict=False):
        if stage == stage_b:  # two steps within one stage
            moved.setdefault(stage, set()).update(g for g in a if not torch.equal(a[g], b[g]))
    assert moved[1] == {"layer 2"}  # training layer 2: the embeddings and layer 1 are frozen
    assert moved[2] == {"embeddings", "layer 1", "layer 2"}  # the final stage trains the whole student
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pkt")
    assert isinstance(student, MobileBertForSequenceClassification)


TINY_MOBILE = {"init": "mobilebert", "num_layers": 2, "hidden_size": 32, "intra_bottleneck_size": 16, "num_heads": 2,
               "intermediate_size": 32, "num_feedforward_networks": 2, "embedding_size": 16}
LAYER_LOSSES = [{"name": "hidden_mse"}, {"name": "attn_kl"}]
GROUPS = {"embeddings": "mobilebert.embeddings.", "layer 1": "mobilebert.encoder.layer.0.",
          "layer 2": "mobilebert.encoder.layer.1.", "classifier": "classifier."}


def _moved_per_run(cfg: DistillConfig) -> list[set[str]]:
    """Run `cfg`; per distillation run (one per stage), the parameter groups that changed between its first and
    last optimizer steps."""
    first: dict[int, dict[str, torch.Tensor]] = {}
    last: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(d) -> None:
        params = dict(d.student.named_parameters())
        snap = {g: torch.cat([p.detach().flatten().clone() for n, p in params.items() if n.startswith(prefix)])
                for g, prefix in GROUPS.items()}
        first.setdefault(id(d), snap)
        last[id(d)] = snap

    api.distill(cfg, callbacks=[snapshot])
    return [{g for g in first[k] if not torch.equal(first[k][g], last[k][g])} for k in first]


def _tiny_run(tiny_teacher: Path, out: Path, **extra: object) -> DistillConfig:
    return build(DistillConfig, {
        "teacher": str(tiny_teacher), "out": str(out), "student": TINY_MOBILE,
        "data": {"task": "sst2", "max_train_examples": 32, "max_eval_examples": 16, "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "progress": False, "device": "cpu"}, **extra})


def test_joint_transfer_is_two_stages_layer_losses_on_every_layer_then_task_distillation(
        tiny_teacher: Path, tmp_path: Path) -> None:
    # MobileBERT's joint knowledge transfer: every layer's feature-map and attention losses at once (nothing frozen,
    # no prediction loss, so the classifier stays as built), then task distillation trains the whole student
    cfg = _tiny_run(tiny_teacher, tmp_path / "jkt", stages=[
        {"name": "joint", "losses": LAYER_LOSSES},
        {"name": "task", "losses": [{"name": "kl", "temperature": 2.0}, {"name": "ce"}]}])
    joint, task = _moved_per_run(cfg)
    assert joint == {"embeddings", "layer 1", "layer 2"}
    assert task == {"embeddings", "layer 1", "layer 2", "classifier"}
    assert (tmp_path / "jkt" / "stages" / "1-joint" / "model.safetensors").is_file()
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "jkt")
    assert isinstance(student, MobileBertForSequenceClassification)


def test_auxiliary_transfer_is_one_stage_with_the_layer_losses_added_to_task_distillation(
        tiny_teacher: Path, tmp_path: Path) -> None:
    # auxiliary knowledge transfer: the layer losses are extra terms of the KD objective, one stage, nothing frozen
    cfg = _tiny_run(tiny_teacher, tmp_path / "akt", losses=LAYER_LOSSES + [{"name": "kl", "temperature": 2.0}])
    (moved,) = _moved_per_run(cfg)
    assert moved == {"embeddings", "layer 1", "layer 2", "classifier"}
    teacher = load_classifier(str(tiny_teacher))
    objective = api.build_objective(cfg, teacher, mobilebert_student(teacher, SPEC), True)
    assert {t.key for t in objective.terms} == {"hidden_mse", "attn_kl", "kl"}
    assert {p.student for t in objective.terms for p in t.pairs} == {1, 2}  # every layer's losses in the one stage
