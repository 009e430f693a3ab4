"""LLM-style teacher behind a chat-completions API (issue 21): what labels, logprobs and generated examples from a
black-box chat teacher buy a 3-layer student on SST-2. A benchmark, not a test.

The teacher is all-MiniLM-L6-v2 fine-tuned on SST-2 (benchmarks/runs/pareto/minilm-sst2/teacher when pareto.py has
finished it, else fine-tuned here first: lr 5e-5, 3 epochs, like pareto.py's TEACHERS["minilm"]), served by
benchmarks/llm_server.py on 127.0.0.1 as an OpenAI-compatible chat model: it answers the label word, with the label
tokens' log-probabilities when asked. Its "writer" is a transparent stand-in (an encoder cannot write): it rewrites
training sentences of the asked label by GloVe word replacement (see llm_server.py). kdistill reaches it only
through `kdistill label` / `kdistill generate` with `--teacher openai:http://127.0.0.1:PORT/v1`.

Students: 3 layers copied from the teacher's layers 2, 4, 6 (the core table's 3L-384), seed 42, 3 epochs, lr 5e-5,
batch 32, max length 64, group_by_length; best epoch on the gold-labelled validation split (the 10% kdistill carves
from the shipped train file), scored once on the shipped test split.

- (a) gold labels: ce on the gold labels (no teacher);
- (b) teacher labels (black box): ce on the labels `kdistill label` got from the chat API;
- (c) (b) + logprob soft targets (gray box): kl(T=2) x 0.5 + ce x 0.5 on the same stored answers (`teacher_answers`);
- (d) (c) + generated examples: `kdistill generate --relabel true` (N per label asked), labelled again for their
  probabilities, added to (c)'s training rows.

Each finished step (labelling, generation) and cell is one line of results/llm_teacher.jsonl, appended at once and
skipped on a rerun; `kdistill label` and `kdistill generate` themselves resume an interrupted step without asking
the server again for what it answered. llm_teacher.md is rebuilt from the JSONL after every run.

    python benchmarks/llm_teacher.py                   # everything (45 min on 2 busy CPU cores, teacher reused)
    python benchmarks/llm_teacher.py --report-only     # rebuild llm_teacher.md
    python benchmarks/llm_teacher.py --max-train 200 --max-eval 100 --epochs-scale 0.05 --per-label 20 \\
        --no-relabel --results /tmp/llm/r.jsonl --runs /tmp/llm/runs   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.atomic import atomic_write_text  # noqa: E402
from kdistill.config import DataConfig, DistillConfig, FinetuneConfig, GenerateConfig, LabelConfig, build  # noqa: E402
from kdistill.data import TaskData, load_task_data  # noqa: E402
from kdistill.generate import normalise  # noqa: E402

HERE = Path(__file__).resolve().parent
PARETO_TEACHER = HERE / "runs" / "pareto" / "minilm-sst2" / "teacher"
LABELS = ["negative", "positive"]
MAX_LENGTH = 64
SERVED = "minilm-sst2-as-llm"
LR = 5e-5
STUDENT = {"init": "teacher_layers", "num_layers": 3}
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
CE = [{"name": "ce"}]
CELLS: dict[str, dict[str, Any]] = {
    "(a) gold labels": {"losses": CE, "labels": "gold", "soft": False, "generated": False,
                        "signal": "gold labels (ce), no teacher"},
    "(b) teacher labels": {"losses": CE, "labels": "teacher", "soft": False, "generated": False,
                           "signal": "the chat teacher's label words (ce): black box"},
    "(c) labels + logprobs": {"losses": KD, "labels": "teacher", "soft": True, "generated": False,
                              "signal": "label words + label-token logprobs (kl T=2 x 0.5 + ce x 0.5): gray box"},
    "(d) (c) + generated": {"losses": KD, "labels": "teacher", "soft": True, "generated": True,
                            "signal": "(c) on the training split plus generated, relabelled examples"},
}


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def finished_teacher(folder: Path) -> bool:
    """A finished `kdistill finetune` of all-MiniLM-L6-v2 on the shipped SST-2 at max length 64."""
    if not (folder / "metrics.json").is_file() or not (folder / "kdistill.yaml").is_file():
        return False
    cfg = yaml.safe_load((folder / "kdistill.yaml").read_text())
    return (str(cfg.get("model")) in ("minilm", "sentence-transformers/all-MiniLM-L6-v2")
            and cfg["data"]["task"] == "sst2" and cfg["data"]["max_length"] == MAX_LENGTH
            and not cfg["data"].get("train_file") and not cfg["data"].get("max_train_examples"))


class Run:
    """One benchmark run: the carved splits as files, the teacher, the chat server (started when first needed)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.runs, self.results = args, Path(args.runs), Path(args.results)
        self.done = done_cells(self.results)
        self.env = environment()
        self.data: TaskData = load_task_data(DataConfig(task="sst2", max_length=MAX_LENGTH,
                                                        max_train_examples=args.max_train,
                                                        max_eval_examples=args.max_eval))
        folder = self.runs / "data"
        self.files = {split: jsonl(folder / f"{split}.jsonl", self.rows(split)) for split in self.data.splits}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def rows(self, split: str, labels: list[int] | None = None) -> list[dict[str, Any]]:
        ds = self.data.splits[split]
        labels = ds["label"] if labels is None else labels
        return [{"sentence": t, "label": int(y)} for t, y in zip(ds["text_a"], labels, strict=True)]

    def files_data(self, train: Path, augment: Path | None = None) -> dict[str, Any]:
        """A data config over files: `train`, and the task's own validation and test examples (checked)."""
        cfg = {"task": None, "train_file": str(train), "validation_file": str(self.files["validation"]),
               "test_file": str(self.files["test"]), "label_names": LABELS, "metric": "accuracy",
               "max_length": MAX_LENGTH, "augment_file": str(augment) if augment else None}
        back = load_task_data(build(DataConfig, cfg))
        for split in ("validation", "test"):
            if back.splits[split].to_dict() != self.data.splits[split].to_dict():
                raise SystemExit(f"the {split} split read back from {self.files[split]} differs from the task's")
        return cfg

    def save(self, row: dict[str, Any]) -> dict[str, Any]:
        record(self.results, row)
        self.done = done_cells(self.results)
        return row

    # ---- teacher and server ----------------------------------------------------------------------------------
    def teacher(self) -> dict[str, Any]:
        if "teacher" in self.done:
            return self.done["teacher"]
        found = [Path(self.args.teacher)] if self.args.teacher else [PARETO_TEACHER, self.runs / "teacher"]
        folder = next((f for f in found if finished_teacher(f)), None)
        t0, source = time.perf_counter(), "reused"
        if folder is None:
            if self.args.teacher:
                raise SystemExit(f"--teacher {self.args.teacher}: not a finished SST-2 MiniLM fine-tune")
            folder, source = self.runs / "teacher", "fine-tuned here"
            api.finetune(build(FinetuneConfig, {
                "model": "minilm", "out": str(folder),
                "data": {"task": "sst2", "max_length": MAX_LENGTH, "max_train_examples": self.args.max_train,
                         "max_eval_examples": self.args.max_eval},
                "train": {"epochs": 3 * self.args.epochs_scale, "lr": 5e-5, "batch_size": 32, "seed": 42,
                          "device": self.args.device, "save_steps": 100, "group_by_length": True}}))
        m = json.loads((folder / "metrics.json").read_text())
        return self.save({"cell": "teacher", "model_dir": str(folder), "source": source,
                          "test_accuracy": m["test"]["accuracy"], "params": m["params"],
                          "finetune_seconds": m.get("wall_seconds"), "seconds_here": time.perf_counter() - t0,
                          "env": self.env})

    def server(self) -> str:
        if self.proc is None:
            cmd = [sys.executable, str(HERE / "llm_server.py"), "--model", self.teacher()["model_dir"],
                   "--name", SERVED, "--pool", str(self.files["train"]), "--port", str(self.args.port)]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            if not line.startswith("listening on "):
                raise SystemExit(f"llm_server.py did not start (said {line!r})")
            self.url = line.split()[-1]
            print(f"[llm] chat server at {self.url}", flush=True)
        return self.url

    def stats(self) -> dict[str, float]:
        with urllib.request.urlopen(self.server() + "/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    # ---- steps: labelling and generation through the chat API ------------------------------------------------
    def step(self, name: str, fn: Any) -> dict[str, Any]:
        """Run `fn` once (skipped when recorded), counting the requests the server answered meanwhile."""
        key = f"step | {name}"
        if key in self.done:
            return self.done[key]
        before, t0 = self.stats(), time.perf_counter()
        info = fn()
        seconds, after = time.perf_counter() - t0, self.stats()
        requests = {k: int(after[k] - before[k]) for k in ("classify", "write", "bad_request")}
        passes = int(after["forward_passes"] - before["forward_passes"])
        # answers kept from an interrupted earlier run were requests too (kdistill reuses them, the server forgot)
        total = sum(requests.values()) + int(info.get("reused", 0))
        return self.save({"cell": key, "seconds": seconds, "requests": requests, "requests_total": total,
                          "forward_passes": passes,
                          "server_seconds": {
            k: after[f"{k}_seconds"] - before[f"{k}_seconds"] for k in ("classify", "write")}, **info,
            "env": self.env})

    def label(self, name: str, path: Path, out: Path, gold: list[int] | None) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            info = api.label(LabelConfig(teacher=f"openai:{self.server()}", teacher_model=SERVED, input=str(path),
                                         out=str(out), label_names=LABELS, batch_size=8,
                                         concurrency=self.args.concurrency, timeout=60))
            ids = [r["label_id"] for r in read_jsonl(out)]
            row = {"out": str(out), "rows": len(ids), "concurrency": self.args.concurrency,
                   "with_probs": sum("probs" in r for r in read_jsonl(out)),
                   "reused": info["reused"], "label_shares": {n: ids.count(i) / len(ids) for i, n in
                                                             enumerate(LABELS)}}
            if gold is not None:
                row["agreement_with_gold"] = sum(a == b for a, b in zip(ids, gold, strict=True)) / len(gold)
            return row
        return self.step(name, go)

    def train_answers(self) -> dict[str, Any]:
        gold = [int(y) for y in self.data.splits["train"]["label"]]
        return self.label("label train", self.files["train"], self.runs / "answers" / "train.jsonl", gold)

    def generated(self) -> tuple[dict[str, Any], dict[str, Any]]:
        out = self.runs / "generated" / "generated.jsonl"

        def go() -> dict[str, Any]:
            info = api.generate(GenerateConfig(teacher=f"openai:{self.server()}", teacher_model=SERVED,
                                               label_names=LABELS, out=str(out), per_label=self.args.per_label,
                                               per_request=self.args.per_request, relabel=self.args.relabel, seed=42,
                                               progress=False))
            texts = {normalise(r["text"]) for r in read_jsonl(out)}
            overlap = {split: len(texts & {normalise(t) for t in self.data.splits[split]["text_a"]})
                       for split in self.data.splits}
            return {**{k: info[k] for k in ("out", "asked", "reused", "candidates", "kept", "rejected")},
                    "same_text_as": overlap, "relabel": self.args.relabel, "per_label": self.args.per_label,
                    "per_request": self.args.per_request}

        gen = self.step("generate", go)
        lab = self.label("label generated", out, self.runs / "answers" / "generated.jsonl", None)
        return gen, lab

    # ---- students --------------------------------------------------------------------------------------------
    def student(self, name: str, cell: dict[str, Any]) -> None:
        if name in self.done:
            return
        teacher = self.teacher()
        steps: list[dict[str, Any]] = []
        cfg: dict[str, Any] = {"teacher": teacher["model_dir"], "student": STUDENT, "losses": cell["losses"]}
        data: dict[str, Any] = {"task": "sst2", "max_length": MAX_LENGTH, "max_train_examples": self.args.max_train,
                                "max_eval_examples": self.args.max_eval}
        n_generated = 0
        if cell["labels"] == "teacher":
            lab = self.train_answers()
            steps.append(lab)
            answers = read_jsonl(Path(lab["out"]))
            train = jsonl(self.runs / "data" / "train-teacher-labels.jsonl",
                          self.rows("train", [r["label_id"] for r in answers]))
            augment = None
            if cell["generated"]:
                gen, glab = self.generated()
                steps += [gen, glab]
                augment = Path(gen["out"])
                n_generated = len(read_jsonl(augment))
                answers = answers + read_jsonl(Path(glab["out"]))
            data = self.files_data(train, augment)
            if cell["soft"]:
                cfg["teacher_answers"] = str(jsonl(self.runs / "answers" / f"{name[:3].strip('()')}-answers.jsonl",
                                                   answers))
        out = self.runs / "students" / name[:3].strip("()")
        shutil.rmtree(out, ignore_errors=True)  # a fresh run: a resumed one would not give a train time
        train_cfg = {"epochs": 3 * self.args.epochs_scale, "batch_size": 32, "lr": LR, "seed": 42,
                     "device": self.args.device, "group_by_length": True, "save_steps": 100_000, "progress": False}
        dcfg = build(DistillConfig, {**cfg, "data": data, "train": train_cfg, "out": str(out)})
        print(f"[llm] {name}: training", flush=True)
        load0, t0 = list(os.getloadavg()), time.perf_counter()
        s = api.distill(dcfg)
        acc = s["test"]["accuracy"]
        self.save({"cell": name, "signal": cell["signal"], "losses": cell["losses"], "test_accuracy": acc,
                   "teacher_accuracy": teacher["test_accuracy"], "retention": acc / teacher["test_accuracy"],
                   "validation": s["validation"], "best_epoch": s["best_epoch"], "params": s["params"],
                   "n_train": len(self.data.splits["train"]) + n_generated, "n_generated": n_generated,
                   "n_validation": len(self.data.splits["validation"]), "n_test": len(self.data.splits["test"]),
                   "requests": sum(st["requests_total"] for st in steps),
                   "label_seconds": sum(st["seconds"] for st in steps if st["cell"].startswith("step | label")),
                   "generate_seconds": sum(st["seconds"] for st in steps if st["cell"] == "step | generate"),
                   "train_seconds": s["wall_seconds"], "wall_seconds": time.perf_counter() - t0,
                   "steps": [st["cell"] for st in steps], "lr": LR, "epochs": train_cfg["epochs"],
                   "max_train": self.args.max_train, "max_eval": self.args.max_eval, "model_dir": str(out),
                   "load_avg_start": load0, "load_avg_end": list(os.getloadavg()), "env": self.env})

    def teacher_via_chat(self) -> None:
        """The test split labelled through the chat API: the teacher's accuracy as the students' users reach it."""
        gold = [int(y) for y in self.data.splits["test"]["label"]]
        self.label("label test", self.files["test"], self.runs / "answers" / "test.jsonl", gold)


# ------------------------------------------------------------------------------------------------ report


def write_report(done: dict[str, dict[str, Any]], md: Path) -> None:
    """llm_teacher.md from the recorded cells: the students' table, the teacher through the API, the generation."""
    t = done.get("teacher")
    lab, test = done.get("step | label train"), done.get("step | label test")
    gen, glab = done.get("step | generate"), done.get("step | label generated")
    lines = ["# An LLM-style teacher behind a chat-completions API: labels, logprobs, generated data (issue 21)", ""]
    students = [done[n] for n in CELLS if n in done]
    smoke = any(r.get("max_train") or r.get("max_eval") or r.get("epochs") != 3 for r in students)
    if smoke:
        lines += ["**Smoke run (--max-train / --max-eval / --epochs-scale): not a measurement.**", ""]
    lines += ["| student (3L-384, teacher layers 2,4,6) | training signal | train rows | teacher requests | "
              "labelling (s) | generation (s) | train wall (min) | SST-2 test acc | vs teacher |",
              "|---|---|---|---|---|---|---|---|---|"]
    if t:
        source = "by pareto.py" if t["source"] == "reused" and "pareto" in t["model_dir"] else t["source"]
        lines.append(f"| teacher: all-MiniLM-L6-v2 fine-tuned ({source}) | gold labels | - | - | - | - | "
                     + (f"{t['finetune_seconds'] / 60:.1f}" if t.get("finetune_seconds") and t["source"] != "reused"
                        else "-")
                     + f" | {100 * t['test_accuracy']:.2f}% | 100% |")
    if test and t:
        acc = test["agreement_with_gold"]
        lines.append(f"| teacher through the chat API (label words on the test split) | - | - | "
                     f"{test['requests_total']:,} | {test['seconds']:.0f} | - | - | {100 * acc:.2f}% | "
                     f"{100 * acc / t['test_accuracy']:.1f}% |")
    for r in students:
        gen_s = f"{r['generate_seconds']:.0f}" if r["generate_seconds"] else "-"
        lab_s = f"{r['label_seconds']:.0f}" if r["label_seconds"] else "-"
        rows = f"{r['n_train']:,}" + (f" ({r['n_generated']:,} generated)" if r["n_generated"] else "")
        lines.append(f"| {r['cell']} | {r['signal']} | {rows} | {r['requests']:,} | {lab_s} | {gen_s} | "
                     f"{r['train_seconds'] / 60:.1f} | {100 * r['test_accuracy']:.2f}% | {100 * r['retention']:.1f}% |")
    notes = []
    if lab:
        notes.append(f"Labelling the {lab['rows']:,} training sentences through the API took {lab['seconds']:.0f} s "
                     f"({lab['requests_total']:,} requests, {lab['rows'] / lab['seconds']:.1f} requests/s with "
                     f"{lab.get('concurrency', 8)} in flight, served in {lab.get('forward_passes', 0):,} batched "
                     "forward passes); "
                     f"{lab['with_probs']:,} answers carried logprobs; the teacher's labels agree with the gold labels "
                     f"on {100 * lab['agreement_with_gold']:.1f}% of them. One labelling serves (b), (c) and (d).")
    if gen:
        kept = ", ".join(f"{n} {k:,}" for n, k in gen["kept"].items())
        rej = ", ".join(f"{why} {n:,}" for why, n in sorted(gen["rejected"].items(), key=lambda x: -x[1])) or "none"
        notes.append(f"Generation: {gen['asked'] + gen['reused']:,} writing requests of {gen['per_request']} examples "
                     f"each gave {gen['candidates']:,} candidates; kept {kept} after the filters"
                     + (f" and the teacher's relabelling ({gen['requests']['classify']:,} relabelling requests)"
                        if gen.get("relabel", True) else " (no relabelling: --no-relabel)")
                     + f"; rejected: {rej}. "
                     f"Generation took {gen['seconds']:.0f} s in all. Kept examples whose text equals a sentence "
                     "of the split (after lower-casing and dropping punctuation): "
                     + ", ".join(f"{k} {v}" for k, v in gen.get("same_text_as", {}).items()) + ".")
    if glab:
        notes.append(f"The kept examples were labelled again for their probabilities (`kdistill label`, "
                     f"{glab['requests_total']:,} requests, {glab['seconds']:.0f} s): `kdistill generate "
                     "--relabel` checks each example's label but does not store the teacher's probabilities.")
    if students:
        n, acc = students[0]["n_test"], students[0]["test_accuracy"]
        loads = [r["load_avg_end"][1] for r in students if r.get("load_avg_end")]
        notes.append(f"One seed per cell: on {n:,} test sentences the standard error of an accuracy near "
                     f"{100 * acc:.0f}% is {100 * (acc * (1 - acc) / n) ** 0.5:.1f} points, so differences between "
                     "the cells smaller than that are not evidence of a better signal."
                     + (f" Train walls were measured while other work shared the cores (5-minute load average "
                        f"{min(loads):.1f}-{max(loads):.1f} at the cells' ends)." if loads else ""))
    lines += ["", *notes, "", "## How it was measured", "", method_paragraph(done), ""]
    atomic_write_text(md, "\n".join(lines))
    print("\n".join(lines))



def method_paragraph(done: dict[str, dict[str, Any]]) -> str:
    r = next((done[n] for n in CELLS if n in done), None)
    env = (r or done.get("teacher") or {}).get("env", {})
    sizes = (f"{r['n_train'] - r['n_generated']:,} training, {r['n_validation']:,} validation and {r['n_test']:,} "
             "test sentences" if r else "(no cell trained yet)")
    gpu = f", {env['cuda']}" if env.get("cuda") else ""
    return (
        "Measured by `python benchmarks/llm_teacher.py` (one process, one cell after the other; the chat server a "
        f"second process) on {env.get('cpu_count')} CPU cores (torch {env.get('torch')}, {env.get('threads')} "
        f"threads{gpu}). Data: the shipped SST-2; kdistill carves 10% of the train file for validation (seed 42), "
        f"leaving {sizes}. The teacher is all-MiniLM-L6-v2 fine-tuned on SST-2 (lr 5e-5, 3 epochs, max length "
        "64), served by `benchmarks/llm_server.py` as an OpenAI-compatible chat model on 127.0.0.1: kdistill sees "
        "only `kdistill label` / `kdistill generate --teacher openai:http://127.0.0.1:PORT/v1` (the default "
        "prompts, temperature 0 for labels), one request per example, 8 in flight; the server batches the requests "
        "that arrive together into one forward pass, on one torch thread. Its logprobs are the "
        "encoder's softmax over the two label words (a real LLM's label tokens would not sum to 1; kdistill "
        "renormalises them). **The writer is a stand-in, not a language model**: for each request it draws "
        "training sentences of the asked label (seeded by the request) and replaces each content word with "
        "probability 0.3 by one of its 8 nearest GloVe 6B 50d neighbours (at least one word per sentence); the "
        "replies then go through `kdistill generate`'s filters (3-128 words, exact and near duplicates at word-set "
        "Jaccard 0.8) and `--relabel true` like an LLM's. Students: 3 layers copied from the teacher's layers "
        "2, 4, 6 (so the student starts from the teacher's weights, which a real LLM teacher could not give: the "
        "cells compare training signals, not initialisations), 3 epochs, batch 32, lr 5e-5 with 10% warm-up, "
        "seed 42, max length 64, group_by_length; the best epoch is picked on the gold-labelled validation split "
        "and the test split is scored once. Train wall is the distiller's train loop; labelling and generation "
        "are timed separately (wall-clock, client and server on the same cores). Requests are counted by the "
        "server.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--teacher", default=None, help="a finished SST-2 MiniLM fine-tune (default: pareto's, else "
                    "fine-tune one under --runs)")
    ap.add_argument("--cells", default=None, help="comma-separated cell letters, e.g. a,b (default: all)")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiplies every epoch count (smoke runs)")
    ap.add_argument("--max-train", type=int, default=None, help="use only N training examples (smoke runs)")
    ap.add_argument("--max-eval", type=int, default=None, help="use only N validation and test examples (smoke)")
    ap.add_argument("--per-label", type=int, default=1000, help="examples asked of the writer per label")
    ap.add_argument("--per-request", type=int, default=10, help="examples asked for in one request")
    ap.add_argument("--no-relabel", dest="relabel", action="store_false",
                    help="keep generations the teacher disowns (smoke runs whose barely trained teacher disowns all)")
    ap.add_argument("--port", type=int, default=18021, help="the chat server's port: fixed, because the resume logs "
                    "of `kdistill label` and `generate` record the teacher's URL")
    ap.add_argument("--concurrency", type=int, default=8, help="labelling requests in flight")
    ap.add_argument("--report-only", action="store_true", help="only rebuild llm_teacher.md from the JSONL")
    ap.add_argument("--runs", default=str(HERE / "runs" / "llm_teacher"))
    ap.add_argument("--results", default=str(HERE / "results" / "llm_teacher.jsonl"))
    args = ap.parse_args()
    results = Path(args.results)
    if not args.report_only:
        run = Run(args)
        wanted = [c.strip() for c in args.cells.split(",")] if args.cells else None
        try:
            run.teacher()
            run.teacher_via_chat()  # first: a quick figure that a run cut short still has
            for name, cell in CELLS.items():
                if wanted is None or name[1] in wanted:
                    run.student(name, cell)
        finally:
            run.close()
    done = done_cells(results)
    if done:
        write_report(done, results.with_suffix(".md"))


if __name__ == "__main__":
    sys.exit(main())
