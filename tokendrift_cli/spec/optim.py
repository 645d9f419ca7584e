"""Optimisation and training-loop settings."""

from typing import Annotated, Literal

from pydantic import Field, field_validator

from tokendrift_cli.spec.base import Compile, StrictModel

# AdamW's moment decays, in the range torch checks only once the job has started.
Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimSpec(StrictModel):
    lr: float = Field(3e-5, gt=0, description="peak learning rate (3e-5: the TokenDrift paper's for continual training, App. F; from scratch ~1e-3)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW's decays of the first and second moment estimates")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps (none: training continues a converged checkpoint)")
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning rate after the warm-up: constant, or a cosine decay to 0 at max_steps")
    max_steps: int = Field(300, ge=1, description="optimiser steps of the run")
    batch_size: int = Field(64, ge=1, description="sequences per optimiser step, across all processes")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimiser step (batch_size is split over them and the processes)")
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of the weights; 0 disables EMA")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="Accelerate's mixed precision for the forward and backward passes")
    compile: Compile = Field(
        "auto", description="torch.compile the denoiser and the frozen drift encoder: true, false, or auto (on with CUDA, "
        "off on CPU, where the default run does not win back the compile time; docs/results.md)",
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        return "no" if value is False else value  # YAML reads a bare `no` as false
