"""What every diffusion process shares: the denoiser protocol, the loss record, the [MASK]
exclusion, and one fixed-NFE sampling loop.

A process supplies its forward noising (`q_xt`), its NELBO integrand, its prior (where sampling
starts at t = 1) and its transition x_t → x_s given the x0 prediction; the loop below does the
rest, as the DUO reference code (s-sahoo/duo) splits it: prior sample, then one ancestral update
per step of a t = 1 → 0 grid, each fed by one denoiser call unless the last one can be reused.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from tokendrift_cli.diffusion.sampling import prediction_probs, time_grid
from tokendrift_cli.diffusion.schedule import LogLinearSchedule, sample_times

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, L], sigma [B]) -> logits [B, L, V]
NEG_INF = float("-inf")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: NELBO in nats per token, averaged over the batch
    per_token: torch.Tensor  # [B, L]
    log_probs: torch.Tensor  # [B, L, V]: the parameterised x0 prediction, log space
    xt: torch.Tensor  # [B, L]: the noised input the denoiser saw
    sigma: torch.Tensor  # [B]


def exclude_mask(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """`logits` with [MASK] made impossible: [MASK] is noise, never a prediction of the data
    (MDLM's SUBS, the probe's and the marginal trap's model reads). Still logits: each caller
    normalises them as it always has (softmax and exp(log_softmax) differ in the last bits)."""
    logits = logits.clone()
    logits[..., mask_id] = NEG_INF
    return logits


class DiffusionProcess:
    """A discrete diffusion process on a log-linear schedule: its loss and its sampler."""

    greedy_last_step = False  # the last step takes argmax p_theta(x0 | x_t) instead of a draw (DUO)

    def __init__(
        self, vocab_size: int, schedule: LogLinearSchedule, sampling_eps: float = 1e-3,
        antithetic: bool = True, time_conditioning: bool = True,
    ):
        self.vocab_size, self.schedule = vocab_size, schedule
        self.sampling_eps, self.antithetic = sampling_eps, antithetic
        self.time_conditioning = time_conditioning  # the prediction depends on t, not only on x_t

    # What a process defines.

    def q_xt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, denoiser: Denoiser, xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_theta(x0 | x_t) [B, L, V] under the process's parameterisation."""
        raise NotImplementedError

    def nelbo_per_token(self, log_probs: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The continuous-time NELBO integrand at time t, per token [B, L]."""
        raise NotImplementedError

    def prior(self, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """x_1, where sampling starts."""
        raise NotImplementedError

    def transition(self, probs: torch.Tensor, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw of x_s from q(x_s | x_t, x0 ~ probs), s < t."""
        raise NotImplementedError

    def decided(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """Positions [B, L] whose final value the transition x → x_next set (what rollout
        negatives keep the prediction of); not asked of a process with a greedy last step."""
        raise NotImplementedError

    def reusable(self, x: torch.Tensor, x_next: torch.Tensor) -> bool:
        """Whether the prediction made at x also holds at x_next (then the next call is skipped)."""
        return False

    # What follows from it.

    def loss(self, denoiser: Denoiser, x0: torch.Tensor, generator: torch.Generator) -> LossOutput:
        t = sample_times(x0.shape[0], generator, x0.device, self.sampling_eps, self.antithetic)
        xt = self.q_xt(x0, t, generator)
        sigma = self.schedule.sigma(t)
        log_probs = self.predict(denoiser, xt, sigma)
        per_token = self.nelbo_per_token(log_probs, xt, x0, t)
        return LossOutput(per_token.mean(), per_token, log_probs, xt, sigma)

    @torch.no_grad()
    def val_nelbo(self, denoiser: Denoiser, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.loss(denoiser, x0, generator).loss

    @torch.no_grad()
    def sample(
        self, denoiser: Denoiser, batch: int, seq_len: int, nfe: int, generator: torch.Generator,
        temperature: float = 1.0, top_p: float = 1.0, cache: bool = True,
    ) -> tuple[torch.Tensor, int]:
        """`nfe` steps on t = 1 → 0 from the prior. Returns (ids, denoiser calls made): with
        `cache`, a step whose prediction is `reusable` skips its call, which is not counted."""
        ids, calls, _ = self._loop(denoiser, batch, seq_len, nfe, generator, temperature, top_p, cache, keep=False)
        return ids, calls

    def sample_with_predictions(
        self, denoiser: Denoiser, batch: int, seq_len: int, nfe: int, generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample` without caching, keeping the graph: (ids, log_probs), where log_probs[b, i] is
        the prediction of the call that decided position i (what TokenDrift lifts and drifts)."""
        ids, _, log_probs = self._loop(denoiser, batch, seq_len, nfe, generator, 1.0, 1.0, cache=False, keep=True)
        return ids, log_probs

    def _loop(self, denoiser, batch, seq_len, nfe, generator, temperature, top_p, cache, keep):
        """The sampler: (ids, calls made, the deciding prediction per position if `keep` else None)."""
        times = time_grid(nfe, generator.device)
        x = self.prior(batch, seq_len, generator)
        log_probs, calls, kept = None, 0, None
        for step in range(nfe):
            t, s = times[step], times[step + 1]
            greedy = self.greedy_last_step and step == nfe - 1
            if log_probs is None:
                # A greedy last step decides every position whatever came before, so the calls
                # before it need no graph; otherwise a call runs in the caller's grad mode.
                with torch.no_grad() if self.greedy_last_step and not greedy else nullcontext():
                    log_probs = self.predict(denoiser, x, self.schedule.sigma(t).float().expand(batch))
                probs = prediction_probs(log_probs.detach(), temperature, top_p)
                calls += 1
            x_next = log_probs.detach().argmax(-1) if greedy else self.transition(probs, x, t, s, generator)
            if keep and greedy:
                kept = log_probs
            elif keep and not self.greedy_last_step:
                # Every position is decided by the last step, so the first call's prediction only
                # stands in until then.
                decided = self.decided(x, x_next).unsqueeze(-1)
                kept = log_probs if kept is None else torch.where(decided, log_probs, kept)
            if not (cache and self.reusable(x, x_next)):
                log_probs = None
            x = x_next
        return x, calls, kept
