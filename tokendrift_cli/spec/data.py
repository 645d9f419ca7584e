"""Where training and evaluation text comes from."""

from typing import Optional

from pydantic import Field

from tokendrift_cli.spec.base import NonEmpty, StrictModel


class DataSpec(StrictModel):
    source: NonEmpty = Field(
        "synthetic",
        description="'synthetic' (the built-in language), a datasets hub name (e.g. openwebtext), or local .txt/.jsonl file(s) separated by commas",
    )
    tokenizer: Optional[NonEmpty] = Field(None, description="AutoTokenizer name or path for text sources (default gpt2); ignored for synthetic")
    seq_len: int = Field(32, ge=2, description="tokens per training sequence (blocks are wrapped with EOS separators)")
    num_train: int = Field(20000, ge=1, description="synthetic training sequences")
    num_valid: int = Field(512, ge=1, description="synthetic validation sequences")
    p_eos: float = Field(0.25, gt=0, lt=1, description="synthetic language: probability that a document ends after a sentence")
    text_field: NonEmpty = Field("text", description="field holding the text in .jsonl files and hub datasets")
    valid_fraction: float = Field(0.05, gt=0, lt=1, description="share of text blocks held out for validation when the source has no validation split")
    cache_dir: Optional[NonEmpty] = Field(None, description="where generated and tokenized datasets are cached (default: $TOKENDRIFT_CACHE or ~/.cache/tokendrift)")
