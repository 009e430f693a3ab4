"""Scoring a saved model: task metric, and next to a teacher, retention, size and speed of both.

Teacher and student are timed interleaved in one window (`kdistill.timing`): timed one after the other, a
load change between the two can turn a 2x faster student into a "0.5x" one. `measure_models` is the one
measurement behind `kdistill evaluate`, `kdistill run` and `kdistill report`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdistill.atomic import atomic_write_json
from kdistill.config import EvaluateConfig
from kdistill.data import TaskData, load_task_data, scoring_files_only
from kdistill.distill.features import model_inputs, model_logits
from kdistill.limits import check_max_length, model_config
from kdistill.metrics import primary
from kdistill.models import load_classifier, load_tokenizer, pick_device
from kdistill.speed import comparison_table, count_parameters, measure_speeds, size_on_disk
from kdistill.tasks import task_of_config
from kdistill.timing import speedup_of
from kdistill.tokenized import make_loader, tokenize_splits


def _pad_to(x: np.ndarray, width: int, value: float) -> np.ndarray:
    """`x` padded along axis 1 to `width` with `value`."""
    if x.shape[1] == width:
        return x
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, width - x.shape[1])
    return np.pad(x, pad, constant_values=value)


def stack_outputs(logits: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch outputs and labels -> one array each, in batch order.

    Per-token outputs (B, L, C) of batches padded to different lengths are padded along L to the longest, with 0;
    token labels (B, L) alongside them with -100, so padded positions are never scored. Per-example outputs are
    concatenated as they are.
    """
    if not logits:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    if logits[0].ndim >= 3:
        width = max(x.shape[1] for x in logits)
        per_token = [y.ndim == 2 and y.shape[1] == x.shape[1] and not np.issubdtype(y.dtype, np.floating)
                     for x, y in zip(logits, labels, strict=True)]
        logits = [_pad_to(x, width, 0.0) for x in logits]
        labels = [_pad_to(y, width, -100) if tok else y for y, tok in zip(labels, per_token, strict=True)]
    return np.concatenate(logits), np.concatenate(labels)


