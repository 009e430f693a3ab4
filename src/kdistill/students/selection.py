"""Perturbation-based operation selection for the AdaBERT search (Wang et al. 2021, "Rethinking Architecture
Selection in Differentiable NAS", DARTS-PT).

DARTS derives the architecture from the magnitudes of the architecture weights. Those magnitudes need not say how
much the supernet relies on an operation: parameter-free operations (pooling, identity) look good from the first
step, before the convolutions have trained, and keep large weights (measured on SST-2: `benchmarks/mobile_ada.py`,
every searched cell pooling and identity only). DARTS-PT instead asks the trained supernet: remove one operation from
one edge and measure how much the held-out loss rises; the operation whose removal hurts most is the one to keep.

This is the one-shot form: every (edge, operation) pair is scored against the same supernet, without DARTS-PT's
fine-tuning between edge decisions (CPU time), and by the held-out search loss rather than accuracy (a smoother
signal on a few hundred examples). Edges are then ranked by their chosen operation's score, two per node, as in DARTS.

AdaBERT searches a trade-off, task loss + beta x expected cost, so an operation is scored by how much its removal
raises that whole objective (`objective_scores`): the task-loss rise minus beta x the expected cost it carried.
Scored by the task loss alone, beta only shaped the mixture and a larger beta did not give a smaller student
(SST-2, benchmarks/mobile_ada.py: beta 1 picked 12.6M parameters against 12.3M at beta 0.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from kdistill.students.adabert import OPS

__all__ = ["objective_scores", "op_costs", "perturbation_scores"]

Batch = tuple[Tensor, Tensor, Tensor, Tensor]
"""input_ids (B, L), attention_mask (B, L), gold labels (B,), teacher logits (B, C)."""


@torch.no_grad()
def perturbation_scores(net: torch.nn.Module, alpha: Tensor, batches: Sequence[Batch],
                        loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tensor:
    """How much the held-out loss rises when each operation is removed from each edge: (E, len(OPS)).

    `net(input_ids, attention_mask, weights)` is the supernet; `weights` are softmax(`alpha`) (E, len(OPS)), the
    deterministic mixture (no Gumbel noise); removing operation o of edge k sets weights[k, o] to 0 (DARTS-PT masks
    the operation without renormalising). `loss_fn(logits, labels, teacher_logits)` is the search loss without the
    efficiency term; scores are its mean over `batches` minus the unperturbed mean (nats; higher = more needed).
    The zero operation's score is 0 (removing nothing changes nothing).
    """
    was_training = net.training
    net.eval()
    base_weights = alpha.detach().softmax(dim=-1)

    def held_out_loss(weights: Tensor) -> float:
        total, count = 0.0, 0
        for ids, mask, labels, t_logits in batches:
            total += float(loss_fn(net(ids, mask, weights), labels, t_logits)) * labels.size(0)
            count += labels.size(0)
        return total / max(1, count)

    base = held_out_loss(base_weights)
    scores = torch.zeros_like(base_weights)
    zero = OPS.index("zero")
    for k in range(base_weights.size(0)):
        for o in range(base_weights.size(1)):
            if o == zero:
                continue
            weights = base_weights.clone()
            weights[k, o] = 0.0
            scores[k, o] = held_out_loss(weights) - base
    net.train(was_training)
    return scores


def op_costs(hidden_size: int, num_edges: int) -> Tensor:
    """Each operation's parameters as a share of every edge holding the largest operation: (len(OPS),), the unit of
    AdaBERT's efficiency loss (`Supernet.expected_cost` = sum of weights x these)."""
    from kdistill.students.adabert import op_params

    costs = torch.tensor([float(op_params(o, hidden_size)) for o in OPS])
    return costs / (costs.max() * num_edges)


def objective_scores(scores: Tensor, alpha: Tensor, costs: Tensor, efficiency_weight: float) -> Tensor:
    """How much removing each operation raises the search objective (task loss + beta x expected cost): `scores`
    (E, len(OPS), the task-loss rise from `perturbation_scores`) minus beta x the expected cost the operation
    carried, softmax(`alpha`)[k, o] x `costs`[o] (removing it takes that share off the expected cost)."""
    return scores - efficiency_weight * alpha.detach().softmax(dim=-1) * costs.to(scores.device)
