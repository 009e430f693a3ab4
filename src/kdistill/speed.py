"""What a user gained by distilling: parameter count, bytes on disk, latency and throughput.

Distillation is only worth it if the student is measurably smaller and faster, so these numbers are
measured the same way for teacher and student and reported side by side. The timing itself (models
interleaved in one window, spread, reliability of a speedup) lives in `kdistill.timing`; its public
names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kdistill.errors import KDistillError
from kdistill.metrics import format_score
from kdistill.timing import (
    SPREAD_LIMIT,
    SpeedResult,
    Speedup,
    make_inputs,
    measure_speed,
    measure_speeds,
    num_threads,
    summarize,
    time_calls,
)

__all__ = ["WEIGHT_SUFFIXES", "SpeedResult", "Speedup", "count_parameters", "size_on_disk", "flops_per_example",
           "make_inputs", "measure_speed", "measure_speeds", "num_threads", "summarize", "time_calls",
           "markdown_table", "speed_table", "comparison_rows", "comparison_table", "print_comparison"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")
"""File endings counted as model weights by `size_on_disk` (tokenizer and config files are not)."""

_DASH = "-"


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, counting storage shared by tied weights (e.g. MLM decoder = embeddings) once."""
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for _, param in model.named_parameters(remove_duplicate=False):
        ptr = param.data_ptr()
        # Empty and meta tensors have no real storage address; fall back to object identity.
        key: tuple[Any, ...] = ("ptr", ptr, param.numel()) if ptr else ("id", id(param))
        if key in seen:
            continue
        seen.add(key)
        total += param.numel()
    return total


def size_on_disk(path: str | Path) -> int:
    """Bytes of the weights a model folder serves, or of one file when given a file.

    Only top-level files count (what `from_pretrained` loads; shards included), and safetensors
    win over other formats when both are there: checkpoints and `best/` copies in a run folder,
    or a leftover `pytorch_model.bin`, are not part of the model a user ships.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise KDistillError(f"no model found at {p}")
    if p.is_file():
        return p.stat().st_size
    files = [f for f in p.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)]
    safetensors = [f for f in files if f.suffix == ".safetensors"]
    return sum(f.stat().st_size for f in (safetensors or files))


def flops_per_example(config: Any, seq_length: int) -> float:
    """Approximate forward FLOPs of one example through a BERT-like encoder.

    Counts 2 FLOPs per multiply-add in the per-token matmuls (Q, K, V, output, FFN), the attention
    scores and weighted sum (4 * L^2 * H per layer), and the pooler/classifier on the [CLS] token.
    Embedding lookups, softmax and LayerNorm are ignored; the point is a FLOP *ratio* between teacher
    and student to compare with the measured speedup.
    """
    config = getattr(config, "config", config)  # accept a model too
    hidden = _first_attr(config, "hidden_size", "dim", "d_model")
    layers = _first_attr(config, "num_hidden_layers", "n_layers", "num_layers")
    inter = _first_attr(config, "intermediate_size", "hidden_dim", "ffn_dim", default=4 * hidden)
    labels = int(getattr(config, "num_labels", 2) or 2)
    L = int(seq_length)
    per_token_matmul = 4 * hidden * hidden + 2 * hidden * inter
    per_layer = 2 * per_token_matmul * L + 4 * L * L * hidden
    head = 2 * (hidden * hidden + hidden * labels)
    return float(layers * per_layer + head)


def _first_attr(obj: Any, *names: str, default: int | None = None) -> int:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and value > 0:
            return value
    if default is not None:
        return default
    raise KDistillError(f"config has none of {', '.join(names)}; cannot estimate FLOPs")


# ----------------------------------------------------------------------------------------- tables


def _speed_dict(row: SpeedResult | Mapping[str, Any]) -> dict[str, Any]:
    return row.to_dict() if isinstance(row, SpeedResult) else dict(row)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table; cells are used as given."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def speed_table(rows: Sequence[SpeedResult | Mapping[str, Any]]) -> str:
    """Markdown table of `SpeedResult`s (or their dicts), one row per batch size."""
    headers = ["Batch", "Seq len", "p50 (ms)", "p95 (ms)", "Mean (ms)", "Throughput (ex/s)"]
    body = []
    for r in map(_speed_dict, rows):
        body.append([
            str(r["batch_size"]), str(r["seq_length"]), f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
            f"{r['mean_ms']:.2f}", f"{r['throughput']:.1f}",
        ])
    return markdown_table(headers, body)


def _fmt_millions(value: float | None, *, scale: float = 1e6) -> str:
    if value is None:
        return _DASH
    v = value / scale
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _fmt_pct(value: float | None) -> str:
    return _DASH if value is None else f"{value * 100:.1f}%"


def _fmt_ratio(value: float | None) -> str:
    return _DASH if value is None or not math.isfinite(value) else f"{value:.2f}x"


def _speed_by_batch(info: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(r["batch_size"]): r for r in map(_speed_dict, info.get("speed") or [])}


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _speedups(student: Mapping[str, Any], t_speed: Mapping[int, Mapping[str, Any]],
              s_speed: Mapping[int, Mapping[str, Any]]) -> dict[int, Speedup]:
    """The student's measured speedups by batch size; from p50s alone (no spread) for results without them."""
    found = {int(d["batch_size"]): Speedup.from_dict(d) for d in student.get("speedup") or []}
    for b in set(t_speed) & set(s_speed) - set(found):
        value = _ratio(t_speed[b].get("p50_ms"), s_speed[b].get("p50_ms"))
        found[b] = Speedup(b, int(s_speed[b]["seq_length"]), value, None, None, 0, None, 1)
    return found


