"""MobileBERT- and AdaBERT-style students (issue 20) against the layer-picked and the hand-designed students, on
SST-2 and MRPC. A benchmark, not a test.

Teacher: all-MiniLM-L6-v2 fine-tuned on the task (3 epochs, batch 32, lr 5e-5, seed 42, group_by_length; max length
64 on SST-2, 128 on MRPC): pareto.py's finished teacher folder when there is one (read only), else fine-tuned here
with that recipe. Every student below learns from it and is trained here, so the comparison is like for like; all
cells use batch 32 and group_by_length, the best epoch picked on validation.

- MobileBERT-style student (4 layers, inter-block width 256, bottleneck 64, 4 heads, 2 FFNs, embeddings 128),
  6 epochs in all at lr 1e-4: progressive (pid schedule with freeze_below, one epoch per layer, the prediction
  losses on from the top layer's stage), joint (3 epochs of all layer losses, then 3 of task distillation: two
  `stages`), auxiliary (layer losses + KD together, one stage) and no teacher (CE). Layer losses: hidden_mse
  (through a projection, 256 -> 384) + attn_kl; task distillation: kl(T=2) x 0.5 + ce x 0.5 (core.py's soft targets).
  Each teacher-taught variant runs a second time with hidden_cka (no projection) in place of hidden_mse, which
  collapsed the random-init student to one class as benchmarks/collapse.py describes.
- Layer-picked students of core.py: 3L-384 (teacher layers 2,4,6, lr 5e-5) and 2L-192 (random init, lr 1e-4),
  soft targets, 3 epochs.
- AdaBERT: `kdistill search` (3 cells of 3 nodes, on a 64-wide proxy supernet, half a pass over each half of the
  training split) for two efficiency weights; each derived cell built 128 wide and retrained from scratch like
  blackbox.py's CNN/BiLSTM students (logit_mse on the teacher's logits, lr 3e-3, 3 epochs), which run alongside.

Every finished cell is appended to results/mobile_ada.jsonl and skipped on the next run (a cell cut short starts
over); `--stop-after HH:MM` (UTC) starts no new cell after that time. Latency is measured once the task's AdaBERT
students exist, every architecture interleaved in one window (kdistill.timing), at the task's max length.

    python benchmarks/mobile_ada.py                          # SST-2 then MRPC, one seed (~1.5 h on 2 CPU cores)
    python benchmarks/mobile_ada.py --seeds 3                # then MRPC seeds 43 and 44 as well
    python benchmarks/mobile_ada.py --report-only            # rebuild mobile_ada.md / .png from the JSONL
    python benchmarks/mobile_ada.py --max-train 64 --max-eval 64 --epochs-scale 0.2 --runs /tmp/ma/runs \
        --results /tmp/ma/r.jsonl                            # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.atomic import atomic_dir  # noqa: E402
from kdistill.config import DistillConfig, FinetuneConfig, SearchConfig, StudentConfig, build  # noqa: E402
from kdistill.models import load_classifier, load_tokenizer  # noqa: E402
from kdistill.outputs import save_tokenizer  # noqa: E402
from kdistill.speed import count_parameters  # noqa: E402
from kdistill.students.adabert import genotype_from_scores, num_edges  # noqa: E402
from kdistill.students.build import build_student  # noqa: E402
from kdistill.students.search import derived_student  # noqa: E402
from kdistill.students.selection import objective_scores, op_costs  # noqa: E402
from kdistill.timing import measure_speeds  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TASKS: dict[str, dict[str, Any]] = {
    "sst2": {"max_length": 64, "metric": "accuracy", "name": "SST-2", "seeds": [42]},
    "mrpc": {"max_length": 128, "metric": "f1", "name": "MRPC", "seeds": [42, 43, 44]},
}
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
LAYER = [{"name": "hidden_mse", "weight": 1.0}, {"name": "attn_kl", "weight": 1.0}]
# hidden_mse through the 256 -> 384 projection collapsed the random-init MobileBERT student to one class (progressive,
# SST-2: 49.9%), as benchmarks/collapse.py found for the 2L-192 student; hidden_cka needs no projection
LAYER_CKA = [{"name": "hidden_cka", "weight": 1.0}, {"name": "attn_kl", "weight": 1.0}]
MOBILE = {"init": "mobilebert", "num_layers": 4, "hidden_size": 256, "intra_bottleneck_size": 64, "num_heads": 4,
          "intermediate_size": 256, "num_feedforward_networks": 2, "embedding_size": 128}
MB_EPOCHS, LAYER_EPOCHS = 6, 3  # every MobileBERT variant trains 6 epochs; joint: 3 of them layer-wise
BETAS = (0.1, 1.0)
ARCH_WARMUP = 0.3  # kdistill search's default since the SST-2 search without it picked only parameter-free ops
# Half a pass (49 supernet steps on SST-2) picked only pooling and identity, with the architecture logits barely moved:
# the search now runs 2 passes and reads the architecture off by perturbation (DARTS-PT); beta 0.1's search also
# gives the largest-weight (DARTS) genotype of the same supernet, trained as its own cell, to show what selection does
SEARCH_WIDTH, CELL_WIDTH, SEARCH_EPOCHS = 64, 128, 2.0  # search on a narrow proxy, train at 128
SELECTION_EXAMPLES = 256  # held-out examples scoring each (edge, operation) pair: 72 scored passes over them
SPEED = f"speed (AdaBERT {SEARCH_EPOCHS:g} passes, objective)"  # re-timed when the searched architectures change
# Three ways to read one supernet: "objective" = kdistill's default, perturbation of the search objective (task loss +
# beta x expected cost); "perturbation" = perturbation of the task loss alone (kdistill's default before the first
# SST-2 cells showed beta 1 then picked the larger student); "alpha" = the largest weight (DARTS), beta 0.1 only
ADA = {f"adabert-{b:g}-{sel}": (b, sel) for b in BETAS for sel in ("objective", "perturbation", "alpha")
       if sel != "alpha" or b == BETAS[0]}
SELECTIONS = {"objective": "perturbation of loss + beta x cost", "perturbation": "perturbation of the task loss",
              "alpha": "largest weight (DARTS)"}
PARETO = HERE / "runs" / "pareto"  # pareto.py's MiniLM teachers, read only: the same recipe as TEACHER below
TEACHER = {"epochs": 3, "lr": 5e-5, "seed": 42}
THREE_L = {"init": "teacher_layers", "num_layers": 3}
TWO_L = {"init": "config", "num_layers": 2, "hidden_size": 192, "num_heads": 12, "intermediate_size": 768}
CNN = {"init": "cnn", "hidden_size": 256}
BILSTM = {"init": "bilstm", "hidden_size": 600}
ARCHS = {"teacher": "teacher (MiniLM-L6-H384)", "3L": "3L-384 (teacher layers 2,4,6)", "2L": "2L-192 (random init)",
         "mobile": "MobileBERT 4L, 256 / bottleneck 64", "cnn": "CNN 3x256 (teacher embeddings)",
         "bilstm": "BiLSTM 300x2 (teacher embeddings)",
         **{a: f"AdaBERT searched, beta {b:g}, {SELECTIONS[sel]}" for a, (b, sel) in ADA.items()}}


def cells(epochs_scale: float) -> dict[str, dict[str, Any]]:
    """cell -> arch, how it trains (a DistillConfig fragment), which earlier row may stand in for it."""
    def ep(n: float) -> float:
        return n * epochs_scale
    mb = {"student": MOBILE, "train": {"lr": 1e-4, "epochs": ep(MB_EPOCHS)}}
    simple = {"train": {"lr": 3e-3, "epochs": ep(3)}, "losses": [{"name": "logit_mse"}],
              "teacher_cache": True}
    return {
        **{f"AdaBERT beta {b:g}, {SEARCH_EPOCHS:g} passes, {sel} selection | logit_mse": {
            "arch": a, "beta": b, "selection": sel, "cfg": {**simple}} for a, (b, sel) in ADA.items()},
        "CNN | logit_mse": {"arch": "cnn", "cfg": {**simple, "student": CNN}},
        "MobileBERT | progressive": {"arch": "mobile", "cfg": {**mb, "losses": LAYER + KD, "schedule": {
            "name": "pid", "epochs_per_layer": max(1, round(epochs_scale)), "freeze_below": True}}},
        "MobileBERT | progressive, hidden_cka": {"arch": "mobile", "cfg": {**mb, "losses": LAYER_CKA + KD, "schedule": {
            "name": "pid", "epochs_per_layer": max(1, round(epochs_scale)), "freeze_below": True}}},
        "2L-192 | soft targets": {"arch": "2L", "cfg": {
            "student": TWO_L, "losses": KD, "train": {"lr": 1e-4, "epochs": ep(3)}}},
        "MobileBERT | joint": {"arch": "mobile", "cfg": {**mb, "stages": [
            {"name": "joint", "losses": LAYER, "epochs": ep(LAYER_EPOCHS)},
            {"name": "task", "losses": KD, "epochs": ep(MB_EPOCHS - LAYER_EPOCHS)}]}},
        "MobileBERT | joint, hidden_cka": {"arch": "mobile", "cfg": {**mb, "stages": [
            {"name": "joint", "losses": LAYER_CKA, "epochs": ep(LAYER_EPOCHS)},
            {"name": "task", "losses": KD, "epochs": ep(MB_EPOCHS - LAYER_EPOCHS)}]}},
        "MobileBERT | auxiliary": {"arch": "mobile", "cfg": {**mb, "losses": LAYER + KD}},
        "MobileBERT | auxiliary, hidden_cka": {"arch": "mobile", "cfg": {**mb, "losses": LAYER_CKA + KD}},
        "MobileBERT | no teacher": {"arch": "mobile", "cfg": {**mb, "losses": [{"name": "ce"}]}},
        "BiLSTM | logit_mse": {"arch": "bilstm", "cfg": {**simple, "student": BILSTM}},
        "3L-384 | soft targets": {"arch": "3L", "cfg": {
            "student": THREE_L, "losses": KD, "train": {"lr": 5e-5, "epochs": ep(3)}}},
        # benchmarks/tasks.py's feature recipe, for the choice of --preset balanced's losses across tasks
        "3L-384 | soft targets + hidden + attention": {"arch": "3L", "cfg": {
            "student": THREE_L, "losses": LAYER + KD, "train": {"lr": 5e-5, "epochs": ep(3)}}},
    }


def slug(text: str) -> str:
    return re.sub(r"-+", "-", "".join(c if c.isalnum() else "-" for c in text.lower())).strip("-")


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def metric_of(test: dict[str, Any], key: str) -> float:
    return float(test[key])


STARTED = dt.datetime.now(dt.timezone.utc)


def past_deadline(args: argparse.Namespace) -> bool:
    """Whether --stop-after HH:MM (UTC) has passed: the next such time after this run started (00:55 given at 23:40
    is tomorrow's)."""
    if not args.stop_after:
        return False
    hh, mm = (int(x) for x in args.stop_after.split(":"))
    deadline = STARTED.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if deadline <= STARTED:
        deadline += dt.timedelta(days=1)
    return dt.datetime.now(dt.timezone.utc) >= deadline


def teacher_cell(task: str, data: dict[str, Any], base_train: dict[str, Any], runs: Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    """pareto.py's finished MiniLM teacher of the task when there is one (full data only), else fine-tuned here
    with the same recipe."""
    theirs = PARETO / f"minilm-{task}" / "teacher"
    if not args.max_train and (theirs / "metrics.json").is_file() and (theirs / "model.safetensors").is_file():
        s = json.loads((theirs / "metrics.json").read_text())
        return {"test": s["test"], "params": s["params"], "model_dir": str(theirs), "train_seconds": s["wall_seconds"],
                "reused_from": "pareto.py"}
    out = runs / f"teacher-{task}"
    s = api.finetune(build(FinetuneConfig, {"model": "minilm", "data": data, "out": str(out), "train": {
        **base_train, **TEACHER, "epochs": TEACHER["epochs"] * args.epochs_scale}}))
    return {"test": s["test"], "params": s["params"], "model_dir": str(out), "train_seconds": s["wall_seconds"]}


def train_task(task: str, args: argparse.Namespace, results: Path, runs: Path) -> bool:
    """Every cell of one task (seed by seed), then its speed cell; False when the deadline stopped it."""
    spec, env = TASKS[task], environment()
    data = {"task": task, "max_length": spec["max_length"], "max_train_examples": args.max_train,
            "max_eval_examples": args.max_eval}
    # group_by_length as pareto.py's teachers and blackbox.py's students: far less padding on 2 CPU cores
    base_train = {"batch_size": 32, "device": args.device, "save_steps": 100_000, "progress": False,
                  "group_by_length": True}
    done = done_cells(results)
    if f"{task} | teacher" not in done:
        if past_deadline(args):
            return False
        t0 = time.perf_counter()
        row = teacher_cell(task, data, base_train, runs, args)
        record(results, {**row, "cell": f"{task} | teacher", "task": task, "arch": "teacher", "kind": "teacher",
                         "value": metric_of(row["test"], spec["metric"]), "wall_seconds": time.perf_counter() - t0,
                         "env": env})
        done = done_cells(results)
    teacher = Path(done[f"{task} | teacher"]["model_dir"])
    t_value = done[f"{task} | teacher"]["value"]
    for seed in spec["seeds"][: args.seeds]:
        for name, c in cells(args.epochs_scale).items():
            key = f"{task} | {name} | seed {seed}"
            if key in done or (args.cells and not any(x in name for x in args.cells)):
                continue
            if past_deadline(args):
                return False
            row = train_cell(task, name, c, seed, teacher, data, base_train, runs, args)
            record(results, {**row, "retention": row["value"] / t_value, "task": task, "kind": name,
                             "arch": c["arch"], "seed": seed, "metric": spec["metric"], "env": env,
                             "epochs_scale": args.epochs_scale, "max_train": args.max_train})
            done = done_cells(results)
            if name.startswith("AdaBERT") and f"{task} | {SPEED}" not in done and all(
                    f"{task} | {k} | seed {seed}" in done for k in cells(1.0) if k.startswith("AdaBERT")):
                speed_cell(task, done, teacher, results, args)  # every architecture is known now: time them all
                done = done_cells(results)
    if f"{task} | {SPEED}" not in done:
        speed_cell(task, done, teacher, results, args)
    return True


def searched_student(task: str, beta: float, selection: str, seed: int, teacher: Path, data: dict[str, Any],
                     runs: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """`kdistill search` on a SEARCH_WIDTH-wide proxy supernet (once per beta and seed: search.json holds both the
    perturbation and the largest-weight genotype); the `selection` genotype, re-built CELL_WIDTH wide (the DARTS
    practice: search narrow, train wide), saved as an untrained student to retrain."""
    found = runs / f"{task}-search-{beta:g}-e{SEARCH_EPOCHS:g}-{seed}"
    t0 = time.perf_counter()
    if not (found / "search.json").is_file():
        shutil.rmtree(found, ignore_errors=True)
        api.search(build(SearchConfig, {
            "teacher": str(teacher), "data": data, "out": str(found), "cells": 3, "nodes": 3,
            "hidden_size": SEARCH_WIDTH, "epochs": SEARCH_EPOCHS * args.epochs_scale, "efficiency_weight": beta,
            "arch_warmup": ARCH_WARMUP, "selection": "perturbation", "selection_examples": SELECTION_EXAMPLES,
            "seed": seed, "progress": False}))
        (found / "search_wall.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    search_seconds = json.loads((found / "search_wall.json").read_text())["seconds"]
    summary = json.loads((found / "search.json").read_text())
    cfg = AutoConfig.from_pretrained(found)
    cfg.hidden_size = CELL_WIDTH
    # every reading from the saved scores, so searches saved before a reading existed serve it too
    scores, alpha = torch.tensor(summary["perturbation_scores"]), torch.tensor(summary["alpha"])
    readings = {"alpha": summary["genotype_alpha"],
                "perturbation": genotype_from_scores(scores, 3),
                "objective": genotype_from_scores(objective_scores(
                    scores, alpha, op_costs(SEARCH_WIDTH, num_edges(3)), beta), 3)}
    cfg.genotype = [[list(e) for e in node] for node in readings[selection]]
    model = derived_student(cfg, load_classifier(str(teacher)))
    wide = runs / f"{task}-adabert-{beta:g}-e{SEARCH_EPOCHS:g}-{selection}-{seed}-w{CELL_WIDTH}"
    with atomic_dir(wide) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(load_tokenizer(str(found)), tmp)
    return wide, {"search_seconds": search_seconds, "search_loop_seconds": summary["wall_seconds"],
                  "genotype": cfg.genotype, "selection": selection,
                  "readings": {k: [[list(e) for e in node] for node in g] for k, g in readings.items()},
                  "expected_cost": summary["expected_cost_end"],
                  "expected_cost_start": summary["expected_cost_start"], "search_steps": summary["steps"],
                  "search_params_w64": summary["params"], "search_dir": str(found)}


def train_cell(task: str, name: str, c: dict[str, Any], seed: int, teacher: Path, data: dict[str, Any],
               base_train: dict[str, Any], runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = runs / f"{task}-{slug(name)}-{seed}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, so its wall time is one uninterrupted run
    cfg = json.loads(json.dumps(c["cfg"]))
    extra: dict[str, Any] = {}
    if "beta" in c:  # AdaBERT: the search first; its derived student is retrained from scratch below
        path, extra = searched_student(task, c["beta"], c["selection"], seed, teacher, data, runs, args)
        cfg["student"] = {"init": "path", "path": str(path)}
    if any(x["name"] != "ce" for x in cfg.get("losses", [])) or cfg.get("stages"):
        cfg["teacher_cache"] = str(runs / f"cache-{task}")  # teacher outputs once, shared by the cells that match
    train = {**base_train, **cfg.pop("train"), "seed": seed}
    dcfg = build(DistillConfig, {"teacher": str(teacher), **cfg, "data": data, "train": train, "out": str(out)})
    print(f"[mobile_ada] {task} | {name} | seed {seed}: training", flush=True)
    t0, load0 = time.perf_counter(), list(os.getloadavg())
    s = api.distill(dcfg)
    return {"cell": f"{task} | {name} | seed {seed}", "test": s["test"],
            "value": metric_of(s["test"], TASKS[task]["metric"]), "validation": s["validation"],
            "best_epoch": s.get("best_epoch"), "params": s["params"], "train_seconds": s["wall_seconds"],
            "wall_seconds": time.perf_counter() - t0, "model_dir": str(out),
            "stages": [{k: v for k, v in st.items() if k in ("stage", "wall_seconds", "steps")}
                       for st in s.get("stages", [])],
            "load_avg_start": load0, "load_avg_end": list(os.getloadavg()), "config": c["cfg"], **extra}


def speed_cell(task: str, done: dict[str, dict[str, Any]], teacher_dir: Path, results: Path,
               args: argparse.Namespace) -> None:
    """Every architecture of the task timed together (interleaved rounds), batch 1 and 32, at the task's length.

    Latency depends on the architecture only, so the hand-built students are timed as built (untrained) and the
    AdaBERT students as searched; this runs once both searches are done, before the other cells train."""
    seq = TASKS[task]["max_length"]
    teacher = load_classifier(str(teacher_dir))
    models: dict[str, Any] = {"teacher": teacher}
    for name, c in cells(1.0).items():
        if c["arch"] in models:
            continue
        if "beta" in c:
            row = next((r for r in done.values() if r.get("task") == task and r.get("kind") == name), None)
            if row is not None:
                models[c["arch"]] = load_classifier(row["model_dir"])
        else:
            models[c["arch"]] = build_student(build(StudentConfig, c["cfg"]["student"]), teacher,
                                              single_sentence=task == "sst2")
    names = list(models)
    load0 = list(os.getloadavg())
    shapes = measure_speeds([models[n] for n in names], batch_sizes=(1, 32), seq_length=seq, warmup=5,
                            repeats=args.repeats, device="cuda" if args.device == "cuda" else "cpu")
    speed = {n: {str(s.batch_size): s.result(i).to_dict() for s in shapes} for i, n in enumerate(names)}
    record(results, {"cell": f"{task} | {SPEED}", "task": task, "arch": "-", "kind": "speed", "seq_length": seq,
                     "speed": speed, "params": {n: count_parameters(m) for n, m in models.items()},
                     "repeats": args.repeats, "load_avg_start": load0, "load_avg_end": list(os.getloadavg()),
                     "env": environment()})


# ------------------------------------------------------------------------------------------------ report


def summarize(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [100 * r["test"][key] for r in rows]
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def write_report(done: dict[str, dict[str, Any]], md: Path, png: Path) -> None:
    current = set(cells(1.0))  # rows of cells no longer run (AdaBERT before the search's warm-up) are history only
    lines = ["# MobileBERT- and AdaBERT-style students (issue 20)", ""]
    points: dict[str, list[tuple[str, float, float]]] = {}
    for task, spec in TASKS.items():
        t = done.get(f"{task} | teacher")
        if not t:
            continue
        sp = done.get(f"{task} | {SPEED}", {}).get("speed", {})
        t_sp = sp.get("teacher", {})
        pair = task == "mrpc"
        head = f"test {spec['metric']}" + (" / accuracy" if pair else "")
        lines += [f"## {spec['name']} (teacher all-MiniLM-L6-v2 fine-tuned here; latency at length "
                  f"{spec['max_length']})", "",
                  f"| student | method | seeds | {head} | retention | params (M) | latency bs=1 / bs=32 (ms) | "
                  "speedup bs=1 / bs=32 | train wall (min) |", "|---|---|---|---|---|---|---|---|---|"]
        kinds: dict[str, list[dict[str, Any]]] = {}
        for r in done.values():
            if r.get("task") == task and r["kind"] in current:
                kinds.setdefault(r["kind"], []).append(r)
        for kind, rows in [("teacher", [t]), *kinds.items()]:
            arch = rows[0]["arch"]
            m, sd = summarize(rows, spec["metric"])
            score = f"{m:.2f}" + (f" ± {sd:.2f}" if len(rows) > 1 else "")
            if pair:
                a, asd = summarize(rows, "accuracy")
                score += f" / {a:.2f}" + (f" ± {asd:.2f}" if len(rows) > 1 else "")
            ret = "100%" if kind == "teacher" else f"{100 * statistics.mean(r['retention'] for r in rows):.1f}%"
            s = sp.get(arch, {})
            lat = f"{s['1']['p50_ms']:.2f} / {s['32']['p50_ms']:.1f}" if s else "-"
            up = (f"{t_sp['1']['p50_ms'] / s['1']['p50_ms']:.1f}x / {t_sp['32']['p50_ms'] / s['32']['p50_ms']:.1f}x"
                  if s and t_sp else "-")
            walls = [r["train_seconds"] for r in rows if r.get("train_seconds")]
            wall = f"{statistics.mean(walls) / 60:.1f}" if walls else "-"
            if any(r.get("search_seconds") for r in rows):
                wall += f" + search {statistics.mean(r['search_seconds'] for r in rows) / 60:.1f}"
            method = kind.split(" | ")[-1] if kind != "teacher" else "fine-tuned"
            lines.append(f"| {ARCHS[arch]} | {method} | {len(rows)} | {score} | {ret} | "
                         f"{rows[0]['params'] / 1e6:.1f} | {lat} | {up} | {wall} |")
            if s and t_sp:
                points.setdefault(task, []).append((f"{ARCHS[arch]} | {method}", t_sp["1"]["p50_ms"] / s["1"]["p50_ms"],
                                                    m))
        for kind, rows in kinds.items():
            if rows[0].get("genotype"):
                g = "; ".join(" + ".join(f"{op}({i})" for op, i in node) for node in rows[0]["genotype"])
                lines.append(f"\n{kind} (seed {rows[0]['seed']}): genotype {g}; expected cost "
                             f"{rows[0]['expected_cost_start']:.3f} -> {rows[0]['expected_cost']:.3f}; search "
                             f"{rows[0]['search_seconds']:.0f} s wall ({rows[0]['search_loop_seconds']:.0f} s loop).")
        lines.append("")
    lines += ["## Targets", "", *target_lines(done), "", "## How it was measured", "", method_paragraph(done), ""]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines))
    print("\n".join(lines))
    write_plot(points, png)


def target_lines(done: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, per task: the best teacher-taught MobileBERT variant against the layer-picked student of
    the nearest batch-1 latency; each AdaBERT student against the CNN (as accurate, no slower)."""
    out, current = [], set(cells(1.0))
    for task, spec in TASKS.items():
        sp = done.get(f"{task} | {SPEED}", {}).get("speed", {})
        by_kind: dict[str, list[float]] = {}
        for r in done.values():
            if r.get("task") == task and r.get("kind") in current:
                by_kind.setdefault(r["kind"], []).append(100 * r["value"])
        mean = {k: statistics.mean(v) for k, v in by_kind.items()}
        lat = {k: sp[cells(1.0)[k]["arch"]]["1"]["p50_ms"] for k in mean if cells(1.0)[k]["arch"] in sp}
        name, unit = spec["name"], spec["metric"]
        mobile = [k for k in mean if k.startswith("MobileBERT") and "no teacher" not in k]
        picked = [k for k in mean if k.split(" | ")[0] in ("3L-384", "2L-192") and k in lat]
        if mobile and picked and all(k in lat for k in mobile):
            best = max(mobile, key=mean.get)
            peer = min(picked, key=lambda k: abs(lat[k] / lat[best] - 1))
            gap = mean[best] - mean[peer]
            out.append(f"- {name}: {best.split(' | ')[1]} MobileBERT {mean[best]:.2f} vs {peer.split(' | ')[0]} "
                       f"{mean[peer]:.2f} {unit} (batch-1 latency {lat[best]:.1f} vs {lat[peer]:.1f} ms): "
                       + (f"beats it by {gap:.2f} points." if gap > 0 else f"does not beat it ({gap:+.2f} points)."))
        else:
            out.append(f"- {name}: MobileBERT vs the layer-picked students not measured yet.")
        cnn = "CNN | logit_mse"
        for k in (k for k in mean if k.startswith("AdaBERT")):
            if cnn not in mean or k not in lat or cnn not in lat:
                out.append(f"- {name}: {k.split(' | ')[0]} vs the CNN not measured yet.")
                continue
            ok = mean[k] >= mean[cnn] and lat[k] <= lat[cnn]
            out.append(f"- {name}: {k.split(' | ')[0]} {mean[k]:.2f} vs CNN {mean[cnn]:.2f} {unit} "
                       f"({mean[k] - mean[cnn]:+.2f} points), batch-1 latency {lat[k]:.2f} vs {lat[cnn]:.2f} ms: "
                       + ("target met." if ok else "target missed."))
    return out


def method_paragraph(done: dict[str, dict[str, Any]]) -> str:
    env = next((r.get("env") for r in done.values() if r.get("env")), {}) or {}
    smoke = any(r.get("max_train") for r in done.values())
    scales = sorted({r.get("epochs_scale", 1.0) for r in done.values() if r.get("epochs_scale")})
    teachers = "; ".join(f"{TASKS[r['task']]['name']}: " + ("pareto.py's teacher folder" if r.get("reused_from")
                                                             else "fine-tuned here")
                         for r in done.values() if r.get("kind") == "teacher")
    return (f"Measured by `python benchmarks/mobile_ada.py` on {env.get('cpu_count')} CPU cores (torch "
            f"{env.get('torch')}, {env.get('threads')} threads), one cell after the other; "
            + ("**smoke run (--max-train)**; " if smoke else "")
            + (f"epochs scaled by {scales}; " if scales and scales != [1.0] else "")
            + f"teacher all-MiniLM-L6-v2 fine-tuned 3 epochs at lr 5e-5 ({teachers}). The shipped SST-2 and MRPC "
            "files, 10% of each train file carved for validation (seed 42), the best epoch picked on validation and "
            "the test split scored once; batch 32, group_by_length in every cell. MobileBERT variants: 6 epochs in "
            "all at lr 1e-4 (progressive: pid schedule with freeze_below, one epoch per layer, prediction losses "
            "from the 4th layer's epoch on; joint: 3 epochs of hidden_mse + attn_kl, then 3 of kl(T=2) x 0.5 + ce x "
            "0.5; auxiliary: all four losses for 6 epochs; no teacher: ce; each teacher-taught variant also with "
            "hidden_cka in place of hidden_mse, which collapsed the student). Layer-picked students: soft targets, "
            "3 epochs (core.py's recipe). AdaBERT: `kdistill search` with 3 cells of 3 nodes on a 64-wide proxy "
            f"supernet, {SEARCH_EPOCHS:g} passes over each half of the training split, gamma 0.8, the first "
            f"{ARCH_WARMUP:g} of the steps training weights only; each supernet read three ways: by perturbation "
            "(DARTS-PT: each (edge, operation) removed in turn and the rise of the held-out search objective, task "
            f"loss + beta x expected cost, on {SELECTION_EXAMPLES} examples of the architecture half), by the rise of "
            "the task loss alone, and (first beta only) by the largest weight (DARTS); the derived "
            "cell built 128 wide and, like the CNN/BiLSTM, trained with logit_mse at lr 3e-3 for 3 epochs "
            "(blackbox.py's recipe). Latency: median of interleaved timed forward passes (random full-length "
            "inputs) after warm-up, every architecture of a task in one window, on a machine shared with other "
            "work (absolute times are noisy; the ratios are measured in one window). Retention is the student's "
            "test metric / the teacher's; train wall is the distiller's loop, the search's own wall listed apart.")


def write_plot(points: dict[str, list[tuple[str, float, float]]], path: Path) -> None:
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(points), figsize=(7 * len(points), 5.5), squeeze=False)
    for ax, (task, pts) in zip(axes[0], points.items(), strict=True):
        for i, (label, up, score) in enumerate(pts):
            ax.scatter([up], [score], label=label, color=plt.get_cmap("tab20").colors[i % 20], s=50)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.set_xlabel("speedup vs teacher at batch 1 (CPU, log scale)")
        ax.set_ylabel(f"test {TASKS[task]['metric']} (%)")
        ax.set_title(TASKS[task]["name"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tasks", default="sst2,mrpc", help="comma-separated: sst2, mrpc (in this order of priority)")
    ap.add_argument("--cells", default=None, help="comma-separated substrings of cell names (default: all)")
    ap.add_argument("--seeds", type=int, default=1, help="at most this many seeds per task (MRPC has 3, SST-2 1)")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch count (smoke runs)")
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--max-eval", type=int, default=None, help="use only N validation and test examples (smoke)")
    ap.add_argument("--repeats", type=int, default=30, help="timed passes per batch size")
    ap.add_argument("--stop-after", default=None, metavar="HH:MM", help="start no new cell after this UTC time")
    ap.add_argument("--report-only", action="store_true", help="only rebuild mobile_ada.md / mobile_ada.png")
    ap.add_argument("--runs", default=str(HERE / "runs" / "mobile_ada"), help="run folders")
    ap.add_argument("--results", default=str(RESULTS / "mobile_ada.jsonl"))
    args = ap.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.cells = [c.strip() for c in args.cells.split(",")] if args.cells else None
    if any(t not in TASKS for t in tasks):
        sys.exit(f"unknown task in {tasks} (tasks: {list(TASKS)})")
    results, runs = Path(args.results), Path(args.runs)
    if not args.report_only:
        # first pass: seed 42 of every task; then the further seeds, so a deadline cuts the extra seeds first
        for n in sorted({1, args.seeds}):
            for task in tasks:
                if not train_task(task, argparse.Namespace(**{**vars(args), "seeds": n}), results, runs):
                    print(f"[mobile_ada] --stop-after {args.stop_after} reached: stopping", flush=True)
                    break
    done = done_cells(results)
    if done:
        write_report(done, results.with_suffix(".md"), results.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
