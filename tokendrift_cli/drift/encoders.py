"""Frozen feature maps: a sequence of soft tokens (or token ids) → pooled features [G, B, F].

G is the number of drift sets: 1 for the paper's map, one per layer and window otherwise. The
encoder's parameters never train; gradients flow through it to the probabilities, hence to the
denoiser's logits.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tokendrift_cli.errors import InputError, first_line
from tokendrift_cli.models.dit import token_inputs
from tokendrift_cli.spec.drift import DriftSpec


class FeatureEncoder(nn.Module):
    """Base class: freezes what it wraps and pools hidden states into features.

    `features='paper'` (App. F): mean over positions of the penultimate and the final hidden
    states, concatenated and L2-normalised, one feature of size 2d per sequence.
    `features='layers'`: the hidden states at `layers` (indices into [embeddings, block 1, ...,
    block N]; None: every block), each mean-pooled over the sequence or over windows of `window`
    positions, every layer and window its own drift set of size d.
    """

    def __init__(self, features: str = "paper", layers: Sequence[int] | None = None, window: int | None = None):
        super().__init__()
        self.features, self.layers, self.window = features, tuple(layers) if layers else None, window

    def freeze(self) -> "FeatureEncoder":
        self.eval()
        self.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "FeatureEncoder":
        return super().train(False)  # frozen means frozen: no dropout, ever

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: ids [B, L] or probability vectors [B, L, V] → features [G, B, F]."""
        states = self.hidden_states(tokens)
        if self.features == "paper":
            pooled = torch.cat([states[-2].mean(1), states[-1].mean(1)], dim=-1).float()
            return F.normalize(pooled, dim=-1).unsqueeze(0)
        chosen = [states[i] for i in self.layers] if self.layers else list(states[1:])
        return torch.cat([pool(h.float(), self.window) for h in chosen])

    def hidden_states(self, tokens: torch.Tensor) -> Sequence[torch.Tensor]:
        """[embeddings, output of block 1, ..., of block N], each [B, L, d]."""
        raise NotImplementedError


def pool(states: torch.Tensor, window: int | None) -> torch.Tensor:
    """[B, L, F] → [G, B, F]: one group for the whole sequence, or one per window of positions."""
    if window is None:
        return states.mean(1).unsqueeze(0)
    batch, length, dim = states.shape
    usable = length - length % window
    return states[:, :usable].reshape(batch, usable // window, window, dim).mean(2).transpose(0, 1)


class BackboneCopyEncoder(FeatureEncoder):
    """The denoiser's frozen initial copy, read at clean conditioning (sigma = 0)."""

    def __init__(self, model: nn.Module, **pooling):
        super().__init__(**pooling)
        self.model = copy.deepcopy(model)
        # Only hidden states are read: the copy's vocabulary projection (half again a forward's
        # cost at GPT-2's vocabulary and the small size) computes an empty tensor instead.
        self.model.output_layer = _NoLogits()
        self.freeze()

    def hidden_states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(**token_inputs(tokens), output_hidden_states=True).hidden_states


class _NoLogits(nn.Module):
    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x[..., :0]


class TransformersEncoder(FeatureEncoder):
    """Any `transformers` model with input embeddings (e.g. gpt2 for gpt2-tokenized MDLM/DUO)."""

    def __init__(self, name_or_path: str, **pooling):
        super().__init__(**pooling)
        from transformers import AutoModel

        try:
            self.model = AutoModel.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:  # no such folder or hub name, not a transformers model
            raise InputError(f"drift.encoder: {name_or_path}: cannot be loaded ({first_line(err)})") from None
        self.freeze()

    def hidden_states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        table = self.model.get_input_embeddings().weight
        if tokens.is_floating_point():
            embeds = _match_vocab(tokens, table.shape[0]).to(table.dtype) @ table
        else:
            embeds = F.embedding(tokens, table)
        return self.model(inputs_embeds=embeds, output_hidden_states=True).hidden_states


def _match_vocab(probs: torch.Tensor, size: int) -> torch.Tensor:
    """Pad or trim the probability vectors to the encoder's vocabulary. Trimming drops ids the
    encoder lacks, e.g. MDLM's [MASK] after GPT-2's 50257 tokens, whose probability SUBS zeroes."""
    vocab = probs.shape[-1]
    if vocab < size:
        return F.pad(probs, (0, size - vocab))
    return probs[..., :size]


def build_encoder(spec: DriftSpec, model: nn.Module) -> FeatureEncoder:
    pooling = {"features": spec.features, "layers": spec.feature_layers, "window": spec.feature_window}
    encoder = BackboneCopyEncoder(model, **pooling) if spec.encoder == "backbone-copy" else TransformersEncoder(spec.encoder, **pooling)
    config: Any = encoder.model.config  # a transformers config: our DiT's or the named model's
    states = config.num_hidden_layers + 1  # the embeddings, then every block
    for layer in spec.feature_layers or []:
        if not -states <= layer < states:
            raise InputError(f"drift.feature_layers: {layer} is not one of the encoder's {states} hidden states (0 to {states - 1}, or -1 to -{states})")
    return encoder
