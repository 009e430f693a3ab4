"""Serving benchmark (issue 7): how much of each student's FLOP reduction becomes real speed, in PyTorch and in
ONNX Runtime, and what int8 quantisation costs in accuracy.

Models: the core benchmark's SST-2 teacher (MiniLM-L6-H384, benchmarks/runs/core/teacher), a trained 3-layer
384-wide student (teacher layers 2,4,6; default: the kdistill student of benchmarks/peers.py) and the core
benchmark's 2-layer 192-wide architecture (built here from its config: speed does not depend on the weights, so it
is timed untrained and has no accuracy). Steps, each a cell appended to results/serving.jsonl at once and skipped
on the next run:

1. `kdistill export --quantize` of the teacher and the trained student: ONNX Runtime vs PyTorch parity, and SST-2
   test accuracy of the fp32 and the int8 ONNX model.
2. `kdistill bench` of all three: latency p50/p95 and throughput at batch 1, 8, 32 and length 32, 128, PyTorch,
   ONNX Runtime and ONNX Runtime int8, with each speedup next to its FLOP ratio.

    python benchmarks/serving.py                       # ~10 min on 2 CPU cores; run it on a quiet machine
    python benchmarks/serving.py --device cuda         # PyTorch on the GPU (ONNX Runtime needs onnxruntime-gpu)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import BenchConfig, ExportConfig, StudentConfig, build  # noqa: E402
from kdistill.models import load_classifier, load_tokenizer  # noqa: E402
from kdistill.students.build import build_student  # noqa: E402

HERE = Path(__file__).resolve().parent
TEACHER = HERE / "runs" / "core" / "teacher"
STUDENT = HERE / "runs" / "peers" / "kdistill-1ep"
NARROW = {"init": "config", "num_layers": 2, "hidden_size": 192, "num_heads": 12, "intermediate_size": 768}
DATA = {"task": "sst2", "max_length": 64}


def narrow_student(teacher: Path, runs: Path) -> Path:
    """core.py's 2L-192 architecture (random init): timed only."""
    out = runs / "2L-192-untrained"
    if not (out / "model.safetensors").is_file():
        model = build_student(build(StudentConfig, NARROW), load_classifier(str(teacher)), single_sentence=True)
        model.save_pretrained(out)
        load_tokenizer(str(teacher)).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--teacher", default=str(TEACHER))
    ap.add_argument("--student", default=str(STUDENT), help="a trained 3-layer student folder")
    ap.add_argument("--runs", default=str(HERE / "runs" / "serving"))
    ap.add_argument("--results", default=str(HERE / "results" / "serving.jsonl"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    teacher, student, runs, results = Path(args.teacher), Path(args.student), Path(args.runs), Path(args.results)
    for p in (teacher, student):
        if not (p / "model.safetensors").is_file():
            sys.exit(f"missing model {p}: run benchmarks/core.py / peers.py first, or pass --teacher/--student")
    env = {"torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    narrow = narrow_student(teacher, runs)
    done = done_cells(results)
    for name, path in (("teacher", teacher), ("3L-384", student)):
        cell = f"export | {name}"
        if cell in done:
            continue
        t0 = time.perf_counter()
        r = api.export(build(ExportConfig, {"model": str(path), "out": str(runs / f"onnx-{name}"), "quantize": True,
                                            "data": DATA}))
        r.pop("table", None)
        record(results, {"cell": cell, **r, "model": name, "path": str(path),
                         "wall_seconds": time.perf_counter() - t0, "env": env})
    if "bench" not in done:
        cfg = build(BenchConfig, {"model": [str(teacher), str(student), str(narrow)], "batch_sizes": [1, 8, 32],
                                  "seq_lengths": [32, 128], "repeats": args.repeats, "warmup": 5,
                                  "backends": ["pytorch", "onnxruntime", "onnxruntime-int8"],
                                  "device": args.device, "threads": args.threads, "out_json": None})
        r = api.bench(cfg)
        print(r["table"])
        record(results, {"cell": "bench", "names": {str(teacher): "teacher (MiniLM-L6-H384)",
                                                    str(student): "3L-384 (teacher layers 2,4,6)",
                                                    str(narrow): "2L-192"},
                         "rows": r["rows"], "models": r["models"], "env": {**env, **r["env"]}})
    write_table(done_cells(results), results.with_suffix(".md"))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_table(done: dict[str, dict[str, Any]], path: Path) -> None:
    lines = []
    bench = done.get("bench")
    if bench:
        names = bench["names"]
        lines += ["## Speed: PyTorch and ONNX Runtime, speedup vs the teacher next to the FLOP ratio", "",
                  "| model | runtime | seq | batch | p50 (ms) | p95 (ms) | throughput (ex/s) | speedup | FLOP ratio | "
                  "speedup / FLOP ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in bench["rows"]:
            lines.append(f"| {names.get(r['model'], r['model'])} | {r['backend']} | {r['seq_length']} | "
                         f"{r['batch_size']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['throughput']:.1f} | "
                         f"{r['speedup']:.2f}x | {r['flop_ratio']:.2f}x | {_pct(r['efficiency'])} |")
        lines += ["", "ONNX Runtime (fp32, int8) vs PyTorch, same model and shape (p50 ratio, >1 = faster than "
                  "PyTorch):", "",
                  "| model | seq | batch | PyTorch p50 (ms) | ORT p50 (ms) | ratio | ORT int8 p50 (ms) | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        by = {(r["model"], r["backend"], r["seq_length"], r["batch_size"]): r for r in bench["rows"]}
        for (m, b, s, bs), r in by.items():
            if b != "pytorch":
                continue
            cells = []
            for other in ("onnxruntime", "onnxruntime-int8"):
                o = by.get((m, other, s, bs))
                cells += [f"{o['p50_ms']:.2f}", f"{r['p50_ms'] / o['p50_ms']:.2f}x"] if o else ["-", "-"]
            lines.append(f"| {names.get(m, m)} | {s} | {bs} | {r['p50_ms']:.2f} | " + " | ".join(cells) + " |")
    exports = [r for k, r in done.items() if k.startswith("export |")]
    if exports:
        lines += ["", "## ONNX export and dynamic int8 quantisation (SST-2 test, 1,821 sentences)", "",
                  "| model | max abs logit diff ORT vs PyTorch | fp32 ONNX acc | int8 ONNX acc | change | fp32 MB | "
                  "int8 MB |", "|---|---|---|---|---|---|---|"]
        for r in exports:
            q, sc = r.get("int8") or {}, r.get("scores") or {}
            lines.append(f"| {r['model']} | {_fmt_e(r.get('max_abs_diff'))} (int8 {_fmt_e(q.get('max_abs_diff'))}) | "
                         f"{_pct(sc.get('fp32'))} | {_pct(sc.get('int8'))} | {_signed(r.get('change'))} | "
                         f"{_mb(r.get('size_bytes'))} | {_mb(q.get('size_bytes'))} |")
    env = (bench or next(iter(done.values()), {})).get("env", {})
    lines += ["", f"Measured by `python benchmarks/serving.py` on {env.get('cpu_count')} CPU cores (torch "
              f"{env.get('torch')}, onnxruntime {env.get('onnxruntime', '-')}, {env.get('threads')} threads"
              f"{', ' + env['cuda'] if env.get('cuda') else ''}). Random token ids at full length (no padding), "
              "5 warm-up and 20 timed passes per shape, median (p50) and 95th percentile; throughput = batch / mean. "
              "Speedup = teacher p50 / model p50 in the same runtime; FLOP ratio = teacher FLOPs / model FLOPs at that "
              "length (`kdistill.speed.flops_per_example`: matmuls and attention, no embeddings / softmax / "
              "LayerNorm). The 2L-192 model is timed untrained (speed does not depend on the weights)."]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _fmt_e(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f} pt"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f}"


if __name__ == "__main__":
    sys.exit(main())
