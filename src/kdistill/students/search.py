"""AdaBERT's task-adaptive architecture search with knowledge distillation (Chen et al. 2020).

A supernet of `num_cells` `MixedCell`s over the teacher's word embeddings learns its weights and, alternately, its
architecture logits (one row of logits per edge, shared by every cell) by first-order differentiable search
(DARTS, Liu et al. 2019) on two halves of the training split: weight steps on one half, architecture steps on the
other. Edge weights are Gumbel-softmax samples of the logits (temperature annealed from `tau_start` to `tau_end`),
as in the paper. The loss is AdaBERT's: (1 - gamma) x CE on gold labels + gamma x the KD loss (cross-entropy against
the teacher's probabilities at `temperature`, scaled by T^2) + beta x the efficiency loss, the expected parameter
count of the sampled architecture as a share of the largest possible one (only the architecture step sees it).
AdaBERT also searches the number of cells; here it is fixed (`num_cells`) and the search picks operations and edges.
The first `arch_warmup` share of the steps trains only the weights (PC-DARTS, Xu et al. 2020), against
differentiable search's bias towards parameter-free operations, which need no training to look good. On SST-2 (half
a pass, benchmarks/mobile_ada.py) it was not enough: both betas still picked only pooling and identity, with or
without the warm-up, while the architecture logits had barely moved. So by default the architecture is read off by
perturbation (`kdistill.students.selection`, DARTS-PT): each edge keeps the operation whose removal raises the
held-out loss most, not the one with the largest weight; `selection: alpha` keeps DARTS's rule, and search.json
holds both genotypes.

The teacher's logits for the training split are computed once, before the search. The derived architecture
(`kdistill.students.adabert.derive_genotype`) is saved as an untrained `AdaBertForSequenceClassification` with the
teacher's embeddings and tokenizer: retrain it from scratch with
`kdistill distill --student.init path --student.path OUT`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedModel

from kdistill.errors import KDistillError
from kdistill.students.adabert import (
    OPS,
    AdaBertConfig,
    AdaBertForSequenceClassification,
    MixedCell,
    derive_genotype,
    genotype_from_scores,
    num_edges,
)
from kdistill.students.selection import objective_scores, op_costs, perturbation_scores

__all__ = ["SearchSettings", "Supernet", "derived_student", "run_search", "search_architecture", "teacher_logits"]


@dataclass
class SearchSettings:
    """The search's knobs (the CLI's `kdistill search` fields)."""

    num_cells: int = 3
    num_nodes: int = 3
    hidden_size: int = 128
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 1e-3
    arch_lr: float = 3e-3
    kd_weight: float = 0.8  # gamma
    temperature: float = 1.0
    efficiency_weight: float = 0.1  # beta
    arch_warmup: float = 0.3  # share of the steps that train only the supernet's weights
    selection: str = "perturbation"  # how the discrete architecture is read off: "perturbation" or "alpha"
    selection_examples: int = 512  # held-out examples that score each operation (perturbation selection)
    tau_start: float = 1.0
    tau_end: float = 0.1
    seed: int = 42
    progress: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)


class Supernet(nn.Module):
    """Teacher embeddings -> projection -> `num_cells` MixedCells -> masked max-pool -> classifier; `alpha` holds
    the architecture logits (num_edges(num_nodes), len(OPS))."""

    def __init__(self, embeddings: Tensor, num_labels: int, s: SearchSettings, pad_token_id: int = 0) -> None:
        super().__init__()
        self.embeddings = nn.Embedding.from_pretrained(embeddings.clone(), freeze=False, padding_idx=pad_token_id)
        self.project = nn.Linear(embeddings.size(1), s.hidden_size)
        self.cells = nn.ModuleList(MixedCell(s.hidden_size, s.num_nodes) for _ in range(s.num_cells))
        self.classifier = nn.Linear(s.hidden_size, num_labels)
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(s.num_nodes), len(OPS)))
        self.register_buffer("op_cost", op_costs(s.hidden_size, num_edges(s.num_nodes)), persistent=False)

    def weights(self, tau: float) -> Tensor:
        return nn.functional.gumbel_softmax(self.alpha, tau=tau, dim=-1)

    def expected_cost(self, weights: Tensor) -> Tensor:
        """The sampled architecture's expected parameters, as a share of every edge holding the largest op."""
        return (weights * self.op_cost).sum()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, weights: Tensor) -> Tensor:
        x = self.project(self.embeddings(input_ids))
        s0 = s1 = x
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, attention_mask, weights)
        h = s1.masked_fill(~attention_mask.bool().unsqueeze(-1), torch.finfo(s1.dtype).min).max(dim=1).values
        return self.classifier(h)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]


