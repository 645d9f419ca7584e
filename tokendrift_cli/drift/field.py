"""The anti-symmetric drift field of "Generative Modeling via Drifting" (Deng et al. 2026), as
TokenDrift specifies it (§3.2), in float32 (float64 inputs stay float64, where the tests check
its identities away from float32 rounding) and without gradient.

For anchors h (the current generated features), positives u and negatives v (the anchors
themselves, each anchor's own column excluded, then any queued generated features), with a cost
c(h, y) and temperature τ: logits −c/τ over the joined columns [u, v]; A = √(row softmax ·
column softmax), the two normalised jointly as in drifting; W⁺ = A⁺ · rowsum(A⁻) and W⁻ = A⁻ ·
rowsum(A⁺). Both weight rows then sum to the same number, so

    V_τ = attraction · Σⱼ W⁺ᵢⱼ (uⱼ − hᵢ) − repulsion · Σₖ W⁻ᵢₖ (vₖ − hᵢ),

which at 1:1 is W⁺u − W⁻v = b⁺ − b⁻ (the paper's barycentre difference) and vanishes when the
positives and negatives are the same set.

Two kernels:
- `paper` (§3.2): c = ‖h − y‖² on the features as given; each V_τ divided by the batch scale
  s(τ) = √(meanᵢ‖V_τ,ᵢ‖² + ε); V = the mean over τ.
- `drifting-code` (lambertae/drifting, drift_loss.py): c = ‖h − y‖ / (mean distance), the
  features rescaled so the mean distance is √F, affinities clipped at 1e-6 before the root, each
  V_τ divided by its per-element RMS; V = the sum over τ. V is in the rescaled coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS = 1e-8


@dataclass
class Drift:
    v: torch.Tensor  # [G, N, F]: the drift of each anchor, in the kernel's coordinates
    coord_scale: torch.Tensor  # [G, 1, 1]: kernel coordinates = features / coord_scale
    raw_norms: list[torch.Tensor]  # per temperature: the normaliser of V_τ, before normalisation


@torch.no_grad()
def drift_field(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperatures: tuple[float, ...] | list[float] = (0.02, 0.05, 0.2),
    kernel: str = "paper",
    attraction: float = 1.0,
    repulsion: float = 1.0,
    exclude_self: bool = True,
) -> Drift:
    """Shapes [G, N, F], [G, P, F], [G, M, F] (G independent drift sets). With `exclude_self`
    the first N negatives are the anchors themselves, and each anchor's own column is dropped."""
    dtype = torch.promote_types(anchors.dtype, torch.float32)
    x, pos, neg = anchors.to(dtype), positives.to(dtype), negatives.to(dtype)
    n, p = x.shape[-2], pos.shape[-2]
    dist = torch.cdist(x, torch.cat([pos, neg], dim=-2))
    if kernel == "paper":
        cost, scale = dist.pow(2), torch.ones(x.shape[0], 1, 1, dtype=dtype, device=x.device)
    elif kernel == "drifting-code":
        mean = dist.mean(dim=(-2, -1), keepdim=True)  # over every column, the anchor's own included, as the code does
        cost, scale = dist / mean.clamp_min(1e-3), (mean / math.sqrt(x.shape[-1])).clamp_min(1e-3)
        x, pos, neg = x / scale, pos / scale, neg / scale
    else:
        raise ValueError(f"unknown drift kernel {kernel!r}")
    if exclude_self:
        self_pairs = torch.zeros_like(cost, dtype=torch.bool)
        self_pairs[..., torch.arange(n), p + torch.arange(n)] = True
        cost = cost.masked_fill(self_pairs, float("inf"))

    total, raw_norms = torch.zeros_like(x), []
    for tau in temperatures:
        v = _displacement(cost / tau, x, pos, neg, attraction, repulsion, clip=kernel == "drifting-code")
        if kernel == "paper":
            norm = (v.pow(2).sum(-1).mean(-1) + EPS).sqrt()[:, None, None]
        else:
            norm = v.pow(2).mean(dim=(-2, -1), keepdim=True).clamp_min(EPS).sqrt()
        total = total + v / norm
        raw_norms.append(norm.flatten())
    if kernel == "paper":
        total = total / len(temperatures)
    return Drift(total, scale, raw_norms)


def _displacement(cost, x, pos, neg, attraction: float, repulsion: float, clip: bool) -> torch.Tensor:
    logits = -cost
    # A column holding only an excluded self-pair (one anchor) softmaxes to NaN: it has no weight.
    joint = (logits.softmax(dim=-1) * logits.softmax(dim=-2)).nan_to_num(0.0)
    affinity = joint.clamp_min(1e-6).sqrt() if clip else joint.sqrt()
    a_pos, a_neg = affinity.split([pos.shape[-2], neg.shape[-2]], dim=-1)
    w_pos = a_pos * a_neg.sum(-1, keepdim=True)
    w_neg = a_neg * a_pos.sum(-1, keepdim=True)
    toward = w_pos @ pos - w_pos.sum(-1, keepdim=True) * x
    away = w_neg @ neg - w_neg.sum(-1, keepdim=True) * x
    return attraction * toward - repulsion * away
