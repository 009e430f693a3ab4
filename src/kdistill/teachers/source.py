"""The seam between the training loop and whatever answers for the teacher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from torch import Tensor

from kdistill.distill.features import Features


class TeacherSource(Protocol):
    """Anything that gives the teacher's `Features` for a training batch (see `kdistill.teachers` for the kinds).

    `signals(batch)` receives the student's padded training batch (input_ids, attention_mask, labels and, for the
    sources that look examples up, `idx`, the example's row in the training split) and returns the teacher's
    logits (B, num_labels) plus the features the objective asked for, on the batch's device, without gradients.
    """

    def signals(self, batch: Mapping[str, Tensor]) -> Features: ...