@torch.no_grad()
def teacher_logits(teacher: PreTrainedModel, train: Dataset, collate: Any, batch_size: int = 64) -> Tensor:
    """The teacher's logits (N, C) for every training row, in row order, computed once in eval mode."""
    teacher.eval()
    cols = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in train.column_names]
    out = []
    for start in range(0, len(train), batch_size):
        rows = train.select(range(start, min(start + batch_size, len(train)))).select_columns(cols)
        batch = collate([dict(r) for r in rows])
        out.append(teacher(**batch).logits.float())
    return torch.cat(out)


def _loss(logits: Tensor, labels: Tensor, t_logits: Tensor, s: SearchSettings) -> Tensor:
    t = s.temperature
    kd = -(t_logits.div(t).softmax(-1) * logits.div(t).log_softmax(-1)).sum(-1).mean() * t * t
    return (1 - s.kd_weight) * nn.functional.cross_entropy(logits, labels) + s.kd_weight * kd


def run_search(teacher: PreTrainedModel, tokenizer: Any, train: Dataset, s: SearchSettings
               ) -> tuple[AdaBertConfig, dict[str, Any]]:
    """Search an architecture on `train` (tokenised, with `labels`); return the derived student's config and a
    summary (genotype, expected cost before/after, per-epoch losses, wall seconds).

    Raises `KDistillError` for a training split too small to split into weight and architecture halves.
    """
    if len(train) < 4:
        raise KDistillError(f"the architecture search needs at least 4 training examples, got {len(train)}")
    torch.manual_seed(s.seed)
    collate = DataCollatorWithPadding(tokenizer)
    t_logits = teacher_logits(teacher, train, collate)
    num_labels = t_logits.size(1)
    emb = teacher.get_input_embeddings().weight.detach()
    pad = teacher.config.pad_token_id or 0
    net = Supernet(emb, num_labels, s, pad)
    w_opt = torch.optim.AdamW(net.weight_parameters(), lr=s.lr)
    a_opt = torch.optim.Adam([net.alpha], lr=s.arch_lr, betas=(0.5, 0.999))
    order = torch.randperm(len(train)).tolist()
    half = len(order) // 2
    parts = (order[:half], order[half:])  # weight steps on one half, architecture steps on the other (DARTS)
    cols = [c for c in ("input_ids", "attention_mask", "labels") if c in train.column_names]
    steps_per_epoch = max(1, math.ceil(half / s.batch_size))
    total = max(1, int(round(s.epochs * steps_per_epoch)))
    warmup = int(s.arch_warmup * total)
    start_cost = float(net.expected_cost(net.alpha.detach().softmax(-1)))
    t0 = time.perf_counter()
    bar = tqdm(range(total), desc="[search] supernet", disable=not s.progress)
    for step in bar:
        tau = s.tau_start * (s.tau_end / s.tau_start) ** (step / max(1, total - 1))
        k = step % steps_per_epoch
        for phase, idx in enumerate(parts):
            rows = idx[k * s.batch_size:(k + 1) * s.batch_size] or idx[:s.batch_size]
            batch = collate([dict(r) for r in train.select(rows).select_columns(cols)])
            weights = net.weights(tau)
            logits = net(batch["input_ids"], batch["attention_mask"], weights)
            loss = _loss(logits, batch["labels"], t_logits[rows], s)
            if phase == 1 and step < warmup:
                continue  # warm-up: parametric ops are judged only once they have trained
            if phase == 0:
                w_opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
                w_opt.step()
            else:
                cost = net.expected_cost(weights)
                a_opt.zero_grad()
                (loss + s.efficiency_weight * cost).backward()
                a_opt.step()
                value, spent = loss.item(), cost.item()
                bar.set_postfix(loss=f"{value:.3f}", cost=f"{spent:.3f}", tau=f"{tau:.2f}", refresh=False)
                s.history.append({"step": step + 1, "loss": value, "expected_cost": spent, "tau": tau})
    by_alpha = derive_genotype(net.alpha, s.num_nodes)
    held_out = parts[1][:s.selection_examples]  # the architecture half: data the weights never trained on
    batches = []
    for start in range(0, len(held_out), s.batch_size):
        rows = held_out[start:start + s.batch_size]
        b = collate([dict(r) for r in train.select(rows).select_columns(cols)])
        batches.append((b["input_ids"], b["attention_mask"], b["labels"], t_logits[rows]))
    scores = perturbation_scores(net, net.alpha, batches, lambda lg, y, t: _loss(lg, y, t, s))
    by_loss = genotype_from_scores(scores, s.num_nodes)
    by_perturbation = genotype_from_scores(objective_scores(scores, net.alpha, net.op_cost, s.efficiency_weight),
                                           s.num_nodes)
    genotype = by_perturbation if s.selection == "perturbation" else by_alpha
    cfg = AdaBertConfig(vocab_size=emb.size(0), embedding_size=emb.size(1), hidden_size=s.hidden_size,
                        num_cells=s.num_cells, genotype=[[list(e) for e in node] for node in genotype],
                        num_labels=num_labels, id2label=teacher.config.id2label, label2id=teacher.config.label2id,
                        pad_token_id=pad,
                        max_position_embeddings=getattr(teacher.config, "max_position_embeddings", 512))
    summary = {"genotype": cfg.genotype, "selection": s.selection,
               "genotype_alpha": [[list(e) for e in node] for node in by_alpha],
               "genotype_perturbation": [[list(e) for e in node] for node in by_perturbation],
               "genotype_task_loss_perturbation": [[list(e) for e in node] for node in by_loss],
               "perturbation_scores": scores.tolist(), "selection_examples_used": len(held_out),
               "op_cost": net.op_cost.tolist(), "expected_cost_start": start_cost,
               "expected_cost_end": float(net.expected_cost(net.alpha.detach().softmax(-1))),
               "alpha": net.alpha.detach().tolist(), "ops": list(OPS), "steps": total,
               "wall_seconds": time.perf_counter() - t0, "history": s.history}
    return cfg, summary


