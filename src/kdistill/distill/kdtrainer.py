"""Distillation inside an existing Hugging Face `Trainer` script: `KDTrainer`, a `Trainer` whose loss is kdistill's.

Users with a `Trainer` fine-tuning script add a teacher in a few lines, as NVIDIA ModelOpt's and TRL's distillation
trainers allow: only the loss changes. The loss is kdistill's own `Objective` (the same registered losses, layer
maps, projections and layer schedules as `kdistill distill`; no second implementation), so a run here and a
`kdistill distill` run with the same settings, data order and seed train the same student.

What the Trainer trains, wraps (DDP) and checkpoints is `KDModule`: the student plus the objective's projections,
so projections are optimised with the student and restored by `resume_from_checkpoint`. The teacher is frozen,
kept outside that module (never in a checkpoint), and run under `no_grad`. `trainer.save_model()` writes the
student alone, an ordinary model folder that `AutoModel*` and `pipeline()` load. Every loss term is averaged over
the logging window and passed to `Trainer.log` as `kd/<term>`, so TensorBoard, W&B and the other integrations
receive it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer, TrainerCallback

from kdistill.calibration import teacher_as_trained
from kdistill.config import LossConfig, MappingConfig, ScheduleConfig
from kdistill.distill.features import Features, forward_features, prepare_for_capture
from kdistill.distill.objective import Active, Objective
from kdistill.distill.schedules import AllLayers, LayerSchedule, build_schedule
from kdistill.errors import KDistillError
from kdistill.models import probe, same_vocabulary
from kdistill.tasks import get_task, task_of_model

logger = logging.getLogger(__name__)

__all__ = ["DistillSpec", "KDModule", "KDTrainer"]

SCHEDULE_FILE = "kdistill_schedule.json"
"""Written into each Trainer checkpoint: the layer schedule's state and the epoch's per-layer loss sums."""


def _soft_targets_and_labels() -> list[LossConfig]:
    return [LossConfig(name="soft_targets", weight=0.5, temperature=2.0), LossConfig(name="ce", weight=0.5)]


class DistillSpec(BaseModel):
    """What `KDTrainer` distils: the same `losses`, `mapping` and `schedule` fields as `kdistill distill`'s config.

    The default is soft targets (KL at T=2, weight 0.5) plus hard-label cross-entropy (weight 0.5), Hinton et al.
    2015, the same default as `kdistill distill`.
    """

    model_config = ConfigDict(extra="forbid")

    losses: list[LossConfig] = Field(default_factory=_soft_targets_and_labels, min_length=1)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


class KDModule(nn.Module):
    """The student and the objective's projections as one module (never the teacher).

    `forward` takes the student's usual inputs plus `teacher_features` (the teacher's `Features` for the same
    batch) and `active` (the layer schedule's choice), and returns a dict with `loss` (scalar), `logits`
    (B, C), `terms` (unweighted, detached) and `layer_terms` (term -> student layer -> value).
    """

    def __init__(self, student: PreTrainedModel, objective: Objective) -> None:
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                labels: Tensor | None = None, teacher_features: Features | None = None,
                active: Active | None = None, start_positions: Tensor | None = None,
                end_positions: Tensor | None = None, span_mask: Tensor | None = None) -> dict[str, Any]:
        # Named inputs (not **kwargs) so that Trainer's column filter and label detection read them off the signature.
        batch = {k: v for k, v in {"input_ids": input_ids, "attention_mask": attention_mask,
                                   "token_type_ids": token_type_ids, "position_ids": position_ids}.items()
                 if v is not None}
        feats = forward_features(self.student, batch, self.objective.student_request)
        extra = {}
        if start_positions is not None and end_positions is not None:  # Hugging Face's QA labels: (B,) each
            labels = torch.stack([start_positions, end_positions], dim=-1)
        if self.objective.task.name == "question_answering":
            # the positions whose start/end distributions are matched: kdistill's span mask (context + CLS) when the
            # dataset has one, else every real token, as DistilBERT's SQuAD distillation compares whole windows
            mask = span_mask if span_mask is not None else attention_mask
            if mask is not None and not bool(mask.bool().any(dim=-1).all()):
                # every window can at least answer "not here" (CLS): an empty row would drop out of the soft-target
                # loss without a word, a mask built wrong
                raise KDistillError("span_mask: a window has no position to match (all zeros); give 1 for CLS and "
                                    "the context tokens, as get_task('question_answering').collator(tokenizer) does")
            extra["batch"] = {"span_mask": mask}
        out = self.objective(feats, teacher_features, labels, active=active, **extra)
        return {"loss": out.total, "logits": feats.logits, "terms": out.terms, "layer_terms": out.layer_terms}


class _EpochEnd(TrainerCallback):
    """Tells the layer schedule that an epoch ended (what `Distiller` does at its epoch end)."""

    def __init__(self, trainer: KDTrainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.end_epoch(int(round(state.epoch)) - 1)


class KDTrainer(Trainer):
    """A `transformers.Trainer` that trains `model` (the student) against `teacher` with kdistill's objective.

    Args:
        teacher: a fine-tuned model with the student's vocabulary (it reads the student's batches); frozen, put in
            eval mode and moved to the Trainer's device; a multi-label teacher's decision threshold that kdistill folded
            into its output biases is undone in place (its soft targets are its probabilities as trained).
        distill: losses, layer map and schedule (`DistillSpec`; a dict is validated into one).
        teacher_tokenizer: the teacher's tokenizer, when given compared with `processing_class` (same vocabulary).
        *args, **kwargs: everything `Trainer` takes (`model=student`, `args=TrainingArguments(...)`, datasets,
            `processing_class`, `data_collator`, callbacks, ...). `compute_loss_func` is not accepted: the loss is
            the objective's.

    Raises:
        KDistillError: no model; a teacher with another vocabulary; a loss, map or schedule the two models cannot
            take (the same set-up checks as `kdistill distill`).
    """

    def __init__(self, *args: Any, teacher: PreTrainedModel, distill: DistillSpec | Mapping[str, Any] | None = None,
                 teacher_tokenizer: Any = None, **kwargs: Any) -> None:
        student = kwargs.pop("model", None)
        if student is None and args:
            student, args = args[0], args[1:]
        if student is None:
            raise KDistillError("KDTrainer needs model=the student")
        if kwargs.get("compute_loss_func") is not None:
            raise KDistillError("KDTrainer computes the loss with kdistill's objective: drop compute_loss_func")
        spec = distill if isinstance(distill, DistillSpec) else DistillSpec.model_validate(dict(distill or {}))
        tokenizer = kwargs.get("processing_class")
        other = (teacher_tokenizer is not None and tokenizer is not None
                 and not same_vocabulary(teacher_tokenizer, tokenizer))
        if other or teacher.config.vocab_size != student.config.vocab_size:
            raise KDistillError("KDTrainer runs the teacher on the student's batches: the two need the same "
                                "vocabulary (use `kdistill distill` for a student with its own tokenizer)")
        t_probe, s_probe = probe(teacher), probe(student)
        task = get_task(task_of_model(student))  # the student's head: classes, a score or label sets
        t_task = task_of_model(teacher)
        if t_task != task.name:
            raise KDistillError(f"KDTrainer: the student is a {task.name} model but the teacher a {t_task} model: "
                                "give a teacher fine-tuned for the student's task")
        if int(teacher.config.num_labels) != int(student.config.num_labels):
            raise KDistillError(f"KDTrainer: the teacher has {teacher.config.num_labels} outputs "
                                f"({'per token' if task.per_token else 'per example'}) and the student "
                                f"{student.config.num_labels}: both need the task's labels")
        self.objective = Objective(spec.losses, spec.mapping, student=s_probe, teacher=t_probe, same_tokens=True,
                                   task=task)
        prepare_for_capture(teacher, t_probe, self.objective.teacher_request, "teacher")
        prepare_for_capture(student, s_probe, self.objective.student_request, "student")
        layers = sorted({p.student for t in self.objective.terms for p in t.pairs})
        if spec.schedule.name != "all" and not layers:
            raise KDistillError(f"schedule.name '{spec.schedule.name}' needs per-layer losses")
        self.schedule: LayerSchedule = build_schedule(spec.schedule, layers)
        training_args = kwargs.get("args")
        if training_args is not None and not isinstance(self.schedule, AllLayers) \
                and training_args.ddp_find_unused_parameters is None:
            training_args.ddp_find_unused_parameters = True  # idle projections in early stages
        super().__init__(KDModule(student, self.objective), *args, **kwargs)
        # a multi-label teacher's folded decision threshold would shift its soft targets (kdistill.calibration)
        self.teacher = teacher_as_trained(teacher, log=logger.info).requires_grad_(False).eval().to(self.args.device)
        # what Trainer's evaluation loop hands back as label_ids: QA datasets label spans by two columns
        self.label_names = ["start_positions", "end_positions"] if task.name == "question_answering" else ["labels"]
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: Trainer scales it for accumulation
        self.spec = spec
        self._window: dict[str, list[float]] = {}
        self._epoch_losses: dict[str, dict[str, list[float]]] = {}
        self.add_callback(_EpochEnd(self))

    @property
    def student(self) -> PreTrainedModel:
        """The student being trained (unwrapped from DDP and the projections)."""
        return self.accelerator.unwrap_model(self.model).student

    # ---- the loss --------------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """The objective's weighted total for one batch; the teacher runs on the same batch under no_grad."""
        del num_items_in_batch  # the objective's losses are per-batch means
        batch = {k: v for k, v in inputs.items() if k not in ("labels", "start_positions", "end_positions")}
        t_feats = None
        if self.objective.needs_teacher:
            with torch.no_grad():
                t_feats = forward_features(self.teacher, batch, self.objective.teacher_request)
        active = self.schedule.active()
        out = model(**inputs, teacher_features=t_feats, active=active)
        if model.training:
            for k, v in out["terms"].items():
                self._window.setdefault(k, []).append(float(v))
            for k, per_layer in out["layer_terms"].items():
                for layer, v in per_layer.items():
                    acc = self._epoch_losses.setdefault(k, {}).setdefault(str(layer), [0.0, 0])
                    acc[0] += v
                    acc[1] += 1
        loss = out["loss"]
        if not return_outputs:
            return loss
        logits = out["logits"]
        if self.objective.task.name == "question_answering":  # as *ForQuestionAnswering: predictions (start, end)
            return loss, {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
        return loss, {"logits": logits}

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Tensor | None, Any, Any]:
        """Trainer's evaluation step, for two batches it does not know: kdistill's QA encoding, whose `labels`
        (B, 2) hold (start, end), is read as Hugging Face's `start_positions` / `end_positions` (so `label_ids` are
        the same either way); and a batch without gold labels gives the student's predictions alone (no loss:
        soft targets are a training signal), where the plain Trainer would call the objective without a teacher."""
        labels = inputs.get("labels")
        if self.objective.task.name == "question_answering" and labels is not None \
                and inputs.get("start_positions") is None and labels.dim() == 2 and labels.size(-1) == 2:
            inputs = {**{k: v for k, v in inputs.items() if k != "labels"},
                      "start_positions": labels[:, 0], "end_positions": labels[:, 1]}
        if all(inputs.get(k) is not None for k in self.label_names):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if prediction_loss_only:  # no labels, no loss: nothing to compute
            return None, None, None
        inputs = self._prepare_inputs(inputs)
        batch = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids",
                                                          "position_ids")}
        # the student alone, at the precision a labelled batch gets (Trainer's autocast context)
        with torch.no_grad(), self.compute_loss_context_manager():
            out = self.student(**batch)
        if self.objective.task.name == "question_answering":
            return None, (out.start_logits, out.end_logits), None
        return None, out.logits, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss term's mean since the last training log as `kd/<term>`.

        Under DDP (torchrun, accelerate launch) the means are averaged over the processes, as the Trainer averages
        its `loss`: every rank reaches a training log at the same step, so the all-reduce cannot hang.
        """
        if "loss" in logs and self._window:
            names = sorted(self._window)
            means = [sum(self._window[k]) / len(self._window[k]) for k in names]
            if self.args.world_size > 1:
                local = torch.tensor(means, dtype=torch.float32, device=self.args.device)
                means = self.accelerator.reduce(local, reduction="mean").tolist()
            logs = {**logs, **{f"kd/{k}": v for k, v in zip(names, means, strict=True)}}
            self._window = {}
        super().log(logs, start_time)

    def end_epoch(self, epoch: int) -> None:
        """Feed the epoch's mean per-layer losses to the layer schedule (0-based `epoch`); log its events."""
        means = {k: {int(layer): total / n for layer, (total, n) in d.items()} for k, d in self._epoch_losses.items()}
        self._epoch_losses = {}
        for event in self.schedule.observe(epoch, means):
            print(f"[kdtrainer] {event}", flush=True)

    # ---- checkpoints and the exported student ----------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:  # after the Trainer's files: a checkpoint without it resumes the schedule at 0
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            state = {"schedule": self.schedule.state_dict(), "epoch_losses": self._epoch_losses}
            tmp = folder / f".{SCHEDULE_FILE}.tmp"
            tmp.write_text(json.dumps(state))
            os.replace(tmp, folder / SCHEDULE_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = Path(resume_from_checkpoint) / SCHEDULE_FILE
        if saved.is_file():
            state = json.loads(saved.read_text())
            self.schedule.load_state_dict(state["schedule"])
            self._epoch_losses = state["epoch_losses"]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A checkpoint keeps the student and the projections; any other save writes the student alone.

        The student's folder is an ordinary Hugging Face model (plus the tokenizer, when the Trainer has one), so
        `AutoModelForSequenceClassification` and `pipeline()` load it; projections and teacher are not in it.
        """
        if _internal_call:
            return super().save_model(output_dir, _internal_call=True)
        out = Path(output_dir or self.args.output_dir)
        if self.args.should_save:
            out.mkdir(parents=True, exist_ok=True)
            self.student.save_pretrained(out, safe_serialization=True)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(out)
        return None
