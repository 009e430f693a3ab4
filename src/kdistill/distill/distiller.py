"""The one training loop, for fine-tuning (no teacher) and distillation alike, on Accelerate.

Per step: teacher signal (frozen, eval mode, no_grad, only the features the objective needs; or read
from the teacher-output cache, see `kdistill.cache`) ->
student features -> objective (weighted terms, schedule decides what is active) -> NaN check ->
backward -> optimizer/scheduler step. Checkpoints hold the student + projections, optimizer,
scheduler and RNG states (Accelerate) plus a JSON run state (epoch, position in the epoch, best
metric, schedule), so an interrupted run resumes exactly where it stopped. The teacher is never
prepared and never checkpointed.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from datasets import Dataset
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from kdistill.atomic import atomic_dir, atomic_path, kill_point
from kdistill.checkpoints import RUN_STATE, RunState, complete_checkpoints, drop_resume_files, fsync_folder, set_aside
from kdistill.config import TrainConfig
from kdistill.distill.divergence import check_finite_loss, check_finite_weights, optimizer_step
from kdistill.distill.features import FeatureRequest, Features, forward_features
from kdistill.distill.freezing import drop_frozen_grads, layer_parameters
from kdistill.distill.objective import Active, Objective
from kdistill.distill.schedules import AllLayers, LayerSchedule
from kdistill.errors import KDistillError, TrainingDiverged
from kdistill.evaluate import predict
from kdistill.metrics import primary
from kdistill.models import probe
from kdistill.outputs import save_tokenizer
from kdistill.teachers.source import TeacherSource
from kdistill.tokenized import make_loader


def fresh_accelerate_state() -> None:
    """Accelerate keeps process-wide singletons; a second run in one process (a notebook, a benchmark
    grid) with another precision or device would be refused. Reset them, but keep the process group
    of a distributed launch."""
    from accelerate.state import AcceleratorState, GradientState

    single = int(os.environ.get("WORLD_SIZE", "1")) <= 1
    AcceleratorState._reset_state(reset_partial_state=single)
    GradientState._reset_state()


class DistillModule(nn.Module):
    """The one prepared module: student plus the objective's projections (never the teacher)."""

    def __init__(self, student: PreTrainedModel, objective: Objective) -> None:
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(self, batch: dict[str, Tensor], teacher: Features | None, active: Active
                ) -> tuple[Tensor, dict[str, Tensor], dict[str, dict[int, float]]]:
        feats = forward_features(self.student, batch, self.objective.student_request)
        # the objective's task picks what the prediction losses compare (masked LM: the masked positions only)
        out = self.objective(feats, teacher, batch.get("labels"), active=active, batch=batch)
        return out.total, out.terms, out.layer_terms  # a tuple, so DDP finds the tensors


@dataclass
class TrainResult:
    best_score: float | None
    best_epoch: int | None
    metric: str
    history: list[dict[str, Any]]
    wall_seconds: float
    steps: int


