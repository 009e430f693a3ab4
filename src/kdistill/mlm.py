"""Masked-LM models: load any encoder as one, score masked-token accuracy, fit a head onto a frozen encoder.

Sentence encoders such as all-MiniLM-L6-v2 ship without their masked-LM head, yet DistilBERT-style general
distillation (soft targets over the vocabulary) and TinyBERT's augmentation need an MLM. `fit_mlm_head` trains
only the head's transform and output bias on a corpus, the encoder frozen and the decoder tied to the frozen word
embeddings, so the encoder's representations are unchanged and the head merely learns to read them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForMaskedLM, PreTrainedModel

from kdistill.atomic import atomic_write_json
from kdistill.config import LossConfig, MappingConfig, MLMHeadConfig
from kdistill.corpus import load_blocks, mlm_collator, validation_loader
from kdistill.distill.distiller import Distiller
from kdistill.distill.features import score_masked_rows_only
from kdistill.distill.objective import Objective
from kdistill.errors import KDistillError
from kdistill.limits import check_max_length
from kdistill.models import load_tokenizer, model_load_error, pick_device, probe, resolve_model_path
from kdistill.runfolder import record_config, run_folder
from kdistill.tasks import get_task


def load_masked_lm(name: str) -> PreTrainedModel:
    """An encoder as `AutoModelForMaskedLM`; a missing head starts random (then fit it with `kdistill mlm-head`)."""
    path = resolve_model_path(name)
    try:
        model = AutoModelForMaskedLM.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise model_load_error(name, err) from err
    out = model.get_output_embeddings()
    if out is None:
        raise KDistillError(f"'{name}' has no masked-LM output layer in transformers")
    return model


def head_parameters(model: PreTrainedModel) -> list[tuple[str, nn.Parameter]]:
    """Parameters outside the encoder, minus those tied to it (the decoder shares the word embeddings)."""
    encoder = {id(p) for p in model.base_model.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in encoder]


@torch.no_grad()
def masked_accuracy(model: PreTrainedModel, batches: list[dict[str, torch.Tensor]], device: str | torch.device
                    ) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy over the masked positions of fixed validation batches."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for batch in batches:
        inputs = {k: v.to(device) for k, v in batch.items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}
        labels = batch["labels"].to(device)
        logits = model(**inputs).logits
        keep = labels != -100
        picked, gold = logits[keep].float(), labels[keep]
        correct += int((picked.argmax(-1) == gold).sum())
        total += int(keep.sum())
        loss_sum += float(nn.functional.cross_entropy(picked, gold, reduction="sum"))
    model.train(was_training)
    if total == 0:
        raise KDistillError("no masked tokens in the validation blocks (corpus too small?)")
    return {"mlm_accuracy": correct / total, "mlm_loss": loss_sum / total, "masked_tokens": float(total)}


def fit_mlm_head(cfg: MLMHeadConfig) -> dict[str, Any]:
    """Fit the head on `cfg.corpus`; writes an ordinary masked-LM folder with metrics.json (accuracy before/after)."""
    with run_folder(cfg.out, cfg, cfg.train.resume) as out:  # guarded and locked for the whole run
        return _fit_mlm_head(cfg, out)


def _fit_mlm_head(cfg: MLMHeadConfig, out: Path) -> dict[str, Any]:
    model = load_masked_lm(cfg.encoder)
    check_max_length(cfg.corpus.max_length, model.config, "encoder", cfg.encoder, field="corpus.max_length")
    tokenizer = load_tokenizer(cfg.encoder)
    model.base_model.requires_grad_(False)
    trainable = head_parameters(model)
    if not trainable:
        raise KDistillError(f"'{cfg.encoder}': no head parameters to fit")
    for _, p in trainable:
        p.requires_grad_(True)
    score_masked_rows_only(model)
    blocks = load_blocks(cfg.corpus, tokenizer, progress=cfg.train.progress)
    prob = cfg.corpus.mlm_probability or 0.15
    val = validation_loader(blocks["validation"], tokenizer, cfg.train.eval_batch_size, prob, cfg.corpus.seed)
    device = pick_device(cfg.train.device)
    model.to(device)
    before = masked_accuracy(model, val, device)
    print(f"[mlm-head] before: masked-token accuracy {before['mlm_accuracy']:.4f} on {int(before['masked_tokens'])} "
          f"masked tokens ({len(blocks['train'])} training blocks of {cfg.corpus.max_length})", flush=True)
    objective = Objective([LossConfig(name="ce")], MappingConfig(), student=probe(model), teacher=None,
                          task=get_task("masked_lm"))
    record_config(out, cfg)
    d = Distiller(student=model, tokenizer=tokenizer, objective=objective, train_cfg=cfg.train, out_dir=out,
                  train_set=blocks["train"], eval_set=None, metric="mlm_accuracy", run_name="mlm-head",
                  collate_fn=mlm_collator(tokenizer, prob),
                  evaluator=lambda dist: masked_accuracy(dist.student, val, dist.acc.device))
    start = time.perf_counter()
    result = d.train()
    if d.was_finished and (out / "metrics.json").is_file():  # the fitted head is in `out`, not in `d.student`
        return json.loads((out / "metrics.json").read_text()) if d.acc.is_main_process else {}
    fitted = d.student
    after = masked_accuracy(fitted, val, d.acc.device)
    if d.acc.is_main_process:
        d.export_student(use_best=False)  # the head is kept as last trained, not "best"
        summary = {"encoder": cfg.encoder, "trained_parameters": sum(p.numel() for _, p in trainable),
                   "trained": [n for n, _ in trainable], "before": before, "after": after,
                   "train_blocks": len(blocks["train"]), "validation_blocks": len(blocks["validation"]),
                   "history": result.history, "wall_seconds": result.wall_seconds or time.perf_counter() - start,
                   "steps": result.steps}
        atomic_write_json(out / "metrics.json", summary)
        print(f"[mlm-head] after: masked-token accuracy {after['mlm_accuracy']:.4f} (was {before['mlm_accuracy']:.4f});"
              f" written to {out}", flush=True)
    d.mark_finished()  # last: a kill before it is repaired by a rerun
    return summary if d.acc.is_main_process else {}
