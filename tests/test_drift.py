"""The drift field and the TokenDrift loss: closed forms, hand-worked cases, a toy that learns."""

import math

import pytest
import torch

from tokendrift_cli.drift.field import _drift_at, drift_field, feature_scale
from tokendrift_cli.drift.loss import drift_loss, lift, pool
from tokendrift_cli.spec.drift import DriftSpec


def test_antisymmetry_identical_positive_and_negative_sets_give_zero():
    g = torch.Generator().manual_seed(0)
    gen, ys = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g)
    v = drift_field(gen, ys, ys.clone(), temperatures=[0.05, 0.2, 1.0], normalize_drift=False)
    torch.testing.assert_close(v, torch.zeros_like(v), atol=1e-6, rtol=0)


def test_a_negative_between_two_positives_moves_toward_them():
    """2-D: generated point at the origin, positives at (±1, 1), a negative below at (0, -1)."""
    gen = torch.tensor([[0.0, 0.0]])
    pos = torch.tensor([[-1.0, 1.0], [1.0, 1.0]])
    neg = torch.tensor([[0.0, -1.0]])
    v = drift_field(gen, pos, neg, temperatures=[1.0], normalize_drift=False)[0]
    assert v[1] > 0 and abs(v[0]) < 1e-6  # up, toward the positives, away from the negative


def test_kernel_weights_by_hand_on_a_three_by_three_case():
    """One temperature, unnormalised: compare with the weights written out from their definition."""
    gen = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    pos = torch.tensor([[0.5, 0.5], [2.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0]])
    tau = 0.7
    dist = torch.cdist(gen, torch.cat([pos, neg]))
    got = _drift_at(dist, pos, neg, tau)
    logits = -dist / tau
    row = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    col = torch.exp(logits) / torch.exp(logits).sum(0, keepdim=True)
    assert torch.allclose(row.sum(1), torch.ones(3)) and torch.allclose(col.sum(0), torch.ones(3))
    a = torch.sqrt(row * col)
    expected = torch.zeros(3, 2)
    for i in range(3):
        s_pos, s_neg = a[i, :2].sum(), a[i, 2:].sum()
        for j in range(2):
            expected[i] += a[i, j] * s_neg * pos[j]
        expected[i] -= a[i, 2] * s_pos * neg[0]
    torch.testing.assert_close(got, expected)
    # Balanced weights: V is also Σ W+(y+ - x) - Σ W-(y- - x).
    relative = torch.stack([
        sum(a[i, j] * a[i, 2:].sum() * (pos[j] - gen[i]) for j in range(2)) - a[i, 2] * a[i, :2].sum() * (neg[0] - gen[i])
        for i in range(3)
    ])
    torch.testing.assert_close(got, relative)


def test_self_pairs_are_excluded_when_negatives_are_the_generated_set():
    """Against the weights written out with each row's own column removed from both softmaxes."""
    gen = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    got = drift_field(gen, pos, None, temperatures=[1.0 / math.sqrt(2)], normalize_drift=False)  # tau·sqrt(F) = 1
    columns = torch.cat([pos, gen])
    allowed = torch.ones(3, 5, dtype=torch.bool)
    for i in range(3):
        allowed[i, 2 + i] = False
    kernel = torch.exp(-torch.cdist(gen, columns)) * allowed
    a = torch.sqrt(kernel / kernel.sum(1, keepdim=True) * kernel / kernel.sum(0, keepdim=True))
    expected = torch.stack([
        a[i, 2:].sum() * (a[i, :2, None] * pos).sum(0) - a[i, :2].sum() * (a[i, 2:, None] * gen).sum(0)
        for i in range(3)
    ])
    torch.testing.assert_close(got, expected)


def test_drift_normalisation_is_unit_rms_per_temperature():
    g = torch.Generator().manual_seed(1)
    gen, pos = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g) + 1
    for tau in (0.02, 0.05, 0.2):
        v = drift_field(gen, pos, None, temperatures=[tau])
        assert float(v.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)


def test_feature_scale_makes_mean_distance_sqrt_dim():
    g = torch.Generator().manual_seed(2)
    gen, pos = 7 * torch.randn(32, 10, generator=g), 7 * torch.randn(32, 10, generator=g)
    s = feature_scale(gen, pos)
    assert float(torch.cdist(gen / s, pos / s).mean()) == pytest.approx(math.sqrt(10), rel=1e-5)


