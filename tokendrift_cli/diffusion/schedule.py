"""The log-linear noise schedule of MDLM and DUO: alpha_t = 1 - (1 - eps) t.

alpha_t is the probability that a token is still clean at time t ∈ [0, 1]; the model is
conditioned on the total noise sigma_t = -log alpha_t.
"""

from __future__ import annotations

import torch


class LogLinearSchedule:
    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - (1 - self.eps) * t

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """d alpha_t / dt (negative: signal decays)."""
        return torch.full_like(t, -(1 - self.eps))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(self.alpha(t))


def sample_times(n: int, generator: torch.Generator, device: torch.device, sampling_eps: float, antithetic: bool) -> torch.Tensor:
    """Training times in [sampling_eps, 1]; antithetic: one uniform shift of n stratified points."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    if antithetic:
        u = (u / n + torch.arange(n, device=device, dtype=torch.float64) / n) % 1
    return ((1 - sampling_eps) * u + sampling_eps).float()
