"""MDLM and DUO: forward processes, NELBOs and samplers against closed forms and counting stubs."""

import math

import pytest
import torch

from tokendrift_cli.diffusion import DUO, MDLM, DiffusionProcess, LogLinearSchedule, exclude_mask

K = 6  # data tokens; MDLM's [MASK] is id K
EPS = 1e-3


def mdlm(**kw):
    return MDLM(K + 1, K, LogLinearSchedule(EPS), **kw)


def duo(**kw):
    return DUO(K, LogLinearSchedule(EPS), **kw)


PI = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])  # an i.i.d. product "language"
ENTROPY = float(-(PI * PI.log()).sum())


def product_data(n, length, seed=0):
    return torch.multinomial(PI, n * length, replacement=True, generator=torch.Generator().manual_seed(seed)).view(n, length)


def test_schedule_closed_forms():
    s = LogLinearSchedule(EPS)
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(s.alpha(t), torch.tensor([1.0, 1 - 0.5 * (1 - EPS), EPS]))
    torch.testing.assert_close(s.sigma(t), -torch.log(s.alpha(t)))


@pytest.mark.parametrize("t", [0.2, 0.7])
def test_forward_marginals(t):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K, (4000, 16), generator=g)
    times = torch.full((4000,), t)
    alpha = 1 - (1 - EPS) * t
    masked = (mdlm().q_xt(x0, times, g) == K).float().mean()
    assert float(masked) == pytest.approx(1 - alpha, abs=0.01)
    xt = duo().q_xt(x0, times, g)
    assert float((xt == x0).float().mean()) == pytest.approx(alpha + (1 - alpha) / K, abs=0.01)
    other = (xt == (x0 + 1) % K).float().mean()  # one particular other token
    assert float(other) == pytest.approx((1 - alpha) / K, abs=0.01)


def test_subs_invariants():
    process = mdlm()
    xt = torch.tensor([[K, 2, K, 0]])
    log_probs = process.subs(torch.randn(1, 4, K + 1), xt)
    probs = log_probs.exp()
    assert torch.all(probs[..., K] == 0)  # never predicts [MASK]
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 4))
    assert probs[0, 1, 2] == 1 and probs[0, 3, 0] == 1  # observed tokens carried over


def test_mdlm_nelbo_of_the_exact_posterior_is_the_entropy():
    """For i.i.d. data the exact posterior at a masked position is PI; E[NELBO] = (1 - eps)·H(PI)."""
    logits = torch.cat([PI.log(), torch.tensor([0.0])])
    denoiser = lambda x, sigma: logits.expand(*x.shape, K + 1)  # noqa: E731
    x0 = product_data(8192, 16)
    loss = mdlm().loss(denoiser, x0, torch.Generator().manual_seed(1)).loss
    assert float(loss) == pytest.approx((1 - EPS) * ENTROPY, rel=0.02)


def duo_exact_posterior(x, sigma):
    """p(x0 = v | x_t = w) ∝ PI(v)·(alpha·[v = w] + (1 - alpha)/K), position by position."""
    alpha = torch.exp(-sigma)[:, None, None]
    likelihood = alpha * torch.nn.functional.one_hot(x, K) + (1 - alpha) / K
    return (PI * likelihood).log()


