"""`--preset`: a measured recipe fills what the user did not give; the user's own values always win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_tiny_bert
from transformers import AutoModelForSequenceClassification, MobileBertForSequenceClassification

from kdistill.cli import build_parser, config_from_args, main
from kdistill.config import DistillConfig, build
from kdistill.config.presets import PRESETS
from kdistill.errors import KDistillError


def _flags(*argv: str):
    return config_from_args(argv[0], build_parser().parse_args(list(argv)))


def test_a_preset_fills_student_losses_and_train_and_keeps_the_users_values() -> None:
    fast = build(DistillConfig, {"preset": "fast"})
    assert fast.student.init == "mobilebert" and fast.student.hidden_size == 256
    assert [s.name for s in fast.stages] == ["joint", "task"]
    assert [t.name for t in fast.stages[0].losses] == ["hidden_cka", "attn_kl"]
    assert (fast.train.epochs, fast.train.lr) == (3, 1e-4)
    mine = _flags("distill", "--preset", "fast", "--epochs", "1", "--batch_size", "8")
    assert (mine.train.epochs, mine.train.batch_size, mine.train.lr) == (1, 8, 1e-4)  # train merged key by key
    assert mine.student.init == "mobilebert"
    # the preset's student resized by a flag; a student of another init replaces it whole (its sizes belong to it)
    resized = _flags("distill", "--preset", "fast", "--student.embedding_size", "32")
    student = resized.student
    assert (student.init, student.embedding_size, student.hidden_size) == ("mobilebert", 32, 256)
    own = _flags("distill", "--preset", "fast", "--student.init", "teacher_layers", "--student.num_layers", "2")
    assert (own.student.init, own.student.num_layers, own.student.hidden_size) == ("teacher_layers", 2, None)
    # the user's losses are a single stage of their own: the preset's stages would silently replace them
    losses = _flags("distill", "--preset", "fast", "--losses", "[{name: ce}]")
    assert losses.stages is None and [t.name for t in losses.losses] == ["ce"]
    balanced = _flags("distill", "--preset", "balanced")
    assert balanced.student.init == "teacher_layers" and balanced.student.num_layers == 3
    assert [t.name for t in balanced.losses] == ["kl", "ce"] and balanced.stages is None
    assert build(DistillConfig, {}).preset is None and build(DistillConfig, {}).student.init == "teacher_layers"


def test_an_unknown_preset_is_one_line_naming_the_field_and_the_choices() -> None:
    with pytest.raises(KDistillError, match=r"preset: Input should be 'balanced' or 'fast'") as err:
        _flags("distill", "--preset", "turbo")
    assert "\n" not in str(err.value)
    assert set(PRESETS) == {"balanced", "fast"}
    for odd in ("[fast]", "{a: 1}"):  # YAML values that are no name: one line, not a TypeError
        with pytest.raises(KDistillError, match=r"preset: Input should be 'balanced' or 'fast'"):
            _flags("distill", "--preset", odd)
        with pytest.raises(KDistillError, match=r"distill.preset: Input should be 'balanced' or 'fast'"):
            _flags("run", "--distill.preset", odd)


def test_run_with_a_preset_takes_the_presets_recipe_not_the_main_jobs_student() -> None:
    run = _flags("run", "--distill.preset", "fast", "--distill.train.epochs", "2")
    assert run.distill.student.init == "mobilebert" and run.distill.train.epochs == 2
    assert run.distill.train.lr == 1e-4 and [s.name for s in run.distill.stages] == ["joint", "task"]
    assert run.distill.data.max_length == 64  # the main job's data section stays
    plain = _flags("run")
    assert plain.distill.preset is None and plain.distill.student.num_layers == 3
    assert "hidden_mse" in [t.name for t in plain.distill.losses]  # the main job unchanged without a preset


def test_the_fast_preset_trains_a_mobilebert_student_that_automodel_loads(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    teacher = make_tiny_bert(tmp_path / "teacher", hidden=128, heads=2)  # as wide as the preset's embeddings
    code = main(["distill", "--teacher", str(teacher), "--preset", "fast", "--data.task", "sst2",
                 "--data.max_train_examples", "48", "--data.max_eval_examples", "16", "--data.max_length", "24",
                 "--epochs", "0.5", "--batch_size", "16", "--progress", "false", "--device", "cpu", "--out", "fast"])
    assert code == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "fast")
    assert isinstance(student, MobileBertForSequenceClassification)
    assert student.config.num_hidden_layers == 4 and student.config.intra_bottleneck_size == 64
    metrics = json.loads((tmp_path / "fast" / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["joint", "task"]
