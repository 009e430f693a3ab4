"""Why does a narrow random-init student collapse to the majority class with hidden + attention losses? (issue 18)

The core table's 2-layer, 192-wide student (random init, 6.9M params) keeps 89% of its MiniLM-L6 SST-2 teacher with
soft targets, but ends at the majority class (49.9%) when `hidden_mse` (x1.0) and `attn_mse` (x0.1) are added.
This benchmark reruns that student with one change per cell and, every `--probe-every` steps, records for each loss
term the gradient norm it alone puts on the student's parameters (split into encoder and classifier), the mean
pairwise cosine of the batch's [CLS] vectors at the last layer (1.0 = every sentence has the same representation),
the same over all real tokens of the batch (token_cosine: 1.0 = every token state is the same vector), the standard
deviation of the logits over the batch and the majority-prediction fraction. Each finished cell is
one line of results/collapse.jsonl (final test accuracy, the probe trace) and is skipped on the next run.

    python benchmarks/collapse.py                    # all cells (the MiniLM SST-2 teacher of pareto.py)
    python benchmarks/collapse.py --cells "kd" "kd + hidden + attention"
    python benchmarks/collapse.py --report-only      # results/collapse.md from the JSONL
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cells import done_cells, record  # noqa: E402

from kdistill import api  # noqa: E402
from kdistill.config import DistillConfig, build  # noqa: E402
from kdistill.distill import distiller  # noqa: E402
from kdistill.distill.features import forward_features  # noqa: E402

HERE = Path(__file__).resolve().parent
KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
HIDDEN = {"name": "hidden_mse", "weight": 1.0, "params": {"center": False}}  # the cells measured before the fix
HIDDEN_C = {"name": "hidden_mse", "weight": 1.0, "params": {"center": True}}
ATTN = {"name": "attn_mse", "weight": 0.1, "params": {"center": False}}
ATTN_C = {"name": "attn_mse", "weight": 0.1, "params": {"center": True}}
STUDENT = {"init": "config", "num_layers": 2, "hidden_size": 192, "num_heads": 12, "intermediate_size": 768}
CELLS: dict[str, dict[str, Any]] = {
    "kd": {"losses": KD},
    "kd + hidden + attention": {"losses": [*KD, HIDDEN, ATTN]},
    "kd + hidden": {"losses": [*KD, HIDDEN]},
    "kd + attention": {"losses": [*KD, ATTN]},
    # candidate fixes
    "kd + hidden + attention + last-layer cls_cosine": {"losses": [
        *KD, HIDDEN, ATTN, {"name": "cls_cosine", "weight": 1.0, "mapping": {"strategy": "last"}}]},
    "kd + hidden, centred": {"losses": [*KD, HIDDEN_C]},
    "kd + hidden + attention, centred": {"losses": [*KD, HIDDEN_C, ATTN_C]},
    "kd + attention, centred": {"losses": [*KD, ATTN_C]},
    "kd + hidden x0.3, centred": {"losses": [*KD, {**HIDDEN_C, "weight": 0.3}]},
    "kd + hidden + attention x0.3, centred": {"losses": [*KD, {**HIDDEN_C, "weight": 0.3}, ATTN_C]},
    "kd + hidden_cka": {"losses": [*KD, {"name": "hidden_cka", "weight": 1.0}]},
    "kd + hidden_cka + attention": {"losses": [*KD, {"name": "hidden_cka", "weight": 1.0}, ATTN]},
    "hidden + attention, then kd": {"stages": [
        {"name": "features", "epochs": 1.5, "losses": [HIDDEN, ATTN]}, {"name": "prediction", "losses": KD}]},
}


class Probe:
    """Records per-term gradient norms and representation statistics every `every` training steps."""

    def __init__(self, every: int) -> None:
        self.every, self.calls, self.trace = every, 0, []

    def __call__(self, module: Any, batch: dict[str, torch.Tensor], teacher: Any, active: Any) -> None:
        self.calls += 1
        if not module.training or (self.calls - 1) % self.every:
            return
        student, objective = module.student, module.objective
        req = objective.student_request
        feats = forward_features(student, batch, req)
        # the last encoder layer's [CLS] vector, read from the hidden states the student returns anyway
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_hidden_states=True)
        cls = torch.nn.functional.normalize(out.hidden_states[-1][:, 0].detach(), dim=-1)
        cos = cls @ cls.T
        n = cos.shape[0]
        tokens = torch.nn.functional.normalize(out.hidden_states[-1].detach()[batch["attention_mask"].bool()], dim=-1)
        tok_cos, m = tokens @ tokens.T, tokens.shape[0]
        row: dict[str, Any] = {
            "step": self.calls - 1,
            "cls_cosine": float((cos.sum() - n) / (n * (n - 1))),
            "token_cosine": float((tok_cos.sum() - m) / (m * (m - 1))),
            "logit_std": float(out.logits.detach().std(0).mean()),
            "majority_fraction": float(torch.bincount(out.logits.argmax(-1), minlength=2).max() / n),
        }
        enc = [p for name, p in student.named_parameters() if p.requires_grad and "classifier" not in name
               and "pooler" not in name]
        head = [p for name, p in student.named_parameters() if p.requires_grad and ("classifier" in name
                                                                                     or "pooler" in name)]
        terms = objective.terms
        for term in terms:
            objective.terms = [term]
            try:
                value = objective(feats, teacher, batch.get("labels"), active=active).total
            finally:
                objective.terms = terms
            grads = torch.autograd.grad(value, enc + head, retain_graph=True, allow_unused=True)
            norm = [float(g.norm()) if g is not None else 0.0 for g in grads]
            row[f"{term.key}/loss"] = float(value.detach() / term.cfg.weight)
            row[f"{term.key}/grad_encoder"] = sum(x * x for x in norm[: len(enc)]) ** 0.5
            row[f"{term.key}/grad_head"] = sum(x * x for x in norm[len(enc):]) ** 0.5
        self.trace.append(row)


def run_cell(name: str, teacher_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = CELLS[name]
    out = Path(args.runs) / name.replace(" ", "").replace("+", "_")
    cfg = build(DistillConfig, {
        "teacher": teacher_dir, "student": {**STUDENT, **spec.get("student", {})},
        **{k: spec[k] for k in ("losses", "stages") if k in spec},
        "out": str(out), "teacher_cache": False,
        "data": {"task": "sst2", "max_length": 64, "max_train_examples": args.max_train},
        "train": {"epochs": args.epochs, "lr": spec.get("lr", 1e-4), "batch_size": 32, "seed": 42,
                  "save_steps": 10_000, "group_by_length": False, **spec.get("train", {})}})
    probe = Probe(args.probe_every)
    original = distiller.DistillModule.forward

    def forward(module: Any, batch: dict[str, torch.Tensor], teacher: Any, active: Any) -> Any:
        probe(module, batch, teacher, active)
        return original(module, batch, teacher, active)

    distiller.DistillModule.forward = forward  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        s = api.distill(cfg)
    finally:
        distiller.DistillModule.forward = original  # type: ignore[method-assign]
    return {"cell": name, "losses": spec.get("losses"), "stages": spec.get("stages"), "accuracy": s["test"]["accuracy"],
            "validation": s.get("validation"), "warnings": s.get("warnings"), "wall_s": time.perf_counter() - t0,
            "trace": probe.trace}


def write_report(results: Path) -> None:
    rows = list(done_cells(results).values())
    lines = ["# Collapse diagnosis (2L-192 random-init student, MiniLM-L6 SST-2 teacher)", "",
             "Generated by `python benchmarks/collapse.py --report-only` from results/collapse.jsonl.", "",
             "| cell | test acc | [CLS] cosine first -> last probe | majority fraction last | "
             "grad norm on encoder at step 0 (per term) | last |", "|---|---|---|---|---|---|"]
    for r in rows:
        first, last = r["trace"][0], r["trace"][-1]
        keys = [k.split("/")[0] for k in first if k.endswith("/grad_encoder")]
        g0 = ", ".join(f"{k} {first[k + '/grad_encoder']:.3g}" for k in keys)
        last_keys = [k.split("/")[0] for k in last if k.endswith("/grad_encoder")]  # a later stage has other terms
        g1 = ", ".join(f"{k} {last[k + '/grad_encoder']:.3g}" for k in last_keys)
        lines.append(f"| {r['cell']} | {100 * r['accuracy']:.1f} | {first['cls_cosine']:.3f} -> "
                     f"{last['cls_cosine']:.3f} | {last['majority_fraction']:.2f} | {g0} | {g1} |")
    (results.parent / "collapse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--probe-every", type=int, default=25)
    ap.add_argument("--runs", default=str(HERE / "runs" / "collapse"))
    ap.add_argument("--results", type=Path, default=HERE / "results" / "collapse.jsonl")
    ap.add_argument("--teacher", default=None, help="a fine-tuned SST-2 teacher folder (default: pareto.py's MiniLM)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        pareto = done_cells(HERE / "results" / "pareto.jsonl")
        teacher = {"model_dir": args.teacher} if args.teacher else pareto.get("teacher | minilm | sst2")
        if teacher is None:
            sys.exit("needs the MiniLM SST-2 teacher: python benchmarks/pareto.py --teachers minilm --tasks sst2 "
                     "--students none")
        done = done_cells(args.results)
        for name in args.cells:
            if name not in done:
                record(args.results, run_cell(name, teacher["model_dir"], args))
    write_report(args.results)


if __name__ == "__main__":
    main()