def test_duo_nelbo_integrand_is_the_rate_of_the_posterior_kl():
    """The continuous-time integrand equals lim KL(q(x_s|x_t,x0) || q(x_s|x_t,x_theta)) / (t - s),
    computed here by brute force from Bayes-rule posteriors over all (x0, x_t) pairs."""
    process, t, dt = duo(), 0.5, 1e-5
    schedule = process.schedule
    alpha_t = schedule.alpha(torch.tensor(t, dtype=torch.float64))
    alpha_s = schedule.alpha(torch.tensor(t - dt, dtype=torch.float64))
    prediction = torch.softmax(torch.randn(K, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)

    def bayes_posterior(x0_probs, xt):  # Σ_x0 x0_probs(x0) q(x_s | x0) q(x_t | x_s), normalised over x_s
        q_s = alpha_s * torch.eye(K, dtype=torch.float64) + (1 - alpha_s) / K  # [x0, x_s]
        q_t = alpha_t / alpha_s * (torch.arange(K) == xt).double() + (1 - alpha_t / alpha_s) / K  # [x_s]
        joint = (x0_probs[:, None] * q_s).sum(0) * q_t
        return joint / joint.sum()

    for x0 in range(K):
        for xt in range(K):
            exact = bayes_posterior(torch.nn.functional.one_hot(torch.tensor(x0), K).double(), xt)
            # The model's reverse plugs its x0 prediction into the same closed form (mean parameterisation).
            model = process.posterior(prediction.view(1, 1, K), torch.tensor([[xt]]), alpha_s, alpha_t)[0, 0]
            kl_rate = float((exact * (exact / model).log()).sum()) / dt
            got = float(process.nelbo_per_token(prediction.log().view(1, 1, K), torch.tensor([[xt]]), torch.tensor([[x0]]), torch.tensor([t])))
            assert got == pytest.approx(kl_rate, rel=1e-3, abs=1e-4)


def test_duo_nelbo_of_the_posterior_mean_bounds_the_entropy():
    """An upper bound: the exact posterior mean plugged in is not the exact reverse for uniform noise."""
    x0 = product_data(4096, 16)
    loss = duo().loss(duo_exact_posterior, x0, torch.Generator().manual_seed(2)).loss
    assert ENTROPY < float(loss) < 2 * ENTROPY


def test_duo_nelbo_is_zero_for_an_oracle_and_positive_otherwise():
    process = duo()
    x0 = product_data(64, 8)
    xt = process.q_xt(x0, torch.full((64,), 0.6), torch.Generator().manual_seed(3))
    t = torch.full((64,), 0.6)
    oracle = torch.nn.functional.one_hot(x0, K).double().clamp_min(1e-30).log()
    torch.testing.assert_close(process.nelbo_per_token(oracle, xt, x0, t), torch.zeros(64, 8), atol=1e-5, rtol=0)
    uniform = torch.full((64, 8, K), -math.log(K))
    assert (process.nelbo_per_token(uniform, xt, x0, t) > 0).all()


def test_duo_posterior_matches_bayes_rule_by_enumeration():
    process = duo()
    probs = torch.softmax(torch.randn(1, 1, K), -1)
    xt = torch.tensor([[2]])
    alpha_s, alpha_t = torch.tensor(0.8), torch.tensor(0.5)
    got = process.posterior(probs, xt, alpha_s, alpha_t)[0, 0]
    expected = torch.zeros(K)
    for x0 in range(K):
        for xs in range(K):
            q_s = alpha_s * (xs == x0) + (1 - alpha_s) / K
            q_t = alpha_t / alpha_s * (2 == xs) + (1 - alpha_t / alpha_s) / K
            expected[xs] += probs[0, 0, x0] * q_s * q_t
    torch.testing.assert_close(got, expected / expected.sum())


class CountingStub:
    """A denoiser with fixed preferences that counts its calls."""

    def __init__(self, vocab):
        self.calls = 0
        self.logits = torch.linspace(0, 2, vocab)

    def __call__(self, x, sigma):
        self.calls += 1
        return self.logits.expand(*x.shape, len(self.logits)).clone()


@pytest.mark.parametrize("nfe", [1, 4, 16])
def test_mdlm_sampler_reports_exactly_the_calls_it_made(nfe):
    g = torch.Generator().manual_seed(0)
    stub = CountingStub(K + 1)
    ids, calls = mdlm().sample(stub, 8, 12, nfe, g, cache=False)
    assert calls == stub.calls == nfe
    assert not (ids == K).any()  # the last step reveals everything
    cached = CountingStub(K + 1)
    _, calls = mdlm().sample(cached, 1, 2, 64, g, cache=True)  # 2 tokens, 64 steps: most steps change nothing
    assert calls == cached.calls and calls <= 3


def test_mdlm_time_conditioned_model_is_never_cached():
    stub = CountingStub(K + 1)
    _, calls = mdlm(time_conditioning=True).sample(stub, 1, 2, 32, torch.Generator().manual_seed(0), cache=True)
    assert calls == stub.calls == 32


@pytest.mark.parametrize("nfe", [1, 4, 16])
def test_duo_sampler_calls_exactly_nfe_and_ends_greedy(nfe):
    stub = CountingStub(K)
    ids, calls = duo().sample(stub, 8, 12, nfe, torch.Generator().manual_seed(0))
    assert calls == stub.calls == nfe
    assert (ids == K - 1).all()  # greedy last step: the stub's argmax


@pytest.mark.parametrize("sampler", ["sample", "sample_with_predictions"])
def test_no_sampler_runs_without_a_call(sampler):
    """NFE 0 would give MDLM all-[MASK] samples, and DUO one call reported as none."""
    for process, vocab in ((mdlm(), K + 1), (duo(), K)):
        stub = CountingStub(vocab)
        with pytest.raises(ValueError, match="nfe must be at least 1, got 0"):
            getattr(process, sampler)(stub, 2, 4, 0, torch.Generator().manual_seed(0))
        assert stub.calls == 0


def test_samplers_are_seeded_and_deterministic():
    for process, vocab in ((mdlm(), K + 1), (duo(), K)):
        a, _ = process.sample(CountingStub(vocab), 4, 10, 8, torch.Generator().manual_seed(5), top_p=0.9)
        b, _ = process.sample(CountingStub(vocab), 4, 10, 8, torch.Generator().manual_seed(5), top_p=0.9)
        assert torch.equal(a, b)


def test_mdlm_sample_frequencies_follow_the_prediction():
    """With a constant prediction PI, every revealed token is a draw from PI (temperature 1)."""
    logits = torch.cat([PI.log(), torch.tensor([0.0])])
    ids, _ = mdlm().sample(lambda x, s: logits.expand(*x.shape, K + 1), 2000, 8, 4, torch.Generator().manual_seed(0))
    freq = torch.bincount(ids.flatten(), minlength=K).float() / ids.numel()
    torch.testing.assert_close(freq, PI, atol=0.01, rtol=0)


def test_top_p_keeps_the_smallest_nucleus():
    from tokendrift_cli.diffusion.sampling import prediction_probs

    probs = prediction_probs(torch.tensor([0.5, 0.3, 0.15, 0.05]).log(), top_p=0.75)
    torch.testing.assert_close(probs.float(), torch.tensor([0.625, 0.375, 0.0, 0.0]))


class CallIndexStub:
    """Call k (0-based) predicts token k with near certainty; `scale` carries a gradient."""

    def __init__(self):
        self.calls = 0
        self.scale = torch.tensor(20.0, requires_grad=True)

    def __call__(self, x, sigma):
        logits = self.scale * torch.nn.functional.one_hot(torch.tensor(self.calls), K + 1).float()
        self.calls += 1
        return logits.expand(*x.shape, K + 1)


def test_mdlm_sample_with_predictions_keeps_the_revealing_call_per_position():
    """Each position carries the prediction of the call that revealed it, with its graph."""
    stub = CallIndexStub()
    ids, log_probs = mdlm().sample_with_predictions(stub, 64, 12, 4, torch.Generator().manual_seed(0))
    assert stub.calls == 4 and not (ids == K).any()
    assert torch.equal(log_probs.argmax(-1), ids)  # call k revealed exactly the positions holding k
    assert set(ids.unique().tolist()) == {0, 1, 2, 3}  # every call revealed something
    # linspace(1, 0, 5) reveals a quarter of the positions per step in expectation
    torch.testing.assert_close(torch.bincount(ids.flatten()).float() / ids.numel(), torch.full((4,), 0.25), atol=0.03, rtol=0)
    log_probs[..., K - 1].sum().backward()  # d log p(5) / d scale = -p(k) ≈ -1 at every position
    torch.testing.assert_close(stub.scale.grad, torch.tensor(-64.0 * 12), rtol=1e-3, atol=0)


def test_duo_sample_with_predictions_is_the_sampler_with_its_last_call_differentiable():
    class Linear:
        weight = torch.linspace(0, 1, K).requires_grad_()

        def __call__(self, x, sigma):
            return torch.nn.functional.one_hot(x, K).float() * 3 + self.weight

    expected, _ = duo().sample(Linear(), 8, 10, 4, torch.Generator().manual_seed(3))
    model = Linear()
    ids, log_probs = duo().sample_with_predictions(model, 8, 10, 4, torch.Generator().manual_seed(3))
    assert torch.equal(ids, expected) and torch.equal(log_probs.argmax(-1), ids)
    log_probs.sum().backward()
    assert model.weight.grad is not None


def test_exclude_mask_renormalises_the_other_tokens():
    logits = torch.randn(3, 5, K + 1)
    excluded = exclude_mask(logits, K)
    assert torch.isinf(excluded[..., K]).all() and (excluded[..., K] < 0).all()
    assert torch.isfinite(logits).all()  # the caller's logits are left alone
    p = logits.softmax(-1)
    torch.testing.assert_close(excluded.softmax(-1)[..., :K], p[..., :K] / (1 - p[..., K:]))


class FakeProcess(DiffusionProcess):
    """Prior zeros; each transition adds two and records (t, s); decided: position `step` of the row."""

    def __init__(self, reuse=False):
        super().__init__(K, LogLinearSchedule(EPS))
        self.reuse, self.transitions, self.probs = reuse, [], []

    def predict(self, denoiser, xt, sigma):
        return denoiser(xt, sigma).log_softmax(-1)

    def prior(self, batch, seq_len, generator):
        return torch.zeros(batch, seq_len, dtype=torch.long)

    def transition(self, probs, x, t, s, generator):
        self.transitions.append((float(t), float(s)))
        self.probs.append(probs)
        return x + 2

    def decided(self, x, x_next):
        return torch.arange(x.shape[1]) == len(self.transitions) - 1

    def reusable(self, x, x_next):
        return self.reuse


class SigmaStub:
    """Logits fixed but for a gradient-carrying bump at token `call index`; records each sigma."""

    def __init__(self):
        self.sigmas, self.scale = [], torch.tensor(1.0, requires_grad=True)

    def __call__(self, x, sigma):
        self.sigmas.append(float(sigma[0]))
        bump = torch.nn.functional.one_hot(torch.tensor(len(self.sigmas) - 1), K).float()
        return (torch.linspace(0, 1, K) + self.scale * bump).expand(*x.shape, K)


def test_the_loop_walks_the_grid_once_with_one_call_per_step_unless_reusable():
    def sigma(t):
        return -math.log(1 - (1 - EPS) * t)

    process, stub = FakeProcess(), SigmaStub()
    ids, calls = process.sample(stub, 2, 3, 4, torch.Generator().manual_seed(0), temperature=0.5)
    assert process.transitions == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    assert calls == 4 and stub.sigmas == pytest.approx([sigma(1.0), sigma(0.75), sigma(0.5), sigma(0.25)], rel=1e-6)
    assert torch.equal(ids, torch.full((2, 3), 8))
    first = torch.linspace(0, 1, K) + torch.nn.functional.one_hot(torch.tensor(0), K)  # the first call's logits
    torch.testing.assert_close(process.probs[0][0, 0].float(), (first / 0.5).softmax(-1))  # temperature applied

    process, stub = FakeProcess(reuse=True), SigmaStub()
    _, calls = process.sample(stub, 2, 3, 4, torch.Generator().manual_seed(0))
    assert calls == 1 and len(stub.sigmas) == 1 and len(process.transitions) == 4
    assert all(p is process.probs[0] for p in process.probs)  # one prediction fed every step
    _, calls = FakeProcess(reuse=True).sample(SigmaStub(), 2, 3, 4, torch.Generator().manual_seed(0), cache=False)
    assert calls == 4


def test_the_loop_ends_greedy_and_keeps_each_positions_deciding_call():
    process, stub = FakeProcess(), SigmaStub()
    ids, log_probs = process.sample_with_predictions(stub, 2, 3, 3, torch.Generator().manual_seed(0))
    assert len(stub.sigmas) == 3 and torch.equal(ids, torch.full((2, 3), 6))
    assert torch.equal(log_probs.argmax(-1), torch.tensor([0, 1, 2]).expand(2, 3))  # position i from call i
    log_probs[:, 0, 0].sum().backward()  # d log p(0) / d scale at position 0, from call 0 only: 1 - p(0) per row
    bumped = (torch.linspace(0, 1, K) + torch.nn.functional.one_hot(torch.tensor(0), K)).softmax(-1)[0]
    torch.testing.assert_close(stub.scale.grad, 2 * (1 - bumped))

    process, stub = FakeProcess(), SigmaStub()
    process.greedy_last_step = True
    ids, log_probs = process.sample_with_predictions(stub, 2, 3, 3, torch.Generator().manual_seed(0))
    assert len(process.transitions) == 2 and len(stub.sigmas) == 3
    assert torch.equal(ids, torch.full((2, 3), 2))  # the last call's argmax (its bump at token 2), not x = 4
    assert torch.equal(log_probs.argmax(-1), ids)  # that call decides every position
