"""The synthetic language against brute-force enumeration of a tiny configuration."""

import itertools
import math

import pytest
import torch
from tiny_language import LENGTH

from tokendrift_cli.data.synthetic import SyntheticLanguage


def test_probabilities_of_all_sequences_sum_to_one(everything):
    _, probs = everything
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-12)


def test_log_prob_by_hand(tiny):
    # "he eats bread <eos> we": 1/2·(2/3) · 1/1.5 · (1/1.5) · 0.5 · 1/2
    ids = torch.tensor([tiny.encode("he eats bread <eos> we")])
    expected = 0.5 * (2 / 3) * (1 / 1.5) * (1 / 1.5) * 0.5 * 0.5
    assert float(tiny.log_prob(ids).exp()) == pytest.approx(expected, rel=1e-12)


def test_agreement_is_enforced(tiny):
    assert tiny.accepts(torch.tensor([tiny.encode("she plays chess <eos> we")])).item()
    assert not tiny.accepts(torch.tensor([tiny.encode("she play chess <eos> we")])).item()
    assert not tiny.accepts(torch.tensor([tiny.encode("we eat chess <eos> we")])).item()


def test_marginals_equal_brute_force(tiny, everything):
    ids, probs = everything
    observed = torch.tensor(tiny.encode("she eats fish <eos> we"))
    masked = torch.tensor([False, True, True, False, False])
    consistent = (ids[:, ~masked] == observed[~masked]).all(1)
    posterior = probs * consistent
    posterior = posterior / posterior.sum()
    got = tiny.marginals(observed, masked)
    for position in (1, 2):
        expected = torch.zeros(tiny.vocab_size, dtype=torch.float64)
        expected.index_add_(0, ids[:, position], posterior)
        torch.testing.assert_close(got[position], expected, rtol=0, atol=1e-12)
    assert got[0, observed[0]] == 1.0 and got[:, tiny.mask_id].sum() == 0


def test_marginals_batched_with_scattered_masks(tiny, everything):
    ids, probs = everything
    sample = tiny.sample(4, LENGTH, seed=3)
    masked = torch.tensor([[True, False, True, False, True]] * 4)
    got = tiny.marginals(sample, masked)
    for row in range(4):
        consistent = (ids[:, ~masked[row]] == sample[row, ~masked[row]]).all(1)
        posterior = probs * consistent / (probs * consistent).sum()
        for position in (0, 2, 4):
            expected = torch.zeros(tiny.vocab_size, dtype=torch.float64).index_add_(0, ids[:, position], posterior)
            torch.testing.assert_close(got[row, position], expected, rtol=0, atol=1e-12)


def test_noisy_channel_likelihood_equals_brute_force(tiny, everything):
    """p(x) = Σ_w P(w) Π_t [(1 - eps)·[x_t = w_t] + eps / |V|], summed over every true sequence w."""
    ids, probs = everything
    eps, vocab = 0.1, tiny.num_data_tokens
    for observed in [tiny.encode("he eats bread <eos> we"), tiny.encode("he eat chess chess he")]:
        x = torch.tensor(observed)
        channel = ((1 - eps) * (ids == x).double() + eps / vocab).prod(1)
        expected = float((probs * channel).sum())
        assert float(tiny.noisy_log_prob(x.unsqueeze(0), eps).exp()) == pytest.approx(expected, rel=1e-10)


def test_impossible_observation_is_an_error(tiny):
    with pytest.raises(ValueError, match="probability 0"):
        tiny.marginals(torch.tensor(tiny.encode("she play chess <eos> we")), torch.tensor([False, False, True, False, False]))


def test_entropy_equals_brute_force(tiny, everything):
    _, probs = everything
    p = probs[probs > 0]
    assert tiny.entropy(LENGTH) == pytest.approx(float(-(p * p.log()).sum()) / LENGTH, rel=1e-12)


def test_entropy_rate_is_the_long_run_limit():
    language = SyntheticLanguage()
    assert language.entropy(4000) == pytest.approx(language.entropy_rate(), rel=2e-3)


def test_sampling_frequencies_match_log_prob(tiny):
    """Pearson chi-square of 40 000 samples against the exact probabilities (fixed seed)."""
    samples = tiny.sample(40_000, 3, seed=0)
    ids = torch.tensor(list(itertools.product(range(tiny.num_data_tokens), repeat=3)))
    probs = tiny.log_prob(ids).exp()
    support = probs > 0
    codes = (samples * torch.tensor([tiny.vocab_size**2, tiny.vocab_size, 1])).sum(1)
    all_codes = (ids * torch.tensor([tiny.vocab_size**2, tiny.vocab_size, 1])).sum(1)
    observed = (all_codes[:, None] == codes[None, :]).sum(1).double()
    assert observed[~support].sum() == 0  # never an impossible sequence
    expected = probs[support] * len(samples)
    chi2 = float(((observed[support] - expected) ** 2 / expected).sum())
    dof = int(support.sum()) - 1
    assert chi2 < dof + 4 * math.sqrt(2 * dof)  # far inside the upper tail


def test_default_language_shape_and_agreement():
    language = SyntheticLanguage()
    assert 50 <= language.num_data_tokens <= 300
    assert language.vocab[language.eos_id] == "<eos>" and language.vocab[language.mask_id] == "[MASK]"
    samples = language.sample(256, 32, seed=1)
    assert language.accepts(samples).all()
    assert (samples != language.mask_id).all()
    for bad in ["I likes tennis .", "she like tennis .", "a cats sleep .", "he eats chess ."]:
        assert not language.accepts(torch.tensor([language.encode(bad)])).item(), bad
    for good in ["I like tennis .", "she likes tennis .", "a cat sleeps .", "some cats sleep ."]:
        assert language.accepts(torch.tensor([language.encode(good)])).item(), good


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    language = SyntheticLanguage()
    tokenizer = language.tokenizer()
    text = "the old dog eats bread at home . <eos> I like tennis ."
    assert tokenizer(text)["input_ids"] == language.encode(text)
    assert tokenizer.decode(language.encode(text)) == text
    assert tokenizer.mask_token_id == language.mask_id and tokenizer.eos_token_id == 0
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text)["input_ids"] == language.encode(text)
    assert reloaded("zebra")["input_ids"] == [1]  # unknown words map to [UNK]


def test_dataset_is_deterministic_and_cached(tmp_path):
    language = SyntheticLanguage()
    first = language.build_dataset(64, 16, 12, seed=5, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    again = language.build_dataset(64, 16, 12, seed=5, cache_dir=tmp_path)
    ids = lambda data, split: list(data[split]["input_ids"])  # noqa: E731
    assert ids(first, "train") == ids(again, "train")
    fresh = language.build_dataset(64, 16, 12, seed=5, cache_dir=tmp_path / "other")
    assert ids(fresh, "validation") == ids(first, "validation")
    assert ids(first, "train")[:16] != ids(first, "validation")
    other_seed = language.build_dataset(64, 16, 12, seed=6, cache_dir=tmp_path)
    assert ids(other_seed, "train") != ids(first, "train")
