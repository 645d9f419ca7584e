"""The TokenDrift objective: soft-token lifting, frozen feature space, drift field."""

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class DriftSpec(StrictModel):
    weight: float = Field(1.0, ge=0, description="weight of the drift loss")
