"""Frozen feature spaces: soft tokens [B, L, V] → one feature tensor [B, L, F] per chosen layer.

The encoder owns the frozen embedding table the soft tokens are lifted with (p @ E), and its
parameters never train; gradients flow through it to the probabilities, hence to the logits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tokendrift_cli.spec.drift import DriftSpec


class FeatureEncoder(nn.Module):
    """Base class: freezes whatever module it wraps and picks the feature layers (indices into
    [embeddings, block 1, ..., block N]; negative ones count from the top; None: every block)."""

    layers: tuple[int, ...] | None = None

    def freeze(self) -> "FeatureEncoder":
        self.eval()
        self.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "FeatureEncoder":
        return super().train(False)  # frozen means frozen: no dropout, ever

    def forward(self, probs: torch.Tensor) -> list[torch.Tensor]:
        states = self.hidden_states(probs)
        return [states[i] for i in self.layers] if self.layers else list(states[1:])

    def hidden_states(self, probs: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, ...]:
        raise NotImplementedError


class BackboneCopyEncoder(FeatureEncoder):
    """The denoiser's frozen initial copy, read at clean conditioning (sigma = 0)."""

    def __init__(self, model: nn.Module, layers: tuple[int, ...] | None):
        super().__init__()
        self.model, self.layers = copy.deepcopy(model), layers
        self.freeze()

    def hidden_states(self, probs: torch.Tensor) -> list[torch.Tensor]:
        embeds = self.model.get_input_embeddings()(probs)
        return self.model.hidden_states(embeds, sigma=None)[0]


class TransformersEncoder(FeatureEncoder):
    """Any `transformers` model with input embeddings (e.g. gpt2 for gpt2-tokenized MDLM/DUO)."""

    def __init__(self, name_or_path: str, layers: tuple[int, ...] | None):
        super().__init__()
        from transformers import AutoModel

        self.model, self.layers = AutoModel.from_pretrained(name_or_path), layers
        self.freeze()

    def hidden_states(self, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        table = self.model.get_input_embeddings().weight
        probs = _match_vocab(probs, table.shape[0])
        return self.model(inputs_embeds=probs.to(table.dtype) @ table, output_hidden_states=True).hidden_states


def _match_vocab(probs: torch.Tensor, size: int) -> torch.Tensor:
    """Pad or trim the probability vectors to the encoder's vocabulary. Trimming drops ids the
    encoder lacks, e.g. MDLM's [MASK] after GPT-2's 50257 tokens, whose probability SUBS zeroes."""
    vocab = probs.shape[-1]
    if vocab < size:
        return torch.nn.functional.pad(probs, (0, size - vocab))
    return probs[..., :size]


def build_encoder(spec: DriftSpec, model: nn.Module, tokenizer=None) -> FeatureEncoder:
    layers = tuple(spec.feature_layers) if spec.feature_layers else None
    if spec.encoder == "backbone-copy":
        return BackboneCopyEncoder(model, layers)
    return TransformersEncoder(spec.encoder, layers)
