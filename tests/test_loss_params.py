"""Loss parameters are checked when the run is set up (before models train, caches build or kdistill.yaml is
written), and they show in the objective's formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdistill import api
from kdistill.config import DistillConfig, build
from kdistill.errors import KDistillError

KD = [{"name": "kl", "temperature": 2.0}, {"name": "ce"}]


def _distill(teacher: Path, out: Path, losses: list[dict], tiny_data: dict, fast_train: dict) -> dict:
    return api.distill(build(DistillConfig, {"teacher": str(teacher), "out": str(out), "losses": losses,
                                             "data": tiny_data, "train": fast_train, "teacher_cache": True}))


@pytest.mark.parametrize(("term", "message"), [
    ({"name": "hidden_mse", "params": {"center": "maybe"}}, "parameter 'center' must be true or false, got 'maybe'"),
    ({"name": "attn_mse", "params": {"center": 1}}, "parameter 'center' must be true or false, got 1"),
    ({"name": "attn_kl", "params": {"eps": "abc"}}, "parameter 'eps' must be a number, got 'abc'"),
    ({"name": "cls_cosine", "params": {"form": "cos"}}, "unknown form 'cos' (valid: 1-cos, neg-cos, mse-normalized)"),
    ({"name": "mean_pooled_cosine", "params": {"form": 7}}, "parameter 'form' must be a string, got 7"),
    ({"name": "kl", "params": {"temperature": 4}}, "give the temperature as the term's own field"),
])
def test_bad_parameter_values_are_refused_at_set_up(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                    fast_train: dict, term: dict, message: str) -> None:
    out = tmp_path / "run"
    with pytest.raises(KDistillError) as err:
        _distill(tiny_teacher, out, [*KD, term], tiny_data, fast_train)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (out / "kdistill.yaml").exists() and not (out / "teacher_cache").exists()  # nothing was started


def test_all_zero_weights_are_refused(tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> None:
    with pytest.raises(KDistillError, match="every loss weight is 0"):
        _distill(tiny_teacher, tmp_path / "z", [{"name": "kl", "weight": 0}, {"name": "ce", "weight": 0}], tiny_data,
                 fast_train)


def test_parameters_show_in_the_formula(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                        fast_train: dict) -> None:
    summary = _distill(tiny_teacher, tmp_path / "c", [*KD, {"name": "hidden_mse", "params": {"center": True}}],
                       tiny_data, {**fast_train, "epochs": 0.2})
    assert "hidden_mse[center=True; layers " in summary["method"]
    plain = _distill(tiny_teacher, tmp_path / "p", [*KD, {"name": "hidden_mse"}], tiny_data,
                     {**fast_train, "epochs": 0.2})
    assert "hidden_mse[layers " in plain["method"] and plain["method"] != summary["method"]


def test_yaml_given_twice_or_broken_is_one_line(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently; kdistill refuses them, in files and in flags, and a flag
    meant as YAML that does not parse says why instead of failing later as 'not a valid list'."""
    import subprocess
    import sys

    config = tmp_path / "dup.yaml"
    config.write_text("losses:\n  - {name: kl}\nlosses:\n  - {name: ce}\n")
    cases = [(["--config", str(config)], "line 3, column 1: not valid YAML: the key 'losses' is given twice"),
             (["--losses", "[{name: kl, params: {center: true, center: false}}]"], "the key 'center' is given twice"),
             (["--losses", "[{name: kl"], "--losses: not valid YAML (expected ',' or '}'")]
    for args, message in cases:
        run = subprocess.run([sys.executable, "-m", "kdistill.cli", "distill", *args, "--out", str(tmp_path / "o")],
                             capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
