"""Released MDLM / DUO checkpoints → our DiTModel.

Our parameter names mirror the reference `DIT` module (kuleshov-group/mdlm and s-sahoo/duo,
models/dit.py), so conversion strips the wrapper's prefix ("backbone." in the HF and
Lightning checkpoints), drops what we recompute or do not use, and checks every name and
shape. The table is in docs/checkpoints.md.
"""

from __future__ import annotations

import re
from typing import TypeVar

import torch

from tokendrift_cli.errors import InputError
from tokendrift_cli.models.dit import DiTConfig

PREFIXES = ("backbone.", "model.backbone.", "module.backbone.")
# Recomputed from the config (rotary frequencies) or not part of the denoiser.
DROPPED = re.compile(r"^(rotary_emb\.inv_freq)$")
# The tensors whose shapes give the model's sizes.
SIZED_BY = ("vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.2.weight", "blocks.0.mlp.0.weight")
Value = TypeVar("Value")  # a tensor, or None where only the names are read


def strip_prefix(state_dict: dict[str, Value]) -> dict[str, Value]:
    """Keep the denoiser's entries (EMA shadows, noise schedules, teachers are other prefixes)."""
    for prefix in PREFIXES:
        if any(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    return dict(state_dict)


def config_from_reference(state_dict: dict[str, torch.Tensor], num_attention_heads: int, backbone: str, source: str, **overrides) -> DiTConfig:
    """Sizes read off the tensors; the head count is not in the shapes and must be given. MDLM's
    absorbing state is the last id (50257 for GPT-2's vocabulary); DUO has none. `source` (the
    file) starts every error message."""
    sd = strip_prefix(state_dict)
    for name in SIZED_BY:
        if name not in sd:
            raise InputError(f"{source}: checkpoint lacks {name}; not an MDLM or DUO DiT")
    vocab_size, hidden_size = sd["vocab_embed.embedding"].shape
    if hidden_size % num_attention_heads:
        raise InputError(f"{source}: {num_attention_heads} heads do not divide the hidden size {hidden_size}")
    num_layers = len({int(m.group(1)) for key in sd if (m := re.match(r"blocks\.(\d+)\.", key))})
    return DiTConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        cond_dim=sd["sigma_map.mlp.2.weight"].shape[0],
        frequency_embedding_size=sd["sigma_map.mlp.0.weight"].shape[1],
        mlp_ratio=sd["blocks.0.mlp.0.weight"].shape[0] // hidden_size,
        backbone=backbone,
        mask_token_id=vocab_size - 1 if backbone == "mdlm" else None,
        **overrides,
    )


def convert_reference_state_dict(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Map reference names onto ours; `expected` is our model's state_dict (names and shapes)."""
    converted = {key: value for key, value in strip_prefix(state_dict).items() if not DROPPED.match(key)}
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing:
        raise InputError(f"{source}: checkpoint lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if unexpected:
        raise InputError(f"{source}: checkpoint has unknown parameter {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
    for key, value in converted.items():
        if value.shape != expected[key].shape:
            raise InputError(f"{source}: {key}: checkpoint shape {tuple(value.shape)} != model shape {tuple(expected[key].shape)}")
    return converted
