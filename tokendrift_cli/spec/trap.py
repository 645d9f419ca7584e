"""The marginal trap: parallel decoding from per-token marginals versus the joint."""

from typing import Literal, Optional

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class TrapSpec(StrictModel):
    mode: Literal["exact", "model"] = "exact"
    joint: Optional[str] = Field(None, description="JSON file of a tiny joint, e.g. {'I like': 0.5, 'he likes': 0.5}")
