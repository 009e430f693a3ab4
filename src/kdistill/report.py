"""`kdistill report`: one self-contained HTML page (and the same as markdown) for one or more runs.

A run folder holds numbers, a config and logs, but whether a student is worth shipping shows only
side by side with its teacher: what it kept (retention), where it errs (confusion matrices), what it
costs (size, latency) and how training went (every loss term). The HTML embeds its PNGs so the page
is one file to mail or attach to a CI run; the markdown links the same PNGs written next to it.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from kdistill import plots
from kdistill.config import DistillConfig, FinetuneConfig, ReportConfig, build, load_yaml
from kdistill.data import TaskData, check_labels, load_task_data, make_loader, tokenize_splits
from kdistill.errors import KDistillError
from kdistill.evaluate import model_facts, predict
from kdistill.metrics import compute_metrics, primary
from kdistill.models import load_classifier, load_tokenizer, pick_device
from kdistill.speed import comparison_table

Block = tuple[Any, ...]
"""One piece of the page, rendered to both HTML and markdown: ("h2", text), ("table", headers, rows), ..."""
Figure = tuple[bytes, str]
"""PNG bytes and caption."""


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
    if archs is None or not any(a.endswith("ForSequenceClassification") for a in archs):
        why = "is not a model folder here" if archs is None else "has no classification head"
        notes.append(f"{run.path.name}: teacher '{name}' {why}, so the teacher and retention are left out.")
        return None
    return cfg_file.parent.resolve()


def _score(path: Path, data: TaskData, run_cfg: FinetuneConfig | DistillConfig, split: str,
           cfg: ReportConfig) -> dict[str, Any]:
    """Predictions on `split` -> metric and confusion matrix; plus parameters, bytes and (optionally) speed."""
    print(f"[report] scoring {path} on the {split} split")
    tokenizer, model = load_tokenizer(str(path)), load_classifier(str(path))
    check_labels(data, model.config.num_labels, model.config.id2label, model_name=str(path))
    device = pick_device(cfg.device)
    model.to(device)
    ds = tokenize_splits(data, tokenizer, run_cfg.data.max_length, run_cfg.data.cache_dir)[split]
    logits, labels = predict(model, make_loader(ds, tokenizer, 64))
    n = int(model.config.num_labels)
    id2label = model.config.id2label or {}
    metrics = compute_metrics(data.metric, logits, labels)
    return {
        "path": str(path), "split": split, "task": data.name, "metric": data.metric, "metrics": metrics,
        "score": metrics[primary(data.metric)],
        "classes": [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)],
        "confusion": confusion_matrix(labels, logits.argmax(-1), labels=list(range(n))).tolist(),
        **model_facts(model, path, cfg, device),
    }


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
        cells = [m["name"], m["method"], f"{m['task']} ({m['split']})", m["metric"], _pct(m["score"]),
                 *([_pct(m.get("retention"))] * retention), _mega(m["params"]), _mega(m["size_bytes"])]
        if speeds:
            cells += [f"{speed[b]['p50_ms']:.2f}" if b in speed else "-" for b in batch_sizes]
            cells.append(f"{speed[big]['throughput']:.1f}" if big in speed else "-")
        rows.append(cells)
    return headers, rows


def _speed_rows(models: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["Model", "Batch", "Seq len", "p50 (ms)", "p95 (ms)", "Mean (ms)", "Throughput (ex/s)"]
    rows = [[m["name"], str(s["batch_size"]), str(s["seq_length"]), f"{s['p50_ms']:.2f}", f"{s['p95_ms']:.2f}",
             f"{s['mean_ms']:.2f}", f"{s['throughput']:.1f}"] for m in models for s in m.get("speed") or []]
    return headers, rows


def _parse_markdown_table(text: str) -> Block:
    """`speed.comparison_table`'s markdown back into headers and rows, so HTML and markdown show the same."""
    lines = [ln.strip().strip("|").split(" | ") for ln in text.strip().splitlines()]
    return ("table", [c.strip() for c in lines[0]], [[c.strip() for c in ln] for ln in lines[2:]])


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
                ("training time", f"{wall:.3g} s" if isinstance(wall, int | float) else "-")]),
        ("h3", f"Teacher vs student on the {s['split']} split" if t else f"Scores on the {s['split']} split"),
        _parse_markdown_table(comparison_table(s, t)),
    ]
    keys = sorted({k for x in (t, s) if x for k in x["metrics"]})
    if len(keys) > 1:  # the comparison shows the headline metric only
        rows = [[x["name"], *(f"{x['metrics'][k]:.4f}" if k in x["metrics"] else "-" for k in keys)]
                for x in (t, s) if x]
        blocks += [("p", "Every metric of the re-scored models:"), ("table", ["Model", *keys], rows)]
    blocks += [("h3", "Confusion matrices"), ("figs", [f"cm_{_slug(x['name'])}" for x in (t, s) if x]),
               ("h3", "Training curves")]
    curves = f"curves_{_slug(name)}"
    blocks += [("figs", [curves]), ("p", curve_note)] if curves in figures else [("p", curve_note)]
    sizes = [str(len(data.splits[k])) if k in data.splits else "-" for k in ("train", "validation", "test")]
    blocks += [("h3", "Data"),
               ("table", ["Task", "Metric", "Classes", "Inputs", "Train", "Validation", "Test", "Max length"],
                [[data.name, data.metric, ", ".join(data.label_names), "pair" if data.is_pair else "single",
                  *sizes, str(run.cfg.data.max_length)]]),
               ("h3", "Config (kdistill.yaml)"), ("pre", run.cfg_yaml)]
    return blocks


