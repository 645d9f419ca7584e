"""The marginal trap: parallel decoding from per-token marginals versus the joint."""

from typing import Literal, Optional

from pydantic import Field, model_validator

from tokendrift_cli.spec.base import NonEmpty, StrictModel
from tokendrift_cli.spec.model import Weights


class TrapSpec(StrictModel):
    mode: Literal["exact", "model"] = Field("exact", description="exact: the synthetic language's own conditionals; model: a trained denoiser's")
    joint: Optional[NonEmpty] = Field(None, description="JSON file of a tiny joint instead, e.g. {'I like': 0.5, 'he likes': 0.5}")
    model: Optional[NonEmpty] = Field(None, description="masked denoiser for mode=model: folder or train run dir (default: the latest train run)")
    weights: Weights = "ema"
    k: int = Field(2, ge=2, le=4, description="masked slots decoded together (exact mode; model mode uses pairs)")
    max_span: int = Field(3, ge=1, description="slots lie within this many positions of each other")
    num_contexts: int = Field(100, ge=1, description="sentences of the language, each with its most correlated slot set")
    seq_len: int = Field(12, ge=4, description="length of those sentences")
    num_samples: int = Field(2000, ge=10, description="Monte-Carlo decodes per measurement")
    top_m: int = Field(5, ge=1, description="model mode: candidates of the first slot clamped to get conditionals")
    tau: float = Field(0.01, gt=0, lt=1, description="model mode: a pair is incoherent when the model's p(b | a) is below tau")

    @model_validator(mode="after")
    def one_source(self) -> "TrapSpec":
        # Each mode reads one source; a second one given would be silently ignored.
        if self.mode == "model" and self.joint is not None:
            raise ValueError("mode model measures a denoiser; joint is for the exact mode's tiny joint (give one of them)")
        if self.mode == "exact" and self.model is not None:
            raise ValueError("model is read only with mode model (add --mode model)")
        return self
