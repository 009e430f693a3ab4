"""The Python API: `finetune`, `distill`, `evaluate`, `run`, `export`, `bench`, `report`; each takes one config.

The CLI is a thin layer over these functions, so both say the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from kdistill.atomic import atomic_write_json, kill_point
from kdistill.calibration import calibrate_saved
from kdistill.config import (
    AugmentConfig,
    BenchConfig,
    DistillConfig,
    ExportConfig,
    FinetuneConfig,
    GeneralConfig,
    GenerateConfig,
    LabelConfig,
    LossConfig,
    MappingConfig,
    MLMHeadConfig,
    ReportConfig,
    RunConfig,
    SearchConfig,
    StudentConfig,
)
from kdistill.config.presets import preset_log_line
from kdistill.data import TaskData, load_task_data
from kdistill.distill.distiller import Distiller
from kdistill.distill.objective import Objective
from kdistill.distill.setup import build_objective, epochs, layer_schedule, student_without_teacher
from kdistill.distill.setup import teacher_model as _teacher_model  # a name tests replace to count loads
from kdistill.errors import KDistillError
from kdistill.evaluate import evaluate, score_split
from kdistill.limits import check_max_length, model_config
from kdistill.metrics import primary
from kdistill.modelcard import decision_section, write_model_card
from kdistill.models import load_classifier, load_tokenizer, pick_device, probe, resolve_model_path, same_vocabulary
from kdistill.run_setup import check_run, reusable_teacher
from kdistill.runfolder import (
    CONFIG_FILE,
    record_config,
    run_folder,
)
from kdistill.speed import count_parameters, measure_speed
from kdistill.students.build import build_student
from kdistill.tasks import head_of_config
from kdistill.teachers import StoredAnswers, choose_teacher_source
from kdistill.tokenized import tokenize_splits

__all__ = ["finetune", "distill", "evaluate", "run", "export", "bench", "report", "label", "mlm_head", "general",
           "augment", "generate", "search"]

def _finish(distiller: Distiller, out: Path, data: TaskData, max_length: int, cache_dir: str | None,
            summary: dict[str, Any], complete: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The finish sequence: export the best (else last) student into `out`, score it on the test split,
    `complete(summary)` (retention, model card), write metrics.json, and only then record the run finished.

    Every write is atomic and the checkpoints and `best/` are removed only after the finished record, so a
    kill at any point leaves a run that the same command completes with the same weights. A run found
    finished returns its recorded metrics (the distiller has already said so: not said twice).
    """
    if distiller.was_finished:
        recorded = out / "metrics.json"
        if distiller.acc.is_main_process and recorded.is_file():
            return json.loads(recorded.read_text())
        return summary
    distiller.export_student(use_best=True)
    if distiller.acc.is_main_process:
        model = load_classifier(str(out))
        tokenizer = load_tokenizer(str(out))
        fitted = calibrate_saved(model, tokenizer, out, data, max_length, cache_dir, distiller.cfg.progress)
        if fitted is not None:
            summary["decision"] = fitted
            distiller.log(f"decision threshold tuned on validation: {fitted['threshold']:g} ({data.metric} "
                          f"{fitted['validation_at_0.5']:.4f} at 0.5 -> {fitted['validation_tuned']:.4f}), folded "
                          "into the output biases")
        if "test" in data.splits:
            summary["test"] = score_split(model, tokenizer, data, "test", max_length, cache_dir=cache_dir,
                                          desc="scoring test split", progress=distiller.cfg.progress)
        summary["params"] = count_parameters(model)
        best = [r for r in summary.get("history") or [] if r.get("epoch") == summary.get("best_epoch")]
        if best and best[0].get("warnings"):  # the exported student itself collapsed: say so in metrics.json
            summary["warnings"] = best[0]["warnings"]
        if "speed" not in summary:  # a quick timing for the model card; `kdistill bench` measures properly
            device = pick_device(distiller.cfg.device)
            speed = measure_speed(model, batch_sizes=(1, 32), seq_length=max_length, warmup=2, repeats=10,
                                  device=device, threads=distiller.cfg.threads)
            summary["speed"] = [{**s.to_dict(), "device": device} for s in speed]
        if complete is not None:
            complete(summary)
        kill_point("card-written")
        atomic_write_json(out / "metrics.json", summary)
        kill_point("metrics-written")
    distiller.mark_finished()
    return summary


