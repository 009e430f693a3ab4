"""Which of a student's parameters belong to a set of its layers, so a layer schedule can freeze them.

Layer 0 is the embeddings (every parameter under a module named `embeddings`), layer l >= 1 the l-th transformer
layer under the probe's `layers_path`. Freezing drops those parameters' gradients before each optimizer step, so
AdamW leaves them (and their moments) untouched, weight decay included; it is the loop's job, per step, because the
schedule's stage changes at epoch ends.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from kdistill.models import ModelProbe

__all__ = ["layer_parameters", "drop_frozen_grads"]


def layer_parameters(model: nn.Module, probe: ModelProbe, layers: Iterable[int]) -> list[nn.Parameter]:
    """Parameters of `layers` (0 = embeddings, l = transformer layer l) of `model`, whose layout `probe` describes."""
    wanted = set(layers)
    prefixes = tuple(f"{probe.layers_path}.{layer - 1}." for layer in wanted if layer >= 1)
    out = []
    for name, p in model.named_parameters():
        in_embeddings = 0 in wanted and (".embeddings." in f".{name}" or name.startswith("embeddings."))
        if in_embeddings or (prefixes and name.startswith(prefixes)):
            out.append(p)
    return out


def drop_frozen_grads(params: Iterable[nn.Parameter]) -> None:
    """Set the gradients of `params` to None: the optimizer then skips them this step."""
    for p in params:
        p.grad = None
