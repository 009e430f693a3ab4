"""White-, gray- and black-box distillation, and BiLSTM/CNN students (issue 6): what each kind of access to the
teacher buys, and what a non-transformer student costs and gains, on SST-2 and MRPC. A benchmark, not a test.

Teachers (already fine-tuned, MiniLM-L6): SST-2 `runs/core/teacher` (core.py), MRPC `runs/internal_kd/teacher-mrpc`
(internal_kd.py). Every cell: max length 64 (SST-2) / 128 (MRPC), batch 32, seed 42, 3 epochs, group_by_length,
the validation split kdistill carves from the shipped train file (10%, seed 42) and the shipped test split.

- white-box: 3-layer student (teacher layers 2,4,6), kl(T=2) x 0.5 + ce x 0.5, teacher outputs from the cache;
- gray-box: the same student and loss, the teacher seen only through its probabilities: `kdistill label` of the
  carved training split (probabilities kept, logits dropped), distilled with `teacher_answers`;
- black-box: the same student, ce on the teacher's predicted labels instead of the gold ones (train file written
  from the carved split with the teacher's labels; the same validation and test examples, with gold labels);
- no teacher: the same student, ce on the gold labels;
- bilstm / cnn / bilstm-glove: Tang et al.'s simple students, logit_mse on the teacher's logits (cache), word
  embeddings copied from the teacher (bilstm-glove: GloVe 6B 50d);
- `--augmented TASK=FILE`: the simple students again on the carved split plus FILE's rows (JSONL: text[, text_pair],
  label or label_id), teacher logits from the cache; these cells are skipped when no file is given.

Each finished cell is appended to results/blackbox.jsonl at once and skipped on the next run; a cell cut short
starts over (its run folder is rebuilt), so every train time is one uninterrupted run. `--speed` (after training)
times the architectures on a quiet CPU: other benchmark processes (internal_kd.py) are paused with SIGSTOP for the
timing and always resumed. blackbox.md / blackbox.png are rebuilt after every run.

    python benchmarks/blackbox.py                     # all training cells (~1 h on 2 CPU cores)
    python benchmarks/blackbox.py --speed             # then the latency phase (~5 min)
    python benchmarks/blackbox.py --augmented sst2=aug-sst2.jsonl --augmented mrpc=aug-mrpc.jsonl
    python benchmarks/blackbox.py --report-only       # rebuild blackbox.md / .png from the JSONL
    python benchmarks/blackbox.py --max-train 64 --results /tmp/bb/r.jsonl --runs /tmp/bb/runs   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import DataConfig, DistillConfig, LabelConfig, build  # noqa: E402
from kdistill.data import TaskData, load_task_data  # noqa: E402
from kdistill.models import load_classifier  # noqa: E402
from kdistill.speed import count_parameters, measure_speed, size_on_disk  # noqa: E402

HERE = Path(__file__).resolve().parent
TASKS: dict[str, dict[str, Any]] = {
    "sst2": {"teacher": HERE / "runs" / "core" / "teacher", "max_length": 64, "metric": "accuracy",
             "name": "SST-2"},
    "mrpc": {"teacher": HERE / "runs" / "internal_kd" / "teacher-mrpc", "max_length": 128, "metric": "f1",
             "name": "MRPC"},
}
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
CE = [{"name": "ce"}]
MSE = [{"name": "logit_mse"}]
LR_3L = 5e-5
LR_SIMPLE = 3e-3  # AdamW; picked on validation from 3e-4, 1e-3, 3e-3, 1e-2 (README)
THREE_L = {"init": "teacher_layers", "num_layers": 3}
# Tang et al.: one BiLSTM layer, 300 units each way; the CNN (Kim 2014 style) 256 filters per kernel size 3, 4, 5
SIMPLE: dict[str, dict[str, Any]] = {
    "bilstm": {"init": "bilstm", "hidden_size": 600},
    "cnn": {"init": "cnn", "hidden_size": 256},
    "bilstm-glove": {"init": "bilstm", "hidden_size": 600, "embeddings": "glove-6b-50d"},
}
# cell -> student, losses, lr, how the teacher is reached, training data
CELLS: dict[str, dict[str, Any]] = {
    "white-box": {"arch": "3L", "student": THREE_L, "losses": KD, "lr": LR_3L, "access": "cache", "data": "task"},
    "gray-box": {"arch": "3L", "student": THREE_L, "losses": KD, "lr": LR_3L, "access": "answers", "data": "task"},
    "black-box": {"arch": "3L", "student": THREE_L, "losses": CE, "lr": LR_3L, "access": "labels",
                  "data": "teacher-labels"},
    "no teacher": {"arch": "3L", "student": THREE_L, "losses": CE, "lr": LR_3L, "access": "none", "data": "task"},
    **{name: {"arch": name, "student": spec, "losses": MSE, "lr": LR_SIMPLE, "access": "cache", "data": "task"}
       for name, spec in SIMPLE.items()},
    **{f"{name} +aug": {"arch": name, "student": spec, "losses": MSE, "lr": LR_SIMPLE, "access": "cache",
                        "data": "augmented"} for name, spec in SIMPLE.items()},
}
ACCESS = {"cache": "logits (white-box, cached)", "answers": "probabilities (gray-box)",
          "labels": "labels only (black-box)", "none": "none (gold labels)"}
ARCHS = {"teacher": "teacher (MiniLM-L6-H384)", "3L": "3L-384 (teacher layers 2,4,6)",
         "bilstm": "BiLSTM 300x2 (teacher embeddings)", "cnn": "CNN 3x256 (teacher embeddings)",
         "bilstm-glove": "BiLSTM 300x2 (GloVe 50d)"}
SPEED_FROM = {"3L": "white-box", "bilstm": "bilstm", "cnn": "cnn", "bilstm-glove": "bilstm-glove"}


def slug(text: str) -> str:
    return re.sub(r"-+", "-", "".join(c if c.isalnum() else "-" for c in text.lower())).strip("-")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def split_rows(data: TaskData, split: str, labels: list[int] | None = None) -> list[dict[str, Any]]:
    """One split as GLUE-named JSONL rows (what kdistill's file reader and `kdistill label` both read)."""
    ds = data.splits[split]
    a, gold = ds["text_a"], ds["label"]
    b = ds["text_b"] if data.is_pair else None
    labels = gold if labels is None else labels
    if data.is_pair:
        return [{"sentence1": x, "sentence2": y, "label": int(lab)} for x, y, lab in zip(a, b, labels, strict=True)]
    return [{"sentence": x, "label": int(lab)} for x, lab in zip(a, labels, strict=True)]


class TaskFiles:
    """The carved splits of one task as files: the input to label, and the black-box / augmented train files."""

    def __init__(self, task: str, folder: Path, max_train: int | None, max_eval: int | None, device: str) -> None:
        self.task, self.folder, self.max_train, self.max_eval, self.device = task, folder, max_train, max_eval, device
        self.spec = TASKS[task]
        self.data = load_task_data(DataConfig(task=task, max_length=self.spec["max_length"],
                                              max_train_examples=max_train, max_eval_examples=max_eval))
        folder.mkdir(parents=True, exist_ok=True)
        self.train = write_jsonl(folder / "train.jsonl", split_rows(self.data, "train"))
        self.validation = write_jsonl(folder / "validation.jsonl", split_rows(self.data, "validation"))
        self.test = write_jsonl(folder / "test.jsonl", split_rows(self.data, "test"))
        self._labels: dict[str, Any] | None = None

    def task_data(self) -> dict[str, Any]:
        return {"task": self.task, "max_length": self.spec["max_length"], "max_train_examples": self.max_train,
                "max_eval_examples": self.max_eval}

    def sizes(self) -> dict[str, int]:
        return {f"n_{k}": len(v) for k, v in self.data.splits.items()}

    def _files(self, train: Path) -> dict[str, Any]:
        cfg = {"task": None, "train_file": str(train), "validation_file": str(self.validation),
               "test_file": str(self.test), "label_names": self.data.label_names, "metric": self.spec["metric"],
               "max_length": self.spec["max_length"]}
        files = load_task_data(build(DataConfig, cfg))  # the same validation and test examples as the task cells
        for split in ("validation", "test"):
            if files.splits[split].to_dict() != self.data.splits[split].to_dict():
                raise SystemExit(f"{self.task}: the {split} split read back from {self.folder} differs from the task's")
        return cfg

    def labels(self) -> dict[str, Any]:
        """The teacher's answers on the carved training split: once per task, reused by gray- and black-box."""
        if self._labels is not None:
            return self._labels
        raw, answers = self.folder / "teacher-labeled.jsonl", self.folder / "teacher-probs.jsonl"
        t0 = time.perf_counter()
        info = api.label(LabelConfig(teacher=str(self.spec["teacher"]), input=str(self.train), out=str(raw),
                                     max_length=self.spec["max_length"], batch_size=64, device=self.device))
        seconds = time.perf_counter() - t0
        rows = [json.loads(line) for line in raw.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(rows) != len(self.data.splits["train"]):
            raise SystemExit(f"{self.task}: labeled {len(rows)} rows of {len(self.data.splits['train'])}")
        for r in rows:
            r.pop("logits", None)  # gray-box: the teacher is seen through its (rounded) probabilities only
        write_jsonl(answers, rows)
        teacher_ids = [r["label_id"] for r in rows]
        gold = self.data.splits["train"]["label"]
        black = write_jsonl(self.folder / "train-teacher-labels.jsonl",
                            split_rows(self.data, "train", labels=teacher_ids))
        self._labels = {"answers": str(answers), "black_box_data": self._files(black), "label_seconds": seconds,
                        "examples_per_second": info["examples_per_second"],
                        "agreement_with_gold": sum(t == g for t, g in zip(teacher_ids, gold, strict=True)) / len(gold)}
        return self._labels

    def augmented(self, path: str) -> dict[str, Any]:
        """The carved training split plus the augmented rows (rows that repeat a validation/test example dropped)."""
        held_out = {tuple(r.values())[:-1] for split in ("validation", "test") for r in split_rows(self.data, split)}
        names = [n.lower() for n in self.data.label_names]
        extra, dropped = [], 0
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            label = row.get("label_id")
            if label is None:
                label = names.index(str(row["label"]).lower()) if str(row.get("label")).lower() in names else None
            if label is None or "text" not in row or (self.data.is_pair and row.get("text_pair") is None):
                raise SystemExit(f"{path} line {n}: expected text{'/text_pair' if self.data.is_pair else ''} and a "
                                 "label or label_id of this task")
            texts = (row["text"], row["text_pair"]) if self.data.is_pair else (row["text"],)
            if texts in held_out:
                dropped += 1
                continue
            keys = ("sentence1", "sentence2") if self.data.is_pair else ("sentence",)
            extra.append({**dict(zip(keys, texts, strict=True)), "label": int(label)})
        train = write_jsonl(self.folder / "train-augmented.jsonl", split_rows(self.data, "train") + extra)
        return {"data": self._files(train), "augmented_rows": len(extra), "dropped_held_out": dropped,
                "augment_file": str(path)}


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def teacher_row(task: str) -> dict[str, Any]:
    folder = TASKS[task]["teacher"]
    summary = json.loads((folder / "metrics.json").read_text())
    key = TASKS[task]["metric"]
    return {"cell": f"{task} | teacher", "task": task, "kind": "teacher", "arch": "teacher", "metric": key,
            "value": summary["test"][key], "test": summary["test"], "params": summary["params"],
            "model_dir": str(folder), "wall_seconds": summary.get("wall_seconds")}


def train_cells(args: argparse.Namespace, results: Path, runs: Path, augmented: dict[str, str]) -> None:
    env = environment()
    done = done_cells(results)
    for task in args.tasks:
        spec = TASKS[task]
        if not (spec["teacher"] / "model.safetensors").is_file():
            print(f"[blackbox] no teacher in {spec['teacher']}: skipping {task}", flush=True)
            continue
        if f"{task} | teacher" not in done:
            record(results, teacher_row(task))
            done = done_cells(results)
        t_value = done[f"{task} | teacher"]["value"]
        files: TaskFiles | None = None
        for name, cell in CELLS.items():
            key = f"{task} | {name}"
            if key in done or (args.cells and name not in args.cells):
                continue
            if cell["data"] == "augmented" and task not in augmented:
                print(f"[blackbox] {key}: skipped (no --augmented {task}=FILE)", flush=True)
                continue
            files = files or TaskFiles(task, runs / "data" / task, args.max_train, args.max_eval, args.device)
            extra: dict[str, Any] = files.sizes()
            data = files.task_data()
            cfg: dict[str, Any] = {"teacher": str(spec["teacher"]), "student": cell["student"],
                                   "losses": cell["losses"]}
            if cell["access"] == "cache":
                cfg["teacher_cache"] = True
            elif cell["access"] == "answers":
                lab = files.labels()
                cfg["teacher_answers"] = lab["answers"]
                extra.update({k: lab[k] for k in ("label_seconds", "examples_per_second", "agreement_with_gold")})
            if cell["data"] == "teacher-labels":
                lab = files.labels()
                data = {**lab["black_box_data"], "max_train_examples": args.max_train}
                extra.update({k: lab[k] for k in ("label_seconds", "examples_per_second", "agreement_with_gold")})
            elif cell["data"] == "augmented":
                aug = files.augmented(augmented[task])
                data = {**aug.pop("data"), "max_train_examples": None}  # every augmented row, --max-train or not
                extra.update(aug, n_train=extra["n_train"] + aug["augmented_rows"])
            out = runs / f"{task}-{slug(name)}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh run: a resumed one would not give a train time
            train = {"epochs": args.epochs, "batch_size": 32, "lr": cell["lr"], "seed": 42, "device": args.device,
                     "group_by_length": True, "save_steps": 100_000, "progress": False}
            dcfg = build(DistillConfig, {**cfg, "data": data, "train": train, "out": str(out)})
            print(f"[blackbox] {key}: training ({dcfg.student.init}, {[x['name'] for x in cell['losses']]}, "
                  f"lr {cell['lr']:g})", flush=True)
            t0, load0 = time.perf_counter(), list(os.getloadavg())
            s = api.distill(dcfg)
            metric = spec["metric"]
            value = s["test"][metric]
            cache = s.get("teacher_cache") or {}
            init = json.loads((out / "config.json").read_text()).get("kdistill_init")
            record(results, {"cell": key, "task": task, "kind": name, "arch": cell["arch"], "access": cell["access"],
                             "data_kind": cell["data"], "metric": metric, "value": value, "retention": value / t_value,
                             "test": s["test"],
                             "validation": s["validation"], "best_epoch": s["best_epoch"], "params": s["params"],
                             "train_seconds": s["wall_seconds"], "wall_seconds": time.perf_counter() - t0,
                             "steps": s["steps"], "cache_build_seconds": cache.get("build_seconds"),
                             "student": cell["student"], "student_init": init, "losses": cell["losses"],
                             "lr": cell["lr"], "epochs": args.epochs, "max_train": args.max_train,
                             "max_eval": args.max_eval,
                             "model_dir": str(out), "device": args.device, "env": env,
                             "load_avg_start": load0, "load_avg_end": list(os.getloadavg()), **extra})
            done = done_cells(results)


def other_benchmarks() -> list[int]:
    """Process ids of internal_kd.py runs (not this process nor its parents, whose command lines may name it)."""
    try:
        found = subprocess.run(["pgrep", "-f", "internal_kd.py"], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        return []
    mine, pid = set(), os.getpid()
    while pid > 1:
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return [int(p) for p in found if int(p) not in mine]


@contextlib.contextmanager
def quiet_cpu() -> Iterator[list[int]]:
    """Pause other benchmark processes (SIGSTOP) for a timing and always resume them (SIGCONT), even on SIGTERM."""
    paused: list[int] = []
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally clause below runs
    try:
        for pid in other_benchmarks():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                paused.append(pid)
        if paused:
            print(f"[blackbox] paused {paused} (internal_kd.py) for the timing", flush=True)
            time.sleep(2)
        yield paused
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if paused:
            print(f"[blackbox] resumed {paused}", flush=True)
        signal.signal(signal.SIGTERM, old)


def speed_cells(args: argparse.Namespace, results: Path) -> None:
    """Latency per architecture at batch 1 and 32, length 64, on the SST-2 models (MRPC's share the shapes)."""
    env = environment()
    done = done_cells(results)
    archs = {"teacher": str(TASKS["sst2"]["teacher"])}
    for arch, cell in SPEED_FROM.items():
        row = done.get(f"sst2 | {cell}")
        if row is None:
            print(f"[blackbox] speed | {arch}: no trained sst2 '{cell}' model yet; skipped", flush=True)
            continue
        archs[arch] = row["model_dir"]
    todo = {a: p for a, p in archs.items() if f"speed | {a}" not in done}
    if not todo:
        return
    with quiet_cpu() as paused:
        for arch, path in todo.items():
            model = load_classifier(path)
            speed = measure_speed(model, batch_sizes=(1, 32), seq_length=64, warmup=10, repeats=args.repeats,
                                  device="cuda" if args.device == "cuda" else "cpu")
            record(results, {"cell": f"speed | {arch}", "arch": arch, "model_dir": path,
                             "params": count_parameters(model), "size_bytes": size_on_disk(path),
                             "speed": [s.to_dict() for s in speed], "repeats": args.repeats,
                             "paused_others": paused, "env": env})
            print(f"[blackbox] speed | {arch}: " + ", ".join(f"bs {s.batch_size} {s.p50_ms:.2f} ms" for s in speed),
                  flush=True)


# ------------------------------------------------------------------------------------------------ report


def _speed(done: dict[str, dict[str, Any]]) -> dict[str, dict[int, float]]:
    return {r["arch"]: {s["batch_size"]: s["p50_ms"] for s in r["speed"]}
            for k, r in done.items() if k.startswith("speed |")}


def busy(r: dict[str, Any]) -> str:
    """' *' when the machine was loaded beyond its cores at the end of the cell (a 5-minute load average)."""
    load, cores = r.get("load_avg_end"), (r.get("env") or {}).get("cpu_count") or 1
    return " *" if load and load[1] > cores + 1 else ""


def write_report(done: dict[str, dict[str, Any]], md: Path, png: Path) -> None:
    speed = _speed(done)
    t_speed = speed.get("teacher", {})
    lines = ["# White-, gray- and black-box distillation, BiLSTM/CNN students (issue 6)", ""]
    for task, spec in TASKS.items():
        rows = [r for k, r in done.items() if r.get("task") == task]
        if not rows:
            continue
        lines += [f"## {spec['name']} (test {spec['metric']})", "",
                  f"| cell | student | teacher seen through | test {spec['metric']} | retention | params (M) | "
                  "latency bs=1 (ms) | latency bs=32 (ms) | speedup bs=1 / bs=32 | train wall (min) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        order = ["teacher", *CELLS]
        rows.sort(key=lambda r: order.index(r["kind"]))
        for r in rows:
            sp = speed.get(r["arch"], {})
            lat = [f"{sp[b]:.2f}" if b in sp else "-" for b in (1, 32)]
            up = (f"{t_speed[1] / sp[1]:.1f}x / {t_speed[32] / sp[32]:.1f}x" if sp and t_speed else "-")
            access = "-" if r["kind"] == "teacher" else ACCESS[r["access"]]
            ret = "100%" if r["kind"] == "teacher" else f"{100 * r['retention']:.1f}%"
            wall = "-" if r["kind"] == "teacher" else f"{r['train_seconds'] / 60:.1f}" + busy(r)
            name = r["kind"] + (f" ({r['augmented_rows']:,} extra rows)" if r.get("augmented_rows") else "")
            lines.append(f"| {name} | {ARCHS[r['arch']]} | {access} | {100 * r['value']:.2f} | {ret} | "
                         f"{r['params'] / 1e6:.1f} | {lat[0]} | {lat[1]} | {up} | {wall} |")
        notes = []
        gray = done.get(f"{task} | gray-box") or done.get(f"{task} | black-box")
        if gray and gray.get("agreement_with_gold") is not None:
            notes.append(f"The teacher's labels agree with the gold labels on {100 * gray['agreement_with_gold']:.1f}% "
                         f"of the carved training split; labelling it (`kdistill label`) took "
                         f"{gray['label_seconds']:.0f} s, not counted in the train wall.")
        builds = [r["cache_build_seconds"] for r in rows if r.get("cache_build_seconds")]
        if builds:
            notes.append(f"The cells with cached logits built the teacher-logit cache first ({min(builds):.0f}-"
                         f"{max(builds):.0f} s, not counted in the train wall).")
        lines += ["", *notes, ""] if notes else [""]
    sp_rows = [r for k, r in done.items() if k.startswith("speed |")]
    if sp_rows:
        lines += ["## Size and speed per architecture", "",
                  "| architecture | params (M) | size on disk (MB) | latency bs=1 (ms) | latency bs=32 (ms) | "
                  "speedup bs=1 / bs=32 |", "|---|---|---|---|---|---|"]
        for r in sorted(sp_rows, key=lambda r: list(ARCHS).index(r["arch"])):
            sp = speed[r["arch"]]
            up = f"{t_speed[1] / sp[1]:.1f}x / {t_speed[32] / sp[32]:.1f}x" if t_speed else "-"
            lines.append(f"| {ARCHS[r['arch']]} | {r['params'] / 1e6:.1f} | {r['size_bytes'] / 1e6:.1f} | "
                         f"{sp[1]:.2f} | {sp[32]:.2f} | {up} |")
        lines.append("")
    lines += ["## How it was measured", "", method_paragraph(done), ""]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines))
    print("\n".join(lines))
    write_plot(done, png)


def method_paragraph(done: dict[str, dict[str, Any]]) -> str:
    trained = [r for r in done.values() if r.get("train_seconds") is not None]
    env = (trained[0] if trained else next(iter(done.values()), {})).get("env", {})
    parts = []
    for task, spec in TASKS.items():
        r = next((r for r in trained if r["task"] == task and r.get("n_train") and r["data_kind"] != "augmented"), None)
        if r:
            parts.append(f"{spec['name']}: {r['n_train']:,} training, {r['n_validation']:,} validation and "
                         f"{r['n_test']:,} test examples")
    sizes = "; ".join(parts) or "(no cell trained yet)"
    lr_simple = ", ".join(f"{x:g}" for x in sorted({r["lr"] for r in trained if r["arch"] not in ("3L",)})) or "-"
    epochs = ", ".join(f"{e:g}" for e in sorted({r["epochs"] for r in trained})) or "3"
    sp = next((r for k, r in done.items() if k.startswith("speed |")), None)
    sp_env = sp["env"] if sp else env
    pids = sorted({p for r in done.values() if r.get("cell", "").startswith("speed |") for p in r["paused_others"]})
    paused = f"paused: {pids}" if pids else "none was running"
    gpu = f", {env['cuda']}" if env.get("cuda") else ""
    smoke = any(r.get("max_train") for r in trained)
    return (
        f"Measured by `python benchmarks/blackbox.py` (training) and `python benchmarks/blackbox.py --speed` on "
        f"{env.get('cpu_count')} CPU cores (torch {env.get('torch')}, {env.get('threads')} torch threads{gpu}), one "
        "cell after the other in one process."
        + (" **Smoke run: only the first --max-train training examples.**" if smoke else "")
        + f" Data: the shipped SST-2 and MRPC files; kdistill carves 10% of each train file for validation (seed 42), "
        f"leaving {sizes}; the best epoch is picked on validation (gold labels in every cell) and the shipped test "
        "split is scored once. "
        f"Max length 64 (SST-2) / 128 (MRPC), batch 32, {epochs} epochs, AdamW (weight decay 0.01) with 10% "
        "warm-up, seed 42, "
        f"train.group_by_length. Learning rates: {LR_3L:g} for the 3-layer student, {lr_simple} for the BiLSTM/CNN "
        "students (whose teacher-copied or GloVe embeddings are trained too). Teachers: MiniLM-L6 fine-tuned by "
        "core.py (SST-2, max length 64) and internal_kd.py (MRPC, max length 128). Gray-box: `kdistill label` on "
        "the carved training split, probabilities rounded to 6 decimals, logits dropped; black-box: the argmax of "
        "the same answers as the training label. Train wall is the distiller's train loop (per-epoch validation "
        "included; the teacher-cache build and the labelling are not), wall-clock on a machine that other jobs "
        "could share. A train wall marked * ended at a 5-minute load average above cores + 1 (recorded by the "
        "script, or for the first full run read with uptime, see each row's load_note): other jobs shared the "
        "cores and it is inflated; the other cells of the first run ran at a load of about 2 (uptime readings "
        "between cells). For the teacher cache's own cost and speedup, measured on a "
        "quiet machine, see [teacher_cache.md](teacher_cache.md). Latency: median of "
        f"{sp['repeats'] if sp else 30} timed forward passes after 10 warm-up passes, random full-length inputs of "
        f"64 tokens, batch 1 and 32, PyTorch on CPU with {sp_env.get('threads')} threads; any internal_kd.py "
        f"process is paused (SIGSTOP) for the timing ({paused}). Timings are per architecture, measured on the "
        "SST-2 models; the MRPC models have the same shapes (and MRPC inputs are up to 128 tokens, so its real "
        "latencies are higher). "
        "Retention is the student's test metric / the teacher's.")


def write_plot(done: dict[str, dict[str, Any]], path: Path) -> None:
    speed = _speed(done)
    t_speed = speed.get("teacher", {})
    if not t_speed:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(r.get("task") == t for r in done.values())]
    kinds = ["teacher", *CELLS]
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 5.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = sorted((r for r in done.values() if r.get("task") == task and r["arch"] in speed),
                      key=lambda r: kinds.index(r["kind"]))
        for r in rows:
            i = kinds.index(r["kind"])
            marker = {"teacher": "*", "3L": "o"}.get(r["arch"], "s" if "+aug" not in r["kind"] else "D")
            ax.scatter([t_speed[1] / speed[r["arch"]][1]], [100 * r["value"]], marker=marker,
                       s=140 if marker == "*" else 50, color=colors[i % len(colors)], label=r["kind"], alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("speedup vs teacher at batch 1, length 64 (CPU, log scale)")
        ax.set_ylabel(f"test {TASKS[task]['metric']} (%)")
        ax.set_title(TASKS[task]["name"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Teacher access and student type: quality vs CPU speed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tasks", default="sst2,mrpc", help="comma-separated: sst2, mrpc")
    ap.add_argument("--cells", default=None, help="comma-separated cell names (default: all)")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--max-eval", type=int, default=None, help="use only N validation and test examples (smoke)")
    ap.add_argument("--augmented", action="append", default=[], metavar="TASK=FILE",
                    help="extra training rows for the BiLSTM/CNN students (repeatable)")
    ap.add_argument("--speed", action="store_true", help="the latency phase (after training), on a quiet CPU")
    ap.add_argument("--lr-simple", type=float, default=LR_SIMPLE, help="learning rate of the BiLSTM/CNN cells")
    ap.add_argument("--repeats", type=int, default=30, help="timed passes per batch size (--speed)")
    ap.add_argument("--report-only", action="store_true", help="only rebuild blackbox.md / blackbox.png")
    ap.add_argument("--runs", default=str(HERE / "runs" / "blackbox"), help="run folders (rebuilt per cell)")
    ap.add_argument("--results", default=str(HERE / "results" / "blackbox.jsonl"))
    args = ap.parse_args()
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.cells = [c.strip() for c in args.cells.split(",")] if args.cells else None
    bad = [t for t in args.tasks if t not in TASKS] + [c for c in args.cells or [] if c not in CELLS]
    if bad:
        sys.exit(f"unknown task or cell: {bad} (tasks {list(TASKS)}, cells {list(CELLS)})")
    augmented: dict[str, str] = {}
    for item in args.augmented:
        task, sep, path = item.partition("=")
        if not sep or task not in TASKS or not Path(path).is_file():
            sys.exit(f"--augmented takes TASK=FILE with an existing file, TASK in {list(TASKS)}: {item!r}")
        augmented[task] = path
    for cell in CELLS.values():
        if cell["lr"] == LR_SIMPLE:
            cell["lr"] = args.lr_simple
    results, runs = Path(args.results), Path(args.runs)
    if not args.report_only:
        if args.speed:
            speed_cells(args, results)
        else:
            train_cells(args, results, runs, augmented)
    done = done_cells(results)
    if done:
        write_report(done, results.with_suffix(".md"), results.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
