"""Diffusion processes: MDLM (masked) and DUO (uniform-state), their losses and one shared sampler."""

from __future__ import annotations

from tokendrift_cli.diffusion.base import DiffusionProcess, LossOutput, exclude_mask
from tokendrift_cli.diffusion.duo import DUO
from tokendrift_cli.diffusion.mdlm import MDLM
from tokendrift_cli.diffusion.schedule import LogLinearSchedule
from tokendrift_cli.spec.diffusion import DiffusionSpec

__all__ = ["DUO", "MDLM", "DiffusionProcess", "LossOutput", "LogLinearSchedule", "exclude_mask", "make_process"]


def make_process(
    backbone: str, spec: DiffusionSpec, vocab_size: int, mask_id: int | None, time_conditioning: bool,
) -> DiffusionProcess:
    schedule = LogLinearSchedule(spec.eps)
    if backbone == "mdlm":
        if mask_id is None:
            raise ValueError("MDLM needs a mask token id")
        return MDLM(vocab_size, mask_id, schedule, spec.sampling_eps, spec.antithetic, time_conditioning)
    if backbone == "duo":
        return DUO(vocab_size, schedule, spec.sampling_eps, spec.antithetic, time_conditioning)
    raise ValueError(f"unknown backbone {backbone!r}")
