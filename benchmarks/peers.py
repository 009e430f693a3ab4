"""Peer benchmark: the same distillation in kdistill and in TextBrewer, wall time per epoch and test accuracy.

Both toolkits get the same fine-tuned teacher (SST-2 MiniLM-L6 from benchmarks/core.py, else fine-tuned here with
core.py's settings), the same 3-layer student (teacher layers 2,4,6, built once and loaded by both), the same
SST-2 batches in the same order, the same losses (soft targets at T=2 weight 0.5 + hard CE 0.5 + hidden-state MSE
student k <- teacher 2k weight 1), AdamW at 5e-5 with 10% linear warm-up, grad clip 1.0, epochs and seed. Each
toolkit trains in its own subprocess, one after the other; only its train call is timed. Both final students are
scored with the same kdistill code on the SST-2 test split. torchdistill is not run: its torchvision has no build
for torch 2.13.0. Every finished toolkit run is one JSONL line; a rerun skips it (a run cut short starts over:
a resumed run would not give a wall time). Writes benchmarks/results/peers.md.

    python benchmarks/peers.py                      # ~7 min on 2 free CPU cores (+12 min if the teacher is missing)
    python benchmarks/peers.py --device cuda        # the same on a GPU
    python benchmarks/peers.py --epochs 3           # new cells next to the 1-epoch ones
    python benchmarks/peers.py --teacher /tmp/t --max-train 64 --max-eval 64 \\
        --results /tmp/peers_smoke/peers.jsonl --runs /tmp/peers_smoke/runs      # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from cells import done_cells, record  # noqa: E402

import kdistill  # noqa: E402
from kdistill import api  # noqa: E402
from kdistill.config import DataConfig, DistillConfig, FinetuneConfig, StudentConfig, build  # noqa: E402
from kdistill.data import load_task_data  # noqa: E402
from kdistill.distill.features import forward_features  # noqa: E402
from kdistill.distill.mapping import uniform_map  # noqa: E402
from kdistill.evaluate import score_split  # noqa: E402
from kdistill.models import load_classifier, load_tokenizer, pick_device  # noqa: E402
from kdistill.students.build import build_student  # noqa: E402
from kdistill.tokenized import make_loader, tokenize_splits

HERE = Path(__file__).resolve().parent
CORE_TEACHER = HERE / "runs" / "core" / "teacher"
TOOLKITS = ("kdistill", "kdistill-grouped", "textbrewer")
GROUPED = "kdistill-grouped"  # kdistill with train.group_by_length: its batches differ from TextBrewer's
SEED, BATCH, MAX_LENGTH, LR, WARMUP, CLIP = 42, 32, 64, 5e-5, 0.1, 1.0
T, KD_WEIGHT, CE_WEIGHT, HIDDEN_WEIGHT = 2.0, 0.5, 0.5, 1.0
LOSSES = [{"name": "kl", "weight": KD_WEIGHT, "temperature": T}, {"name": "ce", "weight": CE_WEIGHT},
          {"name": "hidden_mse", "weight": HIDDEN_WEIGHT}]
SST2_TRAIN = 6228  # SST-2 train examples left after kdistill carves 10% for validation
STEP_S = 0.56 + 0.29  # 3L-384 student step + teacher forward, batch 32 x len 64, 2 free CPU cores (core.py)
TEACHER_STEP_S = 1.2  # teacher fine-tuning step, same shape


# ---------------------------------------------------------------------------------------------- shared set-up


def data_cfg(args: argparse.Namespace) -> DataConfig:
    return build(DataConfig, {"task": "sst2", "max_length": MAX_LENGTH, "max_train_examples": args.max_train,
                              "max_eval_examples": args.max_eval})


def env_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "device": pick_device(args.device),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def score(model_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """The one scoring path for the teacher and both students: kdistill's score_split on the test split."""
    model = load_classifier(str(model_dir)).to(pick_device(args.device))
    return score_split(model, load_tokenizer(str(model_dir)), load_task_data(data_cfg(args)), "test", MAX_LENGTH,
                       progress=False)


def teacher_dir(args: argparse.Namespace) -> Path:
    """--teacher, else core.py's SST-2 teacher, else <runs>/teacher (fine-tuned here with core.py's settings)."""
    if args.teacher:
        return Path(args.teacher)
    return CORE_TEACHER if (CORE_TEACHER / "metrics.json").is_file() else Path(args.runs) / "teacher"