def derived_student(cfg: AdaBertConfig, teacher: PreTrainedModel) -> AdaBertForSequenceClassification:
    """The derived architecture, untrained, with the teacher's word embeddings (AdaBERT's starting point)."""
    model = AdaBertForSequenceClassification(cfg)
    with torch.no_grad():
        model.embeddings.weight.copy_(teacher.get_input_embeddings().weight)
    return model


def search_architecture(cfg: Any) -> dict[str, Any]:
    """`kdistill search` (a `SearchConfig`): search on the task's training split, then write OUT: the derived
    student (untrained, with the teacher's embeddings and tokenizer), `genotype.json` and `search.json`."""
    from kdistill.atomic import atomic_dir, atomic_write_json
    from kdistill.calibration import teacher_as_trained
    from kdistill.config import save_config
    from kdistill.data import load_task_data
    from kdistill.models import load_classifier, load_tokenizer
    from kdistill.outputs import save_tokenizer
    from kdistill.runfolder import check_out_dir, check_out_guard
    from kdistill.tokenized import tokenize_splits

    check_out_guard(cfg.out, cfg)
    out = check_out_dir(cfg.out)
    teacher = teacher_as_trained(load_classifier(cfg.teacher))
    tokenizer = load_tokenizer(cfg.teacher)
    data = load_task_data(cfg.data)
    train = tokenize_splits(data, tokenizer, cfg.data.max_length, cfg.data.cache_dir)["train"]
    s = SearchSettings(num_cells=cfg.cells, num_nodes=cfg.nodes, hidden_size=cfg.hidden_size, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, lr=cfg.lr, arch_lr=cfg.arch_lr, kd_weight=cfg.kd_weight,
                       temperature=cfg.temperature, efficiency_weight=cfg.efficiency_weight,
                       arch_warmup=cfg.arch_warmup, selection=cfg.selection,
                       selection_examples=cfg.selection_examples, seed=cfg.seed, progress=cfg.progress)
    student_cfg, summary = run_search(teacher, tokenizer, train, s)
    model = derived_student(student_cfg, teacher)
    params = sum(p.numel() for p in model.parameters())
    with atomic_dir(out) as tmp:  # the folder appears whole; its kdistill.yaml makes it a run folder to rerun into
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp)
        atomic_write_json(tmp / "genotype.json", {"genotype": summary["genotype"], "ops": summary["ops"]})
        atomic_write_json(tmp / "search.json", {**summary, "teacher": cfg.teacher, "task": data.name,
                                                "params": params})
        save_config(cfg, tmp / "kdistill.yaml")
    def show(genotype: list[list[Any]]) -> list[str]:
        return [f"node {j + 1}: " + " + ".join(f"{op}(state {i})" for op, i in node)
                for j, node in enumerate(genotype)]

    other = "alpha" if cfg.selection == "perturbation" else "perturbation"
    print(f"[search] genotype (every cell; chosen by {cfg.selection}; states 0 and 1 are the two previous cells' "
          "outputs, 2+ this cell's earlier nodes):\n  " + "\n  ".join(show(summary["genotype"])), flush=True)
    print(f"[search] by {other} it would be: " + "; ".join(show(summary[f"genotype_{other}"])), flush=True)
    print(f"[search] expected cost {summary['expected_cost_start']:.3f} -> {summary['expected_cost_end']:.3f}; "
          f"{summary['wall_seconds']:.0f} s; retrain it: kdistill distill --student.init path --student.path "
          f"{out} --losses \"[{{name: kl, temperature: 1.0}}, {{name: ce}}]\"", flush=True)
    return {"out": str(out), "genotype": summary["genotype"], "expected_cost": summary["expected_cost_end"],
            "params": params, "wall_seconds": summary["wall_seconds"]}
