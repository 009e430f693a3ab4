"""What a model can take: its longest input, checked against `data.max_length` before any training.

A `max_length` past a model's position table fails deep inside the first forward pass (an index error
in the position embeddings), or worse, only at the first long example after hours of training. Checking
it at set-up turns that into one line that names the model and its limit.
"""

from __future__ import annotations

from typing import Any

from kdistill.errors import KDistillError

__all__ = ["max_positions", "check_max_length"]

# Families whose position ids start after the padding index (fairseq style): usable = table - padding_idx - 1.
_OFFSET_FAMILIES = frozenset({"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text",
                              "xlm-roberta-xl", "roberta-prelayernorm", "ibert", "luke", "markuplm"})


def max_positions(config: Any) -> int | None:
    """The most tokens one example may have for a model with this config, or None when it has no limit
    (relative positions, BiLSTM/CNN students).

    Reads `max_position_embeddings`; for RoBERTa-style families subtracts `pad_token_id + 1`, since their
    position ids start there (RoBERTa/MPNet: 514 - 2 = 512).
    """
    table = getattr(config, "max_position_embeddings", None)
    if not isinstance(table, int) or table <= 0:
        return None
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None  # relative positions have no table to run past
    if getattr(config, "model_type", "") in _OFFSET_FAMILIES:
        table -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return table


def check_max_length(max_length: int, config: Any, role: str, name: str) -> None:
    """Raise `KDistillError` when `max_length` tokens do not fit the model (`role` 'teacher', `name` its path)."""
    limit = max_positions(config)
    if limit is not None and max_length > limit:
        raise KDistillError(f"data.max_length {max_length} is longer than the {role} '{name}' can read ({limit} "
                            f"positions): set --max_length {limit} or less")
