"""Layer schedules: which layer losses are active now, and whether the prediction losses are on.

A schedule is asked `active()` every step and told `observe()` at the end of every epoch with the
epoch's mean loss per student layer. Its state is plain numbers, saved as JSON in checkpoints.
"""

from __future__ import annotations

from typing import Any, Protocol

from kdistill.objective import Active
from kdistill.registry import Registry


class LayerSchedule(Protocol):
    def active(self) -> Active: ...

    def observe(self, epoch: int, layer_losses: dict[str, dict[int, float]]) -> list[str]:
        """Update after an epoch; return human-readable events (e.g. 'layer 2 starts') for the log."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def describe(self) -> str: ...


SCHEDULES: Registry[type] = Registry("schedule")


@SCHEDULES.register("all")
class AllLayers:
    """Every mapped layer and the prediction losses, every step (TinyBERT, DistilBERT, plain KD)."""

    def __init__(self, student_layers: list[int] | None = None, **_: Any) -> None:
        self.student_layers = student_layers

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
