"""A run folder survives kills and refuses mixed configs (issue 17, items 1, 2, 4 and 5).

The kill tests run `kdistill distill` in a subprocess with `KDISTILL_KILL_AT` naming one write of the finish
sequence; the process dies there with no cleanup (as `kill -9`), and a rerun must end with the weights of a
run that was never interrupted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdistill import api
from kdistill.atomic import KILL_ENV, KILL_EXIT_CODE
from kdistill.cli import main
from kdistill.config import DistillConfig, FinetuneConfig, build, save_config
from kdistill.errors import KDistillError

ROOT = Path(__file__).resolve().parents[1]
LOSSES = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}, {"name": "hidden_mse"}]


def _cfg(teacher: Path, out: Path, tiny_data: dict, fast_train: dict, *, student: dict | None = None,
         losses: list | None = None, **train) -> DistillConfig:
    return build(DistillConfig, {"teacher": str(teacher), "student": student or {"num_layers": 2},
                                 "data": tiny_data, "train": {**fast_train, **train},
                                 "losses": losses or LOSSES, "out": str(out)})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> tuple[Path, dict]:
    """One uninterrupted run: what every interrupted run must end with."""
    data = {"task": "sst2", "max_train_examples": 96, "max_eval_examples": 48, "max_length": 32}
    train = {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 1e-3, "progress": False,
             "save_steps": 1000, "device": "cpu"}
    out = tmp_path_factory.mktemp("ref") / "student"
    summary = api.distill(_cfg(tiny_teacher, out, data, train))
    return out, summary


FINISH_WRITES = ["checkpoint-before-state", "save-best", "export-config.json", "export-model.safetensors",
                 "export-tokenizer.json", "card-written", "metrics-written", "finished-recorded"]


@pytest.mark.parametrize("point", FINISH_WRITES)
def test_a_kill_at_any_write_of_the_finish_is_repaired_by_a_rerun(point: str, reference: tuple[Path, dict],
                                                                  tiny_teacher: Path, tmp_path: Path,
                                                                  tiny_data: dict, fast_train: dict) -> None:
    ref_out, ref_summary = reference
    cfg = _cfg(tiny_teacher, tmp_path / "cut", tiny_data, fast_train)
    cfg_file = tmp_path / "cut.yaml"
    save_config(cfg, cfg_file)
    proc = subprocess.run([sys.executable, "-m", "kdistill.cli", "distill", "--config", str(cfg_file)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, KILL_ENV: point, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == KILL_EXIT_CODE, proc.stderr[-2000:]
    again = api.distill(cfg)  # the same command again
    _same(_weights(ref_out), _weights(tmp_path / "cut"))
    assert again["test"] == ref_summary["test"] and again["history"] == ref_summary["history"]
    for f in ("config.json", "tokenizer.json", "README.md", "metrics.json", "kdistill.yaml"):
        assert (tmp_path / "cut" / f).is_file(), f
    assert not (tmp_path / "cut" / "best").exists()
    assert not list((tmp_path / "cut").glob(".*.tmp-*"))  # leftovers of the killed write are gone
    (final,) = (tmp_path / "cut" / "checkpoints").iterdir()
    assert [p.name for p in final.iterdir()] == ["run_state.json"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_teacher: Path, tmp_path: Path,
                                                                     tiny_data: dict, fast_train: dict) -> None:
    ref = api.distill(_cfg(tiny_teacher, tmp_path / "ref", tiny_data, fast_train, epochs=2, save_steps=2,
                           keep_checkpoints=2))
    cfg = _cfg(tiny_teacher, tmp_path / "cut", tiny_data, fast_train, epochs=2, save_steps=2, keep_checkpoints=2)

    def stop_at_step_7(d) -> None:
        if d.state.global_step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.distill(cfg, callbacks=[stop_at_step_7])
    ckpts = sorted((tmp_path / "cut" / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step-0000004", "step-0000006"]
    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    again = api.distill(cfg)
    assert again["history"] == ref["history"]
    _same(_weights(tmp_path / "ref"), _weights(tmp_path / "cut"))


def test_a_damaged_only_checkpoint_is_one_line_error(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                      fast_train: dict, capsys: pytest.CaptureFixture) -> None:
    cfg = _cfg(tiny_teacher, tmp_path / "cut", tiny_data, fast_train, save_steps=2)

    def stop(d) -> None:
        if d.state.global_step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.distill(cfg, callbacks=[stop])
    (ckpt,) = (tmp_path / "cut" / "checkpoints").iterdir()
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 20)
    save_config(cfg, tmp_path / "cut.yaml")
    assert main(["distill", "--config", str(tmp_path / "cut.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("kdistill: error: no checkpoint in") and "--resume false" in err


# ---------------------------------------------------------------- item 2: a resume with another config


@pytest.fixture
def interrupted(tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> DistillConfig:
    cfg = _cfg(tiny_teacher, tmp_path / "run", tiny_data, fast_train, save_steps=2)

    def stop(d) -> None:
        if d.state.global_step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.distill(cfg, callbacks=[stop])
    return cfg


@pytest.mark.parametrize("change,pattern", [
    ({"train": {"lr": 2e-3}}, r"train.lr: 0.001 \(run\) -> 0.002 \(now\)"),
    ({"student": {"layers": [1, 3]}}, r"student.layers: null \(run\) -> \[1, 3\] \(now\)"),
    ({"student": {"num_layers": 3}}, r"student.num_layers: 2 \(run\) -> 3 \(now\)"),
    ({"losses": [{"name": "kl"}]}, r"losses\[0\]\.weight: 0\.5 \(run\) -> 1\.0 \(now\); losses\[0\]\.temperature: 2\.0 "
                                   r"\(run\) -> 1\.0 \(now\); losses\[1\]: removed, was \{name: ce"),
])
def test_a_resume_with_a_changed_config_names_each_field(interrupted: DistillConfig, change: dict,
                                                         pattern: str) -> None:
    data = interrupted.model_dump()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    changed = build(DistillConfig, data)
    before = (Path(interrupted.out) / "kdistill.yaml").read_text()
    with pytest.raises(KDistillError, match=pattern) as err:
        api.distill(changed)
    assert "--resume false" in str(err.value) and "\n" not in str(err.value)
    assert (Path(interrupted.out) / "kdistill.yaml").read_text() == before  # the record still tells the truth


def test_fields_that_cannot_change_the_weights_may_differ_and_resume_false_starts_over(
        interrupted: DistillConfig, tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict) -> None:
    ref = api.distill(_cfg(tiny_teacher, tmp_path / "ref", tiny_data, fast_train, save_steps=2))
    quiet = interrupted.model_copy(update={"train": interrupted.train.model_copy(
        update={"log_every": 1, "progress": False, "save_steps": 5})})
    resumed = api.distill(quiet)
    assert resumed["history"] == ref["history"]
    _same(_weights(tmp_path / "ref"), _weights(Path(interrupted.out)))
    # a finished run rerun with other layers is refused, not reported as "already finished"
    other = interrupted.model_copy(update={"student": interrupted.student.model_copy(update={"num_layers": 1})})
    with pytest.raises(KDistillError, match=r"student.num_layers: 2 \(run\) -> 1 \(now\)"):
        api.distill(other)
    fresh = other.model_copy(update={"train": other.train.model_copy(update={"resume": False})})
    api.distill(fresh)
    recorded = yaml.safe_load((Path(interrupted.out) / "kdistill.yaml").read_text())
    assert recorded["student"]["num_layers"] == 1
    assert json_layers(Path(interrupted.out)) == 1


def json_layers(folder: Path) -> int:
    return int(yaml.safe_load((folder / "config.json").read_text())["num_hidden_layers"])


# ---------------------------------------------------------------- items 4 and 5: refused at set-up


def test_max_length_past_the_position_table_is_refused_before_training(tiny_teacher: Path, tmp_path: Path,
                                                                       tiny_data: dict, fast_train: dict) -> None:
    cfg = _cfg(tiny_teacher, tmp_path / "long", {**tiny_data, "max_length": 600}, fast_train)
    with pytest.raises(KDistillError, match=r"data.max_length 600 is longer than the teacher .* can read \(128 "
                                            r"positions\): set --max_length 128 or less"):
        api.distill(cfg)
    assert not (tmp_path / "long" / "kdistill.yaml").exists()
    ft = build(FinetuneConfig, {"model": str(tiny_teacher), "out": str(tmp_path / "ft"), "train": fast_train,
                                "data": {**tiny_data, "max_length": 100000}})
    with pytest.raises(KDistillError, match="data.max_length 100000 is longer than the model"):
        api.finetune(ft)
    assert not (tmp_path / "ft" / "kdistill.yaml").exists() and not (tmp_path / "ft" / "logs").exists()


def test_out_that_is_a_file_is_one_line_error(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                              fast_train: dict, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "taken"
    target.write_text("not a folder")
    save_config(_cfg(tiny_teacher, target, tiny_data, fast_train), tmp_path / "c.yaml")
    assert main(["distill", "--config", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.strip() == (f"kdistill: error: out {target} is an existing file, not a folder: "
                                               "choose another --out")
    save_config(_cfg(tiny_teacher, target / "sub", tiny_data, fast_train), tmp_path / "d.yaml")
    assert main(["distill", "--config", str(tmp_path / "d.yaml")]) == 2
    assert "a parent of this path is a file" in capsys.readouterr().err
    assert target.read_text() == "not a folder"


def test_a_run_refused_at_set_up_leaves_no_config_behind(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                         fast_train: dict) -> None:
    cfg = _cfg(tiny_teacher, tmp_path / "gray", tiny_data, fast_train, losses=[{"name": "kl"}])
    cfg = cfg.model_copy(update={"teacher_answers": str(tmp_path / "missing.jsonl")})
    with pytest.raises(KDistillError):
        api.distill(cfg)
    assert not (tmp_path / "gray" / "kdistill.yaml").exists()
    three = cfg.model_copy(update={"teacher_answers": None, "student": cfg.student.model_copy(
        update={"init": "path", "path": str(tmp_path / "nowhere")})})
    with pytest.raises(KDistillError):
        api.distill(three)
    assert not (tmp_path / "gray" / "kdistill.yaml").exists()


def test_readme_lists_what_a_finished_run_keeps(reference: tuple[Path, dict]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("### What a run writes", 1)[1].split("```", 2)[1]
    listed = {tok for line in block.splitlines()[2:] for tok in line.split("#", 1)[0].split()}
    top = {t.split("/", 1)[0] + ("/" if "/" in t else "") for t in listed}
    out, _ = reference
    found = {p.name + ("/" if p.is_dir() else "") for p in out.iterdir()}
    assert top == found, f"README lists {sorted(top)}, a finished run keeps {sorted(found)}"
    (final,) = (out / "checkpoints").iterdir()
    assert "checkpoints/step-*/run_state.json" in listed and [p.name for p in final.iterdir()] == ["run_state.json"]


def test_any_command_whose_output_path_is_blocked_gets_one_line(reference: tuple[Path, dict], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["report", str(reference[0]), "--out", str(blocker / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdistill: error: ") and str(blocker) in err and "\n" not in err and "Traceback" not in err


def test_a_collapsed_model_is_named_in_the_log_and_metrics(tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                                           fast_train: dict, capsys: pytest.CaptureFixture) -> None:
    from transformers import AutoModelForSequenceClassification

    stuck = tmp_path / "stuck"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher)
    with torch.no_grad():  # a head that always answers class 1, whatever the encoder says
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-20.0, 20.0]))
    model.save_pretrained(stuck)
    for f in tiny_teacher.glob("*"):
        if f.name.startswith(("tokenizer", "vocab", "special")):
            (stuck / f.name).write_bytes(f.read_bytes())
    cfg = build(FinetuneConfig, {"model": str(stuck), "out": str(tmp_path / "ft"), "data": tiny_data,
                                 "train": {**fast_train, "lr": 1e-12}})
    summary = api.finetune(cfg)
    assert summary["warnings"] and "collapsed to a single class" in summary["warnings"][0]
    assert "WARNING: epoch 1: every one of the 48 validation predictions is class 1" in capsys.readouterr().out
