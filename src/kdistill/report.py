"""`kdistill report`: one self-contained HTML page (and the same as markdown) for one or more runs.

A run folder holds numbers, a config and logs, but whether a student is worth shipping shows only
side by side with its teacher: what it kept (retention), where it errs (the task type's figure: confusion
matrices for classes, predicted vs gold scores for regression, per-label F1 for label sets, per-entity-type F1 for
token classification), what it costs (size,
latency) and how training went (every loss term). The HTML embeds its PNGs so the page
is one file to mail or attach to a CI run; the markdown links the same PNGs written next to it.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdistill import plots
from kdistill.atomic import atomic_write_bytes, atomic_write_text
from kdistill.config import DistillConfig, FinetuneConfig, ReportConfig, build, load_yaml
from kdistill.data import TaskData, load_task_data
from kdistill.errors import KDistillError
from kdistill.evaluate import RECORD, measure_models, model_facts, predict, read_record
from kdistill.metrics import format_score, primary
from kdistill.models import load_classifier, load_tokenizer, pick_device
from kdistill.outputs import output_folder
from kdistill.page import Block, Figure, to_html, to_markdown
from kdistill.speed import comparison_rows
from kdistill.tasks import HEADS, get_task
from kdistill.tokenized import make_loader, tokenize_splits

Key = tuple[Path, str, str]
"""A scored model: (folder, data config as JSON, split)."""


@dataclass
class Run:
    """One run folder as the report reads it; `student`/`teacher` are filled by scoring."""

    path: Path
    cfg: FinetuneConfig | DistillConfig
    cfg_yaml: str
    metrics: dict[str, Any]
    method: str
    teacher_path: Path | None = None
    data: TaskData | None = None
    student: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] | None = None


def _check_metrics(mfile: Path, metrics: Any) -> None:
    """Refuse a metrics.json whose shape is not the one finetune/distill write (one line naming the part)."""
    def bad(what: str) -> KDistillError:
        return KDistillError(f"{mfile} is not a kdistill metrics file: {what}; rerun the command that wrote it")

    if not isinstance(metrics, dict):
        raise bad(f"it holds a JSON {type(metrics).__name__}, not an object")
    for key in ("test", "validation"):
        value = metrics.get(key)
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())):
            raise bad(f"'{key}' is not an object of numbers")
    history = metrics.get("history")
    if history is not None and not (isinstance(history, list) and all(isinstance(r, dict) for r in history)):
        raise bad("'history' is not a list of objects")


def load_run(folder: str) -> Run:
    """Read a run folder's metrics.json and kdistill.yaml; a folder that is not a run is a one-line error."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise KDistillError(f"run folder not found: {folder}")
    mfile, cfile = path / "metrics.json", path / "kdistill.yaml"
    if not mfile.is_file():
        raise KDistillError(f"{folder} has no metrics.json: give folders written by kdistill finetune or distill")
    if not cfile.is_file():
        raise KDistillError(f"{folder} has no kdistill.yaml (the run's config)")
    try:
        metrics = json.loads(mfile.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KDistillError(f"{mfile} is not valid JSON: {err}") from None
    _check_metrics(mfile, metrics)
    raw = load_yaml(cfile)
    cfg = build(DistillConfig if "teacher" in raw else FinetuneConfig, raw, source=f"config {cfile}")
    if isinstance(cfg, DistillConfig):
        method = "+".join(loss.name for loss in cfg.losses)
        method += f" ({cfg.schedule.name})" if cfg.schedule.name != "all" else ""
    else:
        method = "fine-tuning"
    return Run(path=path.resolve(), cfg=cfg, cfg_yaml=cfile.read_text(encoding="utf-8"), metrics=metrics,
               method=method)


def _teacher_path(run: Run, override: str | None, notes: list[str]) -> Path | None:
    """The run's teacher folder, or None (with a note for the page) when it is not a classifier folder here."""
    name = override or getattr(run.cfg, "teacher", None) or run.metrics.get("teacher")
    if not name:
        return None
    cfg_file = Path(name).expanduser() / "config.json"
    archs = (json.loads(cfg_file.read_text()).get("architectures") or []) if cfg_file.is_file() else None
    if archs is None or not any(a.endswith(tuple(HEADS)) for a in archs):
        why = "is not a model folder here" if archs is None else "has no classification head"
        notes.append(f"{run.path.name}: teacher '{name}' {why}, so the teacher and retention are left out.")
        return None
    return cfg_file.parent.resolve()


def _score(path: Path, data: TaskData, run_cfg: FinetuneConfig | DistillConfig, split: str,
           device: str) -> tuple[dict[str, Any], Any]:
    """Predictions on `split` -> metric and the task's detail (confusion matrix, score pairs or per-label F1),
    parameters and bytes; and the model (timed later)."""
    print(f"[report] scoring {path} on the {split} split")
    tokenizer, model = load_tokenizer(str(path)), load_classifier(str(path))
    data.task.check_model(data, model.config, str(path))
    model.to(device)
    ds = tokenize_splits(data, tokenizer, run_cfg.data.max_length, run_cfg.data.cache_dir)[split]
    logits, labels = predict(model, make_loader(ds, tokenizer, 64, task=data.task))
    n = int(model.config.num_labels)
    id2label = model.config.id2label or {}
    metrics = data.task.score(data.metric, logits, labels, encoded=ds)
    return {
        "path": str(path), "split": split, "task": data.name, "task_type": data.task_type, "metric": data.metric,
        "metrics": metrics, "score": metrics[primary(data.metric)],
        "classes": [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)],
        **data.task.detail(logits, labels, encoded=ds), **model_facts(model, path),
    }, model


