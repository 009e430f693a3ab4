"""Several live teachers whose averaged class probabilities are the soft targets."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from kdistill.features import FeatureRequest, Features, forward_features


class MultiTeacher:
    """Several live teachers: their class probabilities averaged (weighted) are the soft targets.

    The returned logits are log(average probability), so softmax-based losses see exactly the averaged
    distribution at T=1 (at other temperatures, the average's log re-tempered). Features come from the
    first teacher, which is the one the layer map was built for.
    """

    def __init__(self, teachers: list[nn.Module], weights: list[float], request: FeatureRequest) -> None:
        self.teachers, self.request = teachers, request
        self.weights = torch.tensor(weights, dtype=torch.float32) / sum(weights)
        for t in teachers:
            t.requires_grad_(False)
            t.eval()

    def signals(self, batch: Mapping[str, Tensor]) -> Features:
        device = batch["input_ids"].device
        with torch.no_grad():
            outs = [forward_features(t.to(device), batch, self.request if i == 0 else FeatureRequest())
                    for i, t in enumerate(self.teachers)]
        probs = sum(w * o.logits.float().softmax(-1) for w, o in zip(self.weights.tolist(), outs, strict=True))
        first = outs[0]
        first.logits = torch.as_tensor(probs).clamp_min(1e-12).log()
        return first
