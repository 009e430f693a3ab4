"""What a user gained by distilling: parameter count, bytes on disk, latency and throughput.

Distillation is only worth it if the student is measurably smaller and faster, so these numbers are
measured the same way for teacher and student and reported side by side.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from kdistill.errors import KDistillError

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


@dataclass
class SpeedResult:
    """Timing of one (batch size, sequence length) shape; milliseconds per forward pass."""

    batch_size: int
    seq_length: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput: float  # examples per second = batch_size / mean seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeedResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), defined for a single value too."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int,
               sync: Callable[[], Any] = lambda: None) -> list[float]:
    """Milliseconds of `repeats` calls after `warmup` untimed ones; `sync` waits for queued GPU work.

    One timing loop for every runtime (PyTorch, ONNX Runtime) so their numbers are comparable.
    """
    for _ in range(warmup):
        fn()
    sync()
    times_ms: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return times_ms


def summarize(times_ms: Sequence[float], batch_size: int, seq_length: int) -> SpeedResult:
    """p50 / p95 / mean latency and throughput (examples per second at the mean) of one shape."""
    mean_ms = statistics.fmean(times_ms)
    return SpeedResult(batch_size=batch_size, seq_length=seq_length, p50_ms=_percentile(times_ms, 50),
                       p95_ms=_percentile(times_ms, 95), mean_ms=mean_ms,
                       throughput=batch_size / (mean_ms / 1000.0) if mean_ms > 0 else float("inf"))


@contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for a measurement and always restore the previous value."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise KDistillError(f"threads must be at least 1, got {threads}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _forward_accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def make_inputs(
    model: torch.nn.Module, batch_size: int, seq_length: int, vocab_size: int, device: torch.device, seed: int
) -> dict[str, torch.Tensor]:
    """Random but reproducible token ids; ids from 100 up skip BERT's [PAD]/[unused]/special tokens."""
    gen = torch.Generator().manual_seed(seed)
    low = 100 if vocab_size > 200 else 0
    ids = torch.randint(low, vocab_size, (batch_size, seq_length), generator=gen)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    config = getattr(model, "config", None)
    if getattr(config, "type_vocab_size", None) and _forward_accepts(model, "token_type_ids"):
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return {k: v.to(device) for k, v in inputs.items()}


def _model_device(model: torch.nn.Module) -> torch.device | None:
    for param in model.parameters():
        return param.device
    return None


def measure_speed(
    model: torch.nn.Module,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    seq_length: int = 64,
    warmup: int = 3,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    vocab_size: int | None = None,
    threads: int | None = None,
) -> list[SpeedResult]:
    """Time forward passes on random full-length inputs, one `SpeedResult` per batch size.

    Batch 1 is the latency a request sees; a large batch is the throughput of offline scoring.
    The model is moved to `device` for the measurement and returned to its original device and
    train/eval mode afterwards, so benchmarking never changes what the caller holds.
    """
    if repeats < 1:
        raise KDistillError(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise KDistillError(f"warmup must be >= 0, got {warmup}")
    if seq_length < 1:
        raise KDistillError(f"seq_length must be at least 1, got {seq_length}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise KDistillError(f"batch sizes must be positive, got {list(batch_sizes)}")
    config = getattr(model, "config", None)
    vocab = vocab_size or getattr(config, "vocab_size", None)
    if not vocab:
        raise KDistillError("measure_speed needs vocab_size for a model without config.vocab_size")
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos and seq_length > max_pos:
        raise KDistillError(f"seq_length {seq_length} exceeds the model's max_position_embeddings {max_pos}")

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KDistillError("device 'cuda' requested but no GPU is available")
    was_training = model.training
    old_device = _model_device(model)
    model.to(dev)
    model.eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    results: list[SpeedResult] = []
    try:
        with _num_threads(threads), torch.inference_mode():
            for i, batch_size in enumerate(batch_sizes):
                inputs = make_inputs(model, batch_size, seq_length, int(vocab), dev, seed=1234 + i)
                times_ms = time_calls(lambda inputs=inputs: model(**inputs), warmup, repeats, sync)
                results.append(summarize(times_ms, batch_size, seq_length))
    finally:
        if old_device is not None and old_device != dev:
            model.to(old_device)
        model.train(was_training)
    return results


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


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
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
    return _markdown(headers, body)


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


def _comparison(student: Mapping[str, Any], teacher: Mapping[str, Any] | None) -> tuple[
    list[str], list[list[str]]
]:
    """Headers and cells shared by the markdown and the rich renderings."""
    models = [m for m in (teacher, student) if m is not None]
    speeds = [_speed_by_batch(m) for m in models]
    batches = sorted({b for s in speeds for b in s})
    metric = str(student.get("metric") or "score")
    headers = ["Model", metric.replace("_", " ").title(), *(["Retention"] if teacher is not None else []),
               "Params (M)", "Size (MB)"]
    headers += [f"Latency bs={b} (ms)" for b in batches]
    big = batches[-1] if batches else None
    small = batches[0] if batches else None
    if big is not None:
        headers.append(f"Throughput bs={big} (ex/s)")
    if teacher is not None and batches:
        headers.append(f"Speedup bs={small} latency")
        if big != small:
            headers.append(f"Speedup bs={big} throughput")

    t_speed = _speed_by_batch(teacher) if teacher is not None else {}
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
        cells = [name, _fmt_pct(score), *retention,
                 _fmt_millions(model.get("params")), _fmt_millions(model.get("size_bytes"))]
        cells += [f"{speed[b]['p50_ms']:.2f}" if b in speed else _DASH for b in batches]
        if big is not None:
            cells.append(f"{speed[big]['throughput']:.1f}" if big in speed else _DASH)
        if teacher is not None and batches:
            lat = _ratio(t_speed.get(small, {}).get("p50_ms"), speed.get(small, {}).get("p50_ms"))
            cells.append(_fmt_ratio(lat))
            if big != small:
                thr = _ratio(speed.get(big, {}).get("throughput"), t_speed.get(big, {}).get("throughput"))
                cells.append(_fmt_ratio(thr))
        rows.append(cells)
    return headers, rows


def comparison_table(student: Mapping[str, Any], teacher: Mapping[str, Any] | None) -> str:
    """Markdown table: teacher (if any) and student with metric, retention, size and speed.

    Latency columns are p50 per batch size present; throughput is at the largest batch.

    Retention is student score / teacher score; speedup is teacher latency / student latency at the
    smallest batch and student / teacher throughput at the largest, so >1x means the student wins.
    """
    return _markdown(*_comparison(student, teacher))


def print_comparison(
    student: Mapping[str, Any], teacher: Mapping[str, Any] | None, console: Any | None = None
) -> None:
    """Print `comparison_table` as a rich table (rich degrades to plain text when not a TTY).

    When the console is too narrow for one column per measurement (80-column terminals with a
    teacher), the table is transposed to one column per model so no number is cut off.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    headers, rows = _comparison(student, teacher)
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