def predict(model: nn.Module, loader: Any, accelerator: Any = None, progress: bool = False,
            desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over a loader (see `stack_outputs`); gathers across processes when an Accelerator is given.

    The logits are `features.model_logits` of each output: (N, C), or (N, L, C) per token padded to the longest
    batch (labels -100 there), or (N, L, 2) start/end logits of a question-answering head.
    """
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            if accelerator is None:
                batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**model_inputs(model, batch))  # not labels, nor the columns a task batches for its losses
            lg, lb = model_logits(out), batch["labels"]
            if accelerator is not None:
                if lg.dim() >= 3:  # per-token outputs: each process's batch has its own length
                    if lb.dim() == 2 and lb.shape[1] == lg.shape[1] and not lb.is_floating_point():
                        lb = accelerator.pad_across_processes(lb, dim=1, pad_index=-100)
                    lg = accelerator.pad_across_processes(lg, dim=1, pad_index=0)
                lg, lb = accelerator.gather_for_metrics((lg, lb))
            logits.append(lg.float().cpu().numpy())
            labels.append(lb.cpu().numpy())
    return stack_outputs(logits, labels)


def score_split(model: nn.Module, tokenizer: Any, data: TaskData, split: str, max_length: int,
                batch_size: int = 64, cache_dir: str | None = None, progress: bool = True,
                desc: str = "eval") -> dict[str, float]:
    """`data.metric` of `model` on `split`, scored by the data's task type (headline figure first)."""
    splits = tokenize_splits(data, tokenizer, max_length, cache_dir)
    loader = make_loader(splits[split], tokenizer, batch_size, task=data.task)
    logits, labels = predict(model, loader, progress=progress, desc=desc)
    return data.task.score(data.metric, logits, labels, encoded=splits[split])


def load_scored(path: str, data: TaskData, cfg: Any, name: str, device: str) -> tuple[dict[str, Any], nn.Module]:
    """Load a model folder, score it on `cfg.split` (validation when the data has no such split).

    Returns what the comparison table shows about it (no speed: models are timed together, see
    `measure_models`) and the model itself, on `device`.
    """
    tokenizer = load_tokenizer(path)
    model = load_classifier(path)
    data.task.check_model(data, model.config, path)
    check_max_length(cfg.data.max_length, model.config, name, path)
    model.to(device)
    split = cfg.split if cfg.split in data.splits else "validation"
    metrics = score_split(model, tokenizer, data, split, cfg.data.max_length, cache_dir=cfg.data.cache_dir,
                          desc=f"scoring {name}", progress=getattr(cfg, "progress", True))
    info = {"name": name, "path": str(path), "split": split, "metric": data.metric,
            "score": metrics[primary(data.metric)], "metrics": metrics, **model_facts(model, path)}
    return info, model


def describe_model(path: str, data: TaskData, cfg: EvaluateConfig, name: str) -> dict[str, Any]:
    """Everything the comparison table shows about one model folder, its speed timed alone."""
    device = pick_device(cfg.device)
    info, model = load_scored(path, data, cfg, name, device)
    if cfg.speed:
        info["speed"] = measure_models([model], cfg, device)["speed"][0]
    return info


def model_facts(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Parameters, bytes on disk and shape of a model: what `evaluate` and `report` show for each one."""
    return {"params": count_parameters(model), "size_bytes": size_on_disk(path),
            "layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size}


def measure_models(models: Sequence[nn.Module], cfg: Any, device: str, pairs: Sequence[tuple[int, int]] = (),
                   names: Sequence[str] | None = None) -> dict[str, Any]:
    """Time `models` interleaved in one window; the one measurement `evaluate` and `report` derive figures from.

    `cfg` is an EvaluateConfig or ReportConfig (batch sizes, seq length, warmup, repeats, threads). Returns
    "speed": per model, one `SpeedResult` dict per batch size; "speedup": per (baseline, model) pair in
    `pairs`, one `Speedup` dict per batch size (baseline p50 / model p50, with its reliability); and
    "settings": how it was measured. `names` label the reasons of an unreliable speedup.
    """
    names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
    shapes = measure_speeds(models, batch_sizes=tuple(cfg.batch_sizes), seq_length=cfg.seq_length,
                            warmup=cfg.warmup, repeats=cfg.repeats, device=device, threads=cfg.threads)
    loads = [s.load for s in shapes if s.load is not None]
    settings = {"device": device, "threads": cfg.threads or torch.get_num_threads(), "warmup": cfg.warmup,
                "repeats": cfg.repeats, "batch_sizes": list(cfg.batch_sizes), "seq_length": cfg.seq_length,
                "models": len(models), "interleaved": True, "load": max(loads) if loads else None,
                "cores": shapes[0].cores, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    return {
        "speed": [[s.result(i).to_dict() for s in shapes] for i in range(len(models))],
        "speedup": {(b, m): [speedup_of(s, b, m, (names[b], names[m])).to_dict() for s in shapes] for b, m in pairs},
        "settings": settings,
    }


def speed_warnings(student: Mapping[str, Any]) -> list[str]:
    """One line per unreliable speedup of a scored student (empty when every speedup can be trusted)."""
    return [f"speedup bs={s['batch_size']} unreliable: {s['unreliable']}" for s in student.get("speedup") or []
            if s.get("unreliable")]


RECORD = "evaluation.json"
"""What `kdistill evaluate` (and so `kdistill run`) leaves in a run folder it scored next to a teacher, so that
`kdistill report` shows the very figures of that table instead of timing the models again."""


def _is_run_folder(path: str) -> bool:
    p = Path(path)
    return (p / "metrics.json").is_file() and (p / "kdistill.yaml").is_file()


def write_record(result: Mapping[str, Any], student: nn.Module, teacher: nn.Module | None) -> Path | None:
    """Keep `evaluate`'s result (with the weights it measured) in the run folder it scored; None when not a run."""
    path = str(result["model"]["path"])
    if "speed" not in result["model"] or not _is_run_folder(path):
        return None
    from kdistill.cache import weights_hash

    record = {**result, "weights": {"student": weights_hash(student),
                                    "teacher": weights_hash(teacher) if teacher is not None else None}}
    atomic_write_json(Path(path) / RECORD, record)
    return Path(path) / RECORD


def read_record(folder: str | Path, student: nn.Module, teacher: nn.Module | None, cfg: Any,
                device: str) -> dict[str, Any] | None:
    """The run folder's `RECORD` when it measured these very weights with `cfg`'s shapes on `device`, else None.

    Warmup and repeats may differ (they change precision, not what is measured); `cfg.threads`, when set,
    must match.
    """
    try:
        record = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
        settings, weights = record["speed_settings"], record["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = (settings.get("batch_sizes") == list(cfg.batch_sizes) and settings.get("seq_length") == cfg.seq_length
            and settings.get("device") == device and cfg.threads in (None, settings.get("threads"))
            and (record.get("teacher") is None) == (teacher is None))
    if not same:
        return None
    from kdistill.cache import weights_hash

    if weights.get("student") != weights_hash(student):
        return None
    if teacher is not None and weights.get("teacher") != weights_hash(teacher):
        return None
    return record


def _with_model_labels(data: Any, model: str) -> Any:
    """A lone test file has no training file to name the classes or the task type: read it as the model's head
    does (`data.task_type` from the model unless set: whole-number scores are scores for a regression model) and
    take the class names from its `id2label` (unless `data.label_names` is set or the names are the default
    LABEL_i, which say nothing; a regression model's one output is no class)."""
    if not scoring_files_only(data):
        return data
    config = model_config(model)
    update: dict[str, Any] = {}
    kind = data.task_type or task_of_config(config)
    if data.task_type is None:
        update["task_type"] = kind
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)]
    if (not data.label_names and names and kind in ("classification", "multilabel", "token_classification")
            and not all(re.fullmatch(r"LABEL_\d+", n) for n in names)):
        update["label_names"] = names
    return data.model_copy(update=update)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score the model (and the teacher), time both interleaved, build the comparison table, optionally write JSON.

    A run folder (one with metrics.json and kdistill.yaml) also gets `RECORD`, which `kdistill report` reuses.
    """
    data = load_task_data(_with_model_labels(cfg.data, cfg.model), scoring=True)
    device = pick_device(cfg.device)
    student, s_model = load_scored(cfg.model, data, cfg, "student" if cfg.teacher else "model", device)
    teacher, t_model = load_scored(cfg.teacher, data, cfg, "teacher", device) if cfg.teacher else (None, None)
    result: dict[str, Any] = {"task": data.name, "model": student, "teacher": teacher}
    if teacher:
        result["retention"] = student["score"] / teacher["score"] if teacher["score"] > 0 else None
    if cfg.speed:
        if teacher is not None and t_model is not None:
            timed = measure_models([t_model, s_model], cfg, device, pairs=[(0, 1)], names=["teacher", "student"])
            teacher["speed"] = timed["speed"][0]
            student["speedup"] = timed["speedup"][(0, 1)]
        else:
            timed = measure_models([s_model], cfg, device, names=[student["name"]])
        student["speed"] = timed["speed"][-1]
        result["speed_settings"] = timed["settings"]
        result["speed_warnings"] = speed_warnings(student)
    result["table"] = comparison_table(student, teacher)
    if cfg.out_json:
        Path(cfg.out_json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.out_json, result)
    if cfg.speed:
        write_record(result, s_model, t_model)
    return result


def attention_divergence(teacher: nn.Module, student: nn.Module, loader: Any,
                         pairs: list[tuple[int, int]]) -> dict[int, float]:
    """Mean teacher->student attention KL (per head, row, real token) for each (student, teacher) pair.

    How close a student's attention is to its teacher's after training: internal-representation
    distillation should drive it down, plain soft-target KD need not.
    """
    from kdistill.distill.features import FeatureRequest, forward_features, prepare_for_capture
    from kdistill.distill.losses import attention_kl
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