def ensure_teacher(args: argparse.Namespace) -> Path:
    path = teacher_dir(args)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    if args.teacher:
        sys.exit(f"peers: --teacher {path} is not a model folder")
    print(f"[bench] fine-tuning the teacher into {path} (core.py's settings)", flush=True)
    data = {"task": "sst2", "max_length": MAX_LENGTH, "max_train_examples": args.max_train}
    train = {"epochs": args.teacher_epochs, "batch_size": BATCH, "lr": LR, "device": args.device, "seed": SEED,
             "save_steps": 100}
    api.finetune(build(FinetuneConfig, {"model": "minilm", "data": data, "out": str(path), "train": train}))
    return path


def ensure_student(teacher: Path, runs: Path) -> Path:
    """Built once from the teacher (layers 2,4,6 of 6) and saved, so both toolkits start from the same weights."""
    path, mark = runs / "student-init", str(teacher.resolve())
    if not (path / "model.safetensors").is_file() or (path / "teacher.txt").read_text() != mark:
        model = load_classifier(str(teacher))
        student = build_student(StudentConfig(init="teacher_layers", num_layers=3), model, single_sentence=True)
        student.save_pretrained(path, safe_serialization=True)
        load_tokenizer(str(teacher)).save_pretrained(path)
        (path / "teacher.txt").write_text(mark)  # another teacher next time: build again
    return path


def layer_pairs(teacher: Path, student: Path) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state pairs: kdistill's uniform map, handed to TextBrewer as intermediate matches."""
    n_t = json.loads((teacher / "config.json").read_text())["num_hidden_layers"]
    n_s = json.loads((student / "config.json").read_text())["num_hidden_layers"]
    return [(p.student, p.teacher[0]) for p in uniform_map(n_t, n_s)]


def kdistill_config(args: argparse.Namespace, teacher: Path, student: Path, out: Path,
                    group_by_length: bool = False) -> DistillConfig:
    """Validation off (TextBrewer has none built in; both are scored afterwards); no resume (a timed run)."""
    return build(DistillConfig, {
        "teacher": str(teacher), "student": {"init": "path", "path": str(student)},
        "data": data_cfg(args).model_dump(), "losses": LOSSES, "out": str(out),
        "train": {"epochs": args.epochs, "batch_size": BATCH, "lr": LR, "warmup_ratio": WARMUP, "max_grad_norm": CLIP,
                  "device": args.device, "seed": SEED, "eval_every_epoch": False, "resume": False,
                  "threads": args.threads, "group_by_length": group_by_length}})


def textbrewer_setup(teacher_path: Path, student_path: Path, out: Path, device: str, teacher: Any = None,
                     student: Any = None) -> tuple[Any, Any, Any]:
    """GeneralDistiller with kdistill's loss: soft CE x (0.5 T^2) has KL x T^2 x 0.5's gradient."""
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

    teacher = teacher if teacher is not None else load_classifier(str(teacher_path)).to(device)
    student = student if student is not None else load_classifier(str(student_path)).to(device)
    matches = [{"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": HIDDEN_WEIGHT}
               for s, t in layer_pairs(teacher_path, student_path)]
    d_cfg = DistillationConfig(temperature=T, kd_loss_type="ce", kd_loss_weight=KD_WEIGHT * T**2,
                               hard_label_weight=CE_WEIGHT, intermediate_matches=matches)
    t_cfg = TrainingConfig(device=device, output_dir=str(out), log_dir=None)

    def adaptor(batch: dict[str, torch.Tensor], outputs: Any) -> dict[str, Any]:
        # inputs_mask makes hidden_mse average over real tokens only, as kdistill's does
        return {"logits": outputs.logits, "hidden": outputs.hidden_states, "losses": outputs.loss,
                "inputs_mask": batch["attention_mask"]}

    distiller = GeneralDistiller(train_config=t_cfg, distill_config=d_cfg, model_T=teacher, model_S=student,
                                 adaptor_T=adaptor, adaptor_S=adaptor)
    return distiller, teacher, student


