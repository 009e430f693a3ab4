"""Internal-representation KD benchmark: Aguilar et al., "Knowledge Distillation from Internal Representations"
(AAAI 2020), at kdistill's scale (issue 4). Does matching the teacher's [CLS] states and attention (all layers at
once, or layer by layer: PID / SID) beat soft-target KD, per task, student width and training-set size?

Teacher: all-MiniLM-L6-v2 fine-tuned per task (SST-2's is reused from benchmarks/core.py when it is there).
Students: 3L-384 (teacher layers 2,4,6) and 3L-192 (the same layers narrowed by weight selection: the leading 192
residual units, 6 of 12 heads, 768 FFN units; attention losses compare head-averaged maps, hidden/[CLS] go through a
projection).
Internal losses map student layer k to teacher layer 2k (many_to_one, group "last"; ikd-all-group matches the whole
group 2k-1, 2k). Every finished
cell (task, student, method, seed[, fraction]) is appended to the JSONL at once and skipped on the next run; a cell
cut short resumes from its own checkpoint. internal_kd.md / .png are rebuilt from the JSONL after every run.

    python benchmarks/internal_kd.py --dry-run                        # cells left + time estimate (~12.7 h, 2 CPUs)
    python benchmarks/internal_kd.py                                  # the whole grid (prints the same estimate)
    python benchmarks/internal_kd.py --device cuda                    # the same on a GPU
    python benchmarks/internal_kd.py --tasks rte,mrpc --methods kd,pid,sid --seeds 5   # a part of it
    python benchmarks/internal_kd.py --report-only                    # only rebuild the md / png
    nice -n 19 python benchmarks/internal_kd.py --tasks rte --max-train 32 --max-eval 32 --epochs 1 --seeds 1 \\
        --runs /tmp/ikd_smoke/runs --results /tmp/ikd_smoke/r.jsonl   # smoke run: 14 cells, ~6 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import (  # noqa: E402
    DataConfig,
    DistillConfig,
    FinetuneConfig,
    MappingConfig,
    build,
    load_config,
)
from kdistill.data import load_task_data  # noqa: E402
from kdistill.distill.mapping import build_map  # noqa: E402
from kdistill.evaluate import attention_divergence  # noqa: E402
from kdistill.metrics import compute_metrics, primary  # noqa: E402
from kdistill.models import load_classifier, load_tokenizer, pick_device  # noqa: E402
from kdistill.tokenized import make_loader, tokenize_splits

HERE = Path(__file__).resolve().parent
CORE_TEACHER = HERE / "runs" / "core" / "teacher"
TASKS = ["mrpc", "rte", "cola", "sst2"]
LARGE = {"cola", "sst2"}  # --seeds-large seeds; the others get --seeds
SST2_TRAIN = 6228  # SST-2 train examples left after kdistill carves 10% for validation
BATCH, MAX_LENGTH, EPOCHS_PER_LAYER, FIRST_SEED = 32, 128, 1, 42
# s/step at batch 32 on 2 CPU cores: 3L-384 measured (core.py), 3L-192 guessed, teacher fine-tune from core.py
STUDENTS: dict[str, dict[str, Any]] = {
    "3L-384": {"spec": {"init": "teacher_layers", "num_layers": 3}, "lr": 5e-5, "step_s": 0.6},
    # from random init (results/internal_kd-3l192-random-init.jsonl) or a 2-epoch `kdistill general` start
    # (results/internal_kd-3l192-general-init.jsonl) every method gave the majority class on MRPC: start from the
    # teacher's own weights instead, narrowed by weight selection
    "3L-192": {"spec": {"init": "teacher_layers", "num_layers": 3, "hidden_size": 192}, "lr": 1e-4, "step_s": 0.35},
}
TEACHER_FORWARD_S, TEACHER_TRAIN_S = 0.3, 1.2
# Per-task teacher recipe (folder name, epochs, lr). RTE at 3 epochs @5e-5 reached only 56% (majority class ~53%),
# too weak a teacher to test distillation; 6 epochs @1e-4 is shared with benchmarks/tinybert.py.
TEACHER_RECIPES: dict[str, tuple[str, float, float]] = {"rte": ("teacher-rte-6ep", 6, 1e-4)}
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
IKD = KD + [{"name": "attn_kl", "weight": 1.0}, {"name": "cls_cosine", "weight": 1.0}]
M2O = {"strategy": "many_to_one", "group": "last"}


def _schedule(name: str, prediction: str = "top") -> dict[str, Any]:
    return {"name": name, "epochs_per_layer": EPOCHS_PER_LAYER, "threshold": 0.05, "watch": "cls_cosine",
            "prediction": prediction}


METHODS: dict[str, dict[str, Any]] = {
    "none": {"losses": [{"name": "ce"}]},
    "kd": {"losses": KD},
    "ikd-all": {"losses": IKD},
    "ikd-all-group": {"losses": IKD, "mapping": {**M2O, "group": "all"}},
    "pid": {"losses": IKD, "schedule": _schedule("pid")},
    "sid": {"losses": IKD, "schedule": _schedule("sid")},
    "sid-always": {"losses": IKD, "schedule": _schedule("sid", "always")},
    # control: soft-target KD for as many epochs as PID/SID, so their extra layer stages are not the difference
    "kd-long": {"losses": KD, "long": True},
}
SWEEP_INTERNAL = ["ikd-all", "pid", "sid"]
SWEEP_METHODS = ["kd", "kd-long", *SWEEP_INTERNAL]  # kd (and its 6-epoch control) vs the best internal


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def is_long(method: str) -> bool:
    return "schedule" in METHODS[method] or bool(METHODS[method].get("long"))


def epochs_for(method: str, epochs: float, n_layers: int = 3) -> float:
    """PID/SID spend one stage per layer first, so their final stage gets as many epochs as the others."""
    return epochs + n_layers * EPOCHS_PER_LAYER if is_long(method) else epochs


def data_cfg(task: str, max_train: int | None, max_eval: int | None) -> dict[str, Any]:
    return {"task": task, "max_length": MAX_LENGTH, "max_train_examples": max_train, "max_eval_examples": max_eval}


def train_cfg(args: argparse.Namespace, epochs: float, lr: float, seed: int, grouped: bool = False) -> dict[str, Any]:
    """Students train on length-grouped batches (less padding: RTE/MRPC pairs range from ~20 to 128 tokens)."""
    return {"epochs": epochs, "batch_size": BATCH, "lr": lr, "device": args.device, "seed": seed, "save_steps": 100,
            "group_by_length": grouped}


@cache
def train_size(task: str) -> int:
    return len(load_task_data(build(DataConfig, {"task": task})).splits["train"])


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """All cells of the grid and the SST-2 sweep; fraction 1.0 of the sweep is the main grid's seed-42 cell."""
    specs = [(t, s, m, FIRST_SEED + i, 1.0) for t in args.tasks for s in args.students for m in args.methods
             for i in range(args.seeds_large if t in LARGE else args.seeds)]
    if "sst2" in args.tasks:
        specs += [("sst2", "3L-384", m, FIRST_SEED, f) for f in args.sweep for m in SWEEP_METHODS if m in args.methods]
    cells = {}
    for task, student, method, seed, frac in specs:
        key = f"{task} | {student} | {method} | seed {seed}" + (f" | frac {frac:g}" if frac < 1 else "")
        n = round(frac * SST2_TRAIN) if frac < 1 else None
        n = min(x for x in (n, args.max_train) if x) if n or args.max_train else None
        cells[key] = {"cell": key, "task": task, "student": student, "method": method, "seed": seed,
                      "fraction": frac, "max_train": n}
    return list(cells.values())


