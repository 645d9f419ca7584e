"""Fixed-NFE generation settings."""

from typing import Optional

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class SamplingSpec(StrictModel):
    nfe: int = Field(32, ge=1, description="network calls per sequence")
    num_samples: int = Field(64, ge=1)
    batch_size: int = Field(32, ge=1)
    seq_len: Optional[int] = Field(None, ge=2, description="default: the model's training length")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
