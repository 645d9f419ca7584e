"""The exact denoiser against brute-force enumeration of a tiny language, and as a model by name."""

import json
import math

import pytest
import torch
from tiny_language import LENGTH
from transformers.modeling_outputs import MaskedLMOutput

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.generation import process_for
from tokendrift_cli.models.dit import as_denoiser
from tokendrift_cli.models.exact import ExactDenoiser
from tokendrift_cli.spec.diffusion import DiffusionSpec

# Brute-force and forward–backward sum the same float64 terms in other orders: a few ulps of
# probabilities of order one.
ATOL = 1e-12


def brute_force(tiny, everything, channel: torch.Tensor, own: bool = True) -> torch.Tensor:
    """P(w_t = v | evidence) [L, V] ∝ Σ_w P(w) Π_u channel[u, w_u], summed over every sequence w;
    own=False: the product over u ≠ t (each position's own evidence left out)."""
    words, probs = everything
    seen = channel.gather(1, words.T).T  # [sequences, L]
    posterior = torch.zeros(LENGTH, tiny.vocab_size, dtype=torch.float64)
    for t in range(LENGTH):
        others = torch.cat([seen[:, :t], seen[:, t + 1:]], 1)
        weight = probs * (seen.prod(1) if own else others.prod(1))
        posterior[t].index_add_(0, words[:, t], weight)
    return posterior / posterior.sum(-1, keepdim=True)


