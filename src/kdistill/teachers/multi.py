"""Several live teachers whose averaged predictions are the soft targets."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from kdistill.distill.features import FeatureRequest, Features, forward_features
from kdistill.tasks import Task, get_task


class MultiTeacher:
    """Several live teachers: their predictions averaged (weighted) are the soft targets.

    The task type averages (`Task.average_teachers`): for classification the returned logits are log(average
    probability), so softmax-based losses see exactly the averaged distribution at T=1 (at other temperatures, the
    average's log re-tempered); regression averages the scores, multi-label the per-label probabilities. Features
    come from the first teacher, which is the one the layer map was built for.
    """

    def __init__(self, teachers: list[nn.Module], weights: list[float], request: FeatureRequest,
                 task: Task | None = None) -> None:
        self.teachers, self.request = teachers, request
        self.task = task or get_task("classification")
        self.weights = torch.tensor(weights, dtype=torch.float32) / sum(weights)
        for t in teachers:
            t.requires_grad_(False)
            t.eval()

    def signals(self, batch: Mapping[str, Tensor]) -> Features:
        device = batch["input_ids"].device
        with torch.no_grad():
            outs = [forward_features(t.to(device), batch, self.request if i == 0 else FeatureRequest())
                    for i, t in enumerate(self.teachers)]
        first = outs[0]
        first.logits = self.task.average_teachers([o.logits for o in outs], self.weights.tolist())
        return first
