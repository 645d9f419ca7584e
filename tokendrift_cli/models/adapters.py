"""Masked diffusion LMs behind one interface, for the probe.

The family facts (mask id, EOS ids, logit shift, chat template) come from the presets
(presets/probe-*.yaml), not from constants here: our DiT folders and train runs carry their own
mask id; any other model is loaded with `transformers` and the ids the spec gives.
"""

from __future__ import annotations

from typing import Callable

import torch

from tokendrift_cli.errors import InputError
from tokendrift_cli.models.loading import DTYPES
from tokendrift_cli.spec.probe import ProbeSpec

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class MaskedLMAdapter:
    """`logits(ids, attention_mask)[:, i]` is always the prediction FOR position i."""

    def __init__(
        self, forward: Forward, tokenizer, mask_id: int, eos_ids: list[int], shift: bool, use_template: bool, name: str,
        vocab_size: int | None = None, length: int | None = None,
    ):
        self._forward = forward
        self.tokenizer, self.mask_id, self.eos_ids = tokenizer, mask_id, eos_ids
        self.shift, self.use_template, self.name = shift, use_template, name
        self.vocab_size, self.length = vocab_size, length  # the model's, where known: the spec is checked against them

    def tokenize_prompt(self, text: str) -> list[int]:
        if self.use_template:
            return list(self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False,
            ))
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self._forward(input_ids, attention_mask)
        if self.shift:  # Dream: position i is predicted at i - 1
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    @property
    def pad_id(self) -> int:
        """Left padding (never attended to): the tokenizer's pad, else its first EOS id."""
        if self.tokenizer.pad_token_id is not None:
            return self.tokenizer.pad_token_id
        return self.eos_ids[0] if self.eos_ids else 0

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])


def load_adapter(spec: ProbeSpec, model_ref: str) -> MaskedLMAdapter:
    from tokendrift_cli.models.loading import load_denoiser, load_tokenizer_for, resolve_model_dir

    local = resolve_model_dir(model_ref)
    ours = local is not None and (local / "config.json").is_file() and '"tokendrift-dit"' in (local / "config.json").read_text()
    if ours or model_ref == "kuleshov-group/mdlm-owt":
        model = load_denoiser(model_ref).to(DTYPES[spec.dtype]).eval()
        tokenizer = load_tokenizer_for(model_ref)
        mask_id = spec.mask_id if spec.mask_id is not None else model.config.mask_token_id
        if mask_id is None:
            raise InputError(f"probe.model: {model_ref} is a {model.config.backbone} backbone without a mask token")
        forward = lambda ids, mask: model(input_ids=ids, attention_mask=mask)  # noqa: E731
    else:
        from transformers import AutoModel, AutoTokenizer

        if spec.mask_id is None:
            raise InputError(f"probe.mask_id: required for {model_ref} (see the probe-* presets)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_ref, trust_remote_code=spec.trust_remote_code)
            model = AutoModel.from_pretrained(model_ref, trust_remote_code=spec.trust_remote_code, dtype=DTYPES[spec.dtype]).eval()
        except OSError as err:
            raise InputError(f"probe.model: cannot load '{model_ref}' ({type(err).__name__}; offline?)") from None
        if torch.cuda.is_available():
            model = model.to("cuda")
        mask_id = spec.mask_id
        forward = lambda ids, mask: model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits  # noqa: E731
    eos_ids = spec.eos_ids or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if spec.chat_template == "on" and not has_template:
        raise InputError(f"probe.chat_template: on, but {model_ref}'s tokenizer has no chat template")
    use_template = spec.chat_template == "on" or (spec.chat_template == "auto" and has_template)
    # LLaDA's config names its context max_sequence_length; ours and most others max_position_embeddings.
    length = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "max_sequence_length", None)
    return MaskedLMAdapter(forward, tokenizer, mask_id, eos_ids, spec.shift, use_template, model_ref, model.config.vocab_size, length)