def predicted(model: ExactDenoiser, xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """exp(process.predict): what the sampler reads, through the process's own parameterisation."""
    return process_for(model, DiffusionSpec()).predict(as_denoiser(model), xt, sigma).exp()


def test_mdlm_posterior_equals_brute_force(tiny, everything):
    model = ExactDenoiser(tiny, "mdlm", LENGTH)
    M = tiny.mask_id
    xt = torch.tensor([tiny.encode(f"she {tiny.vocab[M]} {tiny.vocab[M]} <eos> we")])
    got = predicted(model, xt, torch.zeros(1))[0]
    # Masked positions see nothing; the others see their token.
    channel = torch.ones(LENGTH, tiny.vocab_size, dtype=torch.float64)
    for t in (0, 3, 4):
        channel[t] = 0
        channel[t, xt[0, t]] = 1
    expected = brute_force(tiny, everything, channel)
    torch.testing.assert_close(got[1:3], expected[1:3], rtol=0, atol=ATOL)
    assert got[0, xt[0, 0]] == 1.0 and got[:, M].sum() == 0  # SUBS: carried over, never [MASK]


def test_mdlm_impossible_context_reads_through_the_judges_channel(tiny, everything):
    """'she play ...' cannot be produced; its observed tokens are read through the noisy channel."""
    model = ExactDenoiser(tiny, "mdlm", LENGTH, epsilon=0.05)
    M = tiny.vocab[tiny.mask_id]
    xt = torch.tensor([tiny.encode(f"she play {M} <eos> {M}")])
    got = predicted(model, xt, torch.zeros(1))[0]
    K, eps = tiny.num_data_tokens, 0.05
    channel = torch.ones(LENGTH, tiny.vocab_size, dtype=torch.float64)
    for t in (0, 1, 3):
        channel[t, :K] = eps / K
        channel[t, xt[0, t]] += 1 - eps
    expected = brute_force(tiny, everything, channel)
    torch.testing.assert_close(got[[2, 4]], expected[[2, 4]], rtol=0, atol=ATOL)


@pytest.mark.parametrize("sigma", [0.05, 1.0, 6.0])
def test_duo_posterior_equals_brute_force(tiny, everything, sigma):
    """Uniform noise: each x_t is the word with probability alpha, else uniform over the K data
    tokens; DUO's exact prediction at position i reads the other positions only (P(w_i | x_t^-i))."""
    model = ExactDenoiser(tiny, "duo", LENGTH)
    sigmas = torch.full((2,), sigma)  # float32, as the sampler passes it: alpha is read off that value
    K, alpha = tiny.num_data_tokens, math.exp(-float(sigmas[0]))
    xt = torch.tensor([tiny.encode("he eat chess chess he"), tiny.encode("we play fish <eos> she")])
    got = predicted(model, xt, sigmas)
    for row in range(2):
        channel = torch.full((LENGTH, tiny.vocab_size), (1 - alpha) / K, dtype=torch.float64)
        channel[:, K:] = 0
        channel[torch.arange(LENGTH), xt[row]] += alpha
        torch.testing.assert_close(got[row], brute_force(tiny, everything, channel, own=False)[:, :K], rtol=0, atol=ATOL)


def test_duo_nelbo_is_tight_for_the_leave_one_out_prediction():
    """Why DUO's exact prediction leaves the position's own token out. One position, words drawn
    from p: DUO's continuous-time NELBO, its integrand's expectation over (x0, x_t) summed exactly
    and integrated over t by Simpson's rule, equals the entropy H(p) (a tight bound) when the
    prediction is p itself, the posterior given the other positions (here: nothing); the
    posterior given x_t, the own token included, scores above H. Simpson's error, dominated by the
    first panel of the log(1/t) growth at t = 0 (about h·log(1/h) with h = 1e-4), and the
    interval left out (1e-7 long) are below the 2e-3 allowed; the two predictions differ by ~0.7 nats."""
    from tokendrift_cli.diffusion.duo import DUO
    from tokendrift_cli.diffusion.schedule import LogLinearSchedule

    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    K, process = len(p), DUO(len(p), LogLinearSchedule(1e-3))
    x0, xt = torch.cartesian_prod(torch.arange(K), torch.arange(K)).T  # every (x0, x_t) pair

    def integrand(t: float, leave_own_out: bool) -> float:
        alpha = float(process.schedule.alpha(torch.tensor(t)))
        forward = alpha * (x0 == xt).double() + (1 - alpha) / K  # q(x_t | x0)
        channel = alpha * torch.eye(K, dtype=torch.float64) + (1 - alpha) / K  # [x_t, w]
        posterior = p * channel[xt]  # P(w | x_t), unnormalised, one row per pair
        prediction = p.expand(len(xt), K) if leave_own_out else posterior / posterior.sum(-1, keepdim=True)
        times = torch.full((len(xt),), t)
        value = process.nelbo_per_token(prediction.log().unsqueeze(1), xt.unsqueeze(1), x0.unsqueeze(1), times).squeeze(1)
        return float((p[x0] * forward * value.double()).sum())

    def simpson(start: float, end: float, points: int, leave_own_out: bool) -> float:
        grid = torch.linspace(start, end, points, dtype=torch.float64)
        weights = torch.ones(points, dtype=torch.float64)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        return float(grid[1] - grid[0]) / 3 * sum(float(w) * integrand(float(t), leave_own_out) for t, w in zip(grid, weights))

    def nelbo(leave_own_out: bool) -> float:  # a fine first piece: the integrand grows like log(1/t) at 0
        return simpson(1e-7, 0.02, 201, leave_own_out) + simpson(0.02, 1 - 1e-7, 401, leave_own_out)

    entropy = float(-(p * p.log()).sum())
    assert nelbo(leave_own_out=True) == pytest.approx(entropy, abs=2e-3)
    assert nelbo(leave_own_out=False) > entropy + 0.5


def test_left_padding_is_skipped(tiny):
    """The probe left-pads prompts: padded positions take no step of the automaton."""
    model = ExactDenoiser(tiny, "mdlm", LENGTH)
    M = tiny.mask_id
    alone = torch.tensor([tiny.encode("she eats") + [M, M]])
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), alone], 1)
    attention = torch.tensor([[0, 0, 1, 1, 1, 1]])
    got = model(input_ids=padded, attention_mask=attention).logits.exp()
    torch.testing.assert_close(got[:, 2:], model(input_ids=alone).logits.exp(), rtol=0, atol=ATOL)


def _agrees_with_note(ids: torch.Tensor, note: float) -> float:
    """ln Gen.-PPL of `ids` under the oracle, checked against the note's 256-sample estimate: two
    independent estimates differ by at most 4 standard errors of their difference (SE from these
    samples' per-sequence NLL spread)."""
    from tokendrift_cli.data.synthetic.exact import CHANNEL_EPSILON

    nll = -SyntheticLanguage().noisy_log_prob(ids, CHANNEL_EPSILON) / ids.shape[1]
    standard_error = float(nll.std()) / math.sqrt(len(ids))
    assert abs(float(nll.mean()) - math.log(note)) <= 4 * math.sqrt(2) * standard_error
    return float(nll.mean())


