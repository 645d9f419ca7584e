"""Where a few-step Gen.-PPL stands on the synthetic language: between the exact denoiser and the floor.

With the same sampler and NFE, the exact denoiser (models/exact.py) is the best any diffusion
model trained by likelihood can reach, and the floor, exp(entropy per token), is the language's
own samples. A model's oracle Gen.-PPL then splits, in nats per token, into

    model error         = ln(model / exact)   what a better-trained denoiser could still win;
                                              negative: better than any likelihood-trained model
    factorization error = ln(exact / floor)   what the sampler's per-position draws cost, at any model

Used by `eval` (a column per NFE) and by `train`'s before/after quality report.
"""

from __future__ import annotations

import math

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.generation import generate, process_for
from tokendrift_cli.metrics.oracle import OracleJudge
from tokendrift_cli.metrics.text_stats import sample_entropy_with_se
from tokendrift_cli.models.exact import ExactDenoiser
from tokendrift_cli.spec.diffusion import DiffusionSpec
from tokendrift_cli.spec.sampling import SamplerSpec
from tokendrift_cli.ui import UI

# The standing's keys in a row, and their table headers (short enough for 80 columns).
SHORT_HEADERS = {"exact_gen_ppl": "exact", "model_error": "model err", "factorization_error": "fact. err"}
EXACT_KEYS = ("gen_ppl", "gen_ppl_se", "gen_ppl_accepted", "acceptance", "acceptance_se", "entropy", "entropy_se")


class Standing:
    """The exact denoiser's oracle Gen.-PPL per (backbone, NFE, length), sampled once each with the
    given sampler settings and seed, and the floor; `place` splits a model's Gen.-PPL against them."""

    def __init__(self, language: SyntheticLanguage, judge: OracleJudge, sampler: SamplerSpec, seed: int, ui: UI):
        self.language, self.judge, self.sampler, self.seed, self.ui = language, judge, sampler, seed, ui
        self._exact: dict[tuple[str, int, int], dict] = {}

    def exact(self, backbone: str, nfe: int, seq_len: int) -> dict:
        """{gen_ppl, acceptance, entropy and their standard errors} of the exact denoiser's samples (EXACT_KEYS)."""
        key = (backbone, nfe, seq_len)
        if key not in self._exact:
            model = ExactDenoiser(self.language, backbone, seq_len, self.judge.epsilon)
            process = process_for(model, DiffusionSpec())
            ids = generate(model, process, self.sampler.model_copy(update={"seq_len": seq_len}), nfe, self.seed, self.ui).ids
            self._exact[key] = {**self.judge.score_ids(ids).as_row(), **sample_entropy_with_se(ids.tolist())}
        return self._exact[key]

    def remember(self, backbone: str, nfe: int, seq_len: int, row: dict) -> None:
        """An exact denoiser's row judged elsewhere with these settings (eval of `exact:<backbone>`): not sampled twice."""
        self._exact[(backbone, nfe, seq_len)] = {key: row.get(key) for key in EXACT_KEYS}

    def floor(self, seq_len: int) -> float:
        """exp(entropy per token) of length-`seq_len` sequences: what the language's own samples score."""
        return math.exp(self.language.entropy(seq_len))

    def place(self, gen_ppl: float, backbone: str, nfe: int, seq_len: int) -> dict:
        exact = self.exact(backbone, nfe, seq_len)["gen_ppl"]
        floor = self.floor(seq_len)
        return {"exact_gen_ppl": exact, "floor_gen_ppl": floor,
                "model_error": math.log(gen_ppl / exact), "factorization_error": math.log(exact / floor)}


def with_short_headers(row: dict) -> dict:
    """`row` with its standing also under the table headers of SHORT_HEADERS."""
    return {**row, **{name: row[key] for key, name in SHORT_HEADERS.items() if key in row}}
