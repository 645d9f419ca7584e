"""The exact judge for the built-in synthetic language.

The language's own probabilities replace a judge LM. A sample the grammar cannot produce has
infinite NLL, so Gen.-PPL is computed under a noisy channel: each token is the language's word
with probability 1 - eps, or a uniformly random token otherwise, marginalised exactly by the
forward algorithm. Every sample gets a finite score, a wrong token costs about log(|V| / eps),
and the judge keeps tracking the sentence after it (as a judge LM would), so a sample with one
slip scores a little worse than a valid one rather than infinitely worse. Acceptance (the share
of samples the grammar produces) is reported beside it, and so is the floor: exp(entropy per
token) of the language itself, the best any model can score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.data.synthetic.exact import CHANNEL_EPSILON
from tokendrift_cli.errors import InputError
from tokendrift_cli.metrics.text_stats import sample_entropy
from tokendrift_cli.metrics.uncertainty import gen_ppl_se, mean_se


@dataclass
class OracleResult:
    gen_ppl: float  # exp(NLL per token under the noisy channel), all samples
    gen_ppl_accepted: float | None  # exp(mean exact NLL per token) over accepted samples only
    acceptance: float
    num_samples: int
    num_tokens: int
    gen_ppl_se: float | None  # standard errors over samples (metrics/uncertainty.py)
    acceptance_se: float | None

    def as_row(self) -> dict:
        """The keys a report row takes from the oracle."""
        return {"gen_ppl": self.gen_ppl, "gen_ppl_se": self.gen_ppl_se, "gen_ppl_accepted": self.gen_ppl_accepted,
                "acceptance": self.acceptance, "acceptance_se": self.acceptance_se}


class OracleJudge:
    name = "oracle"

    def __init__(self, language: SyntheticLanguage, epsilon: float = CHANNEL_EPSILON):
        self.language = language
        self.epsilon = epsilon

    def score_ids(self, ids: torch.Tensor) -> OracleResult:
        ids = torch.as_tensor(ids)
        nll = -self.language.noisy_log_prob(ids, self.epsilon)
        accepted = self.language.accepts(ids)
        exact = self.language.log_prob(ids[accepted])
        length = ids.shape[1]
        return OracleResult(
            gen_ppl=math.exp(float(nll.sum()) / ids.numel()),
            gen_ppl_accepted=math.exp(float(-exact.sum()) / (int(accepted.sum()) * ids.shape[1])) if accepted.any() else None,
            acceptance=float(accepted.float().mean()),
            num_samples=ids.shape[0],
            num_tokens=ids.numel(),
            gen_ppl_se=gen_ppl_se(nll.tolist(), [length] * ids.shape[0]),
            acceptance_se=mean_se(accepted.float().tolist()),
        )

    def score_texts(self, texts: list[str]) -> OracleResult:
        """Texts of equal length in words (as samples of one run are); words outside the vocabulary are [UNK]."""
        ids = [self.language.encode(text) for text in texts]
        if len({len(row) for row in ids}) != 1:
            raise InputError(f"samples: the oracle judges texts of one length; these have {min(map(len, ids))} to {max(map(len, ids))} words")
        return self.score_ids(torch.tensor(ids))

    def floor(self, seq_len: int, num_samples: int, seed: int) -> dict:
        """The language's own samples through the same judge, and the exact expectation."""
        ids = self.language.sample(num_samples, seq_len, seed)
        own = self.score_ids(ids)
        return {
            "gen_ppl": own.gen_ppl, "acceptance": own.acceptance, "exact_gen_ppl": math.exp(self.language.entropy(seq_len)),
            "entropy": sample_entropy(torch.as_tensor(ids).tolist()),  # the sample entropy a perfect model's samples have
        }
