"""Which denoiser backbone to build or load."""

from typing import Literal, Optional

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class ModelSpec(StrictModel):
    backbone: Literal["mdlm", "duo"] = Field("mdlm", description="masked (mdlm) or uniform-state (duo) diffusion")
    size: Literal["tiny", "small"] = Field("tiny", description="DiT size preset when building from scratch")
    init: Optional[str] = Field(None, description="checkpoint to continue from: hub name, local folder, or a train run dir")
