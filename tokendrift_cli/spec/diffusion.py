"""Noise schedule and diffusion-process settings shared by MDLM and DUO."""

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class DiffusionSpec(StrictModel):
    eps: float = Field(1e-3, gt=0, lt=1, description="smallest noise level of the log-linear schedule")
