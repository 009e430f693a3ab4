"""General (task-agnostic) distillation: a masked-LM teacher teaches a small encoder on unlabeled text.

Two recipes, both over the same loop (`Distiller`) as task distillation:
- "triple" (DistilBERT, Sanh et al. 2019): 5 x KL on the teacher's masked-token distribution (T=2) + 2 x masked-LM
  cross-entropy + 1 x cosine between the last hidden states, on dynamically masked blocks;
- "intermediate" (TinyBERT, Jiao et al. 2020, general stage): embedding + attention-score + hidden-state MSE over the
  layer map, on unmasked text, no prediction loss.
The result is an ordinary masked-LM folder; task distillation takes it as `student: {init: path, path: ...}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed
from transformers import AutoModelForMaskedLM, PreTrainedModel

from kdistill.atomic import atomic_write_json
from kdistill.config import CorpusConfig, GeneralConfig, LossConfig, MappingConfig
from kdistill.corpus import load_blocks, mlm_collator, validation_loader
from kdistill.distill.distiller import Distiller
from kdistill.distill.features import prepare_for_capture, score_masked_rows_only
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.limits import check_max_length
from kdistill.mlm import load_masked_lm, masked_accuracy
from kdistill.models import load_tokenizer, probe
from kdistill.runfolder import record_config, run_folder
from kdistill.speed import count_parameters
from kdistill.students.build import default_layers, from_smaller_config, from_teacher_layers, narrowed
from kdistill.tasks import get_task


def recipe(cfg: GeneralConfig, n_teacher: int, n_student: int) -> tuple[list[LossConfig], float]:
    """The loss terms and the masking probability of `cfg.method`."""
    if cfg.method == "triple":
        last = MappingConfig(strategy="explicit", pairs=[(n_student, n_teacher)])
        return [LossConfig(name="kl", weight=5.0, temperature=2.0), LossConfig(name="ce", weight=2.0),
                LossConfig(name="hidden_cosine", weight=1.0, mapping=last)], cfg.corpus.mlm_probability
    if cfg.method == "intermediate":
        return [LossConfig(name="embedding_mse"), LossConfig(name="attn_mse"),
                LossConfig(name="hidden_mse")], 0.0
    assert cfg.losses is not None
    return list(cfg.losses), cfg.corpus.mlm_probability


def build_general_student(cfg: GeneralConfig, teacher: PreTrainedModel) -> PreTrainedModel:
    """DistilBERT init (teacher layers, head and tied embeddings copied), a smaller random config, or a folder."""
    sc = cfg.student
    if sc.init == "path":
        if not sc.path:
            raise KDistillError("student.path is required when student.init is 'path'")
        return load_masked_lm(sc.path)
    if sc.init == "config":
        return from_smaller_config(teacher, sc, auto=AutoModelForMaskedLM)
    n_t = probe(teacher).num_layers
    layers = sc.layers or default_layers(n_t, sc.num_layers or max(1, n_t // 2))
    return narrowed(from_teacher_layers(teacher, layers, single_sentence=False), sc)


def general_distill(cfg: GeneralConfig) -> dict[str, Any]:
    """Run general distillation; writes the student (masked-LM folder), metrics.json and the run's config."""
    with run_folder(cfg.out, cfg, cfg.train.resume) as out:  # guarded and locked for the whole run
        return _general_distill(cfg, out)


def _general_distill(cfg: GeneralConfig, out: Path) -> dict[str, Any]:
    set_seed(cfg.train.seed)
    teacher = load_masked_lm(cfg.teacher)
    check_max_length(cfg.corpus.max_length, teacher.config, "teacher", cfg.teacher, field="corpus.max_length")
    tokenizer = load_tokenizer(cfg.teacher)
    student = build_general_student(cfg, teacher)
    check_max_length(cfg.corpus.max_length, student.config, "student", cfg.student.path or "built from the teacher",
                     field="corpus.max_length")
    t_probe, s_probe = probe(teacher), probe(student)
    losses, masking = recipe(cfg, t_probe.num_layers, s_probe.num_layers)
    objective = Objective(losses, cfg.mapping, student=s_probe, teacher=t_probe, same_tokens=True,
                          task=get_task("masked_lm"))
    prepare_for_capture(teacher, t_probe, objective.teacher_request, "teacher")
    prepare_for_capture(student, s_probe, objective.student_request, "student")
    for model in (teacher, student):
        score_masked_rows_only(model)
    blocks = load_blocks(cfg.corpus, tokenizer, progress=cfg.train.progress)
    eval_cfg: CorpusConfig = cfg.corpus
    val = validation_loader(blocks["validation"], tokenizer, cfg.train.eval_batch_size,
                            eval_cfg.mlm_probability or 0.15, eval_cfg.seed)
    teacher_val = masked_accuracy(teacher, val, "cpu" if cfg.train.device == "cpu" else teacher.device)
    record_config(out, cfg)
    d = Distiller(student=student, tokenizer=tokenizer, objective=objective, train_cfg=cfg.train, out_dir=out,
                  train_set=blocks["train"], eval_set=None, metric="mlm_accuracy", teacher=teacher,
                  run_name="general", collate_fn=mlm_collator(tokenizer, masking),
                  evaluator=lambda dist: masked_accuracy(dist.student, val, dist.acc.device))
    d.log(f"objective: {objective}; masking {masking:g}; {len(blocks['train'])} blocks of "
           f"{cfg.corpus.max_length} tokens")
    d.log(f"student: {s_probe.num_layers} layers x {s_probe.hidden_size}, {count_parameters(student) / 1e6:.1f}M "
           f"params; teacher {count_parameters(teacher) / 1e6:.1f}M, masked-token accuracy "
           f"{teacher_val['mlm_accuracy']:.4f}")
    result = d.train()
    if d.was_finished and (out / "metrics.json").is_file():  # the trained student is in `out`, not `d.student`
        return json.loads((out / "metrics.json").read_text()) if d.acc.is_main_process else {}
    summary: dict[str, Any] = {}
    if d.acc.is_main_process:
        d.export_student(use_best=False)  # the last student: general distillation is pretraining, not selection
        final = masked_accuracy(d.student, val, d.acc.device)
        summary = {"teacher": cfg.teacher, "method": cfg.method, "objective": str(objective), "masking": masking,
                   "train_blocks": len(blocks["train"]), "block_length": cfg.corpus.max_length,
                   "teacher_validation": teacher_val, "validation": final, "history": result.history,
                   "wall_seconds": result.wall_seconds, "steps": result.steps,
                   "params": count_parameters(d.student), "teacher_params": count_parameters(teacher)}
        atomic_write_json(out / "metrics.json", summary)
        d.log(f"student masked-token accuracy {final['mlm_accuracy']:.4f} (teacher "
               f"{teacher_val['mlm_accuracy']:.4f}); written to {out}")
    d.mark_finished()  # last: a kill before it is repaired by a rerun
    return summary
