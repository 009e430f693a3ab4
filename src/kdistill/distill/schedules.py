"""Layer schedules: which layer losses are active now, and whether the prediction losses are on.

A schedule is asked `active()` every step and told `observe()` at the end of every epoch with the
epoch's mean loss per student layer. Its state is plain numbers, saved as JSON in checkpoints.

- `all`: every mapped layer and the prediction losses, every step (TinyBERT, DistilBERT, plain KD).
- `pid` (progressive): one student layer at a time, bottom-up; after the top layer, prediction only.
- `sid` (stacked): bottom-up, each new layer's loss added to the earlier ones; then everything.

A layer advances after `epochs_per_layer` epochs, or as soon as its watched loss (the [CLS] cosine
loss by default) falls below `threshold`, whichever comes first. Prediction losses run either from
the top layer's stage on (`prediction: top`) or in every stage (`always`, the paper's
"SID with soft labels always").
"""

from __future__ import annotations

from typing import Any, Protocol

from kdistill.config import ScheduleConfig
from kdistill.distill.objective import Active
from kdistill.registry import Registry


class LayerSchedule(Protocol):
    def active(self) -> Active: ...

    def observe(self, epoch: int, layer_losses: dict[str, dict[int, float]]) -> list[str]:
        """Update after an epoch; return human-readable events (e.g. 'layer 2 starts') for the log."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def describe(self) -> str: ...

    def frozen(self) -> frozenset[int]:
        """Student layers (0 = embeddings) whose weights the loop must leave unchanged in this stage."""
        ...


SCHEDULES: Registry[type] = Registry("schedule")


@SCHEDULES.register("all")
class AllLayers:
    """Every mapped layer and the prediction losses, every step."""

    def __init__(self, layers: list[int] | None = None, cfg: ScheduleConfig | None = None) -> None:
        self.layers = layers

    def active(self) -> Active:
        return Active()

    def observe(self, epoch: int, layer_losses: dict[str, dict[int, float]]) -> list[str]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def describe(self) -> str:
        return "all layers"

    def frozen(self) -> frozenset[int]:
        return frozenset()


class _BottomUp:
    """Shared stage logic of PID and SID: stage i < n trains layer i; stage n is the final stage."""

    stacked = False

    def __init__(self, layers: list[int], cfg: ScheduleConfig) -> None:
        self.layers = sorted(set(layers))
        self.cfg = cfg
        self.stage = 0
        self.epochs_in_stage = 0

    @property
    def n(self) -> int:
        return len(self.layers)

    def _active_layers(self, stage: int) -> frozenset[int]:
        if stage >= self.n:
            return frozenset(self.layers if self.stacked else [])
        return frozenset(self.layers[: stage + 1] if self.stacked else [self.layers[stage]])

    def active(self) -> Active:
        prediction = self.cfg.prediction == "always" or self.stage >= self.n - 1
        return Active(layers=self._active_layers(self.stage), prediction=prediction)

    def observe(self, epoch: int, layer_losses: dict[str, dict[int, float]]) -> list[str]:
        if self.stage >= self.n:
            return []
        self.epochs_in_stage += 1
        layer = self.layers[self.stage]
        watched = layer_losses.get(self.cfg.watch, {}).get(layer)
        reason = None
        if self.cfg.threshold is not None and watched is not None and watched < self.cfg.threshold:
            reason = f"{self.cfg.watch} {watched:.4f} < {self.cfg.threshold:g}"
        elif self.epochs_in_stage >= self.cfg.epochs_per_layer:
            reason = f"epoch limit {self.cfg.epochs_per_layer}"
        if reason is None:
            return []
        self.stage += 1
        self.epochs_in_stage = 0
        nxt = (f"layer {self.layers[self.stage]} starts" if self.stage < self.n
               else "final stage: " + ("prediction losses only" if not self.stacked else "all layers + prediction"))
        return [f"epoch {epoch + 1}: layer {layer} done ({reason}); {nxt}"]

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "epochs_in_stage": self.epochs_in_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state.get("stage", 0))
        self.epochs_in_stage = int(state.get("epochs_in_stage", 0))

    def frozen(self) -> frozenset[int]:
        """Student layers whose weights must not change now (0 = embeddings): with `freeze_below`, every layer
        under the one being trained (MobileBERT's progressive knowledge transfer, Sun et al. 2020); none in the
        final stage, where task distillation trains the whole student."""
        if not self.cfg.freeze_below or self.stage == 0 or self.stage >= self.n:
            return frozenset()  # the first layer trains with the embeddings
        return frozenset(range(0, self.layers[self.stage]))

    def describe(self) -> str:
        if self.stage >= self.n:
            return "final"
        return f"layer {self.layers[self.stage]} ({self.stage + 1}/{self.n})"

    def epochs_needed(self) -> int:
        """Epochs to pass every layer by the epoch limit, plus one final epoch."""
        return self.n * self.cfg.epochs_per_layer + 1


@SCHEDULES.register("pid")
class Progressive(_BottomUp):
    """PID: one student layer at a time, bottom-up."""

    stacked = False


@SCHEDULES.register("sid")
class Stacked(_BottomUp):
    """SID: bottom-up, each stage keeps the losses of the layers below."""

    stacked = True


def build_schedule(cfg: ScheduleConfig, layers: list[int]) -> LayerSchedule:
    """`layers` are the student layers that have per-layer losses (0 = embeddings counts as a layer)."""
    return SCHEDULES.get(cfg.name)(layers=layers, cfg=cfg)
