"""Frozen feature spaces: soft tokens [B, L, V] → features [B, L, F].

The encoder owns the frozen embedding table the soft tokens are lifted with (p @ E), and its
parameters never train; gradients flow through it to the probabilities, hence to the logits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tokendrift_cli.spec.drift import DriftSpec


class FeatureEncoder(nn.Module):
    """Base class: freezes whatever module it wraps."""

    def freeze(self) -> "FeatureEncoder":
        self.eval()
        self.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "FeatureEncoder":
        return super().train(False)  # frozen means frozen: no dropout, ever

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BackboneCopyEncoder(FeatureEncoder):
    """The denoiser's frozen initial copy, read at clean conditioning (sigma = 0): its final hidden states."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.freeze()

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        embeds = self.model.get_input_embeddings()(probs)
        return self.model.hidden_states(embeds, sigma=None)[0]


class TransformersEncoder(FeatureEncoder):
    """Any `transformers` model with input embeddings (e.g. gpt2 for gpt2-tokenized MDLM/DUO)."""

    def __init__(self, name_or_path: str):
        super().__init__()
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(name_or_path)
        self.freeze()

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        table = self.model.get_input_embeddings().weight
        probs = _match_vocab(probs, table.shape[0])
        return self.model(inputs_embeds=probs.to(table.dtype) @ table).last_hidden_state


def _match_vocab(probs: torch.Tensor, size: int) -> torch.Tensor:
    """Pad or trim the probability vectors to the encoder's vocabulary. Trimming drops ids the
    encoder lacks, e.g. MDLM's [MASK] after GPT-2's 50257 tokens, whose probability SUBS zeroes."""
    vocab = probs.shape[-1]
    if vocab < size:
        return torch.nn.functional.pad(probs, (0, size - vocab))
    return probs[..., :size]


def build_encoder(spec: DriftSpec, model: nn.Module, tokenizer=None) -> FeatureEncoder:
    if spec.encoder == "backbone-copy":
        return BackboneCopyEncoder(model)
    return TransformersEncoder(spec.encoder)
