"""Single-pass probe of a masked model over a prompt plus N masks."""

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from tokendrift_cli.spec.base import NonEmpty, StrictModel
from tokendrift_cli.spec.model import Weights


class ProbeSpec(StrictModel):
    model: Optional[NonEmpty] = Field(None, description="masked diffusion LM: hub name, local folder or train run dir, or exact:mdlm (the synthetic language's exact posterior); default: the latest train run")
    weights: Weights = "ema"
    prompts: Optional[NonEmpty] = Field(None, description="JSONL file, one {'prompt': ..., 'id'?: ...} per line")
    prompt: Optional[NonEmpty] = Field(None, description="a single prompt text (instead of a file)")
    from_lima: Optional[NonEmpty] = Field(None, description="build the prompts from a local LIMA train.jsonl (first user turn of each conversation)")
    num_prompts: Optional[int] = Field(None, ge=1, description="use at most this many prompts (LIMA: how many to draw, seeded)")
    num_masks: int = Field(128, ge=1, description="mask tokens appended to each prompt")
    top_k: int = Field(3, ge=1, description="predictions kept per masked position")
    chat_template: Literal["auto", "on", "off"] = Field("auto", description="wrap prompts with the tokenizer's chat template; auto: when it has one")
    batch_size: int = Field(8, ge=1, description="prompts per forward pass (left-padded so the masks line up)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model weights dtype")
    mask_id: Optional[int] = Field(None, ge=0, description="mask token id (LLaDA 126336, Dream 151666); default: the model's own")
    eos_ids: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, description="ids counted as end of text (EOS, end of turn); default: the tokenizer's EOS")
    shift: bool = Field(False, description="logits are shifted right by one: the prediction for position i sits at i-1 (Dream)")
    trust_remote_code: bool = Field(False, description="let transformers run the model family's own code (LLaDA, Dream)")

    @model_validator(mode="after")
    def one_prompt_source(self) -> "ProbeSpec":
        given = [name for name in ("prompts", "prompt", "from_lima") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one of prompts, prompt, from_lima (got {', '.join(given)})")
        return self