def teacher_dir(task: str, runs: Path) -> Path:
    if task == "sst2" and (CORE_TEACHER / "metrics.json").is_file():
        return CORE_TEACHER
    return runs / (TEACHER_RECIPES[task][0] if task in TEACHER_RECIPES else f"teacher-{task}")


def ensure_teacher(task: str, args: argparse.Namespace, runs: Path, results: Path, env: dict[str, Any]) -> str:
    path, key = teacher_dir(task, runs), f"teacher | {task}"
    if key in done_cells(results):
        return str(path)
    t0 = time.perf_counter()
    if (path / "metrics.json").is_file():
        s = json.loads((path / "metrics.json").read_text())
    else:
        data = data_cfg(task, args.max_train, args.max_eval)
        _, epochs, lr = TEACHER_RECIPES.get(task, ("", args.teacher_epochs, 5e-5))
        train = train_cfg(args, epochs, lr, FIRST_SEED)
        s = api.finetune(build(FinetuneConfig, {"model": "minilm", "data": data, "out": str(path), "train": train}))
    record(results, {"cell": key, "task": task, "student": "teacher", "method": "fine-tuned", "metric": s["metric"],
                     "value": s["test"][primary(s["metric"])], "test": s["test"], "validation": s["validation"],
                     "params": s["params"], "train_seconds": s["wall_seconds"], "model_dir": str(path),
                     "wall_seconds": time.perf_counter() - t0, "reused": path == CORE_TEACHER,
                     "max_length": (t_cfg := load_config(FinetuneConfig, path / "kdistill.yaml")).data.max_length,
                     "epochs": t_cfg.train.epochs, "lr": t_cfg.train.lr, "env": env})
    return str(path)