def _card(out: Path, summary: dict[str, Any], cfg_yaml: str, base: str, method: str, data: TaskData,
          teacher_summary: dict[str, Any] | None = None, eval_cap: int | None = None, start_only: bool = False) -> None:
    scores = summary.get("test") or summary.get("validation") or {}
    t_scores = (teacher_summary or {}).get("test") or (teacher_summary or {}).get("validation")
    write_model_card(out, base_model=base, method=method, task=summary["task"], metrics=scores,
                     teacher_metrics=t_scores, params=summary.get("params"),
                     teacher_params=(teacher_summary or {}).get("params"), speed=summary.get("speed"),
                     config_yaml=cfg_yaml, task_type=data.task_type, pair=data.is_pair,
                     extra=decision_section(summary.get("decision"), data.metric), eval_cap=eval_cap,
                     start_only=start_only)


def finetune(cfg: FinetuneConfig, callbacks: list[Callable[[Distiller], None]] | None = None) -> dict[str, Any]:
    """Fine-tune a teacher classifier; returns validation/test metrics and writes `cfg.out`.

    `cfg.out` is checked, created and locked first (`kdistill.runfolder.run_folder`): it must not be `cfg.model`'s
    folder, nor a non-run folder holding model files; a second run into it meanwhile is refused.
    """
    with run_folder(cfg.out, cfg, cfg.train.resume) as out:
        return _finetune(cfg, out, callbacks)


