"""The exact denoiser of the synthetic language: the x0 posterior a perfect diffusion model predicts.

The best any diffusion model trained by likelihood can do with a given sampler is that sampler fed
the exact posterior of x0 given x_t. On the synthetic language it is computable, by
forward–backward over the automaton in float64:

- MDLM: masking is independent of the words, so each masked position's posterior is the
  language's conditional marginal given the unmasked tokens. It does not depend on t.
- DUO: uniform noise is an independent per-position channel, P(x_t | w) = alpha·[x_t = w] +
  (1 - alpha)/K. DUO's mean parameterisation plugs the prediction x_theta into the formula of
  q(x_s | x_t, x0), whose normaliser already weighs each candidate word by the position's own
  token; so the prediction that makes its NELBO tight, and its ancestral step the exact reverse
  marginal q(x_s^i | x_t), is the posterior of position i given the *other* noisy tokens,
  P(w_i | x_t^-i). (Fed the posterior given the whole x_t, including x_t^i, the sampler counts
  the own token twice; its NELBO is then not the entropy: tests/test_exact_denoiser.py.)

Parallel decoding can leave an MDLM context the language cannot produce ("she play ..."), where
the exact posterior is undefined. Such a sequence is read through the oracle judge's noisy
channel instead (each observed token is the word with probability 1 - epsilon): the judge scores
with the same channel, so the denoiser continues the sentence the judge will see behind the slip.
Contexts the language can produce get the exact posterior.

The module has a DiT's interface (`config`, `forward(input_ids, sigma) -> .logits`, `device`), so
the processes, the sampling loop and the probe use it as they use a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.data.synthetic.exact import CHANNEL_EPSILON

PREFIX = "exact:"
BACKBONES = ("mdlm", "duo")


def is_exact(reference: str | None) -> bool:
    """Whether a model reference names the exact denoiser (`exact:mdlm`, `exact:duo`)."""
    return reference is not None and reference.startswith(PREFIX)


@dataclass
class ExactConfig:
    """The config fields the commands read off a denoiser."""

    backbone: str
    vocab_size: int
    mask_token_id: int | None
    max_position_embeddings: int  # the length it samples at by default; it has no trained length
    time_conditioning: bool
    model_type: str = "tokendrift-exact"


class ExactDenoiser(nn.Module):
    """logits = log P(x0 | x_t) under the synthetic language (-inf for impossible words)."""

    def __init__(self, language: SyntheticLanguage, backbone: str, seq_len: int, epsilon: float = CHANNEL_EPSILON):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.language, self.epsilon = language, epsilon
        mdlm = backbone == "mdlm"
        # As a trained model of the language: MDLM adds [MASK] (the language's last id), DUO has none.
        self.config = ExactConfig(
            backbone=backbone,
            vocab_size=language.vocab_size if mdlm else language.num_data_tokens,
            mask_token_id=language.mask_id if mdlm else None,
            max_position_embeddings=seq_len,
            time_conditioning=not mdlm,  # the MDLM posterior is a function of x_t alone
        )

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # float64 forward–backward on the host; inputs come back where they were

    def forward(
        self, input_ids: torch.Tensor, sigma: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **unused
    ) -> MaskedLMOutput:
        ids = input_ids.cpu()
        present = attention_mask.cpu().bool() if attention_mask is not None else None
        if self.config.backbone == "mdlm":
            probs = self._masked_posterior(ids, present)
        else:
            if sigma is None:
                raise ValueError("the exact DUO denoiser needs the noise level sigma")
            keep = torch.exp(-sigma.cpu().double()).expand(ids.shape[0])
            probs, _ = self.language.posterior(self.language.channel_likelihood(ids, keep), present, own=False)
            probs = probs[..., : self.config.vocab_size]
        return MaskedLMOutput(logits=probs.log().to(input_ids.device))

    def possible(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B] whether the language can produce each MDLM context's unmasked tokens: where the
        exact posterior is defined (elsewhere the forward reads them through the judge's channel)."""
        if self.config.backbone != "mdlm":
            raise ValueError("possible() reads MDLM contexts ([MASK] = unobserved); every DUO context is possible")
        present = attention_mask.cpu().bool() if attention_mask is not None else None
        _, log_evidence = self._given_unmasked(input_ids.cpu(), present)
        return torch.isfinite(log_evidence).to(input_ids.device)

    def _given_unmasked(self, ids: torch.Tensor, present: torch.Tensor | None, keep: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(x0 | the unmasked tokens) [B, L, V], log P(the unmasked tokens) [B]), each unmasked
        token read through a channel that keeps its word with probability `keep` (1: as observed)."""
        language = self.language
        masked = (ids == language.mask_id).unsqueeze(-1)
        nothing = torch.ones(language.vocab_size, dtype=torch.float64)
        return language.posterior(torch.where(masked, nothing, language.channel_likelihood(ids, keep)), present)

    def _masked_posterior(self, ids: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """Exact marginals of the masked positions; sequences with impossible observed tokens
        read them through the judge's channel instead."""
        probs, log_evidence = self._given_unmasked(ids, present)
        impossible = torch.isinf(log_evidence)
        if impossible.any():
            probs[impossible], _ = self._given_unmasked(ids[impossible], None if present is None else present[impossible], 1 - self.epsilon)
        return probs


def load_exact(reference: str, seq_len: int | None) -> tuple[ExactDenoiser, Any]:
    """`exact:mdlm` / `exact:duo` as (denoiser, tokenizer), on the default synthetic language."""
    from tokendrift_cli.errors import InputError
    from tokendrift_cli.spec.data import DataSpec

    backbone = reference[len(PREFIX):]
    if backbone not in BACKBONES:
        raise InputError(f"model: {reference}: the exact denoiser is exact:mdlm or exact:duo")
    data = DataSpec()
    language = SyntheticLanguage(p_eos=data.p_eos)
    return ExactDenoiser(language, backbone, seq_len or data.seq_len), language.tokenizer()