def test_lift_keeps_carried_rows_one_hot_and_pool_shapes():
    log_probs = torch.tensor([[[0.0, float("-inf"), float("-inf")], [-0.5, -1.0, -2.0]]])
    probs = lift(log_probs, temperature=0.5)
    torch.testing.assert_close(probs[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(probs[0, 1], torch.softmax(torch.tensor([-1.0, -2.0, -4.0]), 0))
    features = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)
    assert pool(features, None).shape == (1, 2, 1)
    torch.testing.assert_close(pool(features, 3)[:, 0, 0], torch.tensor([1.0, 4.0]))


class TinyEncoder(torch.nn.Module):
    """A frozen linear 'encoder' over soft tokens, one feature layer."""

    def __init__(self, vocab, dim):
        super().__init__()
        self.proj = torch.nn.Linear(vocab, dim)
        self.requires_grad_(False)

    def forward(self, probs):
        return [torch.tanh(self.proj(probs))]


def test_gradient_reaches_the_logits_not_the_encoder_and_matches_the_closed_form():
    torch.manual_seed(0)
    vocab, batch, length = 5, 6, 4
    logits = torch.randn(batch, length, vocab, requires_grad=True)
    x0 = torch.randint(0, vocab, (batch, length))
    encoder = TinyEncoder(vocab, 3)
    before = encoder.proj.weight.clone()
    spec = DriftSpec(scale=0.5, temperatures=[0.5])
    loss, stats = drift_loss(logits.log_softmax(-1), x0, encoder, spec)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert encoder.proj.weight.grad is None and torch.equal(encoder.proj.weight, before)
    # loss = mean((h - sg(h + sV))²) = s²·mean(V²): the target carries no gradient.
    assert float(loss.detach()) == pytest.approx(float(stats["drift_norm"]) ** 2, rel=1e-5)


def test_loss_gradient_wrt_features_is_minus_two_scale_v():
    h = torch.randn(1, 8, 3, requires_grad=True)  # [G, B, F]
    pos = torch.randn(1, 8, 3) + 2
    spec = DriftSpec(scale=0.3, normalize_features=False)
    from tokendrift_cli.drift.loss import _drift_term

    # _drift_term pools [B, L, F] → [G, B, F]; give it L = 1.
    loss, _ = _drift_term(h.transpose(0, 1), pos.transpose(0, 1), spec, None)
    loss.backward()
    v = drift_field(h.detach(), pos, None, spec.temperatures, True)
    torch.testing.assert_close(h.grad, -2 * spec.scale * v / v.numel())


def test_toy_categorical_model_moves_to_the_data_distribution():
    """Learnable logits over 4 classes, data mostly class 3: drift steps cut the KL to the data."""
    torch.manual_seed(0)
    target = torch.tensor([0.05, 0.1, 0.15, 0.7])
    logits = torch.nn.Parameter(torch.tensor([2.0, 1.0, 0.0, -1.0]))
    optimizer = torch.optim.Adam([logits], lr=0.05)
    spec = DriftSpec(variant="logit", temperatures=[0.05, 0.2, 1.0], scale=1.0)

    def kl():
        p = logits.detach().softmax(0)
        return float((target * (target / p).log()).sum())

    history = [kl()]
    for _ in range(300):
        data = torch.multinomial(target, 64, replacement=True).view(64, 1)
        # Each sample's "prediction" is the model's categorical, made discrete by the drift's
        # kernel through soft one-hots of model samples: here we drift the probability vectors.
        sample = torch.nn.functional.gumbel_softmax(logits.expand(64, 1, 4), tau=0.5)
        loss, _ = drift_loss(sample.clamp_min(1e-9).log(), data, None, spec)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(kl())
    window = 50
    averages = [sum(history[i:i + window]) / window for i in range(0, len(history) - window + 1, window)]
    assert averages[-1] < 0.05 * history[0]
    # Falls on average: no window is worse than the one before, up to the noise of the floor.
    assert all(b <= a + 0.02 for a, b in zip(averages, averages[1:])), averages


class TwoLayerEncoder(torch.nn.Module):
    """A frozen encoder with two feature layers."""

    def __init__(self, vocab):
        super().__init__()
        self.first, self.second = TinyEncoder(vocab, 3), TinyEncoder(vocab, 2)

    def forward(self, probs):
        return self.first(probs) + self.second(probs)


def test_several_feature_layers_average_their_drift_losses():
    torch.manual_seed(1)
    log_probs = torch.randn(6, 4, 5).log_softmax(-1)
    x0 = torch.randint(0, 5, (6, 4))
    both = TwoLayerEncoder(5)
    spec = DriftSpec(temperatures=[0.5])
    loss, _ = drift_loss(log_probs, x0, both, spec)
    first, _ = drift_loss(log_probs, x0, both.first, spec)
    second, _ = drift_loss(log_probs, x0, both.second, spec)
    assert float(loss) == pytest.approx((float(first) + float(second)) / 2, rel=1e-6)


def test_straight_through_lift_drifts_the_tokens_with_the_probabilities_gradient():
    """Forward: the loss of the sampled tokens' one-hots. Backward: through the probabilities."""
    torch.manual_seed(2)
    logits = torch.randn(6, 4, 5, requires_grad=True)
    x0, tokens = torch.randint(0, 5, (6, 4)), torch.randint(0, 5, (6, 4))
    encoder, spec = TinyEncoder(5, 3), DriftSpec(temperatures=[0.5], lift="straight-through")
    loss, _ = drift_loss(logits.log_softmax(-1), x0, encoder, spec, tokens=tokens)
    hard = torch.nn.functional.one_hot(tokens, 5).float().log()  # log one-hot: lift gives the one-hots back
    expected, _ = drift_loss(hard, x0, encoder, DriftSpec(temperatures=[0.5]))
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="straight-through"):
        drift_loss(logits.log_softmax(-1), x0, encoder, spec)
