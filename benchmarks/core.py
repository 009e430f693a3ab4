"""Core benchmark: does kdistill's best method keep >= 99% of the teacher on SST-2 with a 3-layer student?

Teacher: all-MiniLM-L6-v2 fine-tuned on SST-2 (reused when already there). Students: 3 layers taken from
the teacher (DistilBERT init) and 2 layers x 192 wide (random init). Methods: no teacher (hard labels
only), soft targets (KL, T=2, alpha 0.5), soft targets + hidden-state MSE + attention-score MSE.

Every finished cell is appended to a JSONL file at once and skipped on the next run; a cell cut short
resumes from its own training checkpoint. Speed is measured last, per architecture, on the saved models.

    python benchmarks/core.py                  # the whole grid (about 1-1.5 h on 2 CPU cores)
    python benchmarks/core.py --device cuda    # the same on a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import DistillConfig, FinetuneConfig, build  # noqa: E402
from kdistill.models import load_classifier  # noqa: E402
from kdistill.speed import count_parameters, measure_speed, size_on_disk  # noqa: E402

HERE = Path(__file__).resolve().parent
STUDENTS: dict[str, dict[str, Any]] = {
    "3L-384 (teacher layers 2,4,6)": {"student": {"init": "teacher_layers", "num_layers": 3}, "lr": 5e-5},
    "2L-192 (random init)": {"student": {"init": "config", "num_layers": 2, "hidden_size": 192, "num_heads": 12,
                                         "intermediate_size": 768}, "lr": 1e-4},
}
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
METHODS: dict[str, list[dict[str, Any]]] = {
    "no teacher": [{"name": "ce"}],
    "soft targets (KL)": KD,
    "soft targets + hidden + attention": KD + [{"name": "hidden_mse", "weight": 1.0},
                                               {"name": "attn_mse", "weight": 0.1}],
}


# Beyond the grid, run with --more: the same three methods for the 3-layer student at a higher
# learning rate (all runs above were still improving at their last epoch). Same data, epochs, seed.
MORE: dict[str, dict[str, Any]] = {
    f"{method}, lr 1e-4": {"student": "3L-384 (teacher layers 2,4,6)", "losses": losses, "lr": 1e-4}
    for method, losses in METHODS.items()
}


def slug(text: str) -> str:
    return re.sub(r"-+", "-", "".join(c if c.isalnum() else "-" for c in text.lower())).strip("-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--runs", default=str(HERE / "runs" / "core"), help="model folders (reused)")
    ap.add_argument("--results", default=str(HERE / "results" / "core.jsonl"))
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--teacher-epochs", type=float, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--repeats", type=int, default=30, help="timed passes per batch size")
    ap.add_argument("--more", action="store_true", help="also run the extra cells in MORE (lr 1e-4)")
    args = ap.parse_args()
    runs, results = Path(args.runs), Path(args.results)
    done = done_cells(results)
    data = {"task": "sst2", "max_length": 64, "max_train_examples": args.max_train}
    train = {"epochs": args.epochs, "batch_size": 32, "lr": 5e-5, "device": args.device, "seed": 42,
             "save_steps": 100}
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

    teacher_dir = runs / "teacher"
    if "teacher" not in done:
        cfg = build(FinetuneConfig, {"model": "minilm", "data": data, "out": str(teacher_dir),
                                     "train": {**train, "epochs": args.teacher_epochs}})
        t0 = time.perf_counter()
        s = api.finetune(cfg)
        record(results, {"cell": "teacher", "student": "teacher (MiniLM-L6-H384)", "method": "fine-tuned",
                         "test_accuracy": s["test"]["accuracy"], "validation": s["validation"],
                         "params": s["params"], "wall_seconds": time.perf_counter() - t0, "env": env})
        done = done_cells(results)
    teacher_acc = done["teacher"]["test_accuracy"]

    grid = [(student, method, losses, spec["lr"]) for student, spec in STUDENTS.items()
            for method, losses in METHODS.items()]
    if args.more:
        grid += [(m["student"], method, m["losses"], m["lr"]) for method, m in MORE.items()]
    for student, method, losses, lr in grid:
        cell = f"{student} | {method}"
        if cell in done:
            continue
        out = runs / f"{slug(student)}__{slug(method)}"
        cfg = build(DistillConfig, {"teacher": str(teacher_dir), "student": STUDENTS[student]["student"],
                                    "data": data, "losses": losses, "out": str(out), "train": {**train, "lr": lr}})
        t0 = time.perf_counter()
        s = api.distill(cfg)
        record(results, {"cell": cell, "student": student, "method": method, "model_dir": str(out),
                         "test_accuracy": s["test"]["accuracy"], "retention": s["test"]["accuracy"] / teacher_acc,
                         "validation": s["validation"], "best_epoch": s["best_epoch"], "params": s["params"],
                         "train_seconds": s["wall_seconds"], "wall_seconds": time.perf_counter() - t0,
                         "lr": lr, "losses": losses, "env": env})
        done = done_cells(results)

    # speed per architecture, on the saved models, after all training (so nothing else competes for the CPU)
    archs = {"teacher": str(teacher_dir)}
    for student in STUDENTS:
        archs[student] = done[f"{student} | soft targets (KL)"]["model_dir"]
    for name, path in archs.items():
        cell = f"speed | {name}"
        if cell in done:
            continue
        model = load_classifier(path)
        speed = measure_speed(model, batch_sizes=(1, 32), seq_length=64, warmup=5, repeats=args.repeats,
                              device="cuda" if args.device == "cuda" else "cpu", vocab_size=model.config.vocab_size)
        record(results, {"cell": cell, "model": name, "path": path, "params": count_parameters(model),
                         "size_bytes": size_on_disk(path), "speed": [s.__dict__ for s in speed], "env": env})
        done = done_cells(results)
    write_table(done, results.with_suffix(".md"))


def write_table(done: dict[str, dict[str, Any]], path: Path) -> None:
    t = done["teacher"]
    speed = {r["model"]: {s["batch_size"]: s for s in r["speed"]} for k, r in done.items() if k.startswith("speed |")}
    t_speed = speed.get("teacher", {})
    lines = ["| student | method | SST-2 test acc | retention | params (M) | latency bs=1 (ms) | "
             "latency bs=32 (ms) | speedup bs=1 / bs=32 | train wall (min) |", "|---|---|---|---|---|---|---|---|---|"]

    def speed_cols(name: str) -> list[str]:
        sp = speed.get(name, {})
        if not sp or not t_speed:
            return ["-", "-", "-"]
        return [f"{sp[1]['p50_ms']:.1f}", f"{sp[32]['p50_ms']:.1f}",
                f"{t_speed[1]['p50_ms'] / sp[1]['p50_ms']:.1f}x / {t_speed[32]['p50_ms'] / sp[32]['p50_ms']:.1f}x"]

    lines.append(f"| teacher (MiniLM-L6-H384) | fine-tuned | {100 * t['test_accuracy']:.1f}% | 100% | "
                 f"{t['params'] / 1e6:.1f} | " + " | ".join(speed_cols("teacher"))
                 + f" | {t['wall_seconds'] / 60:.1f} |")
    for k, r in done.items():
        if k in ("teacher",) or k.startswith("speed |"):
            continue
        lines.append(f"| {r['student']} | {r['method']} | {100 * r['test_accuracy']:.1f}% | "
                     f"{100 * r['retention']:.1f}% | {r['params'] / 1e6:.1f} | " + " | ".join(speed_cols(r["student"]))
                     + f" | {r['train_seconds'] / 60:.1f} |")
    env = t.get("env", {})
    lines.append("")
    gpu = f", {env['cuda']}" if env.get("cuda") else ""
    lines.append(f"Measured by `python benchmarks/core.py` on {env.get('cpu_count')} CPU cores "
                 f"(torch {env.get('torch')}, {env.get('threads')} threads{gpu}); "
                 "SST-2 test split (1,821 sentences); 3 epochs, batch 32, max length 64, seed 42; lr 5e-5 for the "
                 "teacher and the 3-layer student, 1e-4 for the random-init 2-layer student (and where the method says "
                 "so); KL at T=2 with alpha 0.5; attention MSE weighted 0.1. Latency is the median of timed forward "
                 "passes at sequence length 64 after warm-up; speed is per architecture, so it is the same for every "
                 "method of one student.")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
