"""DUO: uniform-state diffusion (Sahoo et al. 2025, "The Diffusion Duality").

Forward process: q(x_t | x_0) = alpha_t · onehot(x_0) + (1 - alpha_t) / K over the K tokens.
The denoiser predicts x0 at every position (mean parameterisation, no carry-over: any token
may be noise). Its continuous-time NELBO is the uniform-state (UDLM) bound that the DUO
repository's `DUO_BASE.nll_per_token` computes; sampling starts from uniform noise, is ancestral
with the exact posterior q(x_s | x_t, x0 ~ p_theta), and ends with a greedy step.
"""

from __future__ import annotations

import torch

from tokendrift_cli.diffusion.base import Denoiser, DiffusionProcess
from tokendrift_cli.diffusion.sampling import categorical


class DUO(DiffusionProcess):
    # x = argmax p_theta(x0 | x_t) at t = 1/nfe (the DUO repository's greedy noise removal): no
    # token is left to chance at the end.
    greedy_last_step = True

    def q_xt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        resample = torch.rand(x0.shape, generator=generator, device=x0.device) < 1 - self.schedule.alpha(t)[:, None]
        noise = torch.randint(0, self.vocab_size, x0.shape, generator=generator, device=x0.device)
        return torch.where(resample, noise, x0)

    def nelbo_per_token(self, log_probs: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The uniform-state continuous-time NELBO integrand at time t, per token [B, L].

        With x̄ = K·alpha·x + (1 - alpha) (the forward marginal scaled by K) for the true one-hot x0
        and for the prediction x_theta, it is (alpha'/(K alpha)) · (term1 - term2): zero exactly
        when x_theta = onehot(x0), positive otherwise.
        """
        K = self.vocab_size
        alpha = self.schedule.alpha(t)[:, None].double()
        dalpha = self.schedule.dalpha(t)[:, None].double()
        x_bar_theta = K * alpha[..., None] * log_probs.double().exp() + (1 - alpha[..., None])
        same = (x0 == xt).double()
        x_bar_xt = (1 - alpha) + K * alpha * same
        theta_xt = x_bar_theta.gather(-1, xt.unsqueeze(-1)).squeeze(-1)
        theta_x0 = x_bar_theta.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        term1 = K * (1 / x_bar_xt - 1 / theta_xt)

        const = (1 - alpha) / (K * alpha + 1 - alpha)
        coef = same * const + (1 - same)
        offset = ((K - 1) * const * same - (1 - same) / const) * const.log()
        term2 = -coef * (x_bar_theta.log().sum(-1) - K * theta_xt.log())
        term2 = term2 - K * alpha / (1 - alpha) * (theta_x0.log() - theta_xt.log()) * (1 - same) + offset
        return (dalpha / (K * alpha) * (term1 - term2)).float()

    def posterior(self, probs: torch.Tensor, xt: torch.Tensor, alpha_s: torch.Tensor, alpha_t: torch.Tensor) -> torch.Tensor:
        """q(x_s | x_t, x0 ~ probs) ∝ q(x_t | x_s) · q(x_s | x0), closed form, [B, L, K]."""
        K = self.vocab_size
        alpha_ts = alpha_t / alpha_s
        at_xt = torch.zeros_like(probs).scatter(-1, xt.unsqueeze(-1), 1.0)
        numerator = (
            alpha_t * K * probs * at_xt
            + (alpha_ts - alpha_t) * at_xt
            + (alpha_s - alpha_t) * probs
            + (1 - alpha_ts) * (1 - alpha_s) / K
        )
        return numerator / (alpha_t * K * probs.gather(-1, xt.unsqueeze(-1)) + 1 - alpha_t)

    def predict(self, denoiser: Denoiser, xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_theta(x0 | x_t): every position is predicted (any token may be noise)."""
        return denoiser(xt, sigma).log_softmax(-1)

    def prior(self, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch, seq_len), generator=generator, device=generator.device)

    def transition(self, probs, x, t, s, generator) -> torch.Tensor:
        return categorical(self.posterior(probs, x, self.schedule.alpha(s), self.schedule.alpha(t)), generator)
