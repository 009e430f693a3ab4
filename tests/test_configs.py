"""Every shipped YAML config loads into its typed model, and the main job's defaults are what the README says."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdistill.config import DistillConfig, FinetuneConfig, RunConfig, build, load_config
from kdistill.errors import KDistillError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    model = DistillConfig if "teacher:" in path.read_text() else FinetuneConfig
    cfg = load_config(model, path)
    assert cfg.out


def test_main_job_defaults() -> None:
    cfg = RunConfig()
    assert cfg.finetune.model == "minilm" and cfg.finetune.data.task == "sst2"
    assert cfg.distill.teacher == cfg.finetune.out and cfg.distill.student.num_layers == 3
    assert {loss.name for loss in cfg.distill.losses} == {"soft_targets", "ce", "hidden_mse", "attn_mse"}


def test_malformed_yaml_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("teacher: runs/teacher\ntrain:\n  epochs: 3\n    lr: 0.1\n")
    with pytest.raises(KDistillError) as exc:
        load_config(DistillConfig, f)
    assert str(exc.value) == f"config file {f}, line 4, column 7: not valid YAML: mapping values are not allowed here"
    f.write_bytes(b"\xff\xfe\x00t")
    with pytest.raises(KDistillError, match="is not UTF-8 text"):
        load_config(DistillConfig, f)


def test_a_run_config_section_keeps_the_main_jobs_other_defaults(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("distill:\n  train: {epochs: 4}\n  mapping: {strategy: top}\nevaluate: {speed: false}\n")
    cfg, default = load_config(RunConfig, f), RunConfig()
    assert cfg.distill.train.epochs == 4 and cfg.distill.mapping.strategy == "top"
    assert cfg.distill.losses == default.distill.losses and cfg.distill.train.lr == default.distill.train.lr
    assert cfg.evaluate.speed is False and cfg.evaluate.data.max_length == default.evaluate.data.max_length == 64


def test_sizes_beside_a_loaded_student_are_refused_not_recorded_unused() -> None:
    with pytest.raises(KDistillError, match=r"student.num_layers, student.hidden_size cannot apply to student.init "
                                            r"'path' \(the folder's model is used as it is\): drop them"):
        build(DistillConfig, {"student": {"init": "path", "path": "s", "hidden_size": 32, "num_layers": 1}})
    loaded = build(DistillConfig, {"student": {"init": "path", "path": "s"}})
    again = build(DistillConfig, loaded.model_dump(mode="json"))  # a recorded kdistill.yaml loads back
    assert again.student.path == "s" and again.student.num_layers == 3
