"""A teacher that reads the training texts through its own tokenizer, for a student with another vocabulary.

Why: a pretrained student of another family (all-MiniLM-L6-v2's BERT vocabulary under an MPNet teacher) splits
text into other tokens, so nothing can be compared token by token. What can be compared is per example: the
teacher's class logits, and its hidden states pooled over its own tokens ([CLS] for `cls_cosine`, the mean over its
real tokens for `mean_pooled_cosine` / `mean_pooled_mse`). The teacher encodes the raw text of each training
example with its own tokenizer and max_length; its outputs are matched to the student's batch by the example's row
(`idx`). Validation and test scoring use the student's tokenizer only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor, nn
from transformers import DataCollatorWithPadding

from kdistill.distill.features import FeatureRequest, Features, forward_features
from kdistill.errors import KDistillError


def check_per_example(request: FeatureRequest) -> None:
    """Only logits and hidden states (pooled per example by the losses) can be matched by example; attention maps
    and q/k/v are per token."""
    if request.attention_layers or request.qkv:
        raise KDistillError("a teacher with another tokenizer gives per-example outputs only (logits, hidden states "
                            "pooled per example), not attention maps or queries/keys/values")


def per_example(teacher_out: Features) -> Features:
    """The teacher's outputs on its own tokens, as the `Features` it gives a student batch of other tokens.

    Logits are (B, C). Hidden layers stay (B, L_t, H) on the teacher's tokens, and `mask` is the teacher's own
    (B, L_t) attention mask, not the student's: the objective passes it to the per-example losses as `t_mask`, and
    each pools its side with its own mask ([CLS] for `cls_cosine`, the mean over real tokens for
    `mean_pooled_cosine` / `mean_pooled_mse`), so one captured layer serves all of them. Padded positions are
    zeroed: the cache stores none, so the live and cached teachers give the same tensors.
    """
    mask = teacher_out.mask
    hidden = {layer: torch.where(mask[..., None] != 0, h, torch.zeros((), dtype=h.dtype, device=h.device))
              for layer, h in teacher_out.hidden.items()}
    return Features(logits=teacher_out.logits, mask=mask, hidden=hidden)


class OtherTokenizerTeacher:
    """A live TeacherSource for a student with another tokenizer: per batch, the teacher runs on its own
    tokenization of the same examples (found by `idx`) in eval mode under no_grad, in float32.

    `train` is the training split tokenised by the teacher's tokenizer (row i = the student's row i).
    """

    def __init__(self, teacher: nn.Module, tokenizer: Any, train: Dataset, request: FeatureRequest) -> None:
        check_per_example(request)
        self.teacher, self.request = teacher, request
        teacher.requires_grad_(False)
        teacher.eval()
        self.rows = train.select_columns([c for c in train.column_names if c in tokenizer.model_input_names])
        self.collate = DataCollatorWithPadding(tokenizer)

    def signals(self, batch: Mapping[str, Tensor]) -> Features:
        if "idx" not in batch:
            raise KDistillError("a batch for a teacher with another tokenizer must carry the example index 'idx'")
        device = batch["input_ids"].device
        rows = self.rows[batch["idx"].tolist()]
        t_batch = self.collate([dict(zip(rows, vals, strict=True)) for vals in zip(*rows.values(), strict=True)])
        t_batch = {k: v.to(device) for k, v in t_batch.items()}
        with torch.no_grad():
            out = forward_features(self.teacher.to(device), t_batch, self.request)
        return per_example(out)
