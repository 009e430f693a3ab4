"""What a model can take: its longest input, checked against `data.max_length` before any training.

A `max_length` past a model's position table fails deep inside the first forward pass (an index error
in the position embeddings), or worse, only at the first long example after hours of training. Checking
it at set-up turns that into one line that names the model and its limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdistill.errors import KDistillError

if TYPE_CHECKING:
    from kdistill.config import RunConfig

__all__ = ["max_positions", "check_max_length", "model_config", "check_run_lengths"]

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


def check_max_length(max_length: int, config: Any, role: str, name: str, *, field: str = "data.max_length",
                     flag: str | None = None) -> None:
    """Raise `KDistillError` when `max_length` tokens do not fit the model (`role` 'teacher', `name` its path).

    `field` is the config field the value came from and `flag` the command-line flag that sets it, as the message
    names them (default `--` and the field's last part, `--max_length`; `kdistill run` has
    `--distill.data.max_length`).
    """
    limit = max_positions(config)
    if limit is not None and max_length > limit:
        flag = flag or f"--{field.rsplit('.', 1)[-1]}"
        raise KDistillError(f"{field} {max_length} is longer than the {role} '{name}' can read ({limit} "
                            f"positions): set {flag} {limit} or less")


def model_config(name: str) -> Any:
    """A model's config alone (no weights are read): what its position table holds.

    Raises:
        KDistillError: see `kdistill.models.resolve_model_path`; a config that does not load.
    """
    from transformers import AutoConfig

    from kdistill.models import model_load_error, resolve_model_path

    path = resolve_model_path(name)
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as err:  # OSError, ValueError: an unreadable or unknown config
        raise model_load_error(name, err) from None


def check_run_lengths(cfg: RunConfig, reuse: bool) -> None:
    """`kdistill run`: check every step's `max_length` before the fine-tuning, naming `run`'s own flags.

    The teacher's position table is its base model's (`finetune.model`: fine-tuning keeps the table), or, with
    `reuse`, the fine-tuned teacher's in `finetune.out`. A student built from teacher layers or from a smaller
    config copies the teacher's table; a path student has its own; a BiLSTM/CNN student has none.

    Raises:
        KDistillError: `finetune.data.max_length`, `distill.data.max_length` or `evaluate.data.max_length` past a
            model's positions (e.g. "... set --distill.data.max_length 512 or less"); a missing model folder.
    """
    ft, sc = cfg.finetune, cfg.distill.student
    teacher = model_config(ft.out if reuse else ft.model)
    t_name = ft.out if reuse else f"{ft.out}, fine-tuned from {ft.model}"
    if not reuse:
        check_max_length(ft.data.max_length, teacher, "model", ft.model, field="finetune.data.max_length",
                         flag="--finetune.data.max_length")
    student = (model_config(sc.path) if sc.init == "path" and sc.path
               else None if sc.init in ("bilstm", "cnn") else teacher)
    s_name = sc.path if sc.init == "path" and sc.path else "built from the teacher"
    for step, max_length in (("distill", cfg.distill.data.max_length), ("evaluate", cfg.evaluate.data.max_length)):
        field = f"{step}.data.max_length"
        check_max_length(max_length, teacher, "teacher", t_name, field=field, flag=f"--{field}")
        check_max_length(max_length, student, "student", s_name, field=field, flag=f"--{field}")
