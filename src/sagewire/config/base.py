"""Shared base for every settings model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Immutable, and unknown keys are errors: a typo fails start-up instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
