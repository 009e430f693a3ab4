"""The end-of-run decision rule: fitted on the validation split and folded into the saved model.

`kdistill finetune` and `kdistill distill` call `calibrate_saved` after the best model is exported into the run
folder and before the test split is scored, so the test score, metrics.json, the ONNX export, `pipeline` and
`kdistill label` all use the fitted rule. What is fitted is the task type's (`Task.calibrate`): for multi-label
models one decision threshold folded into the output biases; other task types fit nothing.

A kill midway is repaired by the rerun: it exports the unshifted best model into the folder again and fits the same
rule on the same (deterministic) validation outputs. Each file is replaced atomically.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.atomic import atomic_path
from kdistill.data import TaskData
from kdistill.evaluate import predict
from kdistill.tasks import get_task
from kdistill.tasks.base import task_of_model
from kdistill.tokenized import make_loader, tokenize_splits

__all__ = ["calibrate_saved", "teacher_as_trained"]


def calibrate_saved(model: nn.Module, tokenizer: Any, out: Path, data: TaskData, max_length: int,
                    cache_dir: str | None = None, progress: bool = False) -> dict[str, Any] | None:
    """Fit the task type's decision rule on `data`'s validation split into `model` and save it over `out`'s model.

    `model` is the model loaded from `out` (changed in place). Returns what was fitted (multi-label: the threshold
    and the validation metric at 0.5 and at the threshold) or None when the task type fits nothing.
    """
    if "validation" not in data.splits or not data.task.fits_decision_rule:
        return None  # nothing to fit: no validation pass
    splits = tokenize_splits(data, tokenizer, max_length, cache_dir)
    loader = make_loader(splits["validation"], tokenizer, 64, task=data.task)
    logits, labels = predict(model, loader, progress=progress, desc="fitting the decision threshold")
    fitted = data.task.calibrate(model, logits, labels, data.metric)
    if fitted is None:
        return None
    with tempfile.TemporaryDirectory(dir=out, prefix=".calibrated-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in sorted(Path(tmp).iterdir()):
            with atomic_path(out / f.name) as dst:
                shutil.copy2(f, dst)
    return fitted


def teacher_as_trained(model: nn.Module, log: Any = print) -> nn.Module:
    """`model` (a teacher about to give soft targets) with the decision rule its run folded in undone, in place.

    A multi-label teacher's tuned threshold t is folded into its output biases so that serving thresholds at 0.5;
    its sigmoid outputs are then shifted by -log(t / (1 - t)) (t = 0.15: +1.7 on every logit), and a student
    taught those probabilities (`bce_soft`) would learn them against the gold labels' calibration. The student
    fits its own rule at the end of its run. `log` gets one line when something was undone.
    """
    t = get_task(task_of_model(model)).uncalibrate(model)
    if t is not None:
        log(f"teacher: its decision threshold {t:g} is unfolded from its output biases for distillation (soft "
            "targets are the probabilities it was trained to give)")
    return model