def _notes(speedups: Mapping[int, Speedup], shown: Sequence[int]) -> list[str]:
    """What the speedup columns mean and, for each one that is unreliable, why."""
    measured = [speedups[b] for b in shown if b in speedups and speedups[b].rounds]
    if not [b for b in shown if b in speedups]:
        return []
    if not measured:
        return ["Speedup = teacher p50 / student p50 (>1x: the student is faster)."]
    ranges = ", ".join(f"bs={s.batch_size} {s.low:.2f}x-{s.high:.2f}x" for s in measured if s.low and s.high)
    notes = [f"Speedup = teacher p50 / student p50 (>1x: the student is faster); both timed in the same window, "
             f"{measured[0].rounds} alternating rounds. Per-round speedups, 10th-90th percentile: {ranges}."]
    by_reason: dict[str, list[int]] = {}  # shapes that failed for the same reasons share one line
    for s in measured:
        if s.reasons:
            by_reason.setdefault("; ".join(s.reasons), []).append(s.batch_size)
    for reasons, sizes in by_reason.items():
        which = ", ".join(f"bs={b}" for b in sizes)
        notes.append(f"Speedup {which} {'is' if len(sizes) == 1 else 'are'} unreliable: {reasons}.")
    if by_reason:
        notes[-1] += " Re-run on a quiet machine (or with more repeats) before trusting a speedup marked unreliable."
    return notes


