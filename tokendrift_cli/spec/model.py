"""Which denoiser backbone to build or load."""

from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator

from tokendrift_cli.spec.base import NonEmpty, StrictModel

# Which weights of a Lightning .ckpt (MDLM / DUO repositories) a command loads; one field beside
# each field that names a model.
Weights = Annotated[Literal["ema", "raw"], Field(
    description="from a Lightning .ckpt: its EMA weights (what MDLM and DUO evaluate and sample with), or raw (the training weights)"
)]


BUILTIN = "builtin"


class ModelSpec(StrictModel):
    backbone: Optional[Literal["mdlm", "duo"]] = Field(
        None, description="masked (mdlm) or uniform-state (duo) diffusion; default: the init checkpoint's (it must agree when given), else mdlm"
    )
    size: Literal["tiny", "mini", "small"] = Field(
        "tiny", description="DiT size when training from scratch: tiny (CPU), mini (6 layers, 256 hidden: ~6x tiny) or small (12 layers, 768 hidden, as in the papers)"
    )
    init: Optional[NonEmpty] = Field(
        BUILTIN,
        description="checkpoint to continue from: 'builtin' (the toolkit's own model of the synthetic language, pretrained "
        "on first use and cached), a hub name (kuleshov-group/mdlm-owt, s-sahoo/duo), local folder, .ckpt file or train "
        "run dir; 'none': train from scratch",
    )
    init_weights: Weights = "ema"
    time_conditioning: Optional[bool] = Field(None, description="condition on the noise level σ; default as the papers: off for MDLM, on for DUO")
    dropout: Optional[float] = Field(None, ge=0, lt=1, description="dropout when training from scratch; default: the size's")

    @field_validator("init", mode="before")
    @classmethod
    def _none(cls, value):
        return None if isinstance(value, str) and value.lower() in ("none", "null") else value