class Distiller:
    """Trains `student` against `objective` (with `teacher` when the objective needs one).

    `teacher_source` replaces the live teacher (e.g. a `CachedTeacher`); its batches then carry `idx`.
    `collate_fn` replaces padding-only batching (masked-LM runs mask there, anew each epoch);
    `evaluator` replaces the task's metric (masked-token accuracy for general distillation); otherwise validation is
    scored by the objective's task (`Task.score`, `Task.collapse_warning`).
    """

    def __init__(self, *, student: PreTrainedModel, tokenizer: Any, objective: Objective,
                 train_cfg: TrainConfig, out_dir: str | Path, train_set: Dataset,
                 eval_set: Dataset | None, metric: str, teacher: PreTrainedModel | None = None,
                 schedule: LayerSchedule | None = None, run_name: str = "distill",
                 callbacks: list[Callable[[Distiller], None]] | None = None,
                 teacher_source: TeacherSource | None = None,
                 collate_fn: Callable[[list[dict[str, Any]]], dict[str, Tensor]] | None = None,
                 evaluator: Callable[[Distiller], dict[str, float]] | None = None) -> None:
        if teacher is not None and teacher_source is not None:
            raise ValueError("give a live teacher or a teacher source, not both")
        self.cfg = train_cfg
        self.out = Path(out_dir)
        self.metric = metric
        self.tokenizer = tokenizer
        self.run_name = run_name
        self.schedule = schedule or AllLayers()
        self.callbacks = list(callbacks or [])
        self.evaluator = evaluator
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        # Layer schedules leave some projections idle in some steps; DDP must then look for them.
        fresh_accelerate_state()
        ddp = DistributedDataParallelKwargs(find_unused_parameters=not isinstance(self.schedule, AllLayers))
        self.acc = Accelerator(
            cpu=train_cfg.device == "cpu",
            mixed_precision=train_cfg.mixed_precision,
            gradient_accumulation_steps=train_cfg.grad_accum,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            kwargs_handlers=[ddp],
        )
        self.teacher = teacher
        self.teacher_source = teacher_source
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
            teacher.to(self.acc.device)
        self.teacher_request = objective.teacher_request if teacher is not None else FeatureRequest()
        self.task = objective.task  # scores validation (metric, collapse warning) as the objective trains
        self.eval_set = eval_set  # the encoded rows the task's scoring reads (a sentence's words, a window's offsets)
        module = DistillModule(student, objective)
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train_cfg.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=train_cfg.lr)
        # plain shuffling is seeded by Accelerate's seedable sampler; the grouped one by the run's seed
        train_loader = make_loader(train_set, tokenizer, train_cfg.batch_size, shuffle=True,
                                   seed=train_cfg.seed if train_cfg.group_by_length else None,
                                   group_by_length=train_cfg.group_by_length, collate_fn=collate_fn, task=self.task)
        eval_loader = (make_loader(eval_set, tokenizer, train_cfg.eval_batch_size, collate_fn=collate_fn,
                                   task=self.task) if eval_set is not None else None)
        self.module, self.optimizer, self.train_loader = self.acc.prepare(module, optimizer, train_loader)
        self.eval_loader = self.acc.prepare(eval_loader) if eval_loader is not None else None
        self.total_batches = max(1, int(round(train_cfg.epochs * len(self.train_loader))))
        self.total_steps = math.ceil(self.total_batches / train_cfg.grad_accum)
        n = self.acc.num_processes
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(train_cfg.warmup_ratio * self.total_steps) * n, self.total_steps * n)
        self.scheduler = self.acc.prepare(scheduler)
        self.state = RunState()
        self.was_finished = False  # set when this call found the run already done: nothing to export
        self._resumed_step: int | None = None
        self._frozen: tuple[frozenset[int], list[nn.Parameter]] = (frozenset(), [])
        self.writer = None
        self.last_loss: float | None = None
        self.last_warning: str | None = None  # set by `evaluate` when all predictions are one class

    # ---- helpers -------------------------------------------------------------------------------
    @property
    def student(self) -> PreTrainedModel:
        return self.acc.unwrap_model(self.module).student

    def log(self, msg: str) -> None:
        """Print one line as `[run_name] msg` above the progress bars, on the main process only."""
        if self.acc.is_main_process:
            tqdm.write(f"[{self.run_name}] {msg}")

    def _tb(self, tag_values: dict[str, float], step: int) -> None:
        if self.writer is None and self.acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.out / "logs"))
        if self.writer is not None:
            for k, v in tag_values.items():
                self.writer.add_scalar(k, v, step)

    def _save_checkpoint(self) -> None:
        """Accelerate state + JSON run state; the state file is written last, marking it complete."""
        ckpt = self.out / "checkpoints" / f"step-{self.state.global_step:07d}"
        self.state.schedule = self.schedule.state_dict()
        if self.acc.is_main_process and (ckpt / RUN_STATE).is_file():
            (ckpt / RUN_STATE).unlink()  # being overwritten: not complete until its state is written again
        self.acc.wait_for_everyone()
        self.acc.save_state(str(ckpt), safe_serialization=True)
        if self.acc.is_main_process:
            fsync_folder(ckpt)
            kill_point("checkpoint-before-state")
            self.state.save(ckpt / RUN_STATE)
            done = sorted((self.out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in done[:-self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def mark_finished(self) -> None:
        """Record the run as finished, then drop what only a resume needs.

        Call this last, once the exported student and everything written from it (metrics, model card)
        are complete: a kill before it leaves a run that resumes into its finish again; a kill after it
        leaves a finished run whose leftovers the next call removes. The state is written into the final
        checkpoint (atomically), and only then are the step weights, optimizer moments and `best/` deleted.
        """
        self.state.finished = True
        self.state.schedule = self.schedule.state_dict()
        if self.acc.is_main_process:
            final = self.out / "checkpoints" / f"step-{self.state.global_step:07d}"
            final.mkdir(parents=True, exist_ok=True)
            self.state.save(final / RUN_STATE)
            kill_point("finished-recorded")
            drop_resume_files(self.out, final)
        self.acc.wait_for_everyone()

    def _resume(self) -> None:
        """Load the newest checkpoint that loads; a damaged one is set aside (renamed `damaged-step-*`)."""
        ckpts = complete_checkpoints(self.out) if self.cfg.resume else []
        if not ckpts:
            return
        try:
            newest = RunState.load(ckpts[-1] / RUN_STATE)
        except (OSError, ValueError, TypeError):
            newest = RunState()  # unreadable: the loop below sets the checkpoint aside
        if newest.finished:
            state = newest
            self.state = state
            self.was_finished = True
            if self.acc.is_main_process:
                drop_resume_files(self.out, ckpts[-1])  # in case a kill cut the clean-up short
            return
        errors = []
        for ckpt in reversed(ckpts):
            try:
                state = RunState.load(ckpt / RUN_STATE)
                self.acc.load_state(str(ckpt))
            except Exception as err:  # noqa: BLE001 - any unreadable file: fall back to an older checkpoint
                msg = " ".join(str(err).split())[:160]
                errors.append(f"{ckpt.name}: {type(err).__name__}: {msg}")
                self.log(f"warning: checkpoint {ckpt.name} is damaged ({type(err).__name__}: {msg}); falling "
                          f"back to the previous one (set aside as damaged-{ckpt.name} until the run finishes)")
                if self.acc.is_main_process:
                    set_aside(ckpt)
                continue
            self.state = state
            self.schedule.load_state_dict(self.state.schedule)
            self._resumed_step = state.global_step
            self.log(f"resumed from {ckpt.name} (epoch {self.state.epoch + 1}, "
                      f"batch {self.state.batches_in_epoch}, step {self.state.global_step})")
            return
        raise KDistillError(f"no checkpoint in {self.out / 'checkpoints'} can be loaded ({'; '.join(errors)}); "
                            "start over with --resume false, or use another --out")

    def save_student(self, path: Path) -> None:
        """An ordinary HF folder (weights as safetensors, tokenizer, default attention backend), written
        under a temporary name and renamed into place, so `path` is always whole or absent."""
        if not self.acc.is_main_process:
            return
        student = self.student
        impl = student.config._attn_implementation
        if impl == "kdistill":
            student.set_attn_implementation("eager" if not student._supports_attention_backend else "sdpa")
        try:
            with atomic_dir(path) as tmp:
                student.save_pretrained(tmp, safe_serialization=True)
                save_tokenizer(self.tokenizer, tmp)  # without the backend's training-time truncation
                kill_point(f"save-{path.name}")
        finally:
            if impl == "kdistill":
                student.set_attn_implementation(impl)

    def export_student(self, use_best: bool = True) -> None:
        """Write the result into the run folder itself: `best/` (the best validation epoch) when `use_best`
        and it exists, else the student as trained. Each file is copied under a temporary name and renamed,
        and `best/` and the checkpoints stay until `mark_finished`, so a kill here is repaired by a rerun."""
        if not self.acc.is_main_process:
            return
        best = self.out / "best"
        if not (use_best and best.is_dir()):
            best = self.out / "last"
            self.save_student(best)
        for f in sorted(best.iterdir()):
            with atomic_path(self.out / f.name) as tmp:
                shutil.copy2(f, tmp)
            kill_point(f"export-{f.name}")
        if best.name == "last":
            shutil.rmtree(best, ignore_errors=True)

    def _teacher_signal(self, batch: dict[str, Tensor]) -> Features | None:
        if self.teacher_source is not None:
            return self.teacher_source.signals(batch)
        if self.teacher is None:
            return None
        with torch.no_grad(), self.acc.autocast():
            return forward_features(self.teacher, batch, self.teacher_request)

    def evaluate(self) -> dict[str, float]:
        if self.evaluator is not None:
            return self.evaluator(self)
        assert self.eval_loader is not None
        logits, labels = predict(self.student, self.eval_loader, self.acc)
        if not np.isfinite(logits).all():  # finite weights can still overflow in the forward pass
            raise TrainingDiverged(f"the student's validation outputs became non-finite (nan/inf) by epoch "
                                   f"{self.state.epoch + 1}, step {self.state.global_step}; lower train.lr")
        task = self.task
        metrics = task.score(self.metric, logits, labels, encoded=self.eval_set)
        self.last_warning = task.collapse_warning(logits, labels, encoded=self.eval_set)
        return metrics

    # ---- the loop ------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[dict[str, Tensor]]:
        """Batches of one epoch, skipping those a resumed run has already seen.

        Building the iterator draws from the global RNG; that draw is undone so that dropout
        masks depend only on the checkpointed RNG state, whether the run was resumed or not.
        """
        self.train_loader.set_epoch(epoch)
        loader = self.acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        rng = torch.get_rng_state()
        it = iter(loader)
        first = next(it, None)
        torch.set_rng_state(rng)
        if first is None:
            return
        yield first
        yield from it

    def train(self) -> TrainResult:
        self._resume()
        if self.state.finished:
            self.log("already finished; nothing to do")
            return self._result()
        start = time.perf_counter()
        batches_per_epoch = len(self.train_loader)
        n_epochs = math.ceil(self.total_batches / batches_per_epoch)
        done = self.state.epoch * batches_per_epoch + self.state.batches_in_epoch
        bar = tqdm(total=self.total_batches, initial=done, disable=not (self.cfg.progress and
                   self.acc.is_main_process), desc=self.run_name, dynamic_ncols=True)
        running: dict[str, float] = {}
        while self.state.epoch < n_epochs and done < self.total_batches:
            epoch = self.state.epoch
            self.module.train()
            bar.set_description(f"{self.run_name} [{self.schedule.describe()}]" if not isinstance(
                self.schedule, AllLayers) else self.run_name)
            for batch in self._epoch_batches(epoch, self.state.batches_in_epoch):
                active = self.schedule.active()
                with self.acc.accumulate(self.module):
                    t_feats = self._teacher_signal(batch)
                    with self.acc.autocast():
                        total, terms, layer_terms = self.module(batch, t_feats, active)
                    check_finite_loss(terms, total, self.state.epoch + 1, self.state.global_step + 1)
                    self.acc.backward(total)
                    drop_frozen_grads(self._frozen_parameters())  # before clipping: frozen grads do not count
                    if self.acc.sync_gradients and self.cfg.max_grad_norm:
                        self.acc.clip_grad_norm_(self.module.parameters(), self.cfg.max_grad_norm)
                    optimizer_step(self.optimizer, self.state.epoch + 1, self.state.global_step + 1, self.cfg.lr)
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                done += 1
                self.state.batches_in_epoch += 1
                self.last_loss = float(total.detach())  # for callbacks
                for k, d in layer_terms.items():
                    for layer, v in d.items():
                        acc = self.state.epoch_losses.setdefault(k, {}).setdefault(str(layer), [0.0, 0])
                        acc[0] += v
                        acc[1] += 1
                for k, v in {"loss": total.detach(), **terms}.items():
                    running[k] = 0.9 * running.get(k, float(v)) + 0.1 * float(v)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)
                if self.acc.sync_gradients:
                    self.state.global_step += 1
                    if self.state.global_step % self.cfg.log_every == 0:
                        vals = {f"train/{k}": float(v) for k, v in terms.items()}
                        vals["train/loss"] = float(total.detach())
                        vals["train/lr"] = self.scheduler.get_last_lr()[0]
                        self._tb(vals, self.state.global_step)
                    if self.state.global_step % self.cfg.save_steps == 0 and done < self.total_batches:
                        self._save_checkpoint()
                    for callback in self.callbacks:
                        callback(self)
                if done >= self.total_batches:
                    break
            self.state.wall_seconds += time.perf_counter() - start
            start = time.perf_counter()
            self._end_epoch(epoch)
        bar.close()
        self.state.wall_seconds += time.perf_counter() - start
        if self._resumed_step != self.state.global_step:  # the trained state, for a finish cut short
            self._save_checkpoint()
        if self.writer is not None:
            self.writer.close()
        return self._result()

    def _frozen_parameters(self) -> list[nn.Parameter]:
        """The student parameters the schedule freezes in this stage (see `kdistill.distill.freezing`), cached per
        stage."""
        layers = self.schedule.frozen()
        if layers != self._frozen[0]:
            self._frozen = (layers, layer_parameters(self.student, probe(self.student), layers) if layers else [])
        return self._frozen[1]

    def _end_epoch(self, epoch: int) -> None:
        check_finite_weights(self.student, self.state.epoch + 1, self.state.global_step)
        layer_means = {k: {int(layer): total / n for layer, (total, n) in d.items()}
                       for k, d in self.state.epoch_losses.items()}
        self.state.epoch_losses = {}
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.global_step,
                                  "layer_losses": {k: {str(i): v for i, v in d.items()}
                                                   for k, d in layer_means.items()}}
        if (self.eval_loader is not None or self.evaluator is not None) and self.cfg.eval_every_epoch:
            metrics = self.evaluate()
            record["validation"] = metrics
            score = metrics[primary(self.metric)]
            self._tb({f"validation/{k}": v for k, v in metrics.items()}, self.state.global_step)
            improved = self.state.best_score is None or score > self.state.best_score
            self.log(f"epoch {epoch + 1}: validation {primary(self.metric)} {score:.4f}"
                      + (" (best so far)" if improved else ""))
            if self.last_warning:
                self.log(f"WARNING: epoch {epoch + 1}: {self.last_warning}")
                record["warnings"] = [self.last_warning]
            if improved:
                self.state.best_score, self.state.best_epoch = score, epoch + 1
                self.save_student(self.out / "best")
        for event in self.schedule.observe(epoch, layer_means):
            self.log(event)
            record.setdefault("events", []).append(event)
        self._tb({"schedule/stage": float(self.schedule.state_dict().get("stage", 0))}, self.state.global_step)
        self.state.history.append(record)
        self.state.epoch += 1
        self.state.batches_in_epoch = 0
        if self.state.epoch * len(self.train_loader) < self.total_batches:
            self._save_checkpoint()

    def _result(self) -> TrainResult:
        return TrainResult(best_score=self.state.best_score, best_epoch=self.state.best_epoch,
                           metric=self.metric, history=self.state.history, wall_seconds=self.state.wall_seconds,
                           steps=self.state.global_step)