# --------------------------------------------------------------------------------- rendering

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;
 max-width:1200px;margin:24px auto;padding:0 24px} h1{font-size:26px;border-bottom:2px solid #d0d7de}
h2{font-size:20px;margin-top:36px;border-bottom:1px solid #d0d7de;padding-bottom:4px} h3{font-size:15px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600} td.n{text-align:right} td:first-child{white-space:nowrap}
pre{background:#f6f8fa;padding:10px 12px;overflow:auto;font-size:12px;border-radius:6px;max-height:420px}
.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start} figure{margin:0}
figcaption{font-size:12px;color:#57606a;text-align:center} img{max-width:100%;height:auto}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:6px} .meta{color:#57606a}
"""

# Sets data-images / data-images-rendered on <body> once every image decoded (or failed): a check
# that a browser really rendered the page and its embedded PNGs (tests read it from a headless dump).
_SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-rendered", String(ok));
});"""

_NUMBER = re.compile(r"[-+]?[\d.,]+(%|x|e[-+]?\d+)?")


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    """Numbers right-aligned so digits line up; everything escaped."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{esc(c)}</td>' if _NUMBER.fullmatch(c) else f"<td>{esc(c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(title: str, blocks: list[Block], figures: dict[str, Figure]) -> str:
    """One page: inline CSS, PNGs as base64 data URIs, every text escaped."""
    esc = html.escape
    parts = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{esc(args[0])}</{kind}>")
        elif kind in ("p", "note", "meta"):
            parts.append(f'<p class="{kind}">{esc(args[0])}</p>')
        elif kind == "kv":
            parts.append("<table><tbody>" + "".join(
                f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in args[0]) + "</tbody></table>")
        elif kind == "table":
            parts.append(_html_table(args[0], args[1]))
        elif kind == "pre":
            parts.append(f"<pre>{esc(args[0])}</pre>")
        elif kind == "figs":
            figs = []
            for key in args[0]:
                png, caption = figures[key]
                uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                figs.append(f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
                            "</figcaption></figure>")
            parts.append('<div class="figs">' + "".join(figs) + "</div>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts)
            + f"\n<script>{_SCRIPT}</script></body></html>\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], figures: dict[str, Figure]) -> str:
    """The same blocks as markdown; figures link `<key>.png` next to the file."""
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind in ("p", "meta"):
            out.append(args[0])
        elif kind == "note":
            out.append(f"> **Note:** {args[0]}")
        elif kind in ("kv", "table"):
            headers, rows = (["Field", "Value"], args[0]) if kind == "kv" else (args[0], args[1])
            lines = ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            out.append("\n".join(lines + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]))
        elif kind == "pre":
            out.append("```yaml\n" + args[0].rstrip("\n") + "\n```")
        elif kind == "figs":
            out.append(" ".join(f"![{figures[k][1]}]({k}.png)" for k in args[0]))
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- driver


def write_report(cfg: ReportConfig) -> dict[str, Any]:
    """Score every run (and each distinct teacher once), draw the figures, write report.html and report.md."""
    runs = list({r.path: r for r in map(load_run, cfg.runs)}.values())  # a folder given twice counts once
    if cfg.teacher and not (Path(cfg.teacher).expanduser() / "config.json").is_file():
        raise KDistillError(f"teacher folder not found: {cfg.teacher}")
    notes: list[str] = []
    datas: dict[str, TaskData] = {}
    scored: dict[tuple[Path, str, str], dict[str, Any]] = {}
    for run in runs:
        key = run.cfg.data.model_dump_json()
        run.data = datas[key] = datas.get(key) or load_task_data(run.cfg.data)
        split = cfg.split if cfg.split in run.data.splits else "validation"
        if split != cfg.split:
            notes.append(f"{run.path.name}: its data has no {cfg.split} split; scored on validation instead.")
        run.teacher_path = _teacher_path(run, cfg.teacher, notes)
        for p in filter(None, (run.path, run.teacher_path)):
            if (p, key, split) not in scored:
                scored[(p, key, split)] = _score(p, run.data, run.cfg, split, cfg)
        run.student = scored[(run.path, key, split)]
        run.teacher = scored[(run.teacher_path, key, split)] if run.teacher_path else None
    for name, info in zip(_names([p for p, _, _ in scored]), scored.values(), strict=True):
        info["name"] = name
    teachers = {id(r.teacher): r.teacher for r in runs if r.teacher}
    for info in teachers.values():
        info.update(method="teacher", retention=1.0, teacher=True)
    for run in runs:
        if not run.student.get("teacher"):
            run.student.update(method=run.method, teacher=False,
                               retention=run.student["score"] / run.teacher["score"]
                               if run.teacher and run.teacher["score"] else None)
    models = [*teachers.values(), *(r.student for r in runs if not r.student.get("teacher"))]

    figures: dict[str, Figure] = {"metric_vs_params": (plots.metric_vs_params_png(models),
                                                       "metric vs parameters, one line per method")}
    for m in models:
        title = f"{m['name']}: {m['metric']} {_pct(m['score'])} on {m['split']}"
        figures[f"cm_{_slug(m['name'])}"] = (plots.confusion_png(np.array(m["confusion"]),
                                                                 m["classes"], title), f"{m['name']} confusion")
    run_blocks: list[Block] = []
    for run in runs:
        name = run.student["name"]
        scalars, note = plots.run_scalars(run.path, run.metrics.get("history") or [])
        png = plots.curves_png(scalars, f"{name}: {run.method}") if scalars else None
        if png:
            figures[f"curves_{_slug(name)}"] = (png, f"{name} training curves")
        run_blocks += _run_blocks(run, name, figures, note)

    headers, rows = _overview(models, cfg.batch_sizes)
    device = pick_device(cfg.device)
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
        blocks += [("h2", "Latency and throughput"), ("table", *_speed_rows(models)),
                   ("p", f"Random token ids of length {cfg.seq_length} on {device}, {cfg.warmup} untimed and "
                         f"{cfg.repeats} timed forward passes per batch size"
                         + (f", torch threads: {cfg.threads}." if cfg.threads else "."))]
    blocks += run_blocks

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (png, _) in figures.items():
        paths[key] = str(out / f"{key}.png")
        Path(paths[key]).write_bytes(png)
    (out / "report.md").write_text(to_markdown(blocks, figures), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, blocks, figures), encoding="utf-8")
    md_table = to_markdown([("table", headers, rows)], figures).strip()
    return {"table": md_table, "html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "figures": paths, "models": models, "notes": notes}
