"""Class labels: how a cell becomes a label key, how class names compare, and whether a model's classes fit the data.

Integer-looking cells are class ids; names compare case- and separator-insensitively ("Not_Entailment" ==
"not entailment"). `check_labels` runs before any training, so a model that cannot represent the data's classes,
or names them differently, is refused with one line rather than trained into nonsense.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from kdistill.errors import KDistillError

if TYPE_CHECKING:
    from kdistill.data import TaskData

__all__ = ["label_key", "norm_label", "norm_names", "check_labels"]

_INT_RE = re.compile(r"[+-]?\d+")


def label_key(v: Any) -> Any:
    """Integer labels compare as ints whether written 1, "1" or 1.0; everything else as text."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    s = str(v).strip()
    return int(s) if _INT_RE.fullmatch(s) else s


def norm_label(name: str) -> str:
    """A class name compared case- and separator-insensitively."""
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def norm_names(names: list[str]) -> list[str]:
    """"Not_Entailment" == "not entailment"."""
    return [norm_label(n) for n in names]


def _class_counts(data: TaskData) -> str:
    """'0: 3400 rows, 1: 3500 rows, NA: 1 row' over every split, so a stray label value shows with its count."""
    counts = Counter(int(v) for split in data.splits.values() for v in split["label"])
    return ", ".join(f"{name}: {counts[i]} row{'s' * (counts[i] != 1)}" for i, name in enumerate(data.label_names))


def check_labels(data: TaskData, num_model_labels: int, model_id2label: dict | None = None,
                 model_name: str = "model") -> None:
    """Fail before training when the model cannot represent the data's classes, or names them apart.

    Raises `KDistillError` when the data has more classes than the model; when it has fewer named classes
    (a 3-class teacher on a 2-class task) unless they are the model's first classes by name; or when the
    names differ.
    Fewer classes given as bare integer ids are fine: the ids are the model's.
    """
    if data.num_labels > num_model_labels:
        raise KDistillError(f"labels outside the model's classes: data has {data.num_labels} classes "
                            f"({_class_counts(data)}), model '{model_name}' has {num_model_labels}: a stray "
                            "label value makes a class of its own")
    id2label = model_id2label or {}
    model_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_model_labels)]
    ids_only = data.label_names == [str(i) for i in range(data.num_labels)]
    if data.num_labels < num_model_labels and not ids_only and (  # named classes: is it clear which is which?
            norm_names(data.label_names) != norm_names(model_names[:data.num_labels])):
        raise KDistillError(f"model '{model_name}' has {num_model_labels} classes ({', '.join(model_names)}), the "
                            f"data has {data.num_labels} ({', '.join(data.label_names)}): give data.label_names in "
                            f"the model's class order to map them, or use a {data.num_labels}-class model")
    if not model_id2label:
        return
    if all(re.fullmatch(r"LABEL_\d+", n) for n in model_names):
        return  # default names carry no meaning
    if data.label_names == [str(i) for i in range(data.num_labels)]:
        return  # the data names its classes only by id
    if norm_names(data.label_names) != norm_names(model_names[:data.num_labels]):
        raise KDistillError(f"label names differ: data has {data.label_names} (by id), "
                            f"model '{model_name}' has {model_names}")
