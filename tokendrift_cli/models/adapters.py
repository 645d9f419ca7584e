"""Masked diffusion LMs behind one interface, for the probe.

The family facts (mask id, EOS ids, logit shift, chat template) come from the presets
(presets/probe-*.yaml), not from constants here: our DiT folders, train runs and
released MDLM checkpoints carry their own mask id; any other model is loaded with `transformers`
and the ids the spec gives.
"""

from __future__ import annotations

from typing import Callable

import torch

from tokendrift_cli.errors import InputError, first_line
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
    from tokendrift_cli.models.exact import is_exact, load_exact
    from tokendrift_cli.models.loading import default_device, is_denoiser, load_denoiser, load_tokenizer_for, locate

    exact = is_exact(model_ref)
    if exact or is_denoiser(local := locate(model_ref)):  # ours, the exact one, a released MDLM / DUO (folder or .ckpt)
        if exact:
            model, tokenizer = load_exact(model_ref, seq_len=None)
        else:
            model = load_denoiser(model_ref, weights=spec.weights).to(DTYPES[spec.dtype])  # type: ignore[arg-type]  # transformers wraps Module.to with functools.wraps, whose hints take self first
            tokenizer = load_tokenizer_for(model_ref)
        mask_id = spec.mask_id if spec.mask_id is not None else model.config.mask_token_id
        if mask_id is None:
            raise InputError(f"probe.model: {model_ref} is a {model.config.backbone} backbone without a mask token")
    else:
        from transformers import AutoModel, AutoTokenizer

        if spec.mask_id is None:
            raise InputError(f"probe.mask_id: required for {model_ref} (see the probe-* presets)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=spec.trust_remote_code)
            model = AutoModel.from_pretrained(local, trust_remote_code=spec.trust_remote_code, dtype=DTYPES[spec.dtype])
        except (OSError, ValueError) as err:  # the files are here (locate fetched them): a broken or foreign model
            raise InputError(f"probe.model: {local}: transformers cannot load it ({first_line(err)})") from None
        mask_id = spec.mask_id
    model = model.to(default_device()).eval()
    forward = _dream_forward(model) if model.config.model_type.lower() == "dream" else _padding_mask_forward(model)
    eos_ids = spec.eos_ids or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if spec.chat_template == "on" and not has_template:
        raise InputError(f"probe.chat_template: on, but {model_ref}'s tokenizer has no chat template")
    use_template = spec.chat_template == "on" or (spec.chat_template == "auto" and has_template)
    # LLaDA's config names its context max_sequence_length; ours and most others max_position_embeddings.
    # The exact denoiser reads a sequence of any length.
    length = None if exact else getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "max_sequence_length", None)
    return MaskedLMAdapter(forward, tokenizer, mask_id, eos_ids, spec.shift, use_template, model_ref, model.config.vocab_size, length)


def _padding_mask_forward(model) -> Forward:
    """Ours, LLaDA and models like them take the 2-D padding mask and turn it into an attention bias themselves."""

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits

    return forward


def _dream_forward(model) -> Forward:
    """Dream hands `attention_mask` to scaled_dot_product_attention as it is, so it gets what Dream's
    own generation code builds: "full" with no position ids when nothing is padded; otherwise a
    [B, 1, L, L] boolean mask (query and key both real tokens) and position ids that count real
    tokens only, so a left-padded prompt sits at the positions it would have alone."""

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = ids.to(model.device), mask.to(model.device)
        if bool(mask.all()):
            return model(input_ids=ids, attention_mask="full", position_ids=None).logits
        real = mask.bool()
        positions = (mask.long().cumsum(-1) - 1).masked_fill(~real, 1)
        pairs = real[:, None, None, :] & real[:, None, :, None]
        return model(input_ids=ids, attention_mask=pairs, position_ids=positions).logits

    return forward