def test_eval_of_the_exact_mdlm_denoiser_agrees_with_the_research_note(cli, tmp_path):
    """shared/research/exact-denoiser-and-length.md: NFE 4, 256 samples, length 32, seed 0: 45.4."""
    code, stdout, stderr = cli("eval", "--model", "exact:mdlm", "--nfe", "4", "--num-samples", "256",
                               "--metrics", "genppl,entropy", "--out", str(tmp_path / "eval"), "--json")
    assert code == 0, stderr
    row = json.loads(stdout)["rows"][0]
    code, stdout, stderr = cli("sample", "--model", "exact:mdlm", "--nfe", "4", "--num-samples", "256",
                               "--out", str(tmp_path / "sample"), "--json")
    assert code == 0, stderr
    samples = [json.loads(line)["ids"] for line in (tmp_path / "sample" / "samples.jsonl").read_text().splitlines()]
    mean_nll = _agrees_with_note(torch.tensor(samples), 45.4)
    assert math.exp(mean_nll) == pytest.approx(row["gen_ppl"], rel=1e-9)  # sample and eval drew the same sequences
    assert row["model_error"] == 0.0 and row["exact_gen_ppl"] == row["gen_ppl"]
    assert row["factorization_error"] == pytest.approx(mean_nll - SyntheticLanguage().entropy(32), rel=1e-12)


def test_the_research_notes_duo_number_is_the_posterior_given_the_whole_noisy_sequence():
    """The note fed DUO's sampler the posterior given all of x_t (23.7 at NFE 4, seed 0, 256
    samples). The same through our sampler agrees with it; exact:duo, the prediction DUO's NELBO
    makes tight (the own token left out), is another sampler input and scores otherwise."""
    from tokendrift_cli.generation import generate
    from tokendrift_cli.spec.sampling import SamplerSpec
    from tokendrift_cli.ui import UI

    class WholeSequencePosterior(ExactDenoiser):
        def forward(self, input_ids, sigma=None, **unused):
            keep = torch.exp(-sigma.double()).expand(input_ids.shape[0])
            probs, _ = self.language.posterior(self.language.channel_likelihood(input_ids, keep))
            return MaskedLMOutput(logits=probs[..., : self.config.vocab_size].log())

    language, sampler = SyntheticLanguage(), SamplerSpec(num_samples=256)
    drawn = {}
    for name, model in (("whole", WholeSequencePosterior(language, "duo", 32)), ("exact", ExactDenoiser(language, "duo", 32))):
        drawn[name] = generate(model, process_for(model, DiffusionSpec()), sampler, 4, 0, UI(quiet=True)).ids
    _agrees_with_note(drawn["whole"], 23.7)
    with pytest.raises(AssertionError):  # exact:duo is more than 4 standard errors away from it
        _agrees_with_note(drawn["exact"], 23.7)


@pytest.mark.parametrize("backbone", ["mdlm", "duo"])
def test_the_exact_denoisers_validation_nelbo_is_the_entropy(cli, tmp_path, backbone):
    """Both exact predictions make their backbone's NELBO tight, so val_ppl estimates exp(H). The
    estimator noises each of the 256 sequences at one t (weight up to 1/t): measured spreads over
    seeds are ~0.04 nats at 512 sequences, so 0.2 nats is about four standard errors at 256."""
    code, stdout, stderr = cli("eval", "--model", f"exact:{backbone}", "--nfe", "1", "--num-samples", "1", "--metrics", "val_ppl",
                               "--set", "evaluation.valid_sequences=256", "--out", str(tmp_path / "eval"), "--json")
    assert code == 0, stderr
    nelbo = math.log(json.loads(stdout)["rows"][0]["val_ppl"])
    assert abs(nelbo - SyntheticLanguage().entropy(32)) < 0.2


def test_possible_contexts_are_those_some_sentence_of_the_language_shows(tiny, everything):
    """Every MDLM context of length 5 with at most 3 unmasked tokens (18,781 of them) against brute
    force: a context is possible iff some sequence of positive probability agrees with its unmasked tokens."""
    import itertools

    model = ExactDenoiser(tiny, "mdlm", LENGTH)
    words, probs = everything
    M = tiny.mask_id
    shown = set()
    for pattern in itertools.product([False, True], repeat=LENGTH):  # which positions are masked
        shown.update(map(tuple, torch.where(torch.tensor(pattern), M, words[probs > 0]).tolist()))
    contexts = torch.tensor(list(itertools.product(range(tiny.num_data_tokens + 1), repeat=LENGTH)))
    contexts = contexts[(contexts != M).sum(1) <= 3]
    expected = torch.tensor([tuple(c) in shown for c in contexts.tolist()])
    assert 0 < expected.sum() < len(contexts)  # both kinds are there
    assert torch.equal(model.possible(contexts), expected)
