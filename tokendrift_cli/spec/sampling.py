"""Fixed-NFE generation settings."""

from typing import Optional

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class SamplerSpec(StrictModel):
    """How sequences are drawn, whatever the budget: `sample` adds its NFE (SamplingSpec), `eval`
    sweeps `evaluation.nfe`, so each spec has one NFE field."""

    num_samples: int = Field(64, ge=1, description="sequences to generate (eval: for each model and NFE)")
    batch_size: int = Field(64, ge=1, description="sequences per batch")
    seq_len: Optional[int] = Field(None, ge=2, description="tokens per sequence; default: the model's training length")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the denoiser's prediction")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass kept of the denoiser's prediction")
    cache: bool = Field(True, description="MDLM without time conditioning: reuse the last prediction when no token changed (the call is skipped, not counted)")
    compile: bool = Field(False, description="torch.compile the denoiser: pays only for long sampling jobs, so off by default (docs/results.md)")


class SamplingSpec(SamplerSpec):
    nfe: int = Field(32, ge=1, description="network calls per sequence (the sampler's exact budget)")
