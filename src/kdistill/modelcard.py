"""Model cards (README.md with YAML front matter) that the Hugging Face Hub and `huggingface_hub` read.

A distilled model is only useful to others if it says what it was distilled from, how, how much
accuracy it kept and how much smaller and faster it got; the front matter makes that machine-readable
(`model-index` feeds the Hub's evaluation widgets), the body makes it human-readable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kdistill.atomic import atomic_write_text
from kdistill.config import DEFAULT_TEACHER
from kdistill.speed import speed_table

GLUE_TASKS: dict[str, tuple[str | None, str, str]] = {
    "sst2": (None, "SST-2 (SentEval split)", "test"),  # our SST-2 test is SST's 1,821-sentence test set
    "cola": ("cola", "GLUE COLA", "validation"),  # GLUE dev files serve as our test split
    "mrpc": ("mrpc", "GLUE MRPC", "validation"),
    "rte": ("rte", "GLUE RTE", "validation"),
    "stsb": (None, "STS Benchmark (STS-B)", "test"),  # the benchmark's own test split, with public scores
    "goemotions": (None, "GoEmotions", "test"),
    "conll2003": (None, "CoNLL-2003 (English NER)", "test"),
}
"""Shipped kdistill tasks -> (config of the Hub's GLUE dataset or None, display name, split scored)."""
GLUE_DATASET = "nyu-mll/glue"
DEFAULT_TEACHER_HUB = "sentence-transformers/all-MiniLM-L6-v2"

# kdistill metric key -> (Hub metric type, display name)
_METRIC_NAMES: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "Accuracy"),
    "acc": ("accuracy", "Accuracy"),
    "f1": ("f1", "F1"),
    "matthews": ("matthews_correlation", "Matthews Correlation"),
    "mcc": ("matthews_correlation", "Matthews Correlation"),
    "matthews_correlation": ("matthews_correlation", "Matthews Correlation"),
    "precision": ("precision", "Precision"),
    "recall": ("recall", "Recall"),
    "pearson": ("pearsonr", "Pearson Correlation"),
    "spearman": ("spearmanr", "Spearman Correlation"),
    "micro_f1": ("f1", "Micro F1"),
    "macro_f1": ("f1", "Macro F1"),
    "entity_f1": ("f1", "Entity F1 (seqeval)"),
    "entity_precision": ("precision", "Entity Precision"),
    "entity_recall": ("recall", "Entity Recall"),
    "token_accuracy": ("accuracy", "Token Accuracy"),
}
# Bookkeeping values an evaluation loop reports that are not task metrics.
_NOT_METRICS = {"loss", "runtime", "samples_per_second", "steps_per_second", "epoch", "step", "examples"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_model_id(name: str) -> str | None:
    """The Hub id for `name`, or None when it is a local path (which must not go in `base_model`)."""
    if name == DEFAULT_TEACHER:
        return DEFAULT_TEACHER_HUB
    if not _HUB_ID.match(name) or ".." in name or name.endswith((".", "-")):
        return None
    if Path(name).expanduser().exists():
        return None
    return name


def _clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Finite numeric task metrics, with Trainer-style `eval_` prefixes dropped."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        name = key.removeprefix("eval_")
        if name in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


def _metric_meta(name: str) -> tuple[str, str]:
    return _METRIC_NAMES.get(name, (name, name.replace("_", " ").title()))


def _front_matter(
    model_name: str, base_model: str, task: str, metrics: dict[str, float], pipeline_tag: str = "text-classification",
    eval_cap: int | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": pipeline_tag,
        "tags": ["kdistill", "knowledge-distillation"],
    }
    hub_id = hub_model_id(base_model)
    if hub_id:
        data["base_model"] = hub_id
    glue = GLUE_TASKS.get(task.lower())
    if glue and glue[0]:
        data["datasets"] = [GLUE_DATASET]
    if metrics:
        data["metrics"] = sorted({_metric_meta(k)[0] for k in metrics})
        dataset: dict[str, Any] = (
            ({"name": glue[1], "type": GLUE_DATASET, "config": glue[0], "split": glue[2]} if glue[0]
             else {"name": glue[1], "type": task, "split": glue[2]})
            if glue else {"name": task, "type": task}
        )
        if eval_cap is not None:  # the datasets slicing syntax: these scores are of the split's first rows only
            dataset["split"] = f"{dataset.get('split', 'test')}[:{eval_cap}]"
        data["model-index"] = [{
            "name": model_name,
            "results": [{
                "task": {"type": pipeline_tag, "name": pipeline_tag.replace("-", " ").title()},
                "dataset": dataset,
                "metrics": [
                    {"type": _metric_meta(k)[0], "value": round(v, 6), "name": _metric_meta(k)[1]}
                    for k, v in metrics.items()
                ],
            }],
        }]
    return data


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def _metrics_section(metrics: dict[str, float], teacher: dict[str, float]) -> list[str]:
    if not metrics:
        return []
    lines = ["## Results", ""]
    if teacher:
        lines += ["| Metric | Student | Teacher | Retention |", "|---|---|---|---|"]
        for k, v in metrics.items():
            t = teacher.get(k)
            retention = f"{v / t * 100:.1f}%" if t is not None and t > 0 else "-"
            t_cell = f"{t:.4f}" if t is not None else "-"
            lines.append(f"| {_metric_meta(k)[1]} | {v:.4f} | {t_cell} | {retention} |")
    else:
        lines += ["| Metric | Student |", "|---|---|"]
        lines += [f"| {_metric_meta(k)[1]} | {v:.4f} |" for k, v in metrics.items()]
    return lines + [""]


def _params_section(params: int | None, teacher_params: int | None) -> list[str]:
    if params is None and teacher_params is None:
        return []
    lines = ["## Size", ""]
    if params is not None:
        lines.append(f"- Student parameters: {_fmt_params(params)}")
    if teacher_params is not None:
        lines.append(f"- Teacher parameters: {_fmt_params(teacher_params)}")
    if params and teacher_params:
        lines.append(f"- Compression: {teacher_params / params:.1f}x fewer parameters")
    return lines + [""]


def render_model_card(
    *,
    model_name: str,
    base_model: str,
    method: str,
    task: str,
    metrics: Mapping[str, float],
    teacher_metrics: Mapping[str, float] | None = None,
    params: int | None = None,
    teacher_params: int | None = None,
    speed: Sequence[Mapping[str, Any]] | None = None,
    config_yaml: str | None = None,
    extra: str | None = None,
    model_path: str | None = None,
    base_model_origin: str | None = None,
    task_type: str = "classification",
    pair: bool = False,
    kdistill_architecture: bool = False,
    eval_cap: int | None = None,
    start_only: bool = False,
) -> str:
    """The README.md text: YAML front matter, then a short markdown body.

    `start_only`: `base_model` is only the student's starting weights, not its teacher (a run taught by stored
    answers alone, `teacher: null`), and the card says so; `method` then names who taught it.

    `kdistill_architecture`: the model is one of kdistill's own classes (BiLSTM/CNN, AdaBERT cells), which the
    Auto classes know only after `import kdistill.students`, so the usage snippet starts with that import.

    `model_path` is what the usage snippet loads (default `model_name`); `base_model_origin` is the model the
    base model was itself fine-tuned from, when known. `task_type` (`kdistill.tasks`) picks the pipeline task
    (`pipeline_tag`: text-classification, token-classification, question-answering: shown with
    `kdistill.tasks.qa_predict.answer`, as transformers 5 has no such pipeline) and the call's arguments: a regression
    model's output is the score itself (`function_to_apply="none"`), a multi-label model gives every label's sigmoid
    probability (`function_to_apply="sigmoid", top_k=None`), a token classifier groups word-pieces into entities
    (`aggregation_strategy="simple"`); `pair` shows a text pair.
    """
    from kdistill.tasks import get_task

    task_obj = get_task(task_type)
    clean = _clean_metrics(metrics)
    teacher = _clean_metrics(teacher_metrics)
    front = yaml.safe_dump(
        _front_matter(model_name, base_model, task, clean, task_obj.pipeline_tag, eval_cap), sort_keys=False,
        allow_unicode=True
    )
    glue = GLUE_TASKS.get(task.lower())
    task_text = f"{glue[1]} (`{task}`)" if glue else f"`{task}`"
    if hub_model_id(base_model):
        source = f"`{hub_model_id(base_model)}`"
    else:  # a folder: say where it was, since a relative path means nothing to a reader of the card
        source = f"the local model folder `{base_model}` (on the machine that trained it)"
    if base_model_origin:
        source += f", itself fine-tuned from `{hub_model_id(base_model_origin) or base_model_origin}`,"
    body = [
        f"# {model_name}",
        "",
        f"This model was distilled with kdistill (knowledge distillation) "
        f"{'starting from' if start_only else 'from'} {source} using the `{method}` method on the {task_text} "
        f"{task_obj.pipeline_tag} task, "
        f"{task_obj.doc}.",
        "",
    ]
    body += _metrics_section(clean, teacher)
    if clean and eval_cap is not None:
        body += [f"Scored on the first {eval_cap:,} examples of the split only (`data.max_eval_examples`), not all "
                 "of it.", ""]
    body += _params_section(params, teacher_params)
    if speed:
        body += ["## Speed", "", "Forward-pass time measured by `kdistill` (random inputs, full length).", "",
                 speed_table(speed), ""]
    if task_obj.pipeline_tag == "question-answering":
        body += _qa_usage(model_path or model_name)
    else:
        body += [
            "## Usage", "", "```python",
            *(["import kdistill.students  # registers kdistill's student classes with transformers' Auto classes"]
              if kdistill_architecture else []),
            "from transformers import pipeline", "",
            "# this folder; once uploaded, its Hub id (user/name) instead",
            f'classifier = pipeline("{task_obj.pipeline_tag}", model={json.dumps(model_path or model_name)})',
            f"print(classifier({_example(pair, task_obj.pipeline_tag)}{_call_kwargs(task_obj.pipeline_kwargs)}))",
            "```", "",
        ]
    if config_yaml:
        body += ["## Distillation config", "", "```yaml", config_yaml.strip("\n"), "```", ""]
    if extra:
        body += [extra.strip("\n"), ""]
    return f"---\n{front}---\n\n" + "\n".join(body)


def _example(pair: bool, pipeline_tag: str = "text-classification") -> str:
    if pipeline_tag == "token-classification":
        return '"Angela Merkel met Emmanuel Macron in Paris."'
    if pair:
        return '{"text": "A man is playing a guitar.", "text_pair": "Someone plays an instrument."}'
    return '"Replace me with any text you like."'


def _qa_usage(path: str) -> list[str]:
    """The usage section of an extractive QA model: transformers 5 removed `pipeline("question-answering")`, so the
    card shows kdistill's replacement (`kdistill.tasks.qa_predict.answer`: windows, model, best span)."""
    return [
        "## Usage", "",
        'transformers 5 removed `pipeline("question-answering")`; kdistill\'s `qa_predict.answer` does what it did '
        "(question + context windows, the best start/end span over them):", "",
        "```python", "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
        "from kdistill.tasks.qa_predict import answer", "",
        f"path = {json.dumps(path)}  # this folder; once uploaded, its Hub id (user/name) instead",
        "model = AutoModelForQuestionAnswering.from_pretrained(path)",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        'span = answer(model, tokenizer, question="Where do water droplets collide?",',
        '              context="Precipitation forms as water droplets collide with other drops within a cloud.")',
        "print(span.text, span.score)", "```", "",
    ]


def _model_type(folder: Path) -> str:
    """The saved model's `model_type` ("" when the folder has no readable config.json)."""
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _call_kwargs(kwargs: Mapping[str, Any]) -> str:
    """`, function_to_apply="none"` for the pipeline call (Python literals, so None stays None)."""
    return "".join(f", {k}={'None' if v is None else json.dumps(v)}" for k, v in kwargs.items())


def decision_section(decision: dict[str, Any] | None, metric: str) -> str | None:
    """The card's note on a decision threshold folded into the model (`kdistill.calibration`), or None."""
    if not decision:
        return None
    return (f"## Decision threshold\n\nA label applies when its probability is at least 0.5: the threshold tuned on "
            f"the validation split, {decision['threshold']:g}, is folded into the output biases "
            f"(`kdistill_threshold` in config.json; validation {metric} {decision['validation_at_0.5']:.4f} at 0.5 "
            f"before, {decision['validation_tuned']:.4f} with it).")


def write_model_card(
    out_dir: str | Path,
    *,
    base_model: str,
    method: str,
    task: str,
    metrics: dict[str, float],
    teacher_metrics: dict | None = None,
    params: int | None = None,
    teacher_params: int | None = None,
    speed: list[dict] | None = None,
    config_yaml: str | None = None,
    extra: str | None = None,
    task_type: str = "classification",
    pair: bool = False,
    eval_cap: int | None = None,
    start_only: bool = False,
) -> Path:
    """Write `out_dir/README.md` (creating the folder, atomically) so the saved model folder is Hub-ready.

    The usage snippet loads the folder by its absolute path, and a local base model is named by its absolute
    path and, when its `metrics.json` records one, the model it was fine-tuned from. `eval_cap`: the run scored only
    the first N rows of its split (`data.max_eval_examples`); the model-index split then reads `test[:N]` (the
    `datasets` slicing syntax) and the body says so. `start_only`: `base_model` gave the student its starting weights
    only (see `render_model_card`).
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    base_folder = Path(base_model).expanduser()
    origin = None
    if base_model != DEFAULT_TEACHER and base_folder.is_dir():
        base_model = str(base_folder.resolve())
        origin = _fine_tuned_from(base_folder)
    text = render_model_card(
        model_name=out.resolve().name or "kdistill-student",
        model_path=str(out.resolve()),
        base_model_origin=origin,
        base_model=base_model,
        method=method,
        task=task,
        metrics=metrics,
        teacher_metrics=teacher_metrics,
        params=params,
        teacher_params=teacher_params,
        speed=speed,
        config_yaml=config_yaml,
        extra=extra,
        task_type=task_type,
        pair=pair,
        kdistill_architecture=_model_type(out).startswith("kdistill-"),
        eval_cap=eval_cap,
        start_only=start_only,
    )
    path = out / "README.md"
    atomic_write_text(path, text)
    return path


def _fine_tuned_from(folder: Path) -> str | None:
    """The `base_model` that `kdistill finetune` recorded in the folder's metrics.json, if any."""
    try:
        origin = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("base_model")
    except (OSError, ValueError, AttributeError):
        return None
    return origin if isinstance(origin, str) and origin else None
