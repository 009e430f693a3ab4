"""`kdistill bench`: how fast each model serves, per runtime and shape, next to the most it could gain.

A student's speedup is bounded by how much compute it removed, so every speedup is printed beside the
FLOP ratio to the baseline (the first model): "efficiency" = speedup / FLOP ratio says how much of that
physical limit the runtime actually delivers. For each shape every model on every runtime is timed in one
window, once per round (`kdistill.timing.time_shape`), on the same random full-length inputs, so a load change
hits them all alike; a speedup the spread or the machine's load makes doubtful is marked unreliable.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kdistill.atomic import atomic_write_json
from kdistill.config import BenchConfig
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, pick_device
from kdistill.outputs import check_out_file
from kdistill.speed import count_parameters, flops_per_example, markdown_table, size_on_disk
from kdistill.timing import ShapeTiming, make_inputs, num_threads, speedup_of, time_shape


def _onnx_file(path: str, model: torch.nn.Module, scratch: Path, int8: bool = False, opset: int = 18) -> Path:
    """`kdistill export`'s MODEL/onnx file when it passed its parity check on these very weights, else a fresh one.

    The weights hash (not file times, which copies keep or lose) ties a reused export to the model timed next to it.
    """
    from kdistill.cache import weights_hash
    from kdistill.export import export_onnx, quantize_int8

    name = "model.int8.onnx" if int8 else "model.onnx"
    done = Path(path) / "onnx"
    try:
        record = json.loads((done / "export.json").read_text())
    except (OSError, ValueError):
        record = {}
    current = record.get("weights_sha256") == weights_hash(model) and (not int8 or "int8" in record)
    if (done / name).is_file() and current:
        return done / name
    fresh = scratch / hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    fp32 = fresh / "model.onnx" if (fresh / "model.onnx").is_file() else export_onnx(path, fresh, opset=opset)
    return quantize_int8(fp32, fresh / name) if int8 else fp32


def _pytorch_timer(model: torch.nn.Module, device: str) -> Callable[[dict[str, torch.Tensor]], Callable[[], Any]]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def make(inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                out = model(**inputs)
            sync()
            return out
        return call
    return make


def _ort_timer(session: Any) -> Callable[[dict[str, torch.Tensor]], Callable[[], Any]]:
    names = {i.name for i in session.get_inputs()}

    def make(inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
        feed = {k: v.cpu().numpy().astype("int64") for k, v in inputs.items() if k in names}
        return lambda: session.run(None, feed)
    return make


@dataclass
class _Timer:
    """One (model, runtime) pair timed in every window: `make(inputs)` gives the call to time."""

    model: int  # index into the loaded models
    backend: str
    make: Callable[[dict[str, torch.Tensor]], Callable[[], Any]]
    device: str  # where its inputs live (ONNX Runtime takes CPU arrays)


def _check(cfg: BenchConfig, model: torch.nn.Module, path: str) -> None:
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos and max(cfg.seq_lengths) > max_pos:
        raise KDistillError(f"seq_lengths {max(cfg.seq_lengths)} exceeds max_position_embeddings {max_pos} of {path}")
    if min(cfg.seq_lengths) < 1 or min(cfg.batch_sizes) < 1:
        raise KDistillError("batch_sizes and seq_lengths must be positive")


def _load(path: str, cfg: BenchConfig, device: str) -> tuple[dict[str, Any], torch.nn.Module]:
    """A model folder on `device` and what the bench records about it (size, shape, FLOPs per length)."""
    model = load_classifier(path).to(device).eval()
    _check(cfg, model, path)
    info: dict[str, Any] = {
        "path": path, "params": count_parameters(model), "size_bytes": size_on_disk(path),
        "layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size,
        "flops": {str(s): flops_per_example(model.config, s) for s in cfg.seq_lengths}, "speed": {}, "notes": [],
    }
    return info, model


def _timers(infos: list[dict[str, Any]], models: list[torch.nn.Module], cfg: BenchConfig, device: str,
            scratch: Path) -> list[_Timer]:
    """Every (model, runtime) to time; ONNX Runtime next to a GPU without onnxruntime-gpu is skipped with a note."""
    timers = []
    for backend in cfg.backends:
        for i, (info, model) in enumerate(zip(infos, models, strict=True)):
            if backend == "pytorch":
                timers.append(_Timer(i, backend, _pytorch_timer(model, device), device))
                continue
            from kdistill.export import onnx_session

            try:
                onnx_path = _onnx_file(info["path"], model, scratch, int8=backend == "onnxruntime-int8")
                session = onnx_session(str(onnx_path), threads=cfg.threads, device=device)
            except KDistillError as err:
                if device == "cuda":  # CPU-only onnxruntime next to a GPU: time PyTorch, say why not ORT
                    info["notes"].append(f"onnxruntime skipped: {err}")
                    continue
                raise
            timers.append(_Timer(i, backend, _ort_timer(session), "cpu"))
    return timers


def _time_all(timers: list[_Timer], models: list[torch.nn.Module], cfg: BenchConfig) -> dict[str, list[ShapeTiming]]:
    """Per runtime, one interleaved window per (length, batch size) in which every model runs once per round.

    A load change during the bench then slows every model alike instead of whichever was being timed.
    Runtimes get windows of their own: speedups compare models within one runtime, and one runtime's idle
    worker threads (which spin-wait for a while after each call) must not tax another's.
    """
    windows: dict[str, list[ShapeTiming]] = {}
    total = len({t.backend for t in timers}) * len(cfg.seq_lengths) * len(cfg.batch_sizes)
    with tqdm(total=total, desc="bench", leave=False, disable=not cfg.progress) as bar, num_threads(cfg.threads):
        for backend in dict.fromkeys(t.backend for t in timers):
            group = [t for t in timers if t.backend == backend]
            for seq in cfg.seq_lengths:
                for i, bs in enumerate(cfg.batch_sizes):
                    calls = []
                    for t in group:
                        model = models[t.model]
                        inputs = make_inputs(model, bs, seq, int(model.config.vocab_size), torch.device(t.device),
                                             seed=1234 + i)
                        calls.append(t.make(inputs))
                    windows.setdefault(backend, []).append(time_shape(calls, bs, seq, cfg.warmup, cfg.repeats))
                    bar.update(1)
    return windows


def _compare(infos: list[dict[str, Any]], timers: list[_Timer],
             windows: dict[str, list[ShapeTiming]]) -> list[dict[str, Any]]:
    """One flat row per model x runtime x shape, with speedup vs the first model (same runtime) and the FLOP ratio.

    The speedup is the baseline's p50 / the model's p50 from the same window; `reliable` and `unreliable` say
    whether it can be trusted (see `kdistill.timing.assess_speedup`).
    """
    base_info = infos[0]
    names = [Path(m["path"]).name or m["path"] for m in infos]
    flat = []
    for backend, shapes in windows.items():
        group = [t for t in timers if t.backend == backend]
        base = next((k for k, t in enumerate(group) if t.model == 0), None)
        for k, t in enumerate(group):
            m = infos[t.model]
            for shape in shapes:
                r = shape.result(k).to_dict()
                flop_ratio = base_info["flops"][str(shape.seq_length)] / m["flops"][str(shape.seq_length)]
                check: dict[str, Any] = {"speedup": None, "speedup_low": None, "speedup_high": None,
                                         "reliable": None, "unreliable": None}
                if base == k:
                    check.update(speedup=1.0, speedup_low=1.0, speedup_high=1.0, reliable=True)
                elif base is not None:
                    su = speedup_of(shape, base, k, (names[0], names[t.model]))
                    check.update(speedup=su.speedup, speedup_low=su.low, speedup_high=su.high,
                                 reliable=su.reliable, unreliable="; ".join(su.reasons) or None)
                flat.append({"model": m["path"], "backend": backend, **r, **check, "flop_ratio": flop_ratio,
                             "efficiency": check["speedup"] / flop_ratio if check["speedup"] is not None else None,
                             "load": shape.load, "cores": shape.cores})
    return flat


def bench_table(flat: list[dict[str, Any]]) -> str:
    """The bench as markdown, with a line under it for every speedup marked unreliable and why."""
    headers = ["Model", "Runtime", "Seq", "Batch", "p50 (ms)", "p95 (ms)", "Throughput (ex/s)", "Speedup (p50)",
               "FLOP ratio", "Speedup / FLOP ratio"]
    rows, notes = [], []
    for r in flat:
        name = Path(r["model"]).name or r["model"]
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        if r.get("unreliable"):
            speedup += " (unreliable)"
            notes.append(f"{name} {r['backend']} seq {r['seq_length']} batch {r['batch_size']}: speedup unreliable: "
                         f"{r['unreliable']}.")
        rows.append([name, r["backend"], str(r["seq_length"]), str(r["batch_size"]), f"{r['p50_ms']:.2f}",
                     f"{r['p95_ms']:.2f}", f"{r['throughput']:.1f}", speedup, f"{r['flop_ratio']:.2f}x",
                     "-" if r["efficiency"] is None else f"{100 * r['efficiency']:.0f}%"])
    text = markdown_table(headers, rows)
    if notes:
        text += ("\n\n" + "\n".join(notes) + "\nRe-run on a quiet machine (or with more repeats) before trusting a "
                 "speedup marked unreliable.")
    return text


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Time every model on every runtime and shape, interleaved; print one table and keep every number in JSON."""
    out_json = check_out_file(cfg.out_json, "out_json") if cfg.out_json else None  # before minutes of timing
    device = pick_device(cfg.device)
    loaded = [_load(path, cfg, device) for path in cfg.model]
    infos, models = [i for i, _ in loaded], [m for _, m in loaded]
    with tempfile.TemporaryDirectory(prefix="kdistill-bench-") as tmp:
        timers = _timers(infos, models, cfg, device, Path(tmp))
        windows = _time_all(timers, models, cfg)
    for backend, shapes in windows.items():
        for k, t in enumerate(t for t in timers if t.backend == backend):
            infos[t.model]["speed"][backend] = [shape.result(k).to_dict() for shape in shapes]
    flat = _compare(infos, timers, windows)
    shapes = [s for group in windows.values() for s in group]
    env = {"device": device, "torch": torch.__version__, "threads": cfg.threads or torch.get_num_threads(),
           "machine": platform.machine(), "processor": platform.processor(),
           "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "interleaved": True,
           "cores": shapes[0].cores if shapes else None,
           "load": max((s.load for s in shapes if s.load is not None), default=None)}
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    result = {"models": infos, "rows": flat, "env": env, "config": cfg.model_dump(mode="json"),
              "table": bench_table(flat) + "".join(f"\n{n}" for m in infos for n in m["notes"])}
    if out_json is not None:
        atomic_write_json(out_json, result)
        result["table"] += f"\n\nwrote {cfg.out_json}"
    return result
