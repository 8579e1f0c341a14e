"""The world model's and the safe actor-critic's losses against hand-computed values on tiny tensors."""

import math

import pytest
import torch

from learners.losses import world_model as wm


def test_symlog_and_symexp_invert_each_other():
    x = torch.tensor([-(math.e - 1), 0.0, math.e - 1, 1e4])
    assert torch.allclose(wm.symlog(x)[:3], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(wm.symexp(wm.symlog(x)), x, rtol=1e-5)


def test_twohot_splits_between_the_two_nearest_bins_and_clamps_outside():
    bins = torch.tensor([-1.0, 0.0, 1.0])
    out = wm.twohot(torch.tensor([0.25, 5.0, -1.0, 0.0]), bins)
    expected = torch.tensor([[0, 0.75, 0.25], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float32)
    assert torch.allclose(out, expected)


def test_twohot_loss_is_the_cross_entropy_and_the_mean_inverts_the_encoding():
    bins = wm.twohot_bins()
    uniform = torch.zeros(2, wm.TWOHOT_BINS)
    assert torch.allclose(wm.twohot_loss(uniform, torch.tensor([3.0, -7.0]), bins), torch.full((2,), math.log(255)))
    target = torch.tensor([2.5, -40.0])
    logits = torch.log(wm.twohot(wm.symlog(target), bins) + 1e-12)  # a head that predicts the target exactly
    assert torch.allclose(wm.twohot_mean(logits, bins), target, rtol=1e-4)


def test_categorical_kl_and_free_bits():
    q = torch.log(torch.tensor([[[0.5, 0.5]]]))
    p = torch.log(torch.tensor([[[0.25, 0.75]]]))
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert wm.categorical_kl(q, p).item() == pytest.approx(expected, rel=1e-5)
    # Below the free bits both terms are clamped: loss = (dyn + rep) * free_bits.
    loss, metrics = wm.kl_balance(q, p, free_bits=1.0, dyn_scale=0.5, rep_scale=0.1)
    assert loss.item() == pytest.approx(0.6) and metrics["kl"] == pytest.approx(expected, rel=1e-5)
    loss, _ = wm.kl_balance(q, p, free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    assert loss.item() == pytest.approx(0.6 * expected, rel=1e-5)


def test_masked_labels_never_act_as_labels():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0], requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 0.0, 0.25])
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = wm.bernoulli_loss(logits, target, mask)
    expected = (math.log(2) + math.log1p(math.exp(-1.0))) / 2  # -log sigmoid(0), -log(1 - sigmoid(-1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits.grad[1] == 0 and logits.grad[3] == 0 and torch.isfinite(logits.grad).all()
    nothing = wm.bernoulli_loss(logits, target, torch.zeros(4))
    assert nothing.item() == 0.0


def test_lambda_returns_by_hand():
    reward = torch.tensor([[0.0, 1.0, 2.0]])
    cont = torch.ones(1, 3)
    value = torch.tensor([[0.0, 10.0, 20.0]])
    returns = wm.lambda_returns(reward, cont, value, gamma=0.5, lam=0.5)
    # R_1 = 2 + 0.5 * 20 = 12; R_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 12) = 6.5
    assert torch.allclose(returns, torch.tensor([[6.5, 12.0]]))
    ended = wm.lambda_returns(reward, torch.tensor([[1.0, 0.0, 1.0]]), value, gamma=0.5, lam=0.5)
    assert ended[0, 0].item() == pytest.approx(1.0)  # a terminal at step 1: nothing after it counts


def test_trajectory_weight_is_the_discounted_survival():
    weight = wm.trajectory_weight(torch.tensor([[1.0, 1.0, 0.5, 1.0]]), gamma=0.5)
    assert torch.allclose(weight, torch.tensor([[1.0, 0.5, 0.125]]))
    terminal_start = wm.trajectory_weight(torch.tensor([[0.0, 1.0, 1.0, 1.0]]), gamma=0.5)
    assert torch.equal(terminal_start, torch.zeros(1, 3))


def test_percentile_scale_starts_at_the_batch_and_then_averages():
    returns = torch.linspace(0, 100, 101)
    assert wm.percentile_scale(returns, -1.0, 0.99) == pytest.approx(90.0)
    assert wm.percentile_scale(returns, 10.0, 0.5) == pytest.approx(50.0)
    assert wm.normalised_advantage(torch.tensor([4.0]), 0.5).item() == 4.0
    assert wm.normalised_advantage(torch.tensor([4.0]), 8.0).item() == 0.5  # max(1, S)


