"""Single-pass probe of a masked model over a prompt plus N masks."""

from typing import Optional

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class ProbeSpec(StrictModel):
    prompts: Optional[str] = Field(None, description="JSONL file, one {'prompt': ...} per line")
    num_masks: int = Field(128, ge=1)
    top_k: int = Field(3, ge=1)
