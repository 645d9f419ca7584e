"""MDLM: masked (absorbing-state) diffusion with the SUBS parameterisation (Sahoo et al. 2024).

Forward process: each token is independently replaced by [MASK] with probability 1 - alpha_t.
SUBS: the denoiser never predicts [MASK], and a position that is not masked is carried over.
Continuous-time NELBO per token: E_t[ (alpha_t' / (1 - alpha_t)) · log p_theta(x0 | x_t) ]
at masked positions (alpha_t' < 0, so the weight is positive). Sampling starts from all-[MASK];
the last step (alpha_s = 1) unmasks every position left.
"""

from __future__ import annotations

import torch

from tokendrift_cli.diffusion.base import NEG_INF, Denoiser, DiffusionProcess, exclude_mask
from tokendrift_cli.diffusion.sampling import categorical
from tokendrift_cli.diffusion.schedule import LogLinearSchedule


class MDLM(DiffusionProcess):
    def __init__(
        self, vocab_size: int, mask_id: int, schedule: LogLinearSchedule,
        sampling_eps: float = 1e-3, antithetic: bool = True, time_conditioning: bool = False,
    ):
        super().__init__(vocab_size, schedule, sampling_eps, antithetic, time_conditioning)
        self.mask_id = mask_id

    def q_xt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        move = torch.rand(x0.shape, generator=generator, device=x0.device) < 1 - self.schedule.alpha(t)[:, None]
        return torch.where(move, self.mask_id, x0)

    def subs(self, logits: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """SUBS log-probabilities: [MASK] gets -inf; unmasked positions are one-hot on their token."""
        log_probs = exclude_mask(logits, self.mask_id).log_softmax(-1)
        carried = torch.full_like(log_probs, NEG_INF).scatter(-1, xt.unsqueeze(-1), 0.0)
        return torch.where((xt != self.mask_id).unsqueeze(-1), carried, log_probs)

    def predict(self, denoiser: Denoiser, xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_theta(x0 | x_t) under SUBS."""
        return self.subs(denoiser(xt, sigma), xt)

    def nelbo_per_token(self, log_probs: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_p_x0 = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # 0 where carried over
        weight = self.schedule.dalpha(t) / (1 - self.schedule.alpha(t))
        return (weight[:, None] * log_p_x0).where(xt == self.mask_id, torch.zeros_like(log_p_x0))

    def prior(self, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((batch, seq_len), self.mask_id, dtype=torch.long, device=generator.device)

    def transition(self, probs, x, t, s, generator) -> torch.Tensor:
        """A masked token is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t), as a
        draw from probs; a revealed one stays."""
        alpha_t, alpha_s = self.schedule.alpha(t), self.schedule.alpha(s)
        reveal = probs * (alpha_s - alpha_t) / (1 - alpha_t)
        reveal[..., self.mask_id] = (1 - alpha_s) / (1 - alpha_t)
        return torch.where(x == self.mask_id, categorical(reveal, generator), x)

    def decided(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        return (x == self.mask_id) & (x_next != self.mask_id)

    def reusable(self, x: torch.Tensor, x_next: torch.Tensor) -> bool:
        # SUBS makes the prediction a function of x_t alone unless the model also sees t.
        return not self.time_conditioning and torch.equal(x_next, x)
