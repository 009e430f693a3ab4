"""Teacher-output cache (issue 6): what a distillation epoch costs with and without the cache, next to a plain
fine-tuning epoch of the same student.

SST-2 (6,228 training sentences after the validation carve), core.py's fine-tuned MiniLM-L6 teacher, a 3-layer
student from teacher layers 2, 4, 6, max length 64, batch 32, lr 5e-5, seed 42, 3 epochs.
Three cells, one JSONL row each:

- distill, teacher every step: kl(T=2) x 0.5 + ce x 0.5, the teacher runs on every batch;
- distill, teacher cache: the same loss, the teacher's logits read from a cache built at the start of the cell
  (its build time is recorded apart from the epochs);
- fine-tune, no teacher: ce only, the same student: what a cached epoch is compared with (goal <= 1.15x).

Each epoch is timed from its first batch to its last optimizer step, validation and checkpoints excluded, by
wrapping the Distiller's per-epoch hooks. A cell cut short starts over, since a resumed run has no epoch times.

    python benchmarks/teacher_cache.py                    # about 25 min on 2 quiet CPU cores
    python benchmarks/teacher_cache.py --device cuda      # the same on a GPU
    python benchmarks/teacher_cache.py --max-train 64 --results /tmp/tc.jsonl --runs /tmp/tc   # smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.cache import human_bytes  # noqa: E402
from kdistill.config import DistillConfig, build  # noqa: E402
from kdistill.distill.distiller import Distiller  # noqa: E402

HERE = Path(__file__).resolve().parent
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
CELLS: dict[str, dict[str, Any]] = {
    "distill, teacher every step": {"losses": KD, "teacher_cache": False},
    "distill, teacher cache": {"losses": KD, "teacher_cache": True},
    "fine-tune, no teacher": {"losses": [{"name": "ce"}], "teacher_cache": False},
}


@contextmanager
def epoch_timer() -> Iterator[list[float]]:
    """Seconds of each training epoch: first batch fetched -> `_end_epoch` (validation, checkpoint) called."""
    seconds: list[float] = []
    started: list[float] = []
    batches, end = Distiller._epoch_batches, Distiller._end_epoch

    def timed_batches(self: Distiller, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        started.append(time.perf_counter())
        yield from batches(self, epoch, skip)

    def timed_end(self: Distiller, epoch: int) -> None:
        seconds.append(time.perf_counter() - started[-1])
        end(self, epoch)

    Distiller._epoch_batches, Distiller._end_epoch = timed_batches, timed_end  # type: ignore[method-assign]
    try:
        yield seconds
    finally:
        Distiller._epoch_batches, Distiller._end_epoch = batches, end  # type: ignore[method-assign]


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--teacher", default=str(HERE / "runs" / "core" / "teacher"), help="fine-tuned teacher folder")
    ap.add_argument("--runs", default=str(HERE / "runs" / "teacher_cache"), help="run folders (rebuilt per cell)")
    ap.add_argument("--results", default=str(HERE / "results" / "teacher_cache.jsonl"))
    args = ap.parse_args()
    runs, results = Path(args.runs), Path(args.results)
    if not (Path(args.teacher) / "model.safetensors").is_file():
        sys.exit(f"no teacher in {args.teacher}: run benchmarks/core.py first (it fine-tunes it), or pass --teacher")
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    data = {"task": "sst2", "max_length": 64, "max_train_examples": args.max_train}
    train = {"epochs": args.epochs, "batch_size": 32, "lr": 5e-5, "device": args.device, "seed": 42,
             "save_steps": 100_000}
    done = done_cells(results)
    for cell, spec in CELLS.items():
        if cell in done:
            continue
        out = runs / slug(cell)
        shutil.rmtree(out, ignore_errors=True)  # a fresh run: a resumed one has no epoch times (and no cache build)
        cfg = build(DistillConfig, {"teacher": args.teacher, "student": {"init": "teacher_layers", "num_layers": 3},
                                    "data": data, "losses": spec["losses"], "train": train, "out": str(out),
                                    "teacher_cache": spec["teacher_cache"]})
        t0 = time.perf_counter()
        with epoch_timer() as epochs:
            s = api.distill(cfg)
        cache = s.get("teacher_cache") or {}
        record(results, {"cell": cell, "losses": spec["losses"], "teacher_cache": spec["teacher_cache"],
                         "epoch_seconds": epochs, "mean_epoch_seconds": sum(epochs) / len(epochs),
                         "cache_build_seconds": cache.get("build_seconds"), "cache_bytes": cache.get("bytes"),
                         "train_seconds": s["wall_seconds"], "wall_seconds": time.perf_counter() - t0,
                         "steps": s["steps"], "validation": s["validation"], "test_accuracy": s["test"]["accuracy"],
                         "max_train": args.max_train, "epochs": args.epochs, "device": args.device, "env": env})
        done = done_cells(results)
    write_table(done, results.with_suffix(".md"))


def write_table(done: dict[str, dict[str, Any]], path: Path) -> None:
    rows = [done[c] for c in CELLS if c in done]
    lines = ["| run | s / epoch (mean) | each epoch (s) | cache build (s) | cache size | SST-2 test acc |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        build_s = f"{r['cache_build_seconds']:.1f}" if r.get("cache_build_seconds") is not None else "-"
        size = human_bytes(r["cache_bytes"]) if r.get("cache_bytes") else "-"
        lines.append(f"| {r['cell']} | {r['mean_epoch_seconds']:.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in r['epoch_seconds'])} | {build_s} | {size} | "
                     f"{100 * r['test_accuracy']:.2f}% |")
    live, cached, ft = (done.get(c) for c in CELLS)
    lines.append("")
    if live and cached:
        n, a, b = len(cached["epoch_seconds"]), live["mean_epoch_seconds"], cached["mean_epoch_seconds"]
        with_build = n * a / (cached["cache_build_seconds"] + n * b)
        lines.append(f"- Speedup per epoch from the cache: **{a / b:.2f}x** ({a:.1f} -> {b:.1f} s); over the {n} "
                     f"epochs with the cache build counted: {with_build:.2f}x. A later run that reuses the cache "
                     "skips the build.")
    if cached and ft:
        ratio = cached["mean_epoch_seconds"] / ft["mean_epoch_seconds"]
        verdict = "meets" if ratio <= 1.15 else "misses"
        lines.append(f"- Cached distillation epoch / fine-tuning epoch of the same student: **{ratio:.2f}x** "
                     f"({verdict} the goal of at most 1.15x).")
    if rows:
        r = rows[0]
        env = r["env"]
        gpu = f", {env['cuda']}" if env.get("cuda") else ""
        scope = (f"the first {r['max_train']} training examples" if r.get("max_train")
                 else "the 6,228 training examples left after the seeded 10% validation carve")
        lines += ["", f"Measured by `python benchmarks/teacher_cache.py` on {env.get('cpu_count')} CPU cores "
                  f"(torch {env.get('torch')}, {env.get('threads')} threads{gpu}, device {r['device']}), one run after "
                  f"the other in one process: SST-2, {scope}, max length 64, batch 32, {r['epochs']:g} epochs, "
                  "lr 5e-5, seed 42; teacher: core.py's fine-tuned MiniLM-L6 (6 layers x 384); student: 3 layers "
                  "copied from teacher layers 2, 4, 6. An epoch's time runs from its first batch to its last "
                  "optimizer step (validation and checkpoints excluded). The cache is built once per cell, in eval "
                  "mode, batches of 64 sorted by length, and holds the teacher's float32 logits."]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
