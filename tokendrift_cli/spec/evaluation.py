"""Judging samples: Gen.-PPL, entropy, validation perplexity, n-gram JSD."""

from typing import Annotated, Literal, Optional

from pydantic import Field

from tokendrift_cli.spec.base import NonEmpty, StrictModel

Metric = Literal["genppl", "entropy", "val_ppl", "ngram_jsd"]


class EvaluationSpec(StrictModel):
    genppl_model: NonEmpty = Field(
        "auto",
        description="judge: 'oracle' (exact, synthetic language), a causal LM name/path (gpt2-large), or 'auto': oracle for synthetic-language models, gpt2-large otherwise",
    )
    judge_batch_size: int = Field(8, ge=1, description="texts per judge forward pass")
    judge_dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="judge weights dtype")
    metrics: list[Metric] = Field(["genppl", "entropy", "ngram_jsd"], min_length=1, description="metrics to report for each model and NFE, or for the samples")
    nfe: list[Annotated[int, Field(ge=1)]] = Field([4, 8, 16, 32], min_length=1, description="NFE sweep when sampling from models")
    oracle_epsilon: float = Field(1e-3, gt=0, lt=1, description="uniform share mixed into the oracle so invalid samples get a finite NLL")
    ngram_max: int = Field(4, ge=1, le=8, description="n-gram JSD over n = 1..ngram_max")
    reference: Optional[NonEmpty] = Field(None, description="held-out text for ngram_jsd (.txt or .jsonl); default: the synthetic language's own samples or the run's validation split")
    valid_sequences: int = Field(256, ge=1, description="held-out sequences for val_ppl")