def comparison_rows(student: Mapping[str, Any], teacher: Mapping[str, Any] | None) -> tuple[
    list[str], list[list[str]], list[str]
]:
    """Headers, cells and footnotes of the teacher-vs-student table: one source for markdown, rich and HTML.

    Latency cells are "p50 / p95" in ms per batch size present; throughput is at the largest batch. With a
    teacher, retention is student score / teacher score and the speedup columns (smallest and largest
    batch) are the student's `speedup` records (see `kdistill.timing.assess_speedup`), or teacher p50 /
    student p50 for results without them. An unreliable speedup reads "0.50x (unreliable)" and a footnote
    gives the reason.
    """
    models = [m for m in (teacher, student) if m is not None]
    speeds = [_speed_by_batch(m) for m in models]
    batches = sorted({b for s in speeds for b in s})
    metric = str(student.get("metric") or "score")
    headers = ["Model", metric.replace("_", " ").title(), *(["Retention"] if teacher is not None else []),
               "Params (M)", "Size (MB)"]
    headers += [f"Latency bs={b} p50 / p95 (ms)" for b in batches]
    big = batches[-1] if batches else None
    small = batches[0] if batches else None
    shown = sorted({small, big} - {None}) if teacher is not None else []
    if big is not None:
        headers.append(f"Throughput bs={big} (ex/s)")
    headers += [f"Speedup bs={b}" for b in shown]

    t_speed = _speed_by_batch(teacher) if teacher is not None else {}
    s_speed = _speed_by_batch(student)
    speedups = _speedups(student, t_speed, s_speed) if teacher is not None else {}
    t_score = teacher.get("score") if teacher is not None else None
    rows = []
    for model, speed in zip(models, speeds, strict=True):
        is_teacher = model is teacher
        score = model.get("score")
        retention: list[str] = []  # the column exists only next to a teacher
        if is_teacher:
            retention = ["100%"]
        elif teacher is not None:
            r = _ratio(score, t_score) if score is not None and t_score and t_score > 0 else None
            retention = [_fmt_pct(r)]
        name = str(model.get("name") or ("teacher" if is_teacher else "student"))
        cells = [name, format_score(metric, score) if score is not None else _DASH, *retention,
                 _fmt_millions(model.get("params")), _fmt_millions(model.get("size_bytes"))]
        cells += [f"{speed[b]['p50_ms']:.2f} / {speed[b]['p95_ms']:.2f}" if b in speed else _DASH for b in batches]
        if big is not None:
            cells.append(f"{speed[big]['throughput']:.1f}" if big in speed else _DASH)
        for b in shown:
            if is_teacher:
                cells.append(_fmt_ratio(1.0) if b in speed else _DASH)
                continue
            su = speedups.get(b)
            text = _fmt_ratio(su.speedup if su else None)
            cells.append(f"{text} (unreliable)" if su and su.reasons and text != _DASH else text)
        rows.append(cells)
    notes = _notes(speedups, shown)
    if teacher is None:  # no speedup to judge, but a noisy latency should still not look exact
        for b, r in sorted(s_speed.items()):
            if r["p50_ms"] > 0 and r["p95_ms"] / r["p50_ms"] - 1 > SPREAD_LIMIT:
                notes.append(f"Latency bs={b} is noisy: p95 is {100 * (r['p95_ms'] / r['p50_ms'] - 1):.0f}% above "
                             "p50 (a busy machine?).")
    return headers, rows, notes


def comparison_table(student: Mapping[str, Any], teacher: Mapping[str, Any] | None) -> str:
    """Markdown table: teacher (if any) and student with metric, retention, size and speed; footnotes below.

    See `comparison_rows` for the columns. Speedup > 1x means the student wins.
    """
    headers, rows, notes = comparison_rows(student, teacher)
    return markdown_table(headers, rows) + "".join(f"\n\n{n}" if i == 0 else f"\n{n}" for i, n in enumerate(notes))


def print_comparison(
    student: Mapping[str, Any], teacher: Mapping[str, Any] | None, console: Any | None = None
) -> None:
    """Print `comparison_table` as a rich table and its footnotes (rich degrades to plain text off a TTY).

    When the console is too narrow for one column per measurement (80-column terminals with a
    teacher), the table is transposed to one column per model so no number is cut off.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    headers, rows, notes = comparison_rows(student, teacher)
    title = "Teacher vs student" if teacher is not None else "Model"
    # Width each column needs so that neither a number nor a header word is broken (+3: rule, padding).
    needed = sum(
        max([len(cells[i]) for cells in rows] + [len(w) for w in header.split()]) + 3
        for i, header in enumerate(headers)
    )
    table = Table(title=title)
    if needed <= console.width:
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i == 0 else "right")
        for cells in rows:
            table.add_row(*cells)
    else:
        table.add_column(headers[0])
        for cells in rows:
            table.add_column(cells[0], justify="right")
        for i, header in enumerate(headers[1:], start=1):
            table.add_row(header, *(cells[i] for cells in rows))
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, markup=False)