def loss_check(teacher: Path, student: Path, runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One batch, dropout off: do both objectives give the student the same gradient? (They should, exactly.)"""
    set_seed(SEED)
    t_model, s_model = load_classifier(str(teacher)).eval(), load_classifier(str(student)).eval()
    t_model.requires_grad_(False)
    tok = load_tokenizer(str(student))
    batch = next(iter(make_loader(tokenize_splits(load_task_data(data_cfg(args)), tok, MAX_LENGTH)["train"], tok,
                                  BATCH)))
    objective = api.build_objective(kdistill_config(args, teacher, student, runs / "loss-check"), t_model, s_model,
                                    same_tokens=True)
    with torch.no_grad():
        t_feats = forward_features(t_model, batch, objective.teacher_request)
    kd = objective(forward_features(s_model, batch, objective.student_request), t_feats, batch["labels"])
    kd.total.backward()
    params = [p for p in s_model.parameters() if p.requires_grad]
    g_kd = torch.cat([p.grad.flatten() for p in params])
    s_model.zero_grad()
    distiller, _, _ = textbrewer_setup(teacher, student, runs / "loss-check", "cpu", t_model, s_model)
    tb_total, tb_terms = distiller.train_on_batch(dict(batch), {"output_hidden_states": True})
    tb_total.backward()
    g_tb = torch.cat([p.grad.flatten() for p in params])
    p_t = torch.softmax(t_feats.logits / T, dim=-1)
    entropy = float(-(p_t * p_t.log()).sum(-1).mean())
    shutil.rmtree(runs / "loss-check", ignore_errors=True)  # TextBrewer's (empty) output folder
    return {"kdistill_loss": float(kd.total.detach()), "textbrewer_loss": float(tb_total.detach()),
            "expected_difference": KD_WEIGHT * T**2 * entropy,  # soft CE - KL = teacher entropy
            "max_abs_grad_diff": float((g_kd - g_tb).abs().max()), "max_abs_grad": float(g_kd.abs().max()),
            "grad_rel_diff": float((g_kd - g_tb).norm() / g_kd.norm()),
            "kdistill_terms": {k: float(v) for k, v in kd.terms.items()},
            "textbrewer_terms": {k: float(v.detach()) for k, v in tb_terms.items()}}


# ---------------------------------------------------------------------------------------------- the two runs


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_kdistill(args: argparse.Namespace, teacher: Path, student: Path, out: Path) -> dict[str, Any]:
    """api.distill as a user calls it; the clock runs around Distiller.train() only (set-up and export excluded)."""
    from accelerate.data_loader import get_sampler

    from kdistill.distill.distiller import Distiller

    timing: dict[str, Any] = {}
    untimed = Distiller.train

    def timed(self: Distiller) -> Any:
        t0 = time.perf_counter()
        result = untimed(self)
        _sync(pick_device(args.device))
        timing.update(seconds=time.perf_counter() - t0, steps=result.steps, batches_per_epoch=len(self.train_loader),
                      data_seed=getattr(get_sampler(self.train_loader), "initial_seed", None))
        return result

    Distiller.train = timed  # type: ignore[method-assign]
    try:
        summary = api.distill(kdistill_config(args, teacher, student, out, group_by_length=args.worker == GROUPED))
    finally:
        Distiller.train = untimed  # type: ignore[method-assign]
    return {**timing, "version": kdistill.__version__, "objective": summary["method"]}


def run_textbrewer(args: argparse.Namespace, teacher: Path, student: Path, out: Path) -> dict[str, Any]:
    """GeneralDistiller.train() timed; batches in kdistill's order (Accelerate's seedable sampler, seed 42 + epoch)."""
    import textbrewer
    from accelerate.data_loader import SeedableRandomSampler
    from transformers import get_linear_schedule_with_warmup

    set_seed(SEED)  # as api.distill does first
    device = pick_device(args.device)
    tok = load_tokenizer(str(student))
    train = make_loader(tokenize_splits(load_task_data(data_cfg(args)), tok, MAX_LENGTH)["train"], tok, BATCH)
    loader = torch.utils.data.DataLoader(train.dataset, batch_size=BATCH, collate_fn=train.collate_fn,
                                         sampler=SeedableRandomSampler(train.dataset, data_seed=SEED))
    distiller, _, s_model = textbrewer_setup(teacher, student, out / "textbrewer-checkpoints", device)
    decay, no_decay = [], []  # kdistill's AdamW groups: no weight decay on biases and LayerNorm
    for name, p in s_model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR)
    steps = len(loader) * args.epochs
    sched = {"num_warmup_steps": int(WARMUP * steps), "num_training_steps": steps}
    with distiller:  # teacher in eval mode, student in train mode
        t0 = time.perf_counter()
        distiller.train(optimizer, loader, num_epochs=args.epochs, scheduler_class=get_linear_schedule_with_warmup,
                        scheduler_args=sched, max_grad_norm=CLIP, output_hidden_states=True,
                        batch_postprocessor=dict)  # the collator's BatchEncoding -> the plain dict it expects
        _sync(device)
        seconds = time.perf_counter() - t0
    shutil.rmtree(out / "textbrewer-checkpoints", ignore_errors=True)  # its epoch-end state_dicts: not needed
    s_model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {"seconds": seconds, "steps": steps, "batches_per_epoch": len(loader), "data_seed": SEED,
            "version": textbrewer.__version__,
            "objective": f"{KD_WEIGHT * T**2:g}*kd_ce_loss[T={T:g}] + {CE_WEIGHT:g}*hard_label + "
                         + " + ".join(f"{HIDDEN_WEIGHT:g}*hidden_mse[{m.layer_S}<-{m.layer_T}]"
                                      for m in distiller.d_config.intermediate_matches)}


def worker(args: argparse.Namespace) -> None:
    """One toolkit, in a fresh process (no state shared with the other run); records its cell."""
    torch.set_num_threads(args.threads)
    teacher, runs = Path(args.teacher), Path(args.runs)
    student = runs / "student-init"
    out = runs / f"{args.worker}-{args.epochs}ep"
    shutil.rmtree(out, ignore_errors=True)  # a timed run always starts fresh
    out.mkdir(parents=True)
    r = (run_textbrewer if args.worker == "textbrewer" else run_kdistill)(args, teacher, student, out)
    test = score(out, args)
    record(Path(args.results), {
        "cell": cell_name(args.worker, args), "toolkit": args.worker, "version": r["version"],
        "epochs": args.epochs, "steps": r["steps"], "batches_per_epoch": r["batches_per_epoch"],
        "train_seconds": r["seconds"], "s_per_epoch": r["seconds"] / args.epochs,
        "steps_per_s": r["steps"] / r["seconds"], "test": test, "test_accuracy": test["accuracy"],
        "objective": r["objective"], "data_seed": r["data_seed"], "model_dir": str(out), "teacher": str(teacher),
        "train_examples": len(load_task_data(data_cfg(args)).splits["train"]),
        "max_train": args.max_train, "max_eval": args.max_eval, "env": env_info(args)})


def cell_name(toolkit: str, args: argparse.Namespace) -> str:
    """Epochs and smoke limits are part of the name, so changing them runs new cells instead of skipping."""
    limits = "".join(f" | {k} {v}" for k, v in (("max-train", args.max_train), ("max-eval", args.max_eval)) if v)
    return f"{toolkit} | {args.epochs} epoch{'s' if args.epochs != 1 else ''}{limits}"


# ---------------------------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--epochs", type=int, default=1, help="whole epochs (TextBrewer takes no fractions)")
    ap.add_argument("--teacher", default=None, help="fine-tuned SST-2 teacher folder (default: core.py's, or "
                    "fine-tune one into RUNS/teacher)")
    ap.add_argument("--teacher-epochs", type=float, default=3, help="when the teacher is fine-tuned here")
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--max-eval", type=int, default=None, help="use only N validation/test examples (smoke runs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in both runs (default: torch's)")
    ap.add_argument("--toolkits", default=",".join(TOOLKITS), help="which runs, in this order")
    ap.add_argument("--results", default=str(HERE / "results" / "peers.jsonl"))
    ap.add_argument("--runs", default=str(HERE / "runs" / "peers"), help="student folders (replaced on each run)")
    ap.add_argument("--worker", choices=TOOLKITS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads = args.threads or torch.get_num_threads()
    if args.worker:
        return worker(args)
    toolkits = [t for t in args.toolkits.split(",") if t]
    if bad := [t for t in toolkits if t not in TOOLKITS]:
        ap.error(f"unknown toolkits {bad}; valid: {', '.join(TOOLKITS)}")
    runs, results = Path(args.runs), Path(args.results)
    done = done_cells(results)
    todo = [t for t in toolkits if cell_name(t, args) not in done]
    new_teacher = not (teacher_dir(args) / "model.safetensors").is_file()
    batches = math.ceil(min(args.max_train or SST2_TRAIN, SST2_TRAIN) / BATCH)
    secs = len(todo) * batches * args.epochs * STEP_S + new_teacher * batches * args.teacher_epochs * TEACHER_STEP_S
    print(f"[bench] {len(todo)} toolkit runs left{' + teacher fine-tune' if new_teacher else ''}: about "
          f"{secs / 60:.0f} min of training on 2 free CPU cores (plus scoring)", flush=True)
    torch.set_num_threads(args.threads)
    teacher = ensure_teacher(args)
    student = ensure_student(teacher, runs)
    if "setup" not in done:
        record(results, {"cell": "setup", "teacher": str(teacher), "teacher_test": score(teacher, args),
                         "student_init": str(student), "pairs": layer_pairs(teacher, student),
                         "student_layers": json.loads((student / "config.json").read_text())
                         .get("kdistill_init", {}).get("layers"),
                         "loss_check": loss_check(teacher, student, runs, args), "env": env_info(args)})
    failed = 0
    for toolkit in todo:
        print(f"[bench] {cell_name(toolkit, args)}", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", toolkit, "--teacher", str(teacher),
               "--device", args.device, "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--results", str(results), "--runs", str(runs)]
        cmd += ["--max-train", str(args.max_train)] if args.max_train else []
        cmd += ["--max-eval", str(args.max_eval)] if args.max_eval else []
        rc = subprocess.run(cmd).returncode
        if rc:
            print(f"[bench] {toolkit} failed (exit {rc})", flush=True)
            failed = rc
    write_table(done_cells(results), results.with_suffix(".md"))
    sys.exit(failed)


def write_table(done: dict[str, dict[str, Any]], path: Path) -> None:
    rows = [r for r in done.values() if r.get("toolkit")]
    setup = done.get("setup", {})
    lines = ["| toolkit | version | epochs | s/epoch | steps/s | SST-2 test acc | kdistill speedup |",
             "|---|---|---|---|---|---|---|"]
    for epochs, n_train in sorted({(r["epochs"], r["train_examples"]) for r in rows}):
        group = {r["toolkit"]: r for r in rows if (r["epochs"], r["train_examples"]) == (epochs, n_train)}
        tb = group.get("textbrewer")
        for name in TOOLKITS:
            if (r := group.get(name)) is None:
                continue
            speedup = (f"{tb['s_per_epoch'] / r['s_per_epoch']:.2f}x" if name != "textbrewer" and tb
                       else "1.00x (baseline)" if name == "textbrewer" and len(group) > 1 else "-")
            label = {"textbrewer": "TextBrewer", GROUPED: "kdistill, `group_by_length: true`"}.get(name, "kdistill")
            lines.append(f"| {label} | {r['version']} | {epochs} | "
                         f"{r['s_per_epoch']:.1f} | {r['steps_per_s']:.2f} | {100 * r['test_accuracy']:.2f}% | "
                         f"{speedup} |")
    if not rows:
        lines.append("| (no runs yet) | | | | | | |")
    first = rows[0] if rows else {}
    env = first.get("env") or setup.get("env") or {}
    check = setup.get("loss_check")
    t_acc = (setup.get("teacher_test") or {}).get("accuracy")
    pairs = ", ".join(f"{s}<-{t}" for s, t in setup.get("pairs", []))
    smoke = first.get("max_train") or first.get("max_eval")
    n_trains = " / ".join(f"{n:,}" for n in sorted({r["train_examples"] for r in rows})) or "-"
    seeds = ", ".join(sorted({f"{r['toolkit']} {r.get('data_seed')}" for r in rows})) or "-"
    where = env.get("cuda") or f"{env.get('cpu_count')} CPU cores ({env.get('cpu')})"
    lines += ["", f"Measured by `python benchmarks/peers.py` on {where}, torch {env.get('torch')}, "
              f"{env.get('threads')} torch threads in both runs"
              + (f"; SMOKE RUN ({first.get('max_train')} train / {first.get('max_eval')} test examples), "
                 "timings mean nothing" if smoke else "") + ".", "",
              "What is matched:", "",
              f"- **Teacher**: `{setup.get('teacher')}`"
              + (f" (test accuracy {100 * t_acc:.2f}%, scored like the students)." if t_acc is not None else "."),
              f"- **Student**: teacher layers {setup.get('student_layers')} (kdistill `build_student`), built once, "
              "saved, and loaded by each run: identical initial weights.",
              f"- **Data**: shipped SST-2, train = {n_trains} examples (after kdistill's "
              f"seeded 10% validation carve), max length {MAX_LENGTH}, dynamic padding, batch {BATCH}, same "
              "collator. Same batches in the same order: TextBrewer's DataLoader gets Accelerate's "
              f"`SeedableRandomSampler` with seed {SEED} (+1 per epoch), which is what kdistill's Accelerate-prepared "
              f"loader uses (sampler seed read back per run: {seeds}).",
              f"- **Soft targets**: kdistill `kl` = KL(p_t || p_s) at T={T:g}, summed over classes, mean over the "
              f"batch, x T^2, weight {KD_WEIGHT:g}. TextBrewer `kd_ce_loss` = soft cross-entropy at T={T:g}, same "
              f"reduction, no T^2, so `kd_loss_weight` = {KD_WEIGHT:g} x T^2 = {KD_WEIGHT * T**2:g}. Soft CE = KL + "
              "teacher entropy (a constant), so the gradients are the same; the loss values differ by "
              f"{KD_WEIGHT * T**2:g} x the teacher's entropy.",
              f"- **Hard labels**: cross-entropy, mean over the batch, weight {CE_WEIGHT:g} in both (TextBrewer: the "
              "model's own `loss` through the adaptor's `losses`, `hard_label_weight` 0.5).",
              f"- **Hidden states**: student layer k <- teacher layer 2k ({pairs}), no embedding pair, weight "
              f"{HIDDEN_WEIGHT:g} each, summed over pairs. Both: squared error over real tokens and all dims / "
              "(real tokens x hidden size) (TextBrewer `hidden_mse` with the adaptor's `inputs_mask` = attention "
              "mask). Same width, so no projection in either.",
              f"- **Optimiser**: AdamW, lr {LR:g}, weight decay 0.01 except biases and LayerNorm, linear warm-up "
              f"over {WARMUP:.0%} of the steps then linear decay, grad-norm clip {CLIP:g} on the student, fp32, "
              f"seed {SEED}.",
              "- **Timing**: `time.perf_counter()` around kdistill's `Distiller.train()` (inside `api.distill`) and "
              "TextBrewer's `GeneralDistiller.train()`: model loading, tokenisation, export and test scoring are "
              "outside. Each toolkit runs in its own Python process, one after the other (kdistill first), with the "
              "same torch thread count. s/epoch = train seconds / epochs.",
              "- **Extras**: validation is off in both (kdistill `eval_every_epoch: false`; TextBrewer has no built-in "
              "evaluation and gets no callback); both final students are scored afterwards by the same kdistill code "
              "(`kdistill.evaluate.score_split`, SST-2 test split). Logging and checkpoints stay at each toolkit's "
              "defaults: kdistill writes TensorBoard every 10 steps and a resumable checkpoint (student, optimizer, "
              "scheduler, RNG) every 200 steps and between epochs; TextBrewer (log_dir None) writes no TensorBoard "
              "and saves the student's state_dict at every epoch end.",
              "", "What differs:", "",
              "- Dropout masks: both start from seed 42, but the two loops draw from the RNG in different orders, so "
              "the masks (and so the final weights) are not bit-identical; accuracy can differ by run-to-run noise.",
              f"- The `{GROUPED}` row is kdistill with `train.group_by_length: true` (Hugging Face Trainer's option of "
              "the same name): each batch holds sentences of similar length, so dynamic padding adds fewer tokens. "
              "Its batches differ from the other two runs' (same examples per epoch, other grouping and order); "
              "the other settings are the same.",
              "- TextBrewer passes the labels to the teacher as well, which then computes a CE loss nobody uses "
              "(negligible).",
              "- torchdistill is compared on paper only: its torchvision dependency has no build for torch 2.13.0."]
    if check:
        lines += ["", f"Loss check (one batch, dropout off, before training): kdistill total "
                  f"{check['kdistill_loss']:.4f}, TextBrewer total {check['textbrewer_loss']:.4f}, difference "
                  f"{check['textbrewer_loss'] - check['kdistill_loss']:.4f} (expected {KD_WEIGHT * T**2:g} x teacher "
                  f"entropy = {check['expected_difference']:.4f}); student gradients: relative difference "
                  f"{check['grad_rel_diff']:.1e}, largest absolute difference {check['max_abs_grad_diff']:.1e} "
                  f"(largest gradient {check['max_abs_grad']:.1e})."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
