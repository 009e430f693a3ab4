"""Named distillation recipes (`--preset`): the student and losses the benchmarks measured best across tasks.

A preset fills the parts of a `distill` config the user did not give. `train` and `student` are merged key by key
(`--epochs 1` shortens a preset run and keeps its learning rate; `--student.embedding_size 32` resizes the preset's
student), except that a student with another `init` replaces the preset's student whole (its sizes belong to its
init). `losses`, `stages` and `schedule` are taken whole, and the user's `losses` are a single stage of their own.
The choice and its figures are in the README ("Which student for which speed budget") and
`benchmarks/results/mobile_ada.md`; the figures are on a MiniLM-L6 teacher, where a base-size teacher (12 x 768)
makes every student several times faster again.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "apply_preset"]

_SOFT_TARGETS = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]

PRESETS: dict[str, dict[str, Any]] = {
    # 3 of the teacher's layers at full width, soft targets: SST-2 98.7% / MRPC of a MiniLM-L6 teacher at 2x
    "balanced": {
        "student": {"init": "teacher_layers", "num_layers": 3},
        "losses": _SOFT_TARGETS,
        "train": {"epochs": 3, "lr": 5e-5},
    },
    # MobileBERT 4 layers, inter-block 256, bottleneck 64 (4.8M + embeddings): joint feature-map and attention
    # transfer with hidden_cka (hidden_mse through a projection collapsed it), then soft targets; 5.8x / 8.6x
    "fast": {
        "student": {"init": "mobilebert", "num_layers": 4, "hidden_size": 256, "intra_bottleneck_size": 64,
                    "num_heads": 4, "intermediate_size": 256, "num_feedforward_networks": 2, "embedding_size": 128},
        "stages": [{"name": "joint",
                    "losses": [{"name": "hidden_cka", "weight": 1.0}, {"name": "attn_kl", "weight": 1.0}]},
                   {"name": "task", "losses": _SOFT_TARGETS}],
        "train": {"epochs": 3, "lr": 1e-4},  # per stage: 6 epochs in all
    },
}
"""preset name -> the DistillConfig fields it sets (YAML/dict form)."""

_WHOLE = ("student", "losses", "stages", "schedule")


def apply_preset(data: Any) -> Any:
    """A raw `distill` config dict with its `preset` (if any) filled in under the user's own values.

    Returns `data` unchanged when there is no preset or the name is unknown (field validation then names `preset`
    and the valid names). Never mutates `data`.
    """
    name = data.get("preset") if isinstance(data, dict) else None
    if not isinstance(name, str) or name not in PRESETS:
        return data
    preset = copy.deepcopy(PRESETS[name])
    out = dict(data)
    for key, value in preset.items():
        mine = data.get(key)
        if key == "student" and isinstance(mine, dict) and mine.get("init", value["init"]) == value["init"]:
            out[key] = {**value, **mine}  # the preset's student, resized: --student.embedding_size 32
        elif key in _WHOLE:
            # the user's losses are one stage of their own: the preset's stages would replace them, and vice versa
            given = key in data or (key == "stages" and "losses" in data) or (key == "losses" and "stages" in data)
            if not given:
                out[key] = value
        elif key == "train":
            mine = data.get(key) or {}
            mine = mine.model_dump(exclude_unset=True) if hasattr(mine, "model_dump") else mine
            out[key] = {**value, **mine} if isinstance(mine, dict) else mine
        elif key not in data:
            out[key] = value
    return out
