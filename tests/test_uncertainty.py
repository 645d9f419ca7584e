"""Standard errors over samples and mean ± SD over seeds, against closed forms and brute force."""

import math
import statistics

import numpy as np
import pytest

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.metrics.oracle import OracleJudge
from tokendrift_cli.metrics.text_stats import ngram_jsd, ngram_jsd_se
from tokendrift_cli.metrics.uncertainty import gen_ppl_se, mean_sd, mean_se, ratio_se


def test_mean_se_by_hand():
    # mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, SD √(5/3), SE √(5/3)/2.
    assert mean_se([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-12)
    assert mean_se([7.0]) is None


def test_the_se_of_a_share_is_the_binomial_one():
    # 3 of 10 accepted: the n − 1 SD over / √n is √(p(1 − p) / (n − 1)).
    assert mean_se([1.0] * 3 + [0.0] * 7) == pytest.approx(math.sqrt(0.3 * 0.7 / 9), rel=1e-12)


def test_ratio_se_with_equal_denominators_is_the_se_of_the_per_sample_ratios():
    nll = [40.0, 52.0, 47.0, 61.0, 38.0]
    assert ratio_se(nll, [16] * 5) == pytest.approx(mean_se([a / 16 for a in nll]), rel=1e-12)


def test_gen_ppl_se_agrees_with_a_brute_force_bootstrap():
    """Samples of unequal length: the delta method against the SD of exp(Σ NLL / Σ tokens) over
    20,000 seeded bootstrap resamples. Their gap is the bootstrap's own noise (relative SD about
    1/√(2·20000) = 0.5 %) plus the delta method's O(1/n) error for n = 400: 3 % holds both."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(8, 64, size=400).astype(float)
    nll = tokens * rng.normal(3.0, 0.6, size=400)
    draws = rng.integers(0, 400, size=(20_000, 400))
    replicates = np.exp(nll[draws].sum(1) / tokens[draws].sum(1))
    assert gen_ppl_se(nll.tolist(), tokens.tolist()) == pytest.approx(float(replicates.std(ddof=1)), rel=0.03)


def test_oracle_se_is_the_closed_form_on_equal_lengths():
    """Samples of one length L: Gen.-PPL = exp(mean of NLLᵢ / L), so its SE is Gen.-PPL times the
    SE of that mean; acceptance's is the binomial one."""
    language = SyntheticLanguage()
    ids = language.sample(32, 12, 0)
    ids[::3, 5] = ids[::3, 6]  # some broken samples, so acceptance is neither 0 nor 1
    scored = OracleJudge(language, 1e-3).score_ids(ids)
    per_token = (-language.noisy_log_prob(ids, 1e-3) / 12).tolist()
    assert scored.gen_ppl_se == pytest.approx(math.exp(statistics.mean(per_token)) * statistics.stdev(per_token) / math.sqrt(32), rel=1e-9)
    p = scored.acceptance
    assert 0 < p < 1 and scored.acceptance_se == pytest.approx(math.sqrt(p * (1 - p) / 31), rel=1e-12)


def test_ngram_jsd_se_is_the_sd_of_ngram_jsd_over_the_same_resamples():
    """The vectorised bootstrap against ngram_jsd itself on each resampled list of texts, drawn
    as ngram_jsd_se draws them (numpy's default_rng(seed).integers)."""
    language = SyntheticLanguage()
    samples = [language.decode(row) for row in language.sample(24, 10, 1).tolist()]
    samples[:4] = ["the the the the the the the the the the"] * 4  # a collapsed share, so resamples differ
    reference = [language.decode(row) for row in language.sample(64, 10, 2).tolist()]
    draws = np.random.default_rng(5).integers(0, 24, size=(50, 24))
    brute = [ngram_jsd([samples[i] for i in row], reference, 3)["mean"] for row in draws]
    assert ngram_jsd_se(samples, reference, 3, resamples=50, seed=5) == pytest.approx(statistics.stdev(brute), rel=1e-9)


def test_mean_sd_over_seeds_by_hand():
    rows = [{"gen_ppl": 10.0, "entropy": 2.0}, {"gen_ppl": 14.0, "entropy": 2.5}, {"gen_ppl": 12.0}]
    got = mean_sd(rows, ["gen_ppl", "entropy"])
    assert got == {"gen_ppl": 12.0, "gen_ppl_sd": 2.0}  # entropy is left out: one row lacks it
    assert mean_sd(rows[:1], ["gen_ppl"]) == {"gen_ppl": 10.0, "gen_ppl_sd": None}

