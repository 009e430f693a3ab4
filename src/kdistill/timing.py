"""Timing several models fairly on a machine other jobs may share: interleaved rounds, spread, reliability.

Timing a teacher and then its student one after the other compares two different machines whenever the load
changes between the two windows: a job that starts during the student's turn makes a 2x faster student look 2x
slower. Here every model is timed once per round and the rounds run over one shared window, with the order
rotated each round so that no model always goes first; a load change then hits every model alike. The speedup
is the ratio of the medians, and the per-round ratios (model A and model B timed seconds apart) give its
spread. With each model's p95/p50 and the machine's load average they decide whether a speedup is stated
plainly or marked unreliable, with the reason.
"""

from __future__ import annotations

import inspect
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from kdistill.errors import KDistillError

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (`time.perf_counter`; tests pass a fake one)."""

SPREAD_LIMIT = 0.5
"""A model's (p95 - p50) / p50 above this marks its speedups unreliable: its own timings disagree."""
BAND_LIMIT = 1.5
"""The per-round speedups' 90th / 10th percentile above this marks the speedup unreliable."""
LOAD_LIMIT = 1.25
"""A 1-minute load average above this many runnable tasks per core means other jobs compete for the CPU.

The measurement's own threads count in the load too, so the limit sits above 1 per core: a quiet machine
timing with every core reads about 1.0."""
MIN_ROUNDS = 5
"""Fewer timed rounds than this cannot show a spread; such a speedup is marked unreliable."""


