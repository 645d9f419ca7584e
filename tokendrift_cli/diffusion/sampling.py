"""Pieces every sampler shares: seeded categorical draws, temperature and nucleus filtering."""

from __future__ import annotations

import torch


def time_grid(nfe: int, device: torch.device) -> torch.Tensor:
    """t = 1 → 0 in `nfe` equal steps, the grid of every fixed-NFE sampler; there is no sampler
    without a call (MDLM would return all masks, DUO would make one call and report none)."""
    if nfe < 1:
        raise ValueError(f"nfe must be at least 1, got {nfe}")
    return torch.linspace(1, 0, nfe + 1, dtype=torch.float64, device=device)


def categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of `probs` [..., V] (rows need not be normalised)."""
    flat = probs.reshape(-1, probs.shape[-1]).float()
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def prediction_probs(log_probs: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """The denoiser's x0 prediction as probabilities, with temperature and nucleus (top-p) filtering."""
    probs = torch.softmax(log_probs.double() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = probs * keep
        probs = probs / probs.sum(-1, keepdim=True)
    return probs
