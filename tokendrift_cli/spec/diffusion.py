"""Noise schedule and diffusion-process settings shared by MDLM and DUO."""

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class DiffusionSpec(StrictModel):
    eps: float = Field(1e-3, gt=0, lt=1, description="log-linear schedule: alpha_t = 1 - (1 - eps) t, so alpha_1 = eps (MDLM/DUO default 1e-3)")
    sampling_eps: float = Field(1e-3, ge=0, lt=1, description="training times t are drawn from [sampling_eps, 1] (MDLM/DUO default 1e-3)")
    antithetic: bool = Field(True, description="low-discrepancy training times: one stratified t per sequence of the batch")