def _no_sync() -> None:
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a non-empty sequence, defined for one value too."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class SpeedResult:
    """Timing of one (batch size, sequence length) shape; milliseconds per forward pass."""

    batch_size: int
    seq_length: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput: float  # examples per second = batch_size / mean seconds
    min_ms: float | None = None  # None in results written before min was recorded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeedResult:
        """Back from `to_dict` (or an older dict without `min_ms`)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def summarize(times_ms: Sequence[float], batch_size: int, seq_length: int) -> SpeedResult:
    """p50 / p95 / mean / min latency and throughput (examples per second at the mean) of one shape."""
    mean_ms = statistics.fmean(times_ms)
    return SpeedResult(batch_size=batch_size, seq_length=seq_length, p50_ms=percentile(times_ms, 50),
                       p95_ms=percentile(times_ms, 95), mean_ms=mean_ms,
                       throughput=batch_size / (mean_ms / 1000.0) if mean_ms > 0 else float("inf"),
                       min_ms=min(times_ms))


def round_order(n: int, round_index: int) -> list[int]:
    """Model indices in the order timed in round `round_index`: rotated by one each round.

    Each model goes first equally often, so none always pays (or always escapes) the cost of following
    another model's caches.
    """
    return [(round_index + k) % n for k in range(n)]


def time_interleaved(calls: Sequence[Callable[[], Any]], warmup: int, repeats: int, sync: Callable[[], Any] = _no_sync,
                     clock: Clock = time.perf_counter) -> list[list[float]]:
    """Milliseconds per call: `times[i][r]` is call i in round r. Every call runs once per round.

    `warmup` untimed rounds come first (interleaved the same way); `sync` waits for queued GPU work and is
    inside the timed span. Raises KDistillError for no calls, repeats < 1 or warmup < 0.
    """
    if not calls:
        raise KDistillError("nothing to time")
    if repeats < 1:
        raise KDistillError(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise KDistillError(f"warmup must be >= 0, got {warmup}")
    n = len(calls)
    for r in range(warmup):
        for i in round_order(n, r):
            calls[i]()
    sync()
    times: list[list[float]] = [[] for _ in calls]
    for r in range(repeats):
        for i in round_order(n, r):
            start = clock()
            calls[i]()
            sync()
            times[i].append((clock() - start) * 1000.0)
    return times


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], Any] = _no_sync) -> list[float]:
    """Milliseconds of `repeats` calls of one function after `warmup` untimed ones (`time_interleaved` of one)."""
    return time_interleaved([fn], warmup, repeats, sync)[0]


def machine_load() -> tuple[float | None, int]:
    """(1-minute load average or None where the OS has none, logical CPU count).

    Both are machine-wide (inside a container the load average is the host's, and so is `os.cpu_count`),
    so their ratio compares like with like.
    """
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        load = None
    return load, os.cpu_count() or 1


@dataclass
class ShapeTiming:
    """Interleaved timings of several models at one shape: `times_ms[model][round]`, with the load around it."""

    batch_size: int
    seq_length: int
    times_ms: list[list[float]]
    load: float | None = None  # the higher of the load average before and after the window
    cores: int = 1

    def result(self, i: int) -> SpeedResult:
        return summarize(self.times_ms[i], self.batch_size, self.seq_length)


def time_shape(calls: Sequence[Callable[[], Any]], batch_size: int, seq_length: int, warmup: int, repeats: int,
               sync: Callable[[], Any] = _no_sync, clock: Clock = time.perf_counter,
               load: Callable[[], tuple[float | None, int]] | None = None) -> ShapeTiming:
    """`time_interleaved` of one shape, with the machine's load (`machine_load` unless given) sampled before
    and after the window."""
    load = load or machine_load
    before, cores = load()
    times = time_interleaved(calls, warmup, repeats, sync, clock)
    after, _ = load()
    worst = max((x for x in (before, after) if x is not None), default=None)
    return ShapeTiming(batch_size, seq_length, times, worst, cores)


@dataclass
class Speedup:
    """How much faster a model is than a baseline at one shape, and whether that figure can be trusted.

    `speedup` = baseline p50 / model p50 (>1: the model is faster); `low`/`high` are the 10th and 90th
    percentiles of the per-round ratios; `reasons` says why it is unreliable (empty when it is not).
    """

    batch_size: int
    seq_length: int
    speedup: float | None
    low: float | None
    high: float | None
    rounds: int
    load: float | None
    cores: int
    reasons: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return self.speedup is not None and not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reliable": self.reliable,
                "unreliable": "; ".join(self.reasons) if self.reasons else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Speedup:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def spread(times_ms: Sequence[float]) -> float:
    """(p95 - p50) / p50: how far a model's slow calls sit above its typical one (0 = perfectly steady)."""
    p50 = percentile(times_ms, 50)
    return percentile(times_ms, 95) / p50 - 1.0 if p50 > 0 else 0.0


def assess_speedup(base_ms: Sequence[float], model_ms: Sequence[float], *, batch_size: int, seq_length: int,
                   load: float | None = None, cores: int = 1, names: tuple[str, str] = ("teacher", "student")
                   ) -> Speedup:
    """Speedup of a model over a baseline timed in the same rounds, and every reason not to trust it.

    Unreliable when: fewer than `MIN_ROUNDS` rounds; the load average is above `LOAD_LIMIT` per core; either
    model's (p95 - p50) / p50 is above `SPREAD_LIMIT`; or the per-round ratios' 90th/10th percentile is
    above `BAND_LIMIT`. `names` (baseline, model) only label the reasons.
    """
    if len(base_ms) != len(model_ms):
        raise ValueError("base and model timings must come from the same rounds")
    p50_b, p50_m = percentile(base_ms, 50), percentile(model_ms, 50)
    value = p50_b / p50_m if p50_m > 0 else None
    ratios = [b / m for b, m in zip(base_ms, model_ms, strict=True) if m > 0]
    low = percentile(ratios, 10) if ratios else None
    high = percentile(ratios, 90) if ratios else None
    reasons = []
    if len(base_ms) < MIN_ROUNDS:
        reasons.append(f"only {len(base_ms)} timed rounds")
    if load is not None and load > LOAD_LIMIT * cores:
        reasons.append(f"machine busy (load {load:.1f} on {cores} cores)")
    for name, times in zip(names, (base_ms, model_ms), strict=True):
        s = spread(times)
        if s > SPREAD_LIMIT:
            reasons.append(f"spread {100 * s:.0f}% ({name} p95 vs p50)")
    if low and high and high / low > BAND_LIMIT:
        reasons.append(f"per-round speedups range {low:.2f}x-{high:.2f}x")
    return Speedup(batch_size, seq_length, value, low, high, len(base_ms), load, cores, reasons)


def speedup_of(shape: ShapeTiming, base: int, model: int, names: tuple[str, str] = ("teacher", "student")) -> Speedup:
    """`assess_speedup` of model `model` over model `base`, both timed in `shape`'s rounds."""
    return assess_speedup(shape.times_ms[base], shape.times_ms[model], batch_size=shape.batch_size,
                          seq_length=shape.seq_length, load=shape.load, cores=shape.cores, names=names)


# ------------------------------------------------------------------------------- PyTorch models


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
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


def _vocab(model: torch.nn.Module, vocab_size: int | None, seq_length: int) -> int:
    config = getattr(model, "config", None)
    vocab = vocab_size or getattr(config, "vocab_size", None)
    if not vocab:
        raise KDistillError("measure_speed needs vocab_size for a model without config.vocab_size")
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos and seq_length > max_pos:
        raise KDistillError(f"seq_length {seq_length} exceeds the model's max_position_embeddings {max_pos}")
    return int(vocab)


def measure_speeds(
    models: Sequence[torch.nn.Module],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    seq_length: int = 64,
    warmup: int = 3,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    vocab_size: int | None = None,
    threads: int | None = None,
    clock: Clock = time.perf_counter,
) -> list[ShapeTiming]:
    """Time forward passes of several models interleaved in one window, one `ShapeTiming` per batch size.

    Every model sees the same random full-length token ids (drawn below its own vocabulary) and is timed
    once per round, so a load change during the window affects all of them alike. Models are moved to
    `device` for the measurement and returned to their device and train/eval mode afterwards. Raises
    KDistillError for bad sizes, a sequence longer than a model's positions, or a missing GPU.
    """
    if repeats < 1:
        raise KDistillError(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise KDistillError(f"warmup must be >= 0, got {warmup}")
    if seq_length < 1:
        raise KDistillError(f"seq_length must be at least 1, got {seq_length}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise KDistillError(f"batch sizes must be positive, got {list(batch_sizes)}")
    vocabs = [_vocab(m, vocab_size, seq_length) for m in models]
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KDistillError("device 'cuda' requested but no GPU is available")
    state = [(m.training, _model_device(m)) for m in models]
    sync = torch.cuda.synchronize if dev.type == "cuda" else _no_sync
    shapes: list[ShapeTiming] = []
    try:
        for m in models:
            m.to(dev)
            m.eval()
        with num_threads(threads), torch.inference_mode():
            for i, batch_size in enumerate(batch_sizes):
                calls = []
                for model, vocab in zip(models, vocabs, strict=True):
                    inputs = make_inputs(model, batch_size, seq_length, vocab, dev, seed=1234 + i)
                    calls.append(lambda model=model, inputs=inputs: model(**inputs))
                shapes.append(time_shape(calls, batch_size, seq_length, warmup, repeats, sync, clock))
    finally:
        for m, (was_training, old_device) in zip(models, state, strict=True):
            if old_device is not None and old_device != dev:
                m.to(old_device)
            m.train(was_training)
    return shapes


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
    """Time one model's forward passes, one `SpeedResult` per batch size (`measure_speeds` of one model).

    Batch 1 is the latency a request sees; a large batch is the throughput of offline scoring. To compare
    models, time them together with `measure_speeds`: apart, a load change between them skews the ratio.
    """
    shapes = measure_speeds([model], batch_sizes=batch_sizes, seq_length=seq_length, warmup=warmup, repeats=repeats,
                            device=device, vocab_size=vocab_size, threads=threads)
    return [shape.result(0) for shape in shapes]
