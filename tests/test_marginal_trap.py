"""The marginal trap against hand-computed joints, Wilson intervals and Monte-Carlo agreement."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.metrics.trap import JointTable, Validity, joint_from_language, parse_joint


def test_i_likes_tennis_example_is_half_invalid_and_one_bit():
    table = parse_joint({"I like": 0.5, "he likes": 0.5}, "joint.json")
    assert table.invalid_mass() == pytest.approx(0.5, abs=1e-12)
    assert table.total_correlation_bits() == pytest.approx(1.0, abs=1e-12)
    assert table.total_variation() == pytest.approx(0.5, abs=1e-12)


def test_a_factorising_joint_has_nothing_to_lose():
    table = JointTable({(a, b): pa * pb for (a, pa), (b, pb) in itertools.product([("x", 0.3), ("y", 0.7)], [("u", 0.6), ("v", 0.4)])})
    assert table.invalid_mass() == pytest.approx(0.0, abs=1e-12)
    assert table.total_correlation_bits() == pytest.approx(0.0, abs=1e-12)
    assert table.total_variation() == pytest.approx(0.0, abs=1e-12)


def test_two_by_two_by_hand():
    # joint: (a,u) .4, (a,v) .1, (b,u) .2, (b,v) .3 → marginals a .5 b .5, u .6 v .4
    table = JointTable({("a", "u"): 0.4, ("a", "v"): 0.1, ("b", "u"): 0.2, ("b", "v"): 0.3})
    product = {("a", "u"): 0.3, ("a", "v"): 0.2, ("b", "u"): 0.3, ("b", "v"): 0.2}
    assert table.total_variation() == pytest.approx(0.5 * sum(abs(table.probs[c] - product[c]) for c in product))
    h = lambda ps: -sum(p * math.log2(p) for p in ps)  # noqa: E731
    assert table.total_correlation_bits() == pytest.approx(h([0.5, 0.5]) + h([0.6, 0.4]) - h([0.4, 0.1, 0.2, 0.3]))
    assert table.invalid_mass() == pytest.approx(0.0, abs=1e-12)


def test_wilson_interval_by_hand():
    low, high = Validity(40, 50).wilson()
    z, n, p = 1.959964, 50, 0.8
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((center - half, center + half))
    assert Validity(10, 10).wilson()[1] == pytest.approx(1.0)


def test_monte_carlo_parallel_validity_matches_one_minus_invalid_mass():
    table = parse_joint({"I like": 0.3, "he likes": 0.5, "we like": 0.2}, "j")
    validity, invalid = table.decode(2, 4000, np.random.default_rng(0))
    low, high = validity.wilson()
    assert low <= 1 - table.invalid_mass() <= high
    assert ("I", "likes") in invalid and all(combo not in table.probs for combo in invalid)
    sequential, none = table.decode(1, 500, np.random.default_rng(1))
    assert sequential.rate == 1.0 and not none


def test_exact_joint_from_the_language_matches_brute_force():
    language = SyntheticLanguage()
    ids = language.sample(1, 10, seed=4)[0]
    slots = [2, 3]
    table = joint_from_language(language, ids, slots)
    # Brute force: every filling of the two slots scored by the exact log-probability.
    candidates = torch.tensor(list(itertools.product(range(language.num_data_tokens), repeat=2)))
    filled = ids.repeat(len(candidates), 1)
    filled[:, slots] = candidates
    probs = language.log_prob(filled).exp()
    probs = probs / probs.sum()
    for (a, b), p in zip(candidates.tolist(), probs.tolist()):
        assert table.probs.get((a, b), 0.0) == pytest.approx(p, abs=1e-12)


@pytest.mark.parametrize("content, message", [
    ('{"I like": 0.5, "he likes": 0.6}', "sum to 1.1"),
    ('{"I like": 0.5, "he": 0.5}', "same number of tokens"),
    ('{"I like": -0.5, "he likes": 1.5}', "non-negative"),
    ('["I like"]', "expected a non-empty JSON object"),
    ('{"I like": 0.5,', "not valid JSON"),
])
def test_malformed_joint_files(cli, tmp_path, content, message):
    path = tmp_path / "joint.json"
    path.write_text(content)
    code, _, err = cli("marginal-trap", "--joint", str(path), "--out", str(tmp_path / "t"))
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
def test_exact_mode_end_to_end(cli, tmp_path):
    out = tmp_path / "trap"
    code, stdout, err = cli("marginal-trap", "--out", str(out), "--json", "--set", "trap.num_contexts=4",
                            "--set", "trap.num_samples=600", "--set", "trap.k=3")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["validity_sequential"]["rate"] == 1.0
    parallel = result["validity_parallel"]
    assert parallel["low"] - 0.02 <= 1 - result["invalid_mass"] <= parallel["high"] + 0.02
    assert result["total_correlation_bits"] > 0 and set(result["validity_by_tokens_per_step"]) == {"1", "2", "3"}
    for name in ("joint_vs_product.png", "validity.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_model_mode_end_to_end(cli, trained_run, tmp_path):
    code, stdout, err = cli("marginal-trap", "--mode", "model", "--model", str(trained_run), "--json",
                            "--set", "trap.num_contexts=10", "--set", "trap.num_samples=200", "--out", str(tmp_path / "m"))
    assert code == 0, err
    result = json.loads(stdout)
    assert result["mode"] == "model" and result["num_contexts"] > 0
    assert 0 <= result["incoherence_mass"] <= 1 and result["estimated_total_correlation_bits"] >= 0
    assert 0 <= result["validity_parallel"]["rate"] <= 1
    # Invalid parallel draws, as docs/marginal_trap.md shows them: the sentence with its two slots in brackets.
    examples, parallel = result["invalid_examples"], result["validity_parallel"]
    assert parallel["rate"] < 1 and examples  # the briefly trained model breaks some pairs
    assert sum(e["count"] for e in examples) <= round((1 - parallel["rate"]) * parallel["n"])
    for example in examples:
        assert example["text"].count("[") == 2 and example["text"].count("]") == 2, example
