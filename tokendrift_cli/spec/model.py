"""Which denoiser backbone to build or load."""

from typing import Literal, Optional

from pydantic import Field

from tokendrift_cli.spec.base import NonEmpty, StrictModel


class ModelSpec(StrictModel):
    backbone: Literal["mdlm", "duo"] = Field("mdlm", description="masked (mdlm) or uniform-state (duo) diffusion")
    size: Literal["tiny", "small"] = Field("tiny", description="DiT size when training from scratch: tiny (CPU) or small (12 layers, 768 hidden, as in the papers)")
    init: Optional[NonEmpty] = Field(None, description="checkpoint to continue from: hub name (kuleshov-group/mdlm-owt, s-sahoo/duo), local folder, .ckpt file or train run dir")
    time_conditioning: Optional[bool] = Field(None, description="condition on the noise level σ; default as the papers: off for MDLM, on for DUO")
    dropout: Optional[float] = Field(None, ge=0, lt=1, description="dropout when training from scratch; default: the size's")
