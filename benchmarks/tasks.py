"""Every task type (issue 19): a 3-layer student of all-MiniLM-L6-v2 on STS-B, GoEmotions, CoNLL-2003 and SQuAD.

Per task the teacher (all-MiniLM-L6-v2 + the task's head) is fine-tuned once; then the 3-layer student built from
the teacher's layers 2, 4, 6 is trained three ways with the same data, epochs, learning rate and seed:
no teacher (the gold-label loss only), soft targets (the task's response loss + the gold-label loss: logit MSE for
STS-B, per-label BCE at T=2 for GoEmotions, per-token KL at T=2 for CoNLL-2003, KL at T=2 on the start and end
distributions for SQuAD) and soft targets + hidden + attention (hidden_mse x1 + attn_kl x1, uniform layer map).
Students distil from the teacher-output cache. Metrics: Pearson (STS-B), macro F1 (GoEmotions), entity F1
(CoNLL-2003), F1 (SQuAD, with exact match beside it), on each task's test split (SQuAD: the first 2,000 questions
of the official dev set).

Training subsets for CPU time (say so in the table): GoEmotions 10,000 of 43,410 comments, CoNLL-2003 all 14,041
sentences, SQuAD's shipped train split is itself a 4,371-question subset of the official 87,599, and SQuAD is scored
on the first 2,000 of the dev set's 10,570 questions (file order; each model's test pass over all of them costs 3-6
minutes here).

Each finished cell is one line of results/tasks.jsonl (task, student, method, seed, metric, score, retention,
params, train_s, latency), appended at once and skipped on the next run; a cell cut short resumes from its own
checkpoint under benchmarks/runs/tasks.

    python benchmarks/tasks.py --dry-run        # the cells left, in the order they run
    python benchmarks/tasks.py                  # all (CPU hours: SQuAD's 384-token windows dominate)
    python benchmarks/tasks.py --tasks stsb goemotions
    python benchmarks/tasks.py --report-only    # results/tasks.md and tasks.png from the JSONL
    python benchmarks/tasks.py --report-only --retime   # time every model again, nothing else running
    python benchmarks/tasks.py --report-only --calibrate --tasks goemotions   # fit thresholds of older cells
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record, supersede  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import BenchConfig, DistillConfig, FinetuneConfig, build  # noqa: E402

HERE = Path(__file__).resolve().parent
TEACHER_LR = 5e-5  # each task's teacher fine-tuning rate unless its spec names `teacher_lr`
FEATURES = [{"name": "hidden_mse", "weight": 1.0}, {"name": "attn_kl", "weight": 1.0}]
TASKS: dict[str, dict[str, Any]] = {
    # soft: the response loss that fits the task type; `ce` is each task type's gold-label loss
    "stsb": {"max_length": 128, "metric": "pearson", "epochs": 3, "max_train": None, "max_eval": None,
             "soft": [{"name": "logit_mse", "weight": 0.5}, {"name": "ce", "weight": 0.5}]},
    # GoEmotions' teacher at lr 5e-5 ended below its own no-teacher student (27.9 vs 36.0 macro F1): it is trained
    # like the students (lr 1e-4); the cells of the first teacher are kept as superseded rows
    "goemotions": {"max_length": 64, "metric": "macro_f1", "epochs": 3, "max_train": 10_000, "max_eval": None,
                   "teacher_lr": 1e-4,
                   "soft": [{"name": "bce_soft", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]},
    "conll2003": {"max_length": 128, "metric": "entity_f1", "epochs": 3, "max_train": None, "max_eval": None,
                  "soft": [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]},
    "squad": {"max_length": 384, "metric": "f1", "epochs": 2, "max_train": None, "max_eval": 2_000,
              "soft": [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]},
}
METHODS = ("no teacher", "soft targets", "soft targets + hidden + attention")
STUDENT = {"init": "teacher_layers", "num_layers": 3}
PUBLISHED = {  # published points, other teacher and hardware: shown beside, never compared as ours
    "squad": "DistilBERT 77.7 EM / 85.8 F1 vs BERT-base 81.2 / 88.5 (Sanh et al. 2019): 96.9% of F1",
    "stsb": "TinyBERT4 80.4 vs its BERT-base teacher 85.8 Spearman on GLUE's STS-B test (Jiao et al. 2020, Table 1): "
            "93.7%",
    "conll2003": "none quoted here",
    "goemotions": "none quoted here",
}


def losses(task: str, method: str) -> list[dict[str, Any]]:
    if method == "no teacher":
        return [{"name": "ce"}]
    soft = TASKS[task]["soft"]
    return soft if method == "soft targets" else [*soft, *FEATURES]


def env_info() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def data_cfg(task: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = TASKS[task]
    return {"task": task, "max_length": spec["max_length"], "max_train_examples": args.max_train or spec["max_train"],
            "max_eval_examples": spec["max_eval"]}


def teacher_lr(task: str) -> float:
    return TASKS[task].get("teacher_lr", TEACHER_LR)


def task_runs(task: str, runs: Path) -> Path:
    """A task's run folder; a teacher recipe other than the first gets its own, so no run resumes another's."""
    lr = teacher_lr(task)
    return runs / (task if lr == TEACHER_LR else f"{task}-teacher-lr{lr:g}")


def supersede_stale(task: str, results: Path, dry_run: bool = False) -> list[str]:
    """A teacher recorded with another learning rate than the spec's, and every student distilled from it, become
    superseded rows, so that this run trains them again (a student trained without a teacher is kept: only its
    retention changes, see `rebase_retention`). Returns those cells (only named when `dry_run`)."""
    done = done_cells(results)
    teacher = done.get(f"teacher | {task}")
    if teacher is None or teacher.get("teacher_lr", TEACHER_LR) == teacher_lr(task):
        return []
    reason = f"teacher lr {teacher.get('teacher_lr', TEACHER_LR):g}"
    stale = [c for c, r in done.items() if r.get("task") == task and r.get("kind") in ("teacher", "student")
             and r.get("method") != "no teacher"]
    for cell in stale:
        if dry_run:
            print(f"  {cell} (superseded: {reason})")
        else:
            supersede(results, cell, reason)
    return stale


def rebase_retention(task: str, results: Path) -> None:
    """Record a no-teacher student's retention again against the task's current teacher (its model is unchanged)."""
    done = done_cells(results)
    teacher = done.get(f"teacher | {task}")
    if teacher is None or teacher.get("teacher_lr", TEACHER_LR) != teacher_lr(task):
        return
    for row in list(done.values()):
        if (row.get("kind") == "student" and row["task"] == task and row["method"] == "no teacher"
                and row.get("teacher_lr", TEACHER_LR) != teacher_lr(task)):
            record(results, {**row, "teacher_lr": teacher_lr(task), "teacher_params": teacher["params"],
                             "retention": row["score"] / teacher["score"] if teacher["score"] > 0 else None})


def run_teacher(task: str, args: argparse.Namespace, runs: Path) -> dict[str, Any]:
    out = task_runs(task, runs) / "teacher"
    cfg = build(FinetuneConfig, {
        "model": "minilm", "out": str(out), "data": data_cfg(task, args),
        "train": {"epochs": args.epochs_scale * TASKS[task]["epochs"], "lr": teacher_lr(task), "batch_size": 32,
                  "seed": 42,
                  "device": args.device, "save_steps": args.save_steps, "group_by_length": True}})
    s = api.finetune(cfg)
    key = s["metric"]
    return {"kind": "teacher", "task": task, "metric": key, "score": s["test"][key], "test": s["test"],
            "params": s["params"], "train_s": s["wall_seconds"], "model_dir": str(out), "teacher_lr": teacher_lr(task),
            "decision": s.get("decision")}


def latency(model_dir: str, task: str, args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    cfg = build(BenchConfig, {"model": [model_dir], "batch_sizes": [1, 32], "seq_lengths": [TASKS[task]["max_length"]],
                              "backends": ["pytorch"], "warmup": 3, "repeats": args.repeats, "device": args.device,
                              "out_json": str(scratch / "bench.json")})
    return {f"bs{r['batch_size']}": r["p50_ms"] for r in api.bench(cfg)["rows"]}


def run_student(task: str, method: str, seed: int, teacher: dict[str, Any], args: argparse.Namespace,
                runs: Path) -> dict[str, Any]:
    out = task_runs(task, runs) / f"{method.replace(' ', '-').replace('+', 'and')}__{seed}"
    needs_teacher = method != "no teacher"
    cfg = build(DistillConfig, {
        "teacher": teacher["model_dir"], "student": STUDENT, "losses": losses(task, method), "out": str(out),
        "teacher_cache": str(task_runs(task, runs) / "teacher-cache") if needs_teacher else False,
        "data": data_cfg(task, args),
        "train": {"epochs": args.epochs_scale * TASKS[task]["epochs"], "lr": 1e-4, "batch_size": 32, "seed": seed,
                  "device": args.device, "save_steps": args.save_steps, "group_by_length": True}})
    s = api.distill(cfg)
    key = teacher["metric"]
    return {"kind": "student", "task": task, "student": "3L-384 (teacher layers 2,4,6)", "method": method,
            "seed": seed, "metric": key, "score": s["test"][key], "test": s["test"],
            "retention": s["test"][key] / teacher["score"] if teacher["score"] > 0 else None,
            "params": s["params"], "teacher_params": teacher["params"], "train_s": s["wall_seconds"],
            "model_dir": str(out), "warnings": s.get("warnings"), "teacher_lr": teacher_lr(task),
            "decision": s.get("decision")}


def write_report(rows: dict[str, dict[str, Any]], md: Path) -> None:
    lines = ["# Every task type: a 3-layer student of all-MiniLM-L6-v2", "",
             "Generated by `python benchmarks/tasks.py --report-only` from results/tasks.jsonl. Scores x100 on each "
             "task's test split (SQuAD: the first 2,000 official dev questions); retention = student / teacher. "
             "Latency: PyTorch fp32 p50, this machine's 2 CPU cores, at the task's sequence length.", "",
             "| task | metric | model | method | score | retention | params | latency bs1 / bs32 (ms) | train (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        teacher = rows.get(f"teacher | {task}")
        if teacher is None:
            continue
        lat = teacher.get("latency_ms", {})
        lines.append(f"| {task} | {teacher['metric']} | teacher 6L-384 | fine-tuned | {100 * teacher['score']:.1f} | "
                     f"| {teacher['params'] / 1e6:.1f}M | {lat.get('bs1', 0):.1f} / {lat.get('bs32', 0):.1f} | "
                     f"{teacher['train_s']:.0f} |")
        for method in METHODS:
            cells = [r for r in rows.values() if r.get("kind") == "student" and r["task"] == task
                     and r["method"] == method]
            for r in cells:
                lat = r.get("latency_ms", {})
                ret = f"{100 * r['retention']:.1f}%" if r.get("retention") is not None else "n/a"
                lines.append(f"| {task} | {r['metric']} | student 3L-384 | {method} | {100 * r['score']:.1f} | {ret} "
                             f"| {r['params'] / 1e6:.1f}M | {lat.get('bs1', 0):.1f} / {lat.get('bs32', 0):.1f} | "
                             f"{r['train_s']:.0f} |")
        lines.append(f"| {task} | | published | | {PUBLISHED[task]} | | | | |")
    old = [r for r in rows.values() if r.get("kind") == "superseded"]
    if old:
        lines += ["", "Superseded rows (kept for the record, not compared; the cell name says why):", "",
                  "| cell | score | retention |", "|---|---|---|"]
        for r in old:
            ret = f"{100 * r['retention']:.1f}%" if r.get("retention") is not None else ""
            name = r["cell"].removeprefix("superseded: ").replace(" | ", ", ")  # a bar would split the cell
            lines.append(f"| {name} | {100 * r['score']:.1f} | {ret} |")
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, md.with_suffix(".png"))
    print(f"[tasks] wrote {md} and {md.with_suffix('.png')}")


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Retention (student / teacher, %) per task, one bar per method, with the 97% target drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if f"teacher | {t}" in rows]
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * max(len(tasks), 1), 3.8))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        xs, ys = [], []
        for j, task in enumerate(tasks):
            cells = [r["retention"] for r in rows.values() if r.get("kind") == "student" and r["task"] == task
                     and r["method"] == method and r.get("retention") is not None]
            if cells:
                xs.append(j + (i - (len(METHODS) - 1) / 2) * width)
                ys.append(100 * sum(cells) / len(cells))
        bars = ax.bar(xs, ys, width, label=method, color=f"C{i}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(97, color="black", linestyle="--", linewidth=1, label="97% target")
    ax.set_xticks(range(len(tasks)),
                  [f"{t}\n({rows[f'teacher | {t}']['metric']})" for t in tasks])
    ax.set(ylabel="retention of the teacher's test metric (%)", ylim=(0, 110),
           title="3-layer student of all-MiniLM-L6-v2 per task type")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibrate_recorded(args: argparse.Namespace) -> None:
    """What `kdistill finetune`/`distill` now do at the end of a run, for cells recorded before: fit the task type's
    decision rule on validation into the saved model (`kdistill.calibration.calibrate_saved`), score the test split
    again and record the cell again (a later line wins; teachers first, so that retention uses the new score)."""
    from kdistill.calibration import calibrate_saved
    from kdistill.config import DataConfig
    from kdistill.data import load_task_data
    from kdistill.evaluate import score_split
    from kdistill.models import load_classifier, load_tokenizer
    from kdistill.tasks.shipped import TASKS as SHIPPED

    rows = sorted(done_cells(args.results).values(), key=lambda r: r["kind"] != "teacher")
    for row in rows:
        if row["task"] not in args.tasks or "decision" in row or SHIPPED.get(row["task"]).task_type != "multilabel":
            continue  # only multi-label models fit a decision rule
        data = load_task_data(DataConfig(**data_cfg(row["task"], args)))
        path = Path(row["model_dir"])
        model, tok = load_classifier(str(path)), load_tokenizer(str(path))
        if getattr(model.config, "kdistill_threshold", None) is not None:
            raise SystemExit(f"{path} already has a folded threshold; its cell would be scored twice")
        fitted = calibrate_saved(model, tok, path, data, TASKS[row["task"]]["max_length"], progress=True)
        if fitted is None:
            continue
        test = score_split(model, tok, data, "test", TASKS[row["task"]]["max_length"], desc="test")
        row = {**row, "decision": fitted, "test_at_0.5": row["test"], "test": test, "score": test[row["metric"]]}
        if row["kind"] == "student":
            teacher = done_cells(args.results)[f"teacher | {row['task']}"]
            row["retention"] = row["score"] / teacher["score"] if teacher["score"] > 0 else None
        print(f"[tasks] {row['cell']}: threshold {fitted['threshold']:g}, test {test}", flush=True)
        record(args.results, row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="scale every epoch count (smoke runs)")
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--save-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per shape")
    ap.add_argument("--runs", default=str(HERE / "runs" / "tasks"))
    ap.add_argument("--results", type=Path, default=HERE / "results" / "tasks.jsonl")
    ap.add_argument("--dry-run", action="store_true", help="list the cells left and stop")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit the decision rule of models recorded before kdistill did so at the end of a run "
                         "(multi-label threshold) into their folders and score their test split again")
    ap.add_argument("--retime", action="store_true",
                    help="time every recorded model again in one quiet window (a later line of a cell wins)")
    args = ap.parse_args()
    runs = Path(args.runs)
    if not (args.report_only or args.retime):
        stale = {c for task in args.tasks for c in supersede_stale(task, args.results, args.dry_run)}
        for task in args.tasks:
            if not args.dry_run:
                rebase_retention(task, args.results)  # a run cut short between a teacher and this
        done = {c: r for c, r in done_cells(args.results).items() if c not in stale}
        for task in args.tasks:
            cells = [(f"teacher | {task}", None, 0)] + [(f"student | {task} | {m} | seed {s}", m, s)
                                                       for s in range(42, 42 + args.seeds) for m in args.methods]
            for name, method, seed in cells:
                if name in done:
                    continue
                if args.dry_run:
                    print("  " + name)
                    continue
                print(f"[tasks] {name}", flush=True)
                if method is None:
                    row = run_teacher(task, args, runs)
                else:
                    row = run_student(task, method, seed, done[f"teacher | {task}"], args, runs)
                scratch = task_runs(task, runs) / "bench"
                scratch.mkdir(parents=True, exist_ok=True)
                row["latency_ms"] = latency(row["model_dir"], task, args, scratch)
                record(args.results, {"cell": name, **row, "env": env_info()})
                if method is None:
                    rebase_retention(task, args.results)
                done = done_cells(args.results)
        if args.dry_run:
            return
    if args.calibrate:
        calibrate_recorded(args)
    if args.retime:
        for row in done_cells(args.results).values():
            scratch = runs / row["task"] / "bench"
            scratch.mkdir(parents=True, exist_ok=True)
            record(args.results, {**row, "latency_ms": latency(row["model_dir"], row["task"], args, scratch),
                                  "retimed": True})
    write_report(done_cells(args.results), args.results.with_suffix(".md"))


if __name__ == "__main__":
    sys.exit(main())
