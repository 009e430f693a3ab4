"""Named distillation recipes (`--preset`): the student and losses the benchmarks measured best across tasks.

A preset fills the parts of a `distill` config the user did not give. `train` and `student` are merged key by key
(`--epochs 1` shortens a preset run and keeps its learning rate; `--student.embedding_size 32` resizes the preset's
student), except that a student with another `init` replaces the preset's student whole (its sizes belong to its
init). `losses`, `stages` and `schedule` are taken whole, and the user's `losses` are a single stage of their own.
The choice and its figures are in the README ("Which student for which speed budget") and
`benchmarks/results/mobile_ada.md` (SST-2, MRPC) and `benchmarks/results/tasks.md` (STS-B, CoNLL-2003, SQuAD,
GoEmotions), one seed each, on a MiniLM-L6 teacher (a base-size teacher, 12 x 768, makes every student several times
faster again). `balanced`'s losses are chosen by the mean over those six tasks: soft targets + hidden + attention
beat soft targets alone by 1.2 points on average (SQuAD +6.3 F1, MRPC +1.5, SST-2 +0.2; STS-B, CoNLL-2003 and
GoEmotions -0.2 each, within one seed's noise).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "apply_preset", "preset_log_line"]

_SOFT_TARGETS = [{"name": "soft_targets", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
# feature-map transfer from the mapped teacher layers (uniform map): hidden states and attention distributions
_FEATURES = [{"name": "hidden_mse", "weight": 1.0}, {"name": "attn_kl", "weight": 1.0}]
# student fields that change its width or kind: a student changed so gets the preset's `losses_other_student`
_RESHAPING = ("init", "path", "hidden_size", "intermediate_size", "num_attention_heads", "embedding_size")

PRESETS: dict[str, dict[str, Any]] = {
    # 3 of the teacher's layers at full width, soft targets + hidden states + attention distributions. Measured
    # (benchmarks/mobile_ada.py, MiniLM-L6 teacher, one seed): SST-2 86.93 (99.0%) at 1.8-2.0x / 2.0-2.1x (batch
    # 1 / 32); MRPC F1 82.14 (96.6%) at 1.9x / 2.0x. A narrowed or other student gets the soft targets alone
    "balanced": {
        "student": {"init": "teacher_layers", "num_layers": 3},
        "losses": [*_SOFT_TARGETS, *_FEATURES],
        "train": {"epochs": 3, "lr": 5e-5},
    },
    # A CNN (256 filters each of widths 3, 4, 5, in parallel) over the teacher's word embeddings, on its logits
    # (Tang et al. 2019; benchmarks/blackbox.py's recipe). The best mean over SST-2 and MRPC of the fast students
    # measured: SST-2 83.91 at 5.9-7.9x / 8.5-9.8x, MRPC F1 81.94 at 6.2x / 9.6x; MobileBERT 4L-256 with joint
    # hidden_cka transfer got 83.31 / 81.66 at 3.2-5.8x, 2L-192 78.91 / 81.76 (sequence tasks: refused for NER, QA)
    "fast": {
        "student": {"init": "cnn", "hidden_size": 256},
        "losses": [{"name": "logit_mse"}],
        "train": {"epochs": 3, "lr": 3e-3},
    },
}
"""preset name -> the DistillConfig fields it sets (YAML/dict form)."""

LOSSES_OTHER_STUDENT: dict[str, list[dict[str, Any]]] = {"balanced": _SOFT_TARGETS}
"""A preset's losses for a student the user narrowed or changed in kind (`--student.hidden_size`, another
`--student.init`): feature losses through a projection gained nothing on narrowed students and collapse random-init
ones (README, "No silent collapse"), and a student with its own tokenizer cannot match the teacher's tokens."""

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
    mine_student = data.get("student")
    mine_student = mine_student.model_dump(exclude_unset=True) if hasattr(mine_student, "model_dump") else mine_student
    if name in LOSSES_OTHER_STUDENT and isinstance(mine_student, dict) and any(
            k in mine_student and mine_student[k] != preset["student"].get(k) for k in _RESHAPING):
        preset["losses"] = copy.deepcopy(LOSSES_OTHER_STUDENT[name])
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


def preset_log_line(cfg: Any) -> str:
    """The run log's line for a preset run (`cfg`: a validated `DistillConfig` with `preset` set): what the run
    trains with, the user's flags merged over the preset, and whether the preset's feature losses were dropped for a
    student that is not its own."""
    name = cfg.preset
    line = (f"preset {name}, your own flags over it: student.init {cfg.student.init}, lr {cfg.train.lr:g}, "
            f"{cfg.train.epochs:g} epoch{'' if cfg.train.epochs == 1 else 's'}" + (" per stage" if cfg.stages else ""))
    other = LOSSES_OTHER_STUDENT.get(name)
    if other is not None and [(t.name, t.weight, t.temperature) for t in cfg.losses] == [
            (t["name"], t.get("weight", 1.0), t.get("temperature", 1.0)) for t in other]:
        line += (f"; {name}'s feature losses are left out, the student being not the preset's own (soft targets "
                 "only)")
    return line