def _finetune(cfg: FinetuneConfig, out: Path, callbacks: list[Callable[[Distiller], None]] | None) -> dict[str, Any]:
    set_seed(cfg.train.seed)
    data = load_task_data(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    new_head = head_of_config(model_config(cfg.model)) != data.task.head
    model = load_classifier(cfg.model, num_labels=data.num_labels, label_names=data.label_names, task=data.task)
    data.task.check_model(data, model.config, cfg.model)
    if new_head:
        data.task.init_head(model, data.splits["train"])
    check_max_length(cfg.data.max_length, model.config, "model", cfg.model)
    splits = tokenize_splits(data, tokenizer, cfg.data.max_length, cfg.data.cache_dir)
    # `ce` is the task's gold-label loss: cross-entropy, MSE to the score, or BCE per label
    objective = Objective([LossConfig(name="ce")], MappingConfig(), student=probe(model), teacher=None, task=data.task)
    record_config(out, cfg)
    d = Distiller(student=model, tokenizer=tokenizer, objective=objective, train_cfg=cfg.train, out_dir=out,
                  train_set=splits["train"], eval_set=splits.get("validation"), metric=data.metric,
                  run_name="finetune", callbacks=callbacks)
    result = d.train()
    summary = {"task": data.name, "metric": data.metric, "method": "fine-tuning",
               "base_model": cfg.model if cfg.model != "minilm" else "sentence-transformers/all-MiniLM-L6-v2",
               "validation": (result.history[-1].get("validation") if result.history else None),
               "best_epoch": result.best_epoch, "history": result.history,
               "wall_seconds": result.wall_seconds}

    def card(summary: dict[str, Any]) -> None:
        _card(out, summary, (out / CONFIG_FILE).read_text(), summary["base_model"], "fine-tuning", data,
              eval_cap=cfg.data.max_eval_examples)

    return _finish(d, out, data, cfg.data.max_length, cfg.data.cache_dir, summary, card)


def distill_stages(cfg: DistillConfig, callbacks: list[Callable[[Distiller], None]] | None = None
                   ) -> dict[str, Any]:
    """Multi-stage distillation (TinyBERT): each stage is an ordinary distillation run under OUT/stages/<name>
    whose student starts from the previous stage's; the last stage writes to OUT itself.

    Every stage resumes from its own checkpoints and a finished stage is not run again, so an interrupted
    pipeline picks up inside the stage it stopped in. Stages before the last export their last student (their
    losses do not train the classifier, so validation accuracy would pick an arbitrary epoch).
    """
    assert cfg.stages
    # OUT is guarded and locked for the whole pipeline; each stage checks its own folder's config when it starts
    with run_folder(cfg.out, cfg, cfg.train.resume, start=False) as out:
        return _distill_stages(cfg, out, callbacks)


def _distill_stages(cfg: DistillConfig, out: Path, callbacks: list[Callable[[Distiller], None]] | None
                    ) -> dict[str, Any]:
    assert cfg.stages
    student, summaries = cfg.student, []
    for i, stage in enumerate(cfg.stages):
        last = i == len(cfg.stages) - 1
        stage_out = out if last else out / "stages" / f"{i + 1}-{stage.name}"
        train = cfg.train.model_copy(update={
            "epochs": stage.epochs or cfg.train.epochs, "lr": stage.lr or cfg.train.lr,
            "eval_every_epoch": stage.eval_every_epoch if stage.eval_every_epoch is not None else last})
        sub = cfg.model_copy(update={"stages": None, "losses": stage.losses, "train": train, "student": student,
                                     "out": str(stage_out)})
        print(f"[distill] stage {i + 1}/{len(cfg.stages)} '{stage.name}': {epochs(train.epochs)} at lr "
              f"{train.lr:g} -> {stage_out}", flush=True)
        summary = distill(sub, callbacks)
        summaries.append({"stage": stage.name, "out": str(stage_out), "wall_seconds": summary.get("wall_seconds"),
                          "steps": summary.get("steps"), "method": summary.get("method"),
                          "test": summary.get("test"), "validation": summary.get("validation"),
                          "teacher_cache": summary.get("teacher_cache")})
        student = StudentConfig(init="path", path=str(stage_out))
    record_config(out, cfg, "kdistill-stages.yaml")
    final = dict(summary)
    final["stages"] = summaries
    final["wall_seconds"] = sum(s["wall_seconds"] or 0.0 for s in summaries)
    if (out / "metrics.json").is_file():
        atomic_write_json(out / "metrics.json", final)
    return final


def distill(cfg: DistillConfig, callbacks: list[Callable[[Distiller], None]] | None = None) -> dict[str, Any]:
    """Distill a student from a fine-tuned teacher; writes an ordinary HF model folder to `cfg.out`.

    `cfg.out` is checked, created and locked first (`kdistill.runfolder.run_folder`): it must not be the teacher's
    or `student.path`'s folder, nor a non-run folder holding model files; a second run into it meanwhile is refused.
    """
    if cfg.stages:
        return distill_stages(cfg, callbacks)
    with run_folder(cfg.out, cfg, cfg.train.resume) as out:
        return _distill(cfg, out, callbacks)


def _distill(cfg: DistillConfig, out: Path, callbacks: list[Callable[[Distiller], None]] | None) -> dict[str, Any]:
    set_seed(cfg.train.seed)
    data = load_task_data(cfg.data)
    if cfg.teacher is None:  # stored answers alone teach: the student is a model folder (the config checked it)
        teacher, student = None, student_without_teacher(cfg, data)
        s_tok = t_tok = load_tokenizer(str(cfg.student.path))
        same = True
    else:
        teacher = _teacher_model(cfg.teacher)
        data.task.check_model(data, teacher.config, cfg.teacher)  # a regression teacher on classes is refused here
        check_max_length(cfg.data.max_length, teacher.config, "teacher", cfg.teacher)
        t_tok = load_tokenizer(cfg.teacher)
        try:
            student = build_student(cfg.student, teacher, single_sentence=not data.is_pair, tokenizer=t_tok)
        except KDistillError as err:
            if cfg.preset:  # the student the user did not choose: say where it came from and how to replace it
                raise KDistillError(f"{err} (the student comes from --preset {cfg.preset}: choose your own with "
                                    "--student.init and its --student.* fields, or the other preset)") from None
            raise
        s_tok = load_tokenizer(cfg.student.path) if cfg.student.init == "path" and cfg.student.path else t_tok
        same = same_vocabulary(t_tok, s_tok)
    check_max_length(cfg.data.max_length, student.config, "student", cfg.student.path or "built from the teacher")
    objective = build_objective(cfg, teacher, student, same, data.task)
    if cfg.student.init in ("bilstm", "cnn") and objective.student_request:
        raise KDistillError(f"a {cfg.student.init} student has no transformer layers to match: use response losses "
                            "(logit_mse as in Tang et al., kl, soft_ce, ce), not hidden or attention losses")
    schedule = layer_schedule(cfg, objective)
    splits = tokenize_splits(data, s_tok, cfg.data.max_length, cfg.data.cache_dir)
    teacher_params = count_parameters(teacher) if teacher is not None else None
    plan = choose_teacher_source(cfg, teacher=teacher, teacher_tokenizer=t_tok, student_tokenizer=s_tok, data=data,
                                 train=splits["train"], objective=objective, out=out, load_teacher=_teacher_model,
                                 same_tokens=same)
    del teacher  # the plan holds it where it is still needed; elsewhere its weights need not stay in memory
    record_config(out, cfg)
    d = Distiller(student=student, tokenizer=s_tok, objective=objective, train_cfg=cfg.train, out_dir=out,
                  train_set=plan.train_set, eval_set=splits.get("validation"), metric=data.metric,
                  teacher=plan.live, schedule=schedule,
                  run_name="distill", callbacks=callbacks, teacher_source=plan.source)
    d.log(f"objective: {objective}")
    risky = [t.cfg.name for t in objective.terms if t.cfg.name in ("hidden_mse", "embedding_mse")
             and t.key in objective.projections]
    if cfg.student.init == "config" and risky:
        d.log(f"WARNING: {risky[0]} through a learned projection can collapse a random-init student to one class "
              "(every token state the same vector: benchmarks/collapse.py); for hidden states, hidden_cka compares "
              "any two widths without a projection and did not collapse there")
    layers = probe(student).num_layers
    d.log(f"student: {layers} layer{'s' if layers != 1 else ''} x {probe(student).hidden_size} "
          f"({type(student).__name__}), "
          f"{count_parameters(student) / 1e6:.1f}M params; "
          + (f"teacher {teacher_params / 1e6:.1f}M" if teacher_params is not None else "no teacher model")
          + (f" ({plan.note})" if plan.note else ""))
    if cfg.preset:
        d.log(preset_log_line(cfg))
    result = d.train()
    teacher_summary_file = Path(resolve_model_path(cfg.teacher)) / "metrics.json" if cfg.teacher else None
    teacher_summary = (json.loads(teacher_summary_file.read_text())
                       if teacher_summary_file is not None and teacher_summary_file.is_file() else None)
    summary = {"task": data.name, "metric": data.metric, "method": str(objective), "teacher": cfg.teacher,
               "validation": (result.history[-1].get("validation") if result.history else None),
               "best_epoch": result.best_epoch, "history": result.history,
               "wall_seconds": result.wall_seconds, "steps": result.steps,
               "world_size": d.acc.num_processes, "distributed": str(d.acc.distributed_type),
               "backend": d.acc.state.backend}
    if plan.cache_info is not None:
        summary["teacher_cache"] = plan.cache_info
    written_by = ""
    if isinstance(plan.source, StoredAnswers):
        summary["teacher_answers"] = {"file": cfg.teacher_answers, "written_by": plan.source.teachers}
        written_by = f", written by {', '.join(plan.source.teachers)}" if plan.source.teachers else ""

    def complete(summary: dict[str, Any]) -> None:
        if teacher_summary and summary.get("test") and teacher_summary.get("test"):
            key = primary(data.metric)
            if teacher_summary["test"][key] > 0:  # a share of a score at or below zero (a correlation) means nothing
                summary["retention"] = summary["test"][key] / teacher_summary["test"][key]
        answers = f" (teacher answers: {cfg.teacher_answers}{written_by})" if cfg.teacher_answers else ""
        _card(out, summary, (out / CONFIG_FILE).read_text(), cfg.teacher or str(cfg.student.path),
              f"distillation: {objective}{answers}", data, teacher_summary, eval_cap=cfg.data.max_eval_examples,
              start_only=cfg.teacher is None)

    return _finish(d, out, data, cfg.data.max_length, cfg.data.cache_dir, summary, complete)


def run(cfg: RunConfig) -> dict[str, Any]:
    """The whole job: fine-tune the teacher (unless already there), distill, compare.

    Every step's set-up checks that do not need the trained teacher run first (`run_setup.check_run`), so a bad
    `--distill.*` value is refused before the fine-tuning, not after it.
    """
    reuse = reusable_teacher(cfg)
    dcfg = cfg.distill.model_copy(update={"teacher": cfg.finetune.out})
    check_run(cfg, dcfg, reuse)
    if reuse:
        print(f"[run] reusing the teacher in {cfg.finetune.out}")
    else:
        finetune(cfg.finetune)
    distill(dcfg)
    ecfg = cfg.evaluate.model_copy(update={"model": dcfg.out, "teacher": cfg.finetune.out})
    return evaluate(ecfg)


def export(cfg: ExportConfig) -> dict[str, Any]:
    """ONNX export checked against PyTorch (and int8 with its accuracy change); see `kdistill.export`."""
    from kdistill.export import export_model

    return export_model(cfg)


def bench(cfg: BenchConfig) -> dict[str, Any]:
    """Latency/throughput grid for several models and runtimes; see `kdistill.bench`."""
    from kdistill.bench import run_bench

    return run_bench(cfg)


def report(cfg: ReportConfig) -> dict[str, Any]:
    """One HTML + markdown page for one or more runs; see `kdistill.report`."""
    from kdistill.report import write_report

    return write_report(cfg)


def mlm_head(cfg: MLMHeadConfig) -> dict[str, Any]:
    """Fit a masked-LM head onto a frozen encoder (so any encoder can teach general distillation or augment)."""
    from kdistill.mlm import fit_mlm_head

    return fit_mlm_head(cfg)


def general(cfg: GeneralConfig) -> dict[str, Any]:
    """General distillation on unlabeled text (DistilBERT's triple loss or TinyBERT's intermediate losses)."""
    from kdistill.general import general_distill

    return general_distill(cfg)


def augment(cfg: AugmentConfig) -> dict[str, Any]:
    """TinyBERT's word-replacement augmentation of a task's training split, written as JSONL."""
    from kdistill.augment import augment_task

    return augment_task(cfg)


def generate(cfg: GenerateConfig) -> dict[str, Any]:
    """A chat LLM teacher writes examples of each label (imitation data); see `kdistill.generate`."""
    from kdistill.generate import generate_file

    return generate_file(cfg)


def search(cfg: SearchConfig) -> dict[str, Any]:
    """AdaBERT's architecture search with KD; writes the derived student to retrain; see `kdistill.students.search`."""
    from kdistill.students.search import search_architecture

    return search_architecture(cfg)


def label(cfg: LabelConfig) -> dict[str, Any]:
    """Pseudo-label unlabeled text with any teacher (model, HTTP, command, function); see `kdistill.blackbox`."""
    from kdistill.blackbox import label_file

    return label_file(cfg)
