"""`kdistill run`'s set-up: whether a finished teacher in `finetune.out` can be reused, and the checks of every step
that need no trained teacher, made before the fine-tuning starts."""

from __future__ import annotations

from pathlib import Path

import yaml

from kdistill.checkpoints import RUN_STATE, RunState, latest_checkpoint
from kdistill.config import DistillConfig, RunConfig
from kdistill.errors import KDistillError
from kdistill.limits import check_run_lengths
from kdistill.runfolder import CONFIG_FILE, check_out_guard, check_resumable, config_differences, describe_difference
from kdistill.tasks.shipped import check_run_tasks

WEIGHT_FILES = ("model.safetensors", "config.json")


def is_trained(out: str) -> bool:
    """Whether `out` holds a finished model: weights, config and metrics.json."""
    return all((Path(out) / f).is_file() for f in (*WEIGHT_FILES, "metrics.json"))


def reusable_teacher(cfg: RunConfig) -> bool:
    """Whether `kdistill run` may skip fine-tuning: `finetune.out` holds a finished fine-tune of this same config.

    A fine-tune killed during its finish is not reused (fine-tuning again resumes and completes it). A finished one
    recorded with another result-changing config raises `KDistillError` naming each field, rather than silently
    distilling from a teacher trained with other settings.
    """
    out = Path(cfg.finetune.out).expanduser()
    if not cfg.skip_finetune_if_exists or not is_trained(str(out)):
        return False
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not RunState.load(ckpt / RUN_STATE).finished:
        return False
    recorded = out / CONFIG_FILE
    if recorded.is_file():
        before = yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}
        diffs = config_differences(before, cfg.finetune.model_dump(mode="json")) if isinstance(before, dict) else []
        if diffs:
            listed = "; ".join(describe_difference(*d) for d in diffs)
            raise KDistillError(f"{out} holds a teacher fine-tuned with another config ({listed}): rerun with those "
                                "settings to reuse it, retrain it with --finetune.train.resume false, or give "
                                "--finetune.out another folder")
    return True


def check_run(cfg: RunConfig, dcfg: DistillConfig, reuse: bool) -> None:
    """`kdistill run`'s set-up checks of the later steps, made before the fine-tuning instead of after it.

    Raises:
        KDistillError: steps whose data are of different task types; a `max_length` of any step past a model's
            positions (`check_run_lengths`, naming `run`'s flags); an `--out` of either step that is refused
            (`check_out_guard`) or holds a run with another config (`check_resumable`); a missing model folder.
    """
    check_run_tasks(cfg)
    check_run_lengths(cfg, reuse)
    if not reuse:
        check_out_guard(cfg.finetune.out, cfg.finetune)
        if cfg.finetune.train.resume:
            check_resumable(cfg.finetune.out, cfg.finetune)
    check_out_guard(dcfg.out, dcfg)
    if dcfg.train.resume and not dcfg.stages:
        check_resumable(dcfg.out, dcfg)