def _names(paths: list[Path]) -> list[str]:
    """Folder names; parent/name where two folders share a name, #2, #3 for one folder scored twice."""
    names = [p.name if [q.name for q in set(paths)].count(p.name) == 1 else f"{p.parent.name}/{p.name}"
             for p in paths]
    return [n if names[:i].count(n) == 0 else f"{n} #{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


# ------------------------------------------------------------------------------------ tables


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mega(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.3g}"


def _overview(models: list[dict[str, Any]], batch_sizes: list[int]) -> tuple[list[str], list[list[str]]]:
    """One row per model: the page's headline table and what the CLI prints."""
    big = max(batch_sizes)
    retention = any(m.get("retention") is not None for m in models)  # no column without any teacher
    speeds = any(m.get("speed") for m in models)
    headers = ["Model", "Method", "Task (split)", "Metric", "Score", *(["Retention"] * retention), "Params (M)",
               "Size (MB)"]
    if speeds:
        headers += [f"Latency bs={b} (ms)" for b in batch_sizes] + [f"Throughput bs={big} (ex/s)"]
    rows = []
    for m in models:
        speed = {s["batch_size"]: s for s in m.get("speed") or []}
        cells = [m["name"], m["method"], f"{m['task']} ({m['split']})", m["metric"],
                 format_score(m["metric"], m["score"]),
                 *([_pct(m.get("retention"))] * retention), _mega(m["params"]), _mega(m["size_bytes"])]
        if speeds:
            cells += [f"{speed[b]['p50_ms']:.2f}" if b in speed else "-" for b in batch_sizes]
            cells.append(f"{speed[big]['throughput']:.1f}" if big in speed else "-")
        rows.append(cells)
    return headers, rows


def _speed_rows(models: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["Model", "Batch", "Seq len", "Min (ms)", "p50 (ms)", "p95 (ms)", "Mean (ms)", "Throughput (ex/s)"]
    rows = [[m["name"], str(s["batch_size"]), str(s["seq_length"]),
             "-" if s.get("min_ms") is None else f"{s['min_ms']:.2f}", f"{s['p50_ms']:.2f}", f"{s['p95_ms']:.2f}",
             f"{s['mean_ms']:.2f}", f"{s['throughput']:.1f}"] for m in models for s in m.get("speed") or []]
    return headers, rows


def duration(seconds: float) -> str:
    """A wall time people read at a glance: "0.25 s", "1.7 s", "42 s", "28 min 0 s", "2 h 5 min"."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min"


def _run_blocks(run: Run, name: str, figures: dict[str, Figure], curve_note: str) -> list[Block]:
    """A run's section: facts, teacher vs student, all metrics, confusion matrices, curves, data, config."""
    s, t, m, data = run.student, run.teacher, run.metrics, run.data
    assert data is not None
    wall = m.get("wall_seconds")
    blocks: list[Block] = [
        ("h2", f"Run: {name}"),
        ("kv", [("folder", str(run.path)), ("method", str(m.get("method", run.method))),
                ("teacher", str(run.teacher_path) if run.teacher_path else "-"),
                ("best epoch", str(m.get("best_epoch", "-"))), ("steps", str(m.get("steps", "-"))),
                ("training time", duration(wall) if isinstance(wall, int | float) else "-")]),
        *[("warning", w) for w in m.get("warnings", [])],  # e.g. a student collapsed to one class
        ("h3", f"Teacher vs student on the {s['split']} split" if t else f"Scores on the {s['split']} split"),
    ]
    headers, rows, notes = comparison_rows(s, t)  # the table `kdistill evaluate` / `run` print, and its footnotes
    blocks.append(("table", headers, rows))
    blocks += [("note" if "unreliable" in n or "noisy" in n else "p", n) for n in notes]
    keys = sorted({k for x in (t, s) if x for k in x["metrics"]})
    if len(keys) > 1:  # the comparison shows the headline metric only
        rows = [[x["name"], *(f"{x['metrics'][k]:.4f}" if k in x["metrics"] else "-" for k in keys)]
                for x in (t, s) if x]
        blocks += [("p", "Every metric of the re-scored models:"), ("table", ["Model", *keys], rows)]
    shown = [x for x in (t, s) if x]
    if data.task.figure_heading:  # confusion matrices, or predicted vs gold scores
        blocks += [("h3", data.task.figure_heading), ("figs", [f"fig_{_slug(x['name'])}" for x in shown])]
    for x in shown:  # e.g. per-label F1 of a multi-label model
        for caption, headers, rows in data.task.tables(x, x["classes"]):
            blocks += [("h3", f"{caption}: {x['name']}"), ("table", headers, rows)]
    blocks += [("h3", "Training curves")]
    curves = f"curves_{_slug(name)}"
    blocks += [("figs", [curves]), ("p", curve_note)] if curves in figures else [("p", curve_note)]
    sizes = [str(len(data.splits[k])) if k in data.splits else "-" for k in ("train", "validation", "test")]
    blocks += [("h3", "Data"),
               ("table", ["Task", "Type", "Metric", "Labels", "Inputs", "Train", "Validation", "Test", "Max length"],
                [[data.name, data.task_type, data.metric, ", ".join(data.label_names),
                  "pair" if data.is_pair else "single", *sizes, str(run.cfg.data.max_length)]]),
               ("h3", "Config (kdistill.yaml)"), ("pre", run.cfg_yaml)]
    return blocks


# ------------------------------------------------------------------------------------- driver


def write_report(cfg: ReportConfig) -> dict[str, Any]:
    """Score every run (and each distinct teacher once), draw the figures, write report.html and report.md.

    `cfg.out` is checked (and created) before any model is loaded or scored: a file there, a file above it or an
    unwritable place is a one-line `KDistillError` at once, not after the scoring.
    """
    with output_folder(cfg.out) as out:
        return _write_report(cfg, out)


def _write_report(cfg: ReportConfig, out: Path) -> dict[str, Any]:
    runs = list({r.path: r for r in map(load_run, cfg.runs)}.values())  # a folder given twice counts once
    if cfg.teacher and not (Path(cfg.teacher).expanduser() / "config.json").is_file():
        raise KDistillError(f"teacher folder not found: {cfg.teacher}")
    notes: list[str] = []
    datas: dict[str, TaskData] = {}
    device = pick_device(cfg.device)
    scored: dict[Key, dict[str, Any]] = {}
    loaded: dict[Key, Any] = {}  # the models, held until they are timed together
    keys: dict[Path, tuple[Key, Key | None]] = {}  # run -> its student's and teacher's keys in `scored`
    for run in runs:
        key = run.cfg.data.model_dump_json()
        run.data = datas[key] = datas.get(key) or load_task_data(run.cfg.data)
        split = cfg.split if cfg.split in run.data.splits else "validation"
        if split != cfg.split:
            notes.append(f"{run.path.name}: its data has no {cfg.split} split; scored on validation instead.")
        run.teacher_path = _teacher_path(run, cfg.teacher, notes)
        for p in filter(None, (run.path, run.teacher_path)):
            if (p, key, split) not in scored:
                scored[(p, key, split)], loaded[(p, key, split)] = _score(p, run.data, run.cfg, split, device)
        keys[run.path] = (run.path, key, split), (run.teacher_path, key, split) if run.teacher_path else None
        run.student = scored[(run.path, key, split)]
        run.teacher = scored[(run.teacher_path, key, split)] if run.teacher_path else None
    for name, info in zip(_names([p for p, _, _ in scored]), scored.values(), strict=True):
        info["name"] = name
    teachers = {id(r.teacher): r.teacher for r in runs if r.teacher}
    for info in teachers.values():
        info.update(method="teacher", retention=1.0, teacher=True)
    for run in runs:
        if not run.student.get("teacher"):  # a share of a teacher's score <= 0 (a correlation) means nothing
            run.student.update(method=run.method, teacher=False,
                               retention=run.student["score"] / run.teacher["score"]
                               if run.teacher and run.teacher["score"] > 0 else None)
    models = [*teachers.values(), *(r.student for r in runs if not r.student.get("teacher"))]
    speed_note = _attach_speed(runs, keys, scored, loaded, cfg, device) if cfg.speed else ""
    loaded.clear()

    figures: dict[str, Figure] = {"metric_vs_params": (plots.metric_vs_params_png(models),
                                                       "metric vs parameters, one line per method")}
    for m in models:
        title = f"{m['name']}: {m['metric']} {format_score(m['metric'], m['score'])} on {m['split']}"
        task = get_task(m["task_type"])
        png = task.figure(m, m["classes"], title)
        if png is not None:
            figures[f"fig_{_slug(m['name'])}"] = (png, f"{m['name']} {task.figure_caption}")
    run_blocks: list[Block] = []
    for run in runs:
        name = run.student["name"]
        scalars, note = plots.run_scalars(run.path, run.metrics.get("history") or [])
        png = plots.curves_png(scalars, f"{name}: {run.method}") if scalars else None
        if png:
            figures[f"curves_{_slug(name)}"] = (png, f"{name} training curves")
        run_blocks += _run_blocks(run, name, figures, note)

    headers, rows = _overview(models, cfg.batch_sizes)
    title = "kdistill report: " + ", ".join(r.student["name"] for r in runs)
    blocks: list[Block] = [("h1", title),
                           ("meta", f"{len(runs)} run(s), generated {time.strftime('%Y-%m-%d %H:%M')}; "
                                    f"models re-scored on {device}."),
                           *(("note", n) for n in notes),
                           ("h2", "Overview"), ("table", headers, rows),
                           *([("p", "Retention is a student's score over its teacher's on the same split.")]
                             if teachers else []),
                           ("figs", ["metric_vs_params"])]
    if cfg.speed:
        blocks += [("h2", "Latency and throughput"), ("table", *_speed_rows(models)), ("p", speed_note)]
    blocks += run_blocks

    paths = {}
    for key, (png, _) in figures.items():
        paths[key] = str(out / f"{key}.png")
        atomic_write_bytes(paths[key], png)
    atomic_write_text(out / "report.md", to_markdown(blocks, figures))
    atomic_write_text(out / "report.html", to_html(title, blocks, figures))
    md_table = to_markdown([("table", headers, rows)], figures).strip()
    return {"table": md_table, "html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "figures": paths, "models": models, "notes": notes, "speed_note": speed_note}


def _attach_speed(runs: list[Run], keys: dict[Path, tuple[Key, Key | None]], scored: dict[Key, dict[str, Any]],
                  loaded: dict[Key, Any], cfg: ReportConfig, device: str) -> str:
    """Give every model its speed (and every student its speedup); return the sentence saying how it was measured.

    When each run folder holds `kdistill evaluate`'s record of these very weights and shapes, and no model is
    covered by two records (a teacher shared by runs was timed once per run), the page shows those figures:
    the same table `kdistill run` printed. Otherwise every model on the page is timed together in one window
    by the same `measure_models`, so the page agrees with itself.
    """
    records: dict[Path, dict[str, Any]] = {}
    uses: Counter[Key] = Counter()
    for run in runs:
        s_key, t_key = keys[run.path]
        uses.update(k for k in (s_key, t_key) if k is not None)
        record = read_record(run.path, loaded[s_key], loaded[t_key] if t_key else None, cfg, device)
        if record is not None:
            records[run.path] = record
    if len(records) == len(runs) and all(n == 1 for n in uses.values()):
        for run in runs:
            record = records[run.path]
            run.student["speed"] = record["model"]["speed"]
            run.student["speedup"] = record["model"].get("speedup") or []
            if run.teacher is not None:
                run.teacher["speed"] = record["teacher"]["speed"]
        st = records[runs[0].path]["speed_settings"]
        when = ", ".join(sorted(r["speed_settings"]["measured_at"] for r in records.values()))
        return (f"Not re-measured: these are the figures `kdistill evaluate` measured ({when}) and recorded in "
                f"each run's {RECORD}, the table `kdistill run` printed. Teacher and student were timed in the same "
                f"window, {st['repeats']} alternating rounds per batch size after {st['warmup']} untimed ones, on "
                f"random token ids of length {st['seq_length']} on {st['device']}, torch threads: {st['threads']}.")
    order = list(scored)
    index = {k: i for i, k in enumerate(order)}
    pairs = [(index[t], index[s]) for s, t in keys.values() if t is not None and t != s]
    timed = measure_models([loaded[k] for k in order], cfg, device, pairs, [scored[k]["name"] for k in order])
    for k, speed in zip(order, timed["speed"], strict=True):
        scored[k]["speed"] = speed
    for b, m in pairs:
        scored[order[m]]["speedup"] = timed["speedup"][(b, m)]
    st = timed["settings"]
    why = ""
    stale = [run.path.name for run in runs if run.path not in records and (run.path / RECORD).is_file()]
    if stale:
        why = f" The {RECORD} of {', '.join(stale)} measured other weights, shapes or a different device."
    elif records:
        why = f" Each run's {RECORD} timed its teacher separately; one window keeps this page consistent."
    return (f"Measured now: all {len(order)} models timed in the same window, {st['repeats']} alternating rounds per "
            f"batch size after {st['warmup']} untimed ones, on random token ids of length {st['seq_length']} on "
            f"{device}, torch threads: {st['threads']}.{why}")
