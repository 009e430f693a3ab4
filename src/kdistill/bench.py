"""`kdistill bench`: how fast each model serves, per runtime and shape, next to the most it could gain.

A student's speedup is bounded by how much compute it removed, so every speedup is printed beside the
FLOP ratio to the baseline (the first model): "efficiency" = speedup / FLOP ratio says how much of that
physical limit the runtime actually delivers. PyTorch and ONNX Runtime are timed by the same loop
(`speed.time_calls`) on the same random full-length inputs.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kdistill.config import BenchConfig
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, pick_device
from kdistill.speed import (
    SpeedResult,
    _markdown,
    _num_threads,
    count_parameters,
    flops_per_example,
    make_inputs,
    size_on_disk,
    summarize,
    time_calls,
)


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


def _time_grid(make: Callable[[dict[str, torch.Tensor]], Callable[[], Any]], model: torch.nn.Module,
               cfg: BenchConfig, device: str, bar: Any) -> list[SpeedResult]:
    rows = []
    for seq in cfg.seq_lengths:
        for i, bs in enumerate(cfg.batch_sizes):
            inputs = make_inputs(model, bs, seq, int(model.config.vocab_size), torch.device(device), seed=1234 + i)
            rows.append(summarize(time_calls(make(inputs), cfg.warmup, cfg.repeats), bs, seq))
            bar.update(1)
    return rows


def _check(cfg: BenchConfig, model: torch.nn.Module, path: str) -> None:
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos and max(cfg.seq_lengths) > max_pos:
        raise KDistillError(f"seq_lengths {max(cfg.seq_lengths)} exceeds max_position_embeddings {max_pos} of {path}")
    if min(cfg.seq_lengths) < 1 or min(cfg.batch_sizes) < 1:
        raise KDistillError("batch_sizes and seq_lengths must be positive")


def bench_model(path: str, cfg: BenchConfig, device: str, scratch: Path) -> dict[str, Any]:
    """Every (runtime, seq length, batch size) timing of one model folder, plus its size and FLOPs."""
    model = load_classifier(path).to(device).eval()
    _check(cfg, model, path)
    info: dict[str, Any] = {
        "path": path, "params": count_parameters(model), "size_bytes": size_on_disk(path),
        "layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size,
        "flops": {str(s): flops_per_example(model.config, s) for s in cfg.seq_lengths}, "speed": {}, "notes": [],
    }
    n = len(cfg.seq_lengths) * len(cfg.batch_sizes)
    for backend in cfg.backends:
        with tqdm(total=n, desc=f"bench {Path(path).name or path} {backend}", leave=False) as bar:
            if backend == "pytorch":
                with _num_threads(cfg.threads):
                    rows = _time_grid(_pytorch_timer(model, device), model, cfg, device, bar)
            else:
                from kdistill.export import onnx_session

                try:
                    onnx_path = _onnx_file(path, model, scratch, int8=backend == "onnxruntime-int8")
                    session = onnx_session(str(onnx_path), threads=cfg.threads, device=device)
                except KDistillError as err:
                    if device == "cuda":  # CPU-only onnxruntime next to a GPU: time PyTorch, say why not ORT
                        info["notes"].append(f"onnxruntime skipped: {err}")
                        continue
                    raise
                rows = _time_grid(_ort_timer(session), model, cfg, "cpu", bar)
        info["speed"][backend] = [r.to_dict() for r in rows]
    return info


def _compare(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per model x runtime x shape, with speedup vs the first model and the FLOP ratio."""
    base = models[0]
    flat = []
    for m in models:
        for backend, rows in m["speed"].items():
            base_rows = {(r["seq_length"], r["batch_size"]): r for r in base["speed"].get(backend, [])}
            for r in rows:
                b = base_rows.get((r["seq_length"], r["batch_size"]))
                flop_ratio = base["flops"][str(r["seq_length"])] / m["flops"][str(r["seq_length"])]
                speedup = b["p50_ms"] / r["p50_ms"] if b and r["p50_ms"] > 0 else None
                flat.append({"model": m["path"], "backend": backend, **r, "speedup": speedup,
                             "flop_ratio": flop_ratio,
                             "efficiency": speedup / flop_ratio if speedup is not None else None})
    return flat


def bench_table(flat: list[dict[str, Any]]) -> str:
    headers = ["Model", "Runtime", "Seq", "Batch", "p50 (ms)", "p95 (ms)", "Throughput (ex/s)", "Speedup (p50)",
               "FLOP ratio", "Speedup / FLOP ratio"]
    rows = [[Path(r["model"]).name or r["model"], r["backend"], str(r["seq_length"]), str(r["batch_size"]),
             f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['throughput']:.1f}",
             "-" if r["speedup"] is None else f"{r['speedup']:.2f}x", f"{r['flop_ratio']:.2f}x",
             "-" if r["efficiency"] is None else f"{100 * r['efficiency']:.0f}%"] for r in flat]
    return _markdown(headers, rows)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Time every model on every runtime and shape; print one table and keep every number in JSON."""
    device = pick_device(cfg.device)
    models = []
    with tempfile.TemporaryDirectory(prefix="kdistill-bench-") as tmp:
        for path in cfg.model:
            models.append(bench_model(path, cfg, device, Path(tmp)))
    flat = _compare(models)
    env = {"device": device, "torch": torch.__version__, "threads": cfg.threads or torch.get_num_threads(),
           "machine": platform.machine(), "processor": platform.processor(),
           "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    result = {"models": models, "rows": flat, "env": env, "config": cfg.model_dump(mode="json"),
              "table": bench_table(flat) + "".join(f"\n{n}" for m in models for n in m["notes"])}
    if cfg.out_json:
        Path(cfg.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out_json).write_text(json.dumps(result, indent=1))
        result["table"] += f"\n\nwrote {cfg.out_json}"
    return result
