"""The exact judge for the built-in synthetic language.

The language's own next-word probabilities replace a judge LM. A sample the grammar cannot
produce has infinite NLL, so Gen.-PPL is computed under the language mixed with a small
uniform share, p_eps(x_t | x_<t) = (1 - eps) · P(x_t | x_<t) + eps / |V| (after an impossible
prefix only the uniform share is left): every sample gets a finite score and invalid ones pay
for it. Acceptance (the share of samples the grammar produces) is reported beside it, and so is
the floor: exp(entropy per token) of the language itself, the best any model can score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokendrift_cli.data.synthetic import SyntheticLanguage


@dataclass
class OracleResult:
    gen_ppl: float  # exp(mean smoothed NLL per token), all samples
    gen_ppl_accepted: float | None  # exp(mean exact NLL per token) over accepted samples only
    acceptance: float
    num_samples: int
    num_tokens: int


class OracleJudge:
    name = "oracle"

    def __init__(self, language: SyntheticLanguage, epsilon: float = 1e-3):
        self.language = language
        self.epsilon = epsilon

    def score_ids(self, ids: torch.Tensor) -> OracleResult:
        ids = torch.as_tensor(ids)
        probs = self.language.next_word_probs(ids).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        smoothed = (1 - self.epsilon) * probs + self.epsilon / self.language.num_data_tokens
        nll = -smoothed.log()
        accepted = self.language.accepts(ids)
        exact = self.language.log_prob(ids[accepted])
        return OracleResult(
            gen_ppl=math.exp(float(nll.mean())),
            gen_ppl_accepted=math.exp(float(-exact.sum()) / (int(accepted.sum()) * ids.shape[1])) if accepted.any() else None,
            acceptance=float(accepted.float().mean()),
            num_samples=ids.shape[0],
            num_tokens=ids.numel(),
        )

    def score_texts(self, texts: list[str]) -> OracleResult:
        """Texts of equal length in words (as samples of one run are); words outside the vocabulary are [UNK]."""
        ids = [self.language.encode(text) for text in texts]
        if len({len(row) for row in ids}) != 1:
            raise ValueError("oracle judge: texts must have the same number of words")
        return self.score_ids(torch.tensor(ids))

    def floor(self, seq_len: int, num_samples: int, seed: int) -> dict:
        """The language's own samples through the same judge, and the exact expectation."""
        own = self.score_ids(self.language.sample(num_samples, seq_len, seed))
        return {"gen_ppl": own.gen_ppl, "acceptance": own.acceptance, "exact_gen_ppl": math.exp(self.language.entropy(seq_len))}
