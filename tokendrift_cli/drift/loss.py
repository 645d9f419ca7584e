"""The TokenDrift loss: ||h - stopgrad(h + scale · V(h))||², back-propagated to the logits.

h are frozen-encoder features of the denoiser's prediction lifted to soft tokens; positives are
the same encoder's features of the clean batch; negatives are the generated features themselves
(self-pairs excluded). Under several processes the drift sets are gathered so that positives and
negatives come from the global batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from tokendrift_cli.drift.encoders import FeatureEncoder
from tokendrift_cli.drift.field import drift_field, feature_scale
from tokendrift_cli.spec.drift import DriftSpec

Gather = Callable[[torch.Tensor], torch.Tensor]


def lift(log_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Categorical predictions → probability vectors (soft tokens before the embedding table).
    Rows that SUBS carried over (one 0, the rest -inf) stay one-hot at any temperature."""
    return torch.softmax(log_probs.float() / temperature, dim=-1)


def pool(features: torch.Tensor, window: int | None) -> torch.Tensor:
    """[B, L, F] → [G, B, F]: one group for the whole sequence, or one per window of positions."""
    if window is None:
        return features.mean(1).unsqueeze(0)
    batch, length, dim = features.shape
    usable = length - length % window
    return features[:, :usable].reshape(batch, usable // window, window, dim).mean(2).transpose(0, 1)


def drift_loss(
    log_probs: torch.Tensor,
    x0: torch.Tensor,
    encoder: FeatureEncoder | None,
    spec: DriftSpec,
    gather: Gather | None = None,
    tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The drift loss of one micro-batch and its statistics.

    variant 'feature': features of the frozen encoder; 'logit': the lifted probability vectors
    themselves (the drift mirrored in the model's output space); 'both': the sum.
    With `spec.lift == 'straight-through'` the generated sequence is the sampled `tokens`
    (one-hot) in the forward pass and the lifted probabilities in the backward pass.
    """
    probs = lift(log_probs, spec.lift_temperature)
    if spec.lift == "straight-through":
        if tokens is None:
            raise ValueError("drift.lift=straight-through needs sampled tokens (drift.negatives=rollout)")
        probs = F.one_hot(tokens, probs.shape[-1]).to(probs.dtype) + probs - probs.detach()
    clean = F.one_hot(x0, probs.shape[-1]).float()
    losses, stats = [], {}
    if spec.variant in ("feature", "both"):
        if encoder is None:
            raise ValueError("the feature variant needs a frozen encoder")
        with torch.no_grad():
            positives = encoder(clean)
        # One drift term per feature layer, averaged so the weight means the same for any count.
        terms = [_drift_term(h, y, spec, gather) for h, y in zip(encoder(probs), positives)]
        losses.append(sum(loss for loss, _ in terms) / len(terms))
        stats = {key: sum(s[key] for _, s in terms) / len(terms) for key in terms[0][1]}
    if spec.variant in ("logit", "both"):
        loss, logit_stats = _drift_term(probs, clean, spec, gather)
        losses.append(loss)
        stats.update({f"logit_{k}": v for k, v in logit_stats.items()} if stats else logit_stats)
    return sum(losses), stats


def _drift_term(generated: torch.Tensor, positives: torch.Tensor, spec: DriftSpec, gather: Gather | None):
    h = pool(generated, spec.feature_window)  # [G, B, F], carries the gradient
    y = pool(positives, spec.feature_window)
    batch = h.shape[1]
    if gather is None:
        h_all, y_all, offset = h.detach(), y, 0
    else:  # gather along the batch axis: every process sees the global drift sets
        h_all = gather(h.detach().transpose(0, 1).contiguous()).transpose(0, 1)
        y_all = gather(y.transpose(0, 1).contiguous()).transpose(0, 1)
        offset = _rank_offset(h_all.shape[1], batch)
    scale = feature_scale(h_all, y_all) if spec.normalize_features else torch.ones((), device=h.device)
    v_all = drift_field(h_all / scale, y_all / scale, None, spec.temperatures, spec.normalize_drift)
    v = v_all[:, offset : offset + batch]
    h_n = h / scale
    target = (h_n + spec.scale * v).detach()
    loss = (h_n - target).pow(2).mean()
    stats = {
        "drift_norm": (spec.scale * v).pow(2).mean().sqrt().detach(),
        "feature_scale": scale.detach(),
        "drift_batch": torch.tensor(float(h_all.shape[1])),
    }
    return loss, stats


def _rank_offset(global_batch: int, local_batch: int) -> int:
    """Where this process's rows sit in the gathered batch (Accelerate gathers in rank order)."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    assert global_batch % local_batch == 0
    return rank * local_batch
