"""A distillation run's set-up: the teacher as trained, the student when there is no teacher model, the objective
checked against both models, and the layer schedule. `api.distill` calls these in that order."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedModel

from kdistill.calibration import teacher_as_trained
from kdistill.config import DistillConfig
from kdistill.data import TaskData
from kdistill.distill.features import prepare_for_capture
from kdistill.distill.objective import Objective
from kdistill.distill.schedules import LayerSchedule, build_schedule
from kdistill.errors import KDistillError
from kdistill.limits import model_config
from kdistill.models import load_classifier, probe, resolve_model_path
from kdistill.tasks import HEADS, Task, head_of_config

__all__ = ["epochs", "student_without_teacher", "teacher_model", "build_objective", "layer_schedule"]


def epochs(n: float) -> str:
    """`n` epochs as a log line says it: '1 epoch', '0.5 epochs', '3 epochs'."""
    return f"{n:g} epoch" + ("" if n == 1 else "s")


def student_without_teacher(cfg: DistillConfig, data: TaskData) -> PreTrainedModel:
    """The student folder with the data's head, as `kdistill finetune` loads a model (no teacher to copy it from)."""
    path = str(cfg.student.path)
    new_head = head_of_config(model_config(path)) != data.task.head
    student = load_classifier(path, num_labels=data.num_labels, label_names=data.label_names, task=data.task)
    data.task.check_model(data, student.config, path)
    if new_head:
        data.task.init_head(student, data.splits["train"])
    return student


def teacher_model(name: str) -> PreTrainedModel:
    path = resolve_model_path(name)
    cfg_file = Path(path) / "config.json"
    if cfg_file.is_file():
        archs = json.loads(cfg_file.read_text()).get("architectures") or []
        if not any(a.endswith(tuple(HEADS)) for a in archs):
            raise KDistillError(f"teacher '{name}' has no classification head; fine-tune it first "
                                f"(kdistill finetune --model {name})")
    return teacher_as_trained(load_classifier(name), log=lambda msg: print(f"[distill] {msg}"))


def build_objective(cfg: DistillConfig, teacher: PreTrainedModel | None, student: PreTrainedModel,
                    same_tokens: bool, task: Task | None = None) -> Objective:
    """The run's objective, checked against both models and the task type; both models set up to capture.

    With no teacher model (`teacher: null`, stored answers alone) the answers stand in for the teacher's outputs:
    they have the student's classes, and a loss that would read the teacher's layers is refused where the answers
    are set up (`teachers.choose_teacher_source`).
    """
    s_probe = probe(student)
    t_probe = probe(teacher) if teacher is not None else s_probe
    objective = Objective(cfg.losses, cfg.mapping, student=s_probe, teacher=t_probe, same_tokens=same_tokens,
                          task=task)
    if teacher is not None:
        prepare_for_capture(teacher, t_probe, objective.teacher_request, "teacher")
    prepare_for_capture(student, s_probe, objective.student_request, "student")
    return objective


def layer_schedule(cfg: DistillConfig, objective: Objective) -> LayerSchedule:
    """The layer schedule over the student layers that have per-layer losses; checked at set-up."""
    layers = sorted({p.student for t in objective.terms for p in t.pairs})
    sc = cfg.schedule
    if sc.name != "all":
        if not layers:
            raise KDistillError(f"schedule.name '{sc.name}' needs per-layer losses "
                                "(hidden_mse, attn_kl, cls_cosine, ...)")
        if sc.threshold is not None and sc.watch not in {t.key for t in objective.terms if t.pairs}:
            raise KDistillError(f"schedule.watch '{sc.watch}' is not a per-layer loss term of this run")
    schedule = build_schedule(sc, layers)
    needed = getattr(schedule, "epochs_needed", lambda: 0)()
    if needed > cfg.train.epochs:
        print(f"[distill] note: schedule '{sc.name}' reaches its final stage by epoch limits only after "
              f"{epochs(needed)}; train.epochs is {cfg.train.epochs:g}")
    return schedule