def test_vlsafe_weights_by_hand_and_clipped():
    safety, a_r, a_c = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 2.0])
    w = wm.vlsafe_weights(safety, a_r, a_c, beta1=1.0, beta2=0.5, clip=20.0)
    expected = [math.e, math.exp(0.5), 0.5 * 1.0 + 0.5 * math.exp(-1.0)]
    assert torch.allclose(w, torch.tensor(expected))
    assert wm.vlsafe_weights(torch.ones(1), torch.tensor([100.0]), torch.zeros(1), 1.0, 1.0, 20.0).item() == 20.0


def test_vlsafe_weights_clip_the_sum_not_each_term():
    """The published weight clips p exp(b1 A_r) + (1 - p) exp(-b2 A_c) as a whole: with p = 0.5, A_r = 10,
    A_c = 0 that is 0.5 e^10 + 0.5 = 11013.7, clipped to 20 (capping each exponent at log 20 first gave
    0.5 * 20 + 0.5 = 10.5)."""
    w = wm.vlsafe_weights(torch.tensor([0.5]), torch.tensor([10.0]), torch.tensor([0.0]), 1.0, 1.0, 20.0)
    assert w.item() == 20.0
    w = wm.vlsafe_weights(torch.tensor([0.5]), torch.tensor([2.0]), torch.tensor([0.0]), 1.0, 1.0, 1e6)
    assert w.item() == pytest.approx(0.5 * math.exp(2.0) + 0.5, rel=1e-6)


def test_vlsafe_weights_stay_finite_for_huge_advantages_and_certain_safety():
    p = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0])
    a_r = torch.tensor([1e4, 1e4, -1e4, 0.0, -1e4])
    a_c = torch.tensor([-1e4, 1e4, 1e4, 1e4, 0.0])
    w = wm.vlsafe_weights(p, a_r, a_c, 1.0, 1.0, 20.0)
    assert torch.isfinite(w).all()
    assert w.tolist() == [20.0, 20.0, 0.0, 0.0, 0.0]  # exp(-1e4) underflows to exactly 0 in float32


def test_vlsafe_weights_move_monotonically_with_safety_and_the_advantages():
    grid = torch.linspace(-2, 2, 9)
    for p in (0.2, 0.7, 1.0):  # more reward advantage: more weight (wherever the state counts as safe at all)
        w = wm.vlsafe_weights(torch.full_like(grid, p), grid, torch.zeros_like(grid), 1.0, 1.0, 1e6)
        assert torch.all(torch.diff(w) > 0)
    for p in (0.0, 0.3, 0.8):  # more cost advantage: less weight
        w = wm.vlsafe_weights(torch.full_like(grid, p), torch.zeros_like(grid), grid, 1.0, 1.0, 1e6)
        assert torch.all(torch.diff(w) < 0)
    p = torch.linspace(0, 1, 11)
    rewarding = wm.vlsafe_weights(p, torch.ones_like(p), torch.ones_like(p), 1.0, 1.0, 1e6)
    assert torch.all(torch.diff(rewarding) > 0)  # exp(A_r) > exp(-A_c): more safety, more weight
    costly = wm.vlsafe_weights(p, -torch.ones_like(p), -torch.ones_like(p), 1.0, 1.0, 1e6)
    assert torch.all(torch.diff(costly) < 0)  # exp(A_r) < exp(-A_c): the unsafe term dominates
    assert rewarding[-1].item() == pytest.approx(math.e) and costly[0].item() == pytest.approx(math.e)


def test_lagrangian_penalty_by_hand():
    psi, slope, multiplier = wm.lagrangian_penalty(torch.tensor([3.0, 3.0]), limit=2.0, multiplier=1.0, penalty=0.5)
    assert psi.item() == pytest.approx(1.25) and slope == pytest.approx(1.5) and multiplier == pytest.approx(1.5)
    psi, slope, multiplier = wm.lagrangian_penalty(torch.tensor([1.0]), limit=2.0, multiplier=0.1, penalty=1.0)
    assert psi.item() == pytest.approx(-0.005) and slope == 0.0 and multiplier == 0.0


def test_weighted_likelihood_and_critic_losses_by_hand():
    log_prob = torch.tensor([-1.0, -2.0])
    loss, metrics = wm.weighted_likelihood_loss(
        log_prob, torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 1.0]), entropy_scale=0.1
    )
    # -mean([1 * (2 * -1 + 0.1), 0.5 * (0.5 * -2 + 0.1)]) = -mean([-1.9, -0.45]) = 1.175
    assert loss.item() == pytest.approx(1.175) and metrics["weight_max"] == 2.0
    bins = wm.twohot_bins()
    logits = torch.zeros(1, 2, wm.TWOHOT_BINS)
    loss, _ = wm.critic_loss(logits, torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), bins, 1.0)
    assert loss.item() == pytest.approx(math.log(255))  # (2 log 255 + 0) / 2
    assert wm.image_loss(torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)).item() == 4.0