def attention_kl(teacher: str, student: str, task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Mean teacher->student attention KL on the validation split, student layer k vs teacher layer 2k."""
    tok, device = load_tokenizer(teacher), pick_device(args.device)
    val = tokenize_splits(load_task_data(build(DataConfig, data_cfg(task, None, args.max_eval))), tok,
                          MAX_LENGTH)["validation"]
    batches = [{k: v.to(device) for k, v in b.items()} for b in make_loader(val, tok, 64)]
    t_model, s_model = load_classifier(teacher).to(device), load_classifier(student).to(device)
    pairs = [(p.student, p.teacher[-1]) for p in build_map(MappingConfig(**M2O), t_model.config.num_hidden_layers,
                                                           s_model.config.num_hidden_layers)]
    kl = attention_divergence(t_model, s_model, batches, pairs)
    return {"pairs": pairs, "per_layer": {str(s): kl[s] for s, _ in pairs}}


def run_cell(c: dict[str, Any], teacher: str, args: argparse.Namespace, runs: Path,
             env: dict[str, Any]) -> dict[str, Any]:
    method, student = METHODS[c["method"]], STUDENTS[c["student"]]
    out, epochs = runs / slug(c["cell"]), epochs_for(c["method"], args.epochs)
    cfg = build(DistillConfig, {
        "teacher": teacher, "student": student["spec"], "data": data_cfg(c["task"], c["max_train"], args.max_eval),
        "losses": method["losses"], "mapping": method.get("mapping", M2O),
        "schedule": method.get("schedule", {"name": "all"}), "out": str(out),
        "teacher_cache": args.teacher_cache or False, "teacher_cache_dtype": "float32",
        "train": train_cfg(args, epochs, student["lr"], c["seed"], grouped=True)})
    t0 = time.perf_counter()
    s = api.distill(cfg)
    attn = attention_kl(teacher, str(out), c["task"], args)
    return {**c, "metric": s["metric"], "value": s["test"][primary(s["metric"])], "test": s["test"],
            "validation": s["validation"], "best_epoch": s["best_epoch"], "attn_kl": attn, "params": s["params"],
            "train_seconds": s["wall_seconds"], "wall_seconds": time.perf_counter() - t0, "epochs": epochs,
            "train_examples": min(c["max_train"] or 10**9, train_size(c["task"])), "model_dir": str(out),
            "history": s["history"], "teacher_cache": s.get("teacher_cache"), "config": cfg.model_dump(mode="json"),
            "env": env}


def estimate(todo: list[dict[str, Any]], teachers: list[str], args: argparse.Namespace) -> float:
    """Seconds of training (evaluation not counted) at the measured CPU step times; with the teacher-output cache the
    teacher runs once per cell at most (a cache another cell built is reused)."""
    def teacher_passes(c: dict[str, Any]) -> float:
        return 0 if c["method"] == "none" else 1 if args.teacher_cache else epochs_for(c["method"], args.epochs)

    total = sum(math.ceil(min(c["max_train"] or 10**9, train_size(c["task"])) / BATCH)
                * (epochs_for(c["method"], args.epochs) * STUDENTS[c["student"]]["step_s"]
                   + teacher_passes(c) * TEACHER_FORWARD_S) for c in todo)
    return total + sum(math.ceil(min(args.max_train or 10**9, train_size(t)) / BATCH) * args.teacher_epochs
                       * TEACHER_TRAIN_S for t in teachers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--runs", default=str(HERE / "runs" / "internal_kd"), help="model folders (reused)")
    ap.add_argument("--results", default=str(HERE / "results" / "internal_kd.jsonl"))
    ap.add_argument("--tasks", type=csv, default=TASKS)
    ap.add_argument("--students", type=csv, default=list(STUDENTS))
    ap.add_argument("--methods", type=csv, default=list(METHODS))
    ap.add_argument("--epochs", type=float, default=3, help="none/kd/ikd-all; PID/SID get + 3 layer stages")
    ap.add_argument("--teacher-epochs", type=float, default=3)
    ap.add_argument("--seeds", type=int, default=3, help="seeds for mrpc and rte")
    ap.add_argument("--seeds-large", type=int, default=1, help="seeds for cola and sst2")
    ap.add_argument("--sweep", type=lambda s: [float(x) for x in csv(s)], default=[0.1, 0.3, 1.0],
                    help="SST-2 train fractions for kd vs ikd-all/pid/sid with 3L-384 ('' = none)")
    ap.add_argument("--teacher-cache", default=str(HERE / "runs" / "internal_kd" / "teacher-cache"),
                    help="teacher-output cache root shared by all cells (float32, so equal to the live teacher); "
                         "'' = run the teacher every step")
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--max-eval", type=int, default=None, help="use only N validation/test examples (smoke runs)")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the md / png from the JSONL")
    ap.add_argument("--dry-run", action="store_true", help="print the cells left and the time estimate, then stop")
    args = ap.parse_args()
    for name, valid in (("tasks", TASKS), ("students", STUDENTS), ("methods", METHODS)):
        if bad := [x for x in getattr(args, name) if x not in valid]:
            ap.error(f"unknown {name} {bad}; valid: {', '.join(valid)}")
    runs, results = Path(args.runs), Path(args.results)
    if not args.report_only:
        env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
               "cpu_count": os.cpu_count(),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        done = done_cells(results)
        cells = plan(args)
        todo = [c for c in cells if c["cell"] not in done]
        teachers = sorted({c["task"] for c in todo if not (teacher_dir(c["task"], runs) / "metrics.json").is_file()})
        secs = estimate(todo, teachers, args)
        print(f"[bench] {len(todo)} of {len(cells)} cells left (+{len(teachers)} teacher fine-tunes): about "
              f"{secs / 3600:.1f} h of training on 2 CPU cores ({STUDENTS['3L-384']['step_s']} s/step 3L-384, "
              f"{STUDENTS['3L-192']['step_s']} s/step 3L-192, +{TEACHER_FORWARD_S} s teacher forward, batch "
              f"{BATCH}; evaluation not counted)", flush=True)
        for t in args.tasks:
            part = [c for c in todo if c["task"] == t]
            hours = estimate(part, [x for x in teachers if x == t], args) / 3600
            print(f"[bench]   {t}: {len(part)} cells, ~{hours:.1f} h", flush=True)
        for c in [] if args.dry_run else todo:
            teacher = ensure_teacher(c["task"], args, runs, results, env)
            print(f"[bench] cell {c['cell']}", flush=True)
            record(results, run_cell(c, teacher, args, runs, env))
    if not args.dry_run:
        write_report(done_cells(results), results)


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    m, s = _mean_std([100 * x for x in xs])
    return f"{m:.1f} (1 seed)" if len(xs) == 1 else f"{m:.1f} ± {s:.1f} (n={len(xs)})"


@cache
def majority_score(task: str, metric: str | None = None) -> float:
    """Test metric of always answering the training split's most frequent label: the floor a student must beat
    (on MRPC that all-"paraphrase" answer already scores F1 81.2)."""
    data = load_task_data(build(DataConfig, data_cfg(task, None, None)))
    train, test = list(data.splits["train"]["label"]), list(data.splits["test"]["label"])
    top = max(set(train), key=train.count)
    return compute_metrics(data.metric, [top] * len(test), test)[metric or primary(data.metric)]


def write_report(done: dict[str, dict[str, Any]], results: Path) -> None:
    rows = [r for r in done.values() if r["student"] in STUDENTS]
    main_rows = [r for r in rows if r["fraction"] == 1.0]
    teachers = {r["task"]: r for r in done.values() if r["student"] == "teacher"}
    tasks = [t for t in TASKS if any(r["task"] == t for r in main_rows)]
    students = [s for s in STUDENTS if any(r["student"] == s for r in main_rows)]
    methods = [m for m in METHODS if any(r["method"] == m for r in main_rows)]
    group: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in main_rows:
        group.setdefault((r["task"], r["student"], r["method"]), []).append(r)
    lines = ["## Test metric x 100, mean ± std over seeds", "",
             "| task (metric) | teacher | majority class (train) | student (params) | " + " | ".join(methods) + " |",
             "|---|---|---|---|" + "---|" * len(methods)]
    for t in tasks:
        tr = teachers.get(t)
        for s in students:
            cells = [group.get((t, s, m), []) for m in methods]
            if not any(cells):
                continue
            first = next(g[0] for g in cells if g)
            t_val = f"{100 * tr['value']:.1f}" if tr else "-"
            lines.append(f"| {t} ({first['metric']}) | {t_val} | {100 * majority_score(t):.1f} | {s} "
                         f"({first['params'] / 1e6:.1f}M) | "
                         + " | ".join(_fmt([r["value"] for r in g]) for g in cells) + " |")
    pairs = next((r["attn_kl"]["pairs"] for r in main_rows), [])
    lines += ["", "## Attention KL teacher -> student on the validation split (lower = closer), mean over seeds",
              "", "| task | student | method | " + " | ".join(f"S{s}<-T{t}" for s, t in pairs) + " | mean |",
              "|---|---|---|" + "---|" * (len(pairs) + 1)]
    for t, s, m in ((t, s, m) for t in tasks for s in students for m in methods if (t, s, m) in group):
        per = [statistics.mean(r["attn_kl"]["per_layer"][str(k)] for r in group[t, s, m]) for k, _ in pairs]
        lines.append(f"| {t} | {s} | {m} | " + " | ".join(f"{v:.3f}" for v in per) + f" | {statistics.mean(per):.3f} |")
    sweep = {(r["method"], r["fraction"], r["train_examples"]): r["value"] for r in rows
             if r["task"] == "sst2" and r["student"] == "3L-384" and r["seed"] == FIRST_SEED
             and r["method"] in SWEEP_METHODS}
    fracs = sorted({(f, n) for _, f, n in sweep})
    if len(fracs) > 1:
        lines += ["", f"## SST-2 data-size sweep, 3L-384, seed {FIRST_SEED} (test accuracy x 100)", "",
                  "| fraction | train examples | " + " | ".join(SWEEP_METHODS) + " | best internal - kd |",
                  "|---|---|" + "---|" * (len(SWEEP_METHODS) + 1)]
        for f, n in fracs:
            v = {m: sweep.get((m, f, n)) for m in SWEEP_METHODS}
            best = max((m for m in SWEEP_INTERNAL if v[m] is not None), key=lambda m: v[m], default=None)
            gap = f"{100 * (v[best] - v['kd']):+.1f} ({best})" if best and v["kd"] is not None else "-"
            lines.append(f"| {f:g} | {n} | " + " | ".join("-" if v[m] is None else f"{100 * v[m]:.1f}"
                                                         for m in SWEEP_METHODS) + f" | {gap} |")
    env = next((r["env"] for r in rows), {})
    base = min((r["epochs"] for r in rows if not is_long(r["method"])), default=3)
    t_recipes = sorted({f"{r.get('epochs', 3):g} epochs at lr {r.get('lr', 5e-5):g} ({t})"
                        for t, r in teachers.items()})
    reused = [t for t, r in teachers.items() if r.get("reused")]
    lines += ["", f"Measured by `python benchmarks/internal_kd.py` on {env.get('cpu_count')} CPU cores (torch "
              f"{env.get('torch')}{', ' + env['cuda'] if env.get('cuda') else ''}). Test split = GLUE dev (SST-2: its "
              "test file); metric: mrpc F1, cola Matthews, others accuracy. Teacher: all-MiniLM-L6-v2 fine-tuned "
              f"{', '.join(t_recipes)}. Students: batch 32 (grouped by length), max length 128, "
              "lr 5e-5 (3L-384) / "
              f"1e-4 (3L-192); none/kd/ikd-all(-group) train {base:g} epochs, PID/SID {base + 3:g} (one stage of "
              f"{EPOCHS_PER_LAYER} epoch per layer, or less once cls_cosine < 0.05, then the final stage) so their "
              "final stage gets at least as many epochs as the others; kd-long is soft-target KD for "
              f"{base + 3:g} epochs, a control for that difference. The best epoch on validation is kept. Internal "
              "KD: kl T=2 0.5 + ce 0.5 + attn_kl 1 + cls_cosine 1, student layer k <- teacher layer 2k "
              "(ikd-all-group: all of 2k-1, 2k). Seeds 42, 43, ...; cells marked (1 seed) have no spread."
              + (f" The {', '.join(reused)} teacher is reused from benchmarks/core.py (trained at max length "
                 f"{teachers[reused[0]]['max_length']})." if reused else "")]
    if any(r["student"] == "3L-192" for r in main_rows):
        lines.append("The 3L-192 student keeps teacher layers 2,4,6 narrowed by weight selection (leading 192 "
                     "residual units, first 6 of 12 heads, 768 of 1536 FFN units; `student.hidden_size: 192`); its "
                     "attention KL compares head-averaged maps. From random init, or from a 2-epoch `kdistill "
                     "general` start, every method gave the majority class on MRPC (results/internal_kd-3l192-"
                     "{random,general}-init.jsonl).")
    cached = [r for r in rows if r.get("teacher_cache")]
    if cached:
        built = {r["teacher_cache"]["folder"]: r["teacher_cache"] for r in cached if r["teacher_cache"]["built"]}
        lines.append(f"{len(cached)} of {len(rows)} cells read the teacher's outputs from kdistill's teacher-output "
                     "cache (float32; tests/test_cache.py checks a cached run trains the same weights as a live "
                     "one; the others ran the teacher every step): "
                     f"{len(built)} caches, built in {sum(c['build_seconds'] for c in built.values()) / 60:.1f} min "
                     "in all.")
    md = results.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(tasks, methods, group, teachers, results.with_suffix(".png"))
    print(f"[bench] wrote {md} and {results.with_suffix('.png')}")


def plot(tasks: list[str], methods: list[str], group: dict[tuple[str, str, str], list[dict[str, Any]]],
         teachers: dict[str, dict[str, Any]], path: Path) -> None:
    """Metric vs student parameters, one line per method, one subplot per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.2 * max(len(tasks), 1), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=False):
        for m in methods:
            pts = sorted((g[0]["params"] / 1e6, *_mean_std([100 * r["value"] for r in g]))
                         for (tt, _, mm), g in group.items() if tt == t and mm == m)
            if pts:
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m, color=f"C{list(METHODS).index(m)}")
        if t in teachers:
            ax.axhline(100 * teachers[t]["value"], color="black", linestyle="--", linewidth=1, label="teacher")
        ax.axhline(100 * majority_score(t), color="grey", linestyle=":", linewidth=1, label="majority class")
        metric = next(g[0]["metric"] for (tt, _, _), g in group.items() if tt == t)
        ax.set(title=f"{t} ({metric})", xlabel="student parameters (M)", ylabel="test metric x 100")
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
