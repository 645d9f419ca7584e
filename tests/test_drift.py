"""TokenDrift as the paper specifies it: kernels worked by hand, queues, the feature map's closed
form, the mirror teacher's closed form, the lifts, and the objective's gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from tokendrift_cli.diffusion import make_process
from tokendrift_cli.drift import FeatureEncoder, FeatureQueue, TokenDrift, build_encoder, drift_field, lift
from tokendrift_cli.drift.field import EPS
from tokendrift_cli.drift.objective import mirror_loss, teacher_direction
from tokendrift_cli.models.dit import DiTConfig, DiTModel, as_denoiser
from tokendrift_cli.spec.diffusion import DiffusionSpec
from tokendrift_cli.spec.drift import DriftSpec

# Three points in the plane: anchors h1 = (0, 0), h2 = (1, 0) (also the negatives, each
# without its own column) and one positive u = (0, 1).
ANCHORS = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
POSITIVE = torch.tensor([[[0.0, 1.0]]])


def test_paper_kernel_on_three_points_by_hand():
    """τ = 1, squared distances. Rows h1: [u 1, h2 1]; h2: [u 2, h1 1]. Row softmaxes (.5, .5) and
    (1/(1+e), e/(1+e)); column u's softmax over the anchors (e/(1+e), 1/(1+e)); the self-free
    negative columns have one anchor each (weight 1). A = √(row · col): h1 (.60459, .70711), h2
    (.26894, .85502). One positive and one negative per row, so W⁺ = W⁻ = a⁺a⁻: .42751 and .22995.
    V1 = .42751·((0,1) − (1,0)), V2 = .22995·((−1,1) − (−1,0)); s = √(mean‖V‖²) = .45739."""
    drift = drift_field(ANCHORS, POSITIVE, ANCHORS, temperatures=[1.0], kernel="paper")
    expected = torch.tensor([[[-0.42751, 0.42751], [0.0, 0.22995]]]) / 0.45739
    torch.testing.assert_close(drift.v, expected, atol=2e-4, rtol=0)
    torch.testing.assert_close(drift.raw_norms[0], torch.tensor([0.45739]), atol=1e-4, rtol=0)
    assert float(drift.coord_scale) == 1.0


def test_drifting_code_kernel_on_three_points_by_hand():
    """τ = 1, plain distances over their mean (4.41421 / 6 = .73570, own column included);
    coordinates × √2/.73570 = 1.92226. Row softmaxes h1 (.5, .5), h2 (.36285, .63715); column u
    (.63716, .36284); self columns clipped to 1e-6 before the root (weight .001). Hand-computed
    V1 = (−.76721, .76828), V2 = (−.00068, .55744); per-element RMS .61025."""
    drift = drift_field(ANCHORS, POSITIVE, ANCHORS, temperatures=[1.0], kernel="drifting-code")
    expected = torch.tensor([[[-0.76721, 0.76828], [-0.00068, 0.55744]]]) / 0.61025
    torch.testing.assert_close(drift.v, expected, atol=2e-3, rtol=0)
    assert float(drift.coord_scale) == pytest.approx(0.73570 / math.sqrt(2), abs=1e-4)


def test_temperatures_are_averaged_in_the_paper_and_summed_in_the_code():
    g = torch.Generator().manual_seed(0)
    h, u = torch.randn(1, 6, 4, generator=g), torch.randn(1, 5, 4, generator=g)
    for kernel, combine in (("paper", lambda a, b: (a + b) / 2), ("drifting-code", lambda a, b: a + b)):
        both = drift_field(h, u, h, [0.3, 2.0], kernel).v
        parts = [drift_field(h, u, h, [tau], kernel).v for tau in (0.3, 2.0)]
        torch.testing.assert_close(both, combine(*parts))


def test_paper_normalisation_gives_unit_mean_squared_norm_per_temperature():
    """meanᵢ‖V_τ,ᵢ / s(τ)‖² = m / (m + ε) with m = meanᵢ‖V_τ,ᵢ‖² and s(τ)² = m + ε. Both sides are
    float32 sums of 16 × 8 squares (≤ 128u ≈ 8e-6 relative; m ≫ ε here, so s² − ε loses nothing)."""
    g = torch.Generator().manual_seed(1)  # on the unit sphere, as the paper's features are
    h, u = F.normalize(torch.randn(1, 16, 8, generator=g), dim=-1), F.normalize(torch.randn(1, 16, 8, generator=g) + 1, dim=-1)
    for tau in (0.02, 0.2, 2.0):
        drift = drift_field(h, u, h, [tau])
        s2 = float(drift.raw_norms[0]) ** 2
        assert float(drift.v.pow(2).sum(-1).mean()) == pytest.approx((s2 - 1e-8) / s2, rel=1e-4)
    assert float(drift.v.pow(2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-4)  # τ = 2: m ≫ ε


def _coincidence_bound(h, y, drift, unit):
    """Bound on |V_τ,i,f| before normalisation when the negatives are a copy of the positives y and
    all coordinates are small integers or halves (squared distances exact in any order, so a column
    and its copy get bit-equal costs, logits and row maximum). Their weights then differ only by
    the rounding of exp (each within 1 ulp, so 4u apart), of the column softmax's sum over the N
    anchors and the divisions, of the product and root, and of the row sums over P columns: relative
    δ ≤ (2N + 2P + 22)u. Each of W⁺y − (ΣW⁺)h and W⁻y − (ΣW⁻)h rounds by (P + 2)u of its terms.
    Σⱼ W⁺ᵢⱼ = Σa⁺·Σa⁻ ≤ (Σa)²/4 ≤ (P + M)/4 (Cauchy–Schwarz: Σ√(rc) ≤ √(Σr·Σc), rows sum to 1,
    column shares are ≤ 1); (P + M)/2 also covers the code kernel's 1e-3 floor. With R the largest
    coordinate of y plus that of h, in the kernel's coordinates:
    |V_τ,i,f| ≤ (δ + 2(P + 2)u) · 2 · (P + M)/2 · R = (2N + 4P + 26)·u·(P + M)·R."""
    n, p = h.shape[-2], y.shape[-2]
    reach = float((y.abs().max() + h.abs().max()) / drift.coord_scale.max())
    return (2 * n + 4 * p + 26) * unit * 2 * p * reach


def test_field_vanishes_when_positives_and_negatives_coincide():
    """At 1:1, V = W⁺u − W⁻v, and a column and its copy get the same weight: V = 0 when the
    negatives are the positives. Checked in float64, where V_τ's rounding (≤ the bound above,
    ~1e-13 here) divided by s(τ) ≥ √ε = 1e-4 is still ~1e-9, against a normalised field of size 1."""
    g = torch.Generator().manual_seed(2)
    h = torch.randint(-2, 3, (1, 5, 3), generator=g).double()
    y = torch.randint(-2, 3, (1, 7, 3), generator=g).double()
    for kernel in ("paper", "drifting-code"):
        drift = drift_field(h, y, y.clone(), [0.05, 0.2, 1.0], kernel, exclude_self=False)
        # s(τ) ≥ √ε; the paper averages the normalised V_τ, the code sums them: at most 3 bounds.
        bound = 3 * _coincidence_bound(h, y, drift, 2.0**-53) / math.sqrt(EPS)
        assert drift.v.dtype == torch.float64 and float(drift.v.abs().max()) <= bound < 1e-7, kernel


def test_normalised_field_stays_small_in_float32_when_positives_and_negatives_coincide():
    """In float32 the same V_τ is rounding of its terms, and s(τ) = √(m + ε) with m ≈ 0 divides it
    by √ε = 1e-4: the normalised field is not 0, but it stays finite and within the rounding bound
    over √ε. Two anchors and two positives keep that bound (0.09 for the paper's kernel, 0.5 for the
    code's three temperatures summed) below the field these points get from their own anchors
    (largest entry 0.45 and 4.4)."""
    h = torch.tensor([[[0.5, 0.0], [-0.5, 0.5]]])
    y = torch.tensor([[[0.0, 0.5], [0.5, -0.5]]])
    for kernel, summed in (("paper", 1), ("drifting-code", 3)):
        drift = drift_field(h, y, y.clone(), [0.02, 0.05, 0.2], kernel, exclude_self=False)
        bound = summed * _coincidence_bound(h, y, drift, 2.0**-24) / math.sqrt(EPS)
        assert torch.isfinite(drift.v).all() and float(drift.v.abs().max()) <= bound, (kernel, bound)
    # Whatever the data (the columns here need not round alike): s(τ) ≥ RMS of V_τ, so each
    # normalised V_τ has RMS ≤ 1 and the field at most 1 (paper: their mean) or 3 (code: their sum),
    # up to float32 rounding of the ratio (≤ 1e-5 here: tens of operations of u = 6e-8).
    g = torch.Generator().manual_seed(2)
    h, y = torch.randn(1, 5, 3, generator=g), torch.randn(1, 7, 3, generator=g)
    for kernel, per_entry, most in (("paper", False, 1.0), ("drifting-code", True, 3.0)):
        v = drift_field(h, y, y.clone(), [0.05, 0.2, 1.0], kernel, exclude_self=False).v
        rms = v.pow(2).mean().sqrt() if per_entry else v.pow(2).sum(-1).mean().sqrt()
        assert torch.isfinite(v).all() and float(rms) <= most * (1 + 1e-5), kernel


@pytest.mark.parametrize("kernel", ["paper", "drifting-code"])
def test_pure_attraction_points_at_the_positives_and_pure_repulsion_away_from_the_negatives(kernel):
    """With one positive, whatever the weights, 1:0 points from each h to it; with one
    negative beyond the anchors (self columns excluded, two anchors), 0:1 points away from the
    weighted negatives. Check both directions against their closed forms."""
    h = torch.tensor([[[0.0, 0.0], [2.0, 1.0], [-1.0, 3.0]]])
    u = torch.tensor([[[1.0, 1.0]]])
    v = drift_field(h, u, h, [0.5, 2.0], kernel, attraction=1.0, repulsion=0.0).v[0]
    toward = (u[0] - h[0]) / drift_field(h, u, h, [1.0], kernel).coord_scale[0]
    torch.testing.assert_close(F.normalize(v, dim=-1), F.normalize(toward, dim=-1), atol=1e-5, rtol=0)

    two = h[:, :2]
    away = drift_field(two, u, two, [1.0], "paper", attraction=0.0, repulsion=1.0).v[0]
    # Each anchor's only negative is the other anchor: repulsion points from it.
    torch.testing.assert_close(F.normalize(away, dim=-1), F.normalize(two[0] - two[0].flip(0), dim=-1), atol=1e-5, rtol=0)


def test_one_anchor_alone_gets_a_finite_drift():
    """A one-sequence micro-batch on one process: its own negative column is empty. Under the
    paper's joint normalisation W⁺ carries the negatives' mass, so with no negative at all V = 0;
    with a queued negative it points toward the positive."""
    h, u, queued = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    alone = drift_field(h, u, h, [0.02, 0.05, 0.2], "paper").v
    assert torch.equal(alone, torch.zeros_like(alone))
    for kernel in ("paper", "drifting-code"):
        v = drift_field(h, u, torch.cat([h, queued], dim=1), [0.02, 0.05, 0.2], kernel).v
        assert torch.isfinite(v).all() and float(v[0, 0, 0]) > 0 > float(v[0, 0, 1])


def test_queue_is_fifo_with_eviction_and_round_trips():
    queue = FeatureQueue(3)
    entries = lambda *xs: torch.tensor([[[float(x)] for x in xs]])  # noqa: E731 - [G=1, n, F=1]
    queue.push(entries(1, 2))
    assert queue.features.flatten().tolist() == [1, 2] and len(queue) == 2
    queue.push(entries(3, 4))
    assert queue.features.flatten().tolist() == [2, 3, 4]
    queue.push(entries(5))
    assert queue.features.flatten().tolist() == [3, 4, 5]
    queue.push(entries(6, 7, 8, 9, 10))
    assert queue.features.flatten().tolist() == [8, 9, 10]
    restored = FeatureQueue(3)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.features, queue.features)
    with pytest.raises(ValueError, match="queue_size"):
        FeatureQueue(4).load_state_dict(queue.state_dict())
    off = FeatureQueue(0)
    off.push(entries(1))
    assert len(off) == 0


class LinearEncoder(FeatureEncoder):
    """Hidden states [E, E W1, tanh(E W1) W2] of soft tokens E = p T: a closed form to check against."""

    def __init__(self, vocab: int, dim: int, **pooling):
        super().__init__(**pooling)
        g = torch.Generator().manual_seed(3)
        self.table = torch.nn.Parameter(torch.randn(vocab, dim, generator=g))
        self.w1 = torch.nn.Parameter(torch.randn(dim, dim, generator=g))
        self.w2 = torch.nn.Parameter(torch.randn(dim, dim, generator=g))
        self.freeze()

    def hidden_states(self, tokens):
        embeds = tokens @ self.table if tokens.is_floating_point() else self.table[tokens]
        first = embeds @ self.w1
        return [embeds, first, torch.tanh(first) @ self.w2]


def test_paper_feature_map_is_the_normalised_concatenation_of_the_last_two_means():
    encoder = LinearEncoder(5, 3)
    probs = torch.randn(2, 4, 5).softmax(-1)
    got = encoder(probs)
    assert got.shape == (1, 2, 6)
    for i in range(2):
        first = sum(probs[i, t] @ encoder.table @ encoder.w1 for t in range(4)) / 4
        second = sum(torch.tanh(probs[i, t] @ encoder.table @ encoder.w1) @ encoder.w2 for t in range(4)) / 4
        joined = torch.cat([first, second])
        torch.testing.assert_close(got[0, i], joined / joined.norm())
    ids = torch.randint(0, 5, (2, 4))
    torch.testing.assert_close(encoder(ids), encoder(F.one_hot(ids, 5).float()))


def test_layer_features_pool_each_layer_and_window_into_its_own_set():
    encoder = LinearEncoder(5, 3, features="layers", layers=[0, -1], window=2)
    probs = torch.randn(2, 5, 5).softmax(-1)  # 5 positions: windows [0, 1], [2, 3]; the last is dropped
    states = encoder.hidden_states(probs)
    got = encoder(probs)
    assert got.shape == (4, 2, 3)
    torch.testing.assert_close(got[1, :], states[0][:, 2:4].mean(1))
    torch.testing.assert_close(got[2, :], states[-1][:, 0:2].mean(1))


def test_backbone_copy_encoder_is_frozen_and_reads_the_last_two_blocks():
    model = DiTModel(DiTConfig.from_size("tiny", vocab_size=11, mask_token_id=10, max_position_embeddings=8))
    encoder = build_encoder(DriftSpec(), model)
    assert not any(p.requires_grad for p in encoder.parameters())
    ids = torch.randint(0, 10, (3, 8))
    states = model(input_ids=ids, output_hidden_states=True).hidden_states
    expected = F.normalize(torch.cat([states[-2].mean(1), states[-1].mean(1)], -1), dim=-1)
    torch.testing.assert_close(encoder(ids)[0], expected)


def test_hard_straight_through_is_argmax_forward_and_probabilities_backward():
    log_probs = torch.randn(2, 3, 4).log_softmax(-1).requires_grad_()
    weights = torch.randn(2, 3, 4)
    hard = lift(log_probs, DriftSpec(lift="hard-st"))
    torch.testing.assert_close(hard.detach(), F.one_hot(log_probs.argmax(-1), 4).float())
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), log_probs)
    (grad_soft,) = torch.autograd.grad((lift(log_probs, DriftSpec()) * weights).sum(), log_probs)
    torch.testing.assert_close(grad_hard, grad_soft)
    tokens = torch.randint(0, 4, (2, 3))
    sampled = lift(log_probs, DriftSpec(lift="sampled-st"), tokens)
    torch.testing.assert_close(sampled.detach(), F.one_hot(tokens, 4).float())


def _subs_log_probs(batch=2, length=4, vocab=6, seed=4):
    """Raw logits (the leaf) and their SUBS log-probabilities, position 0 observed (token 2), in
    float64: the mirror's identities are checked away from float32 rounding (mirror-mse's l* − l
    cancels most digits of l where ηg is small; see the test on the feature loss's gradient)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g, dtype=torch.float64).requires_grad_()
    xt = torch.full((batch, length), vocab - 1)
    xt[:, 0] = 2
    process = make_process("mdlm", DiffusionSpec(), vocab, vocab - 1, False)
    return logits, process.subs(logits, xt)


def test_mirror_teacher_direction_equals_the_closed_form_for_a_linear_encoder():
    """h_i = mean_t p_t W (linear), so ∂<h_i, V_i>/∂p_t = W V_i / L =: a and g = p ⊙ (a − <p, a>),
    the gradient on the raw logits."""
    logits, log_probs = _subs_log_probs()
    seeded = torch.Generator().manual_seed(5)
    w = torch.randn(6, 3, generator=seeded, dtype=torch.float64)
    v = torch.randn(2, 3, generator=seeded, dtype=torch.float64)
    alignment = lambda: ((log_probs.exp() @ w).mean(1) * v).sum()  # noqa: E731
    g = teacher_direction(log_probs, alignment())
    p = log_probs.detach().exp()
    a = (v @ w.T / 4)[:, None, :]  # [B, 1, V]
    expected = p * (a - (p * a).sum(-1, keepdim=True))
    torch.testing.assert_close(g, expected)
    (on_logits,) = torch.autograd.grad(alignment(), logits, retain_graph=True)
    torch.testing.assert_close(g, on_logits)
    assert torch.equal(g[:, 0], torch.zeros_like(g[:, 0]))  # observed positions: no direction
    for variant in ("mirror-kl", "mirror-mse"):
        loss = mirror_loss(log_probs, g, 0.5, variant)
        (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert torch.equal(grad[:, 0], torch.zeros_like(grad[:, 0]))  # observed (SUBS) positions get none
    # mirror-mse's value is η²‖g‖² and its logit gradient −2ηg. l* − l keeps ηg to u·|l|/|ηg|
    # (κ = |l|/|ηg| ≤ 3e3 here, so ≤ 1e-12 relative in float64): rel 1e-9, float64's default atol.
    mse = mirror_loss(log_probs, g, 0.5, "mirror-mse")
    assert float(mse.detach()) == pytest.approx(0.25 * float(g.pow(2).sum()), rel=1e-9)
    (grad,) = torch.autograd.grad(mse, logits)
    torch.testing.assert_close(grad, -g)
    # mirror-kl: p* ∝ p exp(ηg) (Prop. D.1), and KL(p*‖p) by its definition.
    kl = mirror_loss(log_probs, g, 0.5, "mirror-kl")
    star = p * torch.exp(0.5 * g)
    star = star / star.sum(-1, keepdim=True)
    by_definition = torch.where(star > 0, star * (star.log() - log_probs.detach()), torch.zeros_like(star)).sum()
    assert float(kl.detach()) == pytest.approx(float(by_definition), rel=1e-9)  # the same κ·u as above


def _tiny_setup(backbone="mdlm", seed=0):
    torch.manual_seed(seed)
    vocab = 12
    config = DiTConfig.from_size(
        "tiny", vocab_size=vocab, mask_token_id=vocab - 1 if backbone == "mdlm" else None,
        max_position_embeddings=8, backbone=backbone, time_conditioning=backbone == "duo",
    )
    model = DiTModel(config)
    for p in model.parameters():  # a non-trivial model: the reference init zeroes the output layer
        torch.nn.init.normal_(p, std=0.1)
    process = make_process(backbone, DiffusionSpec(), vocab, config.mask_token_id, config.time_conditioning)
    x0 = torch.randint(0, vocab - 1, (6, 8))
    return model, process, x0


def _run_objective(spec, model, process, x0, seed=0, objective=None):
    objective = objective or TokenDrift(spec, build_encoder(spec, model))
    model.zero_grad()
    stats = objective(model, process, x0, torch.Generator().manual_seed(seed), lambda loss: loss.backward())
    return stats, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, objective


@pytest.mark.parametrize("backbone", ["mdlm", "duo"])
def test_objective_gradient_equals_a_direct_backward_of_the_paper_loss(backbone):
    """The trainer pushes per-term logit gradients through the network; the parameter gradients
    must equal one plain backward of drift + base loss written out from §3.3."""
    model, process, x0 = _tiny_setup(backbone)
    spec = DriftSpec(base_loss=True, weight=2.0, queue_size=0)
    stats, grads, objective = _run_objective(spec, model, process, x0)
    assert not any(p.grad is not None for p in objective.encoder.parameters())
    # loss = ½ meanᵢ‖αVᵢ‖²
    assert float(stats["drift_loss"]) == pytest.approx(0.5 * float(stats["drift_norm"]) ** 2, rel=1e-5)

    model.zero_grad()
    out = process.loss(lambda x, s: model(input_ids=x, sigma=s).logits, x0, torch.Generator().manual_seed(0))
    h = objective.encoder(out.log_probs.exp())
    drift = drift_field(h.detach(), objective.encoder(x0), h.detach(), spec.temperatures)
    direct = 0.5 * (h - (h + drift.v).detach()).pow(2).sum(-1).mean()
    (2.0 * direct + out.loss).backward()
    assert float(direct.detach()) == pytest.approx(float(stats["drift_loss"]), rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, atol=1e-6, rtol=1e-4)
    assert stats["grad_logits_base"] > 0 and stats["grad_logits_drift"] > 0


def test_mirror_mse_at_half_alpha_has_the_feature_loss_gradient():
    """App. C/D: ∇_l of ½‖h − sg(h + αV)‖² is −α Jᵀ V; of ‖l − sg(l + ηg)‖² it is −2η g = −2η JᵀV.
    Compared on the log-probabilities, where the rounding is known entry by entry (the trainer pushes
    either gradient through the network alike: test_objective_gradient_equals_a_direct_backward_of_the_paper_loss).
    In float32, l* = l + ηg rounds at u·|l|, so l* − l keeps ηg only to u·|l| (here |l| ≈ 3, |ηg| ≈
    1e-3: three digits lost), and the mirror gradient −2(l* − l)/B is off by 2u|l|/B + 3u|G|; the
    feature side's own h − (h + αV) loses u·|h|/|αV| ≈ u (unit features, |V| ≈ 1), allowed 8u·max|G|."""
    model, process, x0 = _tiny_setup()
    out = process.loss(as_denoiser(model), x0, torch.Generator().manual_seed(0))
    grads = []
    for spec in (DriftSpec(queue_size=0), DriftSpec(queue_size=0, variant="mirror-mse", mirror_step=0.5)):
        grads.append(TokenDrift(spec, build_encoder(spec, model)).drift_term(out.log_probs, x0, None)[1])
    feature, mirror = grads
    u, log_probs = 2.0**-24, out.log_probs.detach()
    size = log_probs.masked_fill(log_probs == float("-inf"), 0.0).abs()
    bound = 2 * u * size / x0.shape[0] + 3 * u * feature.abs() + 8 * u * feature.abs().max()
    assert float(feature.abs().max()) > 0 and bool(((feature - mirror).abs() <= bound).all())


def test_queues_fill_and_a_one_sequence_batch_stays_finite():
    model, process, x0 = _tiny_setup()
    spec = DriftSpec(queue_size=4)
    objective = None
    for step in range(3):
        stats, grads, objective = _run_objective(spec, model, process, x0[step : step + 1], seed=step, objective=objective)
        assert stats["queue_fill"] == min(step, 4) and stats["drift_batch"] == 1
        assert torch.isfinite(stats["drift_loss"]) and all(torch.isfinite(g).all() for g in grads.values())
    assert len(objective.real_queue) == len(objective.gen_queue) == 3


@pytest.mark.parametrize("overrides", [
    {"variant": "mirror-kl"}, {"lift": "hard-st"}, {"lift": "sampled-st"}, {"kernel": "drifting-code"},
    {"features": "layers", "feature_window": 4}, {"negatives": "rollout"}, {"attraction": 2.0},
])
def test_every_variant_gives_finite_losses_and_gradients(overrides):
    model, process, x0 = _tiny_setup()
    stats, grads, _ = _run_objective(DriftSpec(queue_size=8, **overrides), model, process, x0)
    assert torch.isfinite(stats["loss"]) and grads and all(torch.isfinite(g).all() for g in grads.values())


class IdentityEncoder(FeatureEncoder):
    """Features of the probability vectors themselves (the paper map over two identical 'layers')."""

    def hidden_states(self, tokens):
        probs = tokens if tokens.is_floating_point() else F.one_hot(tokens, 4).float()
        return [probs, probs, probs]


def test_toy_categorical_model_moves_to_the_data_distribution():
    """Learnable logits over 4 classes; data mostly class 3; the generated 'sequences' are
    Gumbel-softmax draws. Feature drift steps with queues cut the KL to the data."""
    torch.manual_seed(0)
    target = torch.tensor([0.05, 0.1, 0.15, 0.7])
    logits = torch.nn.Parameter(torch.tensor([2.0, 1.0, 0.0, -1.0]))
    optimizer = torch.optim.Adam([logits], lr=0.05)
    objective = TokenDrift(DriftSpec(queue_size=256), IdentityEncoder())

    def kl():
        p = logits.detach().softmax(0)
        return float((target * (target / p).log()).sum())

    history = [kl()]
    for _ in range(300):
        data = torch.multinomial(target, 64, replacement=True).view(64, 1)
        sample = F.gumbel_softmax(logits.expand(64, 1, 4), tau=0.5).clamp_min(1e-9).log()
        _, grad, _ = objective.drift_term(sample, data, None)
        optimizer.zero_grad()
        sample.backward(grad)
        optimizer.step()
        history.append(kl())
    window = 50
    averages = [sum(history[i:i + window]) / window for i in range(0, len(history) - window + 1, window)]
    assert averages[-1] < 0.1 * history[0], averages
