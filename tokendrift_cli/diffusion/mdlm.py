"""MDLM: masked (absorbing-state) diffusion with the SUBS parameterisation (Sahoo et al. 2024).

Forward process: each token is independently replaced by [MASK] with probability 1 - alpha_t.
SUBS: the denoiser never predicts [MASK], and a position that is not masked is carried over.
Continuous-time NELBO per token: E_t[ (alpha_t' / (1 - alpha_t)) · log p_theta(x0 | x_t) ]
at masked positions (alpha_t' < 0, so the weight is positive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tokendrift_cli.diffusion.sampling import categorical, prediction_probs, time_grid
from tokendrift_cli.diffusion.schedule import LogLinearSchedule, sample_times

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NEG_INF = float("-inf")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: NELBO in nats per token, averaged over the batch
    per_token: torch.Tensor  # [B, L]
    log_probs: torch.Tensor  # [B, L, V]: the parameterised x0 prediction, log space
    xt: torch.Tensor  # [B, L]: the noised input the denoiser saw
    sigma: torch.Tensor  # [B]


class MDLM:
    def __init__(
        self, vocab_size: int, mask_id: int, schedule: LogLinearSchedule,
        sampling_eps: float = 1e-3, antithetic: bool = True, time_conditioning: bool = False,
    ):
        self.vocab_size, self.mask_id = vocab_size, mask_id
        self.schedule, self.sampling_eps, self.antithetic = schedule, sampling_eps, antithetic
        self.time_conditioning = time_conditioning  # the prediction depends on t, not only on x_t

    def q_xt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        move = torch.rand(x0.shape, generator=generator, device=x0.device) < 1 - self.schedule.alpha(t)[:, None]
        return torch.where(move, self.mask_id, x0)

    def subs(self, logits: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """SUBS log-probabilities: [MASK] gets -inf; unmasked positions are one-hot on their token."""
        logits = logits.clone()
        logits[..., self.mask_id] = NEG_INF
        log_probs = logits.log_softmax(-1)
        carried = torch.full_like(log_probs, NEG_INF).scatter(-1, xt.unsqueeze(-1), 0.0)
        return torch.where((xt != self.mask_id).unsqueeze(-1), carried, log_probs)

    def predict(self, denoiser: Denoiser, xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_theta(x0 | x_t) under SUBS."""
        return self.subs(denoiser(xt, sigma), xt)

    def loss(self, denoiser: Denoiser, x0: torch.Tensor, generator: torch.Generator) -> LossOutput:
        t = sample_times(x0.shape[0], generator, x0.device, self.sampling_eps, self.antithetic)
        xt = self.q_xt(x0, t, generator)
        sigma = self.schedule.sigma(t)
        log_probs = self.predict(denoiser, xt, sigma)
        log_p_x0 = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # 0 where carried over
        weight = self.schedule.dalpha(t) / (1 - self.schedule.alpha(t))
        per_token = (weight[:, None] * log_p_x0).where(xt == self.mask_id, torch.zeros_like(log_p_x0))
        return LossOutput(per_token.mean(), per_token, log_probs, xt, sigma)

    @torch.no_grad()
    def val_nelbo(self, denoiser: Denoiser, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.loss(denoiser, x0, generator).loss

    @torch.no_grad()
    def sample(
        self, denoiser: Denoiser, batch: int, seq_len: int, nfe: int, generator: torch.Generator,
        temperature: float = 1.0, top_p: float = 1.0, cache: bool = True,
    ) -> tuple[torch.Tensor, int]:
        """Ancestral sampling from all-[MASK] over `nfe` steps on t = 1 → 0; the last step
        (alpha_s = 1) unmasks every position left. Returns (ids, denoiser calls made).

        With `cache` (and no time conditioning, so the prediction depends on x_t only), a step in
        which no token changed reuses the last prediction: that call is skipped and not counted.
        """
        times = time_grid(nfe, generator.device)
        return self._steps(denoiser, self._prior(batch, seq_len, generator), times, generator, temperature, top_p, cache)

    def sample_with_predictions(
        self, denoiser: Denoiser, batch: int, seq_len: int, nfe: int, generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample` without caching, keeping the graph: (ids, log_probs), where log_probs[b, i] is
        the prediction of the call that revealed position i (what TokenDrift lifts and drifts)."""
        times = time_grid(nfe, generator.device)
        x = self._prior(batch, seq_len, generator)
        revealing = None
        for step in range(nfe):
            sigma = self.schedule.sigma(times[step]).float().expand(batch)
            log_probs = self.predict(denoiser, x, sigma)
            x_next = self._reveal(log_probs.detach().exp(), x, times[step], times[step + 1], generator)
            newly = ((x == self.mask_id) & (x_next != self.mask_id)).unsqueeze(-1)
            revealing = log_probs if revealing is None else torch.where(newly, log_probs, revealing)
            x = x_next
        return x, revealing  # type: ignore[return-value]  # a Tensor: the spec keeps nfe >= 1

    def _prior(self, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((batch, seq_len), self.mask_id, dtype=torch.long, device=generator.device)

    def _steps(self, denoiser, x, times, generator, temperature, top_p, cache) -> tuple[torch.Tensor, int]:
        """Ancestral transitions t_i → t_{i+1} along `times`; returns (x, calls made)."""
        batch = x.shape[0]
        probs, calls = None, 0
        for step in range(len(times) - 1):
            if probs is None:
                sigma = self.schedule.sigma(times[step]).float().expand(batch)
                probs = prediction_probs(self.predict(denoiser, x, sigma), temperature, top_p)
                calls += 1
            x_next = self._reveal(probs, x, times[step], times[step + 1], generator)
            if not cache or self.time_conditioning or not torch.equal(x_next, x):
                probs = None
            x = x_next
        return x, calls

    def _reveal(self, probs, x, t, s, generator) -> torch.Tensor:
        """One draw from q(x_s | x_t, x0 ~ probs): a masked token is revealed with probability
        (alpha_s - alpha_t) / (1 - alpha_t); a revealed one stays."""
        alpha_t, alpha_s = self.schedule.alpha(t), self.schedule.alpha(s)
        reveal = probs * (alpha_s - alpha_t) / (1 - alpha_t)
        reveal[..., self.mask_id] = (1 - alpha_s) / (1 - alpha_t)
        return torch.where(x == self.mask_id, categorical(reveal, generator), x)
