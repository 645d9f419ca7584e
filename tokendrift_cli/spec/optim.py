"""Optimisation and training-loop settings."""

from typing import Annotated, Literal

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel

# AdamW's moment decays, in the range torch checks only once the job has started.
Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimSpec(StrictModel):
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    max_steps: int = Field(400, ge=1)
    batch_size: int = Field(64, ge=1, description="sequences per optimiser step, across all processes")
    grad_accum: int = Field(1, ge=1)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of the weights; 0 disables EMA")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
