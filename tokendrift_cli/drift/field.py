"""The drift field of "Generative Modeling via Drifting" (Deng et al. 2026), in float32, no grad.

For generated features X, positives Y+ (real data) and negatives Y- (generated, self excluded):
logits -||x - y|| / tau over the joined columns [Y+, Y-]; A = sqrt(row softmax · column
softmax); W+ = A+ · rowsum(A-), W- = A- · rowsum(A+); V = W+ Y+ - W- Y-. Both weight rows
sum to rowsum(A+) · rowsum(A-), so V = Σ W+ (y+ - x) - Σ W- (y- - x): attraction to the data
minus repulsion from the model's own samples, and V = 0 when Y+ and Y- are the same set.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def drift_field(
    gen: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    temperatures: tuple[float, ...] | list[float] = (0.02, 0.05, 0.2),
    normalize_drift: bool = True,
) -> torch.Tensor:
    """V for each generated feature. Shapes [..., N, F], [..., P, F], [..., M, F] → [..., N, F]
    (leading dims are independent feature groups). `neg=None` uses `gen` with self-pairs excluded.
    Temperatures are multiplied by sqrt(F), since distances scale like sqrt(F)."""
    gen, pos = gen.float(), pos.float()
    exclude_self = neg is None
    neg = gen if neg is None else neg.float()
    targets = torch.cat([pos, neg], dim=-2)  # [..., P + M, F]
    dist = torch.cdist(gen, targets)
    if exclude_self:
        n, p = gen.shape[-2], pos.shape[-2]
        self_pairs = torch.zeros_like(dist, dtype=torch.bool)
        self_pairs[..., torch.arange(n), p + torch.arange(n)] = True
        dist = dist.masked_fill(self_pairs, float("inf"))
    scale = math.sqrt(gen.shape[-1])
    total = torch.zeros_like(gen)
    for tau in temperatures:
        v = _drift_at(dist, pos, neg, tau * scale)
        if normalize_drift:
            v = v / v.pow(2).mean().sqrt().clamp_min(1e-12)
        total = total + v
    return total


def _drift_at(dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, tau: float) -> torch.Tensor:
    logits = -dist / tau
    affinity = torch.sqrt(logits.softmax(dim=-1) * logits.softmax(dim=-2))
    a_pos, a_neg = affinity.split([pos.shape[-2], neg.shape[-2]], dim=-1)
    w_pos = a_pos * a_neg.sum(-1, keepdim=True)
    w_neg = a_neg * a_pos.sum(-1, keepdim=True)
    return w_pos @ pos - w_neg @ neg


@torch.no_grad()
def feature_scale(gen: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The factor that makes the mean pairwise distance between generated and positive features sqrt(F)."""
    mean_dist = torch.cdist(gen.float(), pos.float()).mean()
    return (mean_dist / math.sqrt(gen.shape[-1])).clamp_min(1e-12)
