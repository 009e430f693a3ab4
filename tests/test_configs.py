"""Every shipped YAML config loads into its typed model, and the main job's defaults are what the README says."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdistill.config import DistillConfig, FinetuneConfig, RunConfig, load_config

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
    assert {loss.name for loss in cfg.distill.losses} == {"kl", "ce", "hidden_mse", "attn_mse"}
