"""A run that diverges stops with its cause, before a student with broken weights can be saved with a score.

Three places see it, each catching what the others cannot: a step's loss terms (before the update), the optimizer
step itself (torch's check of an update too large for the weights' dtype), and the weights after the last update of
an epoch (an update can overflow the weights while the loss that produced it was finite). Each raises
`kdistill.errors.TrainingDiverged`, a `KDistillError`: the CLI prints one line naming the term, epoch and step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdistill.errors import TrainingDiverged


def check_finite_loss(terms: dict[str, Tensor], total: Tensor, epoch: int, step: int) -> None:
    """Raise if any loss term (scalars, by name) or their weighted `total` is nan/inf; `epoch` and `step` count
    from 1.

    Raises:
        TrainingDiverged: naming the first non-finite term.
    """
    for name, value in {**terms, "total": total.detach()}.items():
        if not torch.isfinite(value).all():
            raise TrainingDiverged(f"loss term '{name}' became {float(value)} at epoch {epoch}, step {step}; lower "
                                   "train.lr or that term's weight")


def optimizer_step(optimizer: torch.optim.Optimizer, epoch: int, step: int, lr: float) -> None:
    """`optimizer.step()`, with torch's overflow error (an update too large for the weights' dtype) as one line.

    Raises:
        TrainingDiverged: the step overflowed; any other RuntimeError passes through.
    """
    try:
        optimizer.step()
    except RuntimeError as err:
        if "overflow" not in str(err):
            raise
        raise TrainingDiverged(f"the optimizer step overflowed the weights at epoch {epoch}, step {step} (learning "
                               f"rate {lr:g}); lower train.lr") from None


def check_finite_weights(model: nn.Module, epoch: int, step: int) -> None:
    """Raise if any parameter of `model` holds nan/inf (checked once per epoch: a full pass over the weights).

    Raises:
        TrainingDiverged: naming how many tensors and the first.
    """
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"the student's weights became non-finite (nan/inf) by epoch {epoch}, step {step} "
                               f"({len(bad)} tensors, first {bad[0]}); lower train.lr")
