"""The TokenDrift objective of one micro-batch (paper Alg. 1), and the plain diffusion objective.

An objective computes its loss terms, their gradients on the denoiser's (normalised) logits, and
pushes the sum through the network with the trainer's `backward`. Taking each term's gradient on
the logits first costs nothing extra (the network is traversed once) and lets a run log which
signal dominates (`grad_logits_drift`, `grad_logits_base`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from tokendrift_cli.diffusion.sampling import categorical
from tokendrift_cli.drift.encoders import FeatureEncoder
from tokendrift_cli.drift.field import drift_field
from tokendrift_cli.drift.queue import FeatureQueue
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.spec.drift import DriftSpec

Gather = Callable[[torch.Tensor], torch.Tensor]
Backward = Callable[[torch.Tensor], None]


def diffusion_objective(model, process, x0: torch.Tensor, generator: torch.Generator, backward: Backward) -> dict:
    """The matched continuation baseline: the backbone's own NELBO."""
    out = process.loss(as_denoiser(model), x0, generator)
    backward(out.loss)
    return {"loss": out.loss.detach(), "diffusion_loss": out.loss.detach()}


def lift(log_probs: torch.Tensor, spec: DriftSpec, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Predictions → the encoder's input distributions (§3.1, Table 3). Rows that SUBS carried
    over (one 0, the rest -inf) stay one-hot, so observed positions feed E[x_t] as the paper says.

    soft: p. hard-st: onehot(argmax p) forward, p's gradient backward. sampled-st: the same with
    `tokens` (a draw from p, or the roll-out's tokens) in place of the argmax.
    """
    probs = torch.softmax(log_probs.float() / spec.lift_temperature, dim=-1)
    if spec.lift == "soft":
        return probs
    if spec.lift == "hard-st":
        chosen = probs.argmax(-1)
    elif tokens is not None:
        chosen = tokens
    else:
        raise ValueError("lift: sampled-st needs the drawn tokens")
    return F.one_hot(chosen, probs.shape[-1]).to(probs.dtype) - probs.detach() + probs


def logit_gradient(log_probs: torch.Tensor, grad_log_probs: torch.Tensor) -> torch.Tensor:
    """A gradient on normalised log-probabilities, carried back through log_softmax to the raw
    logits: g - p Σ_v g (zero-sum over the vocabulary, so adding it to the logits moves nothing
    but the distribution)."""
    probs = log_probs.detach().exp()
    return grad_log_probs - probs * grad_log_probs.sum(-1, keepdim=True)


def teacher_direction(log_probs: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:
    """The mirror teacher's logit direction g = ∇_l <h(l), sg(V)> (§3.4), given the alignment
    <h, sg(V)> summed over sequences (each sequence's features depend on its own logits only)."""
    (grad,) = torch.autograd.grad(alignment, log_probs)
    return logit_gradient(log_probs, grad)


def mirror_loss(log_probs: torch.Tensor, g: torch.Tensor, eta: float, variant: str) -> torch.Tensor:
    """Σ over positions of KL(p*‖p) (mirror-kl) or ‖l* − l‖² (mirror-mse), l* = sg(l + ηg) (App. D).
    Observed (SUBS) positions have g = 0 and p* = p, so the sum runs over predicted positions."""
    excluded = log_probs.detach() == float("-inf")  # [MASK] under SUBS, and carried rows' other ids
    teacher = log_probs.detach() + eta * g
    if variant == "mirror-kl":
        teacher = teacher.log_softmax(-1)  # p* = softmax(l*)
    # Zero both sides where -inf before subtracting: -inf - -inf would make NaN gradients.
    diff = teacher.masked_fill(excluded, 0.0) - log_probs.masked_fill(excluded, 0.0)
    per_entry = teacher.exp() * diff if variant == "mirror-kl" else diff.pow(2)
    return per_entry.sum()


class TokenDrift:
    """Holds what persists across micro-steps: the frozen encoder and the two reference queues.
    `nfe` is the roll-out's budget under `negatives: rollout` (the run's target NFE)."""

    def __init__(
        self, spec: DriftSpec, encoder: FeatureEncoder, gather: Gather | None = None, rank: int = 0, device="cpu", nfe: int = 4,
    ):
        self.spec, self.encoder, self.gather, self.rank, self.nfe = spec, encoder, gather, rank, nfe
        self.real_queue = FeatureQueue(spec.queue_size, device)
        self.gen_queue = FeatureQueue(spec.queue_size, device)

    def __call__(self, model, process, x0: torch.Tensor, generator: torch.Generator, backward: Backward) -> dict:
        spec, denoiser = self.spec, as_denoiser(model)
        # The diffusion loss is always computed (same draws as the baseline arm, and worth
        # watching); it keeps a graph only when it is trained on or lifted.
        with torch.enable_grad() if spec.base_loss or spec.negatives == "denoise" else torch.no_grad():
            out = process.loss(denoiser, x0, generator)
        if spec.negatives == "rollout":
            tokens, log_probs = process.sample_with_predictions(denoiser, x0.shape[0], x0.shape[1], self.nfe, generator)
        else:
            log_probs = out.log_probs
            tokens = categorical(log_probs.detach().exp(), generator) if spec.lift == "sampled-st" else None

        drift_value, grad, stats = self.drift_term(log_probs, x0, tokens)
        pairs = [(log_probs, spec.weight * grad)]
        stats["grad_logits_drift"] = spec.weight * logit_gradient(log_probs, grad).norm()
        total = spec.weight * drift_value
        if spec.base_loss:
            (base_grad,) = torch.autograd.grad(out.loss, out.log_probs)
            pairs.append((out.log_probs, base_grad))
            stats["grad_logits_base"] = logit_gradient(out.log_probs, base_grad).norm()
            total = total + out.loss.detach()
        # Σ <log_probs, grad> has exactly these gradients on the logits; -inf entries (SUBS) have none.
        backward(sum((lp.masked_fill(lp == float("-inf"), 0.0) * g).sum() for lp, g in pairs))
        return {"loss": total, "diffusion_loss": out.loss.detach(), "drift_loss": drift_value, **stats}

    def drift_term(self, log_probs: torch.Tensor, x0: torch.Tensor, tokens: torch.Tensor | None):
        """(drift loss, its gradient on `log_probs`, statistics) for one micro-batch, then the
        current features enter the queues (Alg. 1 line 11)."""
        spec = self.spec
        h = self.encoder(lift(log_probs, spec, tokens))  # [G, B, F], carries the gradient
        with torch.no_grad():
            u = self.encoder(x0)
        h_all, u_all = self._gathered(h.detach()), self._gathered(u)
        positives, negatives = _with_queue(u_all, self.real_queue), _with_queue(h_all, self.gen_queue)
        drift = drift_field(h_all, positives, negatives, spec.temperatures, spec.kernel, spec.attraction, spec.repulsion)
        batch = h.shape[-2]
        v = drift.v[:, self.rank * batch : (self.rank + 1) * batch]
        h_k = h.float() / drift.coord_scale  # the kernel's coordinates
        groups = h.shape[0]
        if spec.variant == "feature":  # ½·meanᵢ‖h − sg(h + αV)‖² (§3.3), averaged over drift sets
            loss = 0.5 * (h_k - (h_k + spec.alpha * v).detach()).pow(2).sum(-1).mean()
        else:
            g = teacher_direction(log_probs, (h_k * v).sum() / groups)
            loss = mirror_loss(log_probs, g, spec.mirror_step, spec.variant) / batch
        (grad,) = torch.autograd.grad(loss, log_probs)
        stats = {
            "drift_norm": (spec.alpha * v).pow(2).sum(-1).mean().sqrt(),
            "feature_cos": F.cosine_similarity(h.detach().float(), u.float(), dim=-1).mean(),
            "feature_sqdist": (h.detach().float() - u.float()).pow(2).sum(-1).mean(),
            "drift_batch": torch.tensor(float(h_all.shape[-2])),  # current anchors, across processes
            "queue_fill": torch.tensor(float(len(self.real_queue))),
            **{f"drift_raw_norm_{tau:g}": norm.mean() for tau, norm in zip(spec.temperatures, drift.raw_norms)},
        }
        self.real_queue.push(u_all)
        self.gen_queue.push(h_all)
        return loss.detach(), grad, stats

    def _gathered(self, features: torch.Tensor) -> torch.Tensor:
        """[G, B, F] → [G, B·processes, F], in rank order (Accelerate gathers along dim 0)."""
        if self.gather is None:
            return features
        return self.gather(features.transpose(0, 1).contiguous()).transpose(0, 1)

    def queues(self) -> list[FeatureQueue]:
        return [self.real_queue, self.gen_queue]


def _with_queue(current: torch.Tensor, queue: FeatureQueue) -> torch.Tensor:
    """Current features first (the drift excludes each anchor's own column there), then the queue's."""
    return current if queue.features is None or len(queue) == 0 else torch.cat([current, queue.features], dim=-2)
