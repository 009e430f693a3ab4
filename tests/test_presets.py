"""`--preset`: a measured recipe fills what the user did not give; the user's own values always win."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from kdistill.cli import build_parser, config_from_args, main
from kdistill.config import DistillConfig, build
from kdistill.config.presets import PRESETS
from kdistill.errors import KDistillError


def _flags(*argv: str):
    return config_from_args(argv[0], build_parser().parse_args(list(argv)))


def test_a_preset_fills_student_losses_and_train_and_keeps_the_users_values() -> None:
    fast = build(DistillConfig, {"preset": "fast"})
    assert fast.student.init == "cnn" and fast.student.hidden_size == 256 and fast.stages is None
    assert [t.name for t in fast.losses] == ["logit_mse"]
    assert (fast.train.epochs, fast.train.lr) == (3, 3e-3)
    mine = _flags("distill", "--preset", "fast", "--epochs", "1", "--batch_size", "8")
    assert (mine.train.epochs, mine.train.batch_size, mine.train.lr) == (1, 8, 3e-3)  # train merged key by key
    assert mine.student.init == "cnn"
    # the preset's student resized by a flag; a student of another init replaces it whole (its sizes belong to it)
    resized = _flags("distill", "--preset", "fast", "--student.hidden_size", "128")
    assert (resized.student.init, resized.student.hidden_size) == ("cnn", 128)
    own = _flags("distill", "--preset", "fast", "--student.init", "teacher_layers", "--student.num_layers", "2")
    assert (own.student.init, own.student.num_layers, own.student.hidden_size) == ("teacher_layers", 2, None)
    # the user's losses replace the preset's; the user's stages replace its losses (stages are losses per stage)
    losses = _flags("distill", "--preset", "fast", "--losses", "[{name: ce}]")
    assert [t.name for t in losses.losses] == ["ce"] and losses.student.init == "cnn"
    staged = build(DistillConfig, {"preset": "balanced", "stages": [{"name": "a", "losses": [{"name": "ce"}]}]})
    assert [s.name for s in staged.stages] == ["a"] and staged.student.num_layers == 3
    balanced = _flags("distill", "--preset", "balanced")
    assert balanced.student.init == "teacher_layers" and balanced.student.num_layers == 3
    assert [t.name for t in balanced.losses] == ["soft_targets", "ce", "hidden_mse", "attn_kl"]
    assert balanced.stages is None
    # feature losses belong to the preset's full-width teacher-layer student: a narrowed student, or one of another
    # kind (its own tokenizer, say), gets the soft targets alone; fewer layers keep them
    for flags in (["--student.hidden_size", "192"], ["--student.init", "path", "--student.path", "minilm"]):
        other = _flags("distill", "--preset", "balanced", *flags)
        assert [t.name for t in other.losses] == ["soft_targets", "ce"], flags
    fewer = _flags("distill", "--preset", "balanced", "--student.num_layers", "2")
    assert [t.name for t in fewer.losses] == ["soft_targets", "ce", "hidden_mse", "attn_kl"]
    assert fewer.student.num_layers == 2
    assert (balanced.train.epochs, balanced.train.lr) == (3, 5e-5)
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
    assert run.distill.student.init == "cnn" and run.distill.train.epochs == 2
    assert run.distill.train.lr == 3e-3 and [t.name for t in run.distill.losses] == ["logit_mse"]
    assert run.distill.data.max_length == 64  # the main job's data section stays
    plain = _flags("run")
    assert plain.distill.preset is None and plain.distill.student.num_layers == 3
    assert "hidden_mse" in [t.name for t in plain.distill.losses]  # the main job unchanged without a preset


@pytest.mark.parametrize("preset", ["fast", "balanced"])
def test_each_preset_trains_a_student_that_automodel_loads(tmp_path: Path, tiny_teacher: Path,
                                                            monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["distill", "--teacher", str(tiny_teacher), "--preset", preset, "--data.task", "sst2",
                 "--data.max_train_examples", "48", "--data.max_eval_examples", "16", "--data.max_length", "24",
                 "--epochs", "0.5", "--batch_size", "16", "--progress", "false", "--device", "cpu", "--out", preset])
    assert code == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / preset)
    summary = json.loads((tmp_path / preset / "metrics.json").read_text())
    card = (tmp_path / preset / "README.md").read_text()
    if preset == "fast":
        assert type(student).__name__ == "SimpleStudentForSequenceClassification" and student.config.kind == "cnn"
        assert summary["method"] == "1*logit_mse"
        # the card's snippet runs in a fresh interpreter: kdistill's CNN class is registered by its one import
        usage = card.split("```python\n")[1].split("```")[0]
        assert usage.startswith("import kdistill.students")
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-c", usage], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0 and "'label':" in done.stdout, done.stderr[-2000:]
    else:
        assert "import kdistill" not in card  # a BERT student needs nothing but transformers
        assert student.config.num_hidden_layers == 3
        assert summary["method"].startswith("0.5*soft_targets:kl[T=2]")


def test_a_preset_student_that_does_not_fit_the_task_names_the_preset(tmp_path: Path, tiny_teacher: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    from conftest import make_tiny_bert

    monkeypatch.chdir(tmp_path)
    tagger = make_tiny_bert(tmp_path / "tagger", num_labels=9)
    cfg = json.loads((tagger / "config.json").read_text())
    cfg["architectures"] = ["BertForTokenClassification"]  # a CoNLL tagger's head: the CNN preset cannot serve it
    (tagger / "config.json").write_text(json.dumps(cfg))
    code = main(["distill", "--teacher", str(tagger), "--preset", "fast", "--data.task", "conll2003",
                 "--data.max_train_examples", "16", "--data.max_eval_examples", "8", "--progress", "false",
                 "--out", "tagged"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "cnn" in err[0] and "comes from --preset fast" in err[0]


@pytest.mark.parametrize(("task", "loss"), [("stsb", "logit_mse"), ("goemotions", "bce_soft[T=2]")])
def test_the_balanced_preset_takes_each_task_types_soft_target_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    task: str, loss: str) -> None:
    """`kl` has no class distribution to compare on a regression task: the preset (and the default losses) name
    `soft_targets`, which each task type resolves to its own loss, so `--preset balanced` serves every task."""
    from conftest import make_tiny_bert

    monkeypatch.chdir(tmp_path)
    teacher = (make_tiny_bert(tmp_path / "t", num_labels=1, problem_type="regression") if task == "stsb" else
               make_tiny_bert(tmp_path / "t", num_labels=28, problem_type="multi_label_classification"))
    code = main(["distill", "--teacher", str(teacher), "--preset", "balanced", "--data.task", task,
                 "--data.max_train_examples", "32", "--data.max_eval_examples", "16", "--data.max_length", "24",
                 "--epochs", "0.5", "--batch_size", "16", "--progress", "false", "--device", "cpu", "--out", "s"])
    assert code == 0
    summary = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert summary["method"].startswith(f"0.5*soft_targets:{loss} + 0.5*ce:")
    assert build(DistillConfig, {}).losses[0].name == "soft_targets"  # the plain default too


def test_log_lines_count_epochs_in_english() -> None:
    from kdistill.distill.setup import epochs

    assert [epochs(n) for n in (1, 1.0, 0.5, 3, 2.5)] == ["1 epoch", "1 epoch", "0.5 epochs", "3 epochs", "2.5 epochs"]


def test_the_preset_log_line_says_the_flags_are_the_users_and_when_feature_losses_are_left_out() -> None:
    from kdistill.config.presets import preset_log_line

    own = preset_log_line(build(DistillConfig, {"preset": "balanced", "train": {"epochs": 1}}))
    assert own == "preset balanced, your own flags over it: student.init teacher_layers, lr 5e-05, 1 epoch"
    other = preset_log_line(build(DistillConfig, {"preset": "balanced", "student": {"init": "path", "path": "m"}}))
    assert other.startswith("preset balanced, your own flags over it: student.init path, lr 5e-05, 3 epochs; ")
    assert "balanced's feature losses are left out" in other
