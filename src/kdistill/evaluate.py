"""Scoring a saved model: task metric, and next to a teacher, retention, size and speed of both."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdistill.config import EvaluateConfig
from kdistill.data import TaskData, check_labels, load_task_data, make_loader, tokenize_splits
from kdistill.metrics import compute_metrics, primary
from kdistill.models import load_classifier, load_tokenizer, pick_device
from kdistill.speed import comparison_table, count_parameters, measure_speed, size_on_disk


def predict(model: nn.Module, loader: Any, accelerator: Any = None, progress: bool = False,
            desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over a loader; gathers across processes when an Accelerator is given."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            if accelerator is None:
                batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**{k: v for k, v in batch.items() if k != "labels"})
            lg, lb = out.logits, batch["labels"]
            if accelerator is not None:
                lg, lb = accelerator.gather_for_metrics((lg, lb))
            logits.append(lg.float().cpu())
            labels.append(lb.cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def score_split(model: nn.Module, tokenizer: Any, data: TaskData, split: str, max_length: int,
                batch_size: int = 64, cache_dir: str | None = None, progress: bool = True,
                desc: str = "eval") -> dict[str, float]:
    splits = tokenize_splits(data, tokenizer, max_length, cache_dir)
    loader = make_loader(splits[split], tokenizer, batch_size)
    logits, labels = predict(model, loader, progress=progress, desc=desc)
    return compute_metrics(data.metric, logits, labels)


def describe_model(path: str, data: TaskData, cfg: EvaluateConfig, name: str) -> dict[str, Any]:
    """Everything the comparison table shows about one model folder."""
    tokenizer = load_tokenizer(path)
    model = load_classifier(path)
    check_labels(data, model.config.num_labels, model.config.id2label, model_name=path)
    device = pick_device(cfg.device)
    model.to(device)
    split = cfg.split if cfg.split in data.splits else "validation"
    metrics = score_split(model, tokenizer, data, split, cfg.data.max_length, cache_dir=cfg.data.cache_dir,
                          desc=f"scoring {name}")
    return {"name": name, "path": str(path), "split": split, "metric": data.metric,
            "score": metrics[primary(data.metric)], "metrics": metrics, **model_facts(model, path, cfg, device)}


def model_facts(model: nn.Module, path: str | Path, cfg: Any, device: str) -> dict[str, Any]:
    """Size, shape and (when `cfg.speed`) speed of a model: what `evaluate` and `report` show for each one.

    `cfg` is an EvaluateConfig or ReportConfig: both carry the speed fields.
    """
    info: dict[str, Any] = {"params": count_parameters(model), "size_bytes": size_on_disk(path),
                            "layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size}
    if cfg.speed:
        speed = measure_speed(model, batch_sizes=tuple(cfg.batch_sizes), seq_length=cfg.seq_length,
                              warmup=cfg.warmup, repeats=cfg.repeats, device=device,
                              vocab_size=model.config.vocab_size, threads=cfg.threads)
        info["speed"] = [asdict(s) for s in speed]
    return info


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score the model (and the teacher), print the comparison table, optionally write JSON."""
    data = load_task_data(cfg.data)
    student = describe_model(cfg.model, data, cfg, "student" if cfg.teacher else "model")
    teacher = describe_model(cfg.teacher, data, cfg, "teacher") if cfg.teacher else None
    result: dict[str, Any] = {"task": data.name, "model": student, "teacher": teacher}
    if teacher:
        result["retention"] = student["score"] / teacher["score"] if teacher["score"] else None
    result["table"] = comparison_table(student, teacher)
    if cfg.out_json:
        Path(cfg.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out_json).write_text(json.dumps(result, indent=1))
    return result


def attention_divergence(teacher: nn.Module, student: nn.Module, loader: Any,
                         pairs: list[tuple[int, int]]) -> dict[int, float]:
    """Mean teacher->student attention KL (per head, row, real token) for each (student, teacher) pair.

    How close a student's attention is to its teacher's after training: internal-representation
    distillation should drive it down, plain soft-target KD need not.
    """
    from kdistill.features import FeatureRequest, forward_features, prepare_for_capture
    from kdistill.losses import attention_kl
    from kdistill.models import probe

    s_req = FeatureRequest(attn_probs=frozenset(s for s, _ in pairs))
    t_req = FeatureRequest(attn_probs=frozenset(t for _, t in pairs))
    prepare_for_capture(student, probe(student), s_req, "student")
    prepare_for_capture(teacher, probe(teacher), t_req, "teacher")
    student.eval()
    teacher.eval()
    sums = {s: 0.0 for s, _ in pairs}
    n = 0
    with torch.inference_mode():
        for batch in loader:
            sf = forward_features(student, batch, s_req)
            tf = forward_features(teacher, batch, t_req)
            for s, t in pairs:
                sums[s] += float(attention_kl(sf.attn_probs[s], tf.attn_probs[t], mask=batch["attention_mask"]))
            n += 1
    return {s: v / max(n, 1) for s, v in sums.items()}
