"""Judging samples: Gen.-PPL, entropy, validation perplexity, n-gram JSD."""

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class EvaluationSpec(StrictModel):
    genppl_model: str = Field("gpt2-large", description="judge: 'oracle' or a causal LM name/path")
