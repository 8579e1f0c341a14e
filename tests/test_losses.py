"""Hand-computed checks of the pure losses, with tiny stand-in modules whose Q values are known formulas."""

import math

import pytest
import torch
from torch import nn

from learners.losses import drqv2, guidance, sac, td3
from learners.networks import gaussian_log_prob, log_prob_of, tanh_gaussian_sample


class SumCritic(nn.Module):
    """Q1 = feat[:, 0] + coef * sum(action) + offset; Q2 = feat[:, 1] + coef * sum(action) + offset."""

    def __init__(self, offset: float = 0.0, coef: float = 1.0):
        super().__init__()
        self.offset, self.coef = offset, coef
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, feat, state, action):
        shared = self.coef * action.sum(-1) + self.offset
        return feat[:, 0] + shared, feat[:, 1] + shared


class StateActor(nn.Module):
    """mu(s) = state[:, :2]; stochastic: (mean, log_std) = (state[:, :2], state[:, 2:4])."""

    def __init__(self, stochastic: bool = False):
        super().__init__()
        self.stochastic = stochastic

    def forward(self, feat, state):
        return state[:, :2], (state[:, 2:4] if self.stochastic else None)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# A batch of two: Q(s, a) with SumCritic() is q1 = [1 + 1, 3 - 1] = [2, 2], q2 = [2 + 1, 0 - 1] = [3, -1].
FEAT, ACTION = t([1.0, 2.0], [3.0, 0.0]), t([0.5, 0.5], [0.0, -1.0])
STATE = torch.zeros(2, 4)  # the stand-in critic ignores the state
REWARD, DISCOUNT = torch.tensor([1.0, -1.0]), torch.tensor([0.9, 0.5])
NEXT_FEAT, NEXT_STATE = t([0.0, 1.0], [2.0, 2.0]), t([0.5, -0.5, 0.0, 0.0], [0.25, 0.25, 0.0, 0.0])
# mu(s') = [[0.5, -0.5], [0.25, 0.25]] -> sum a' = [0, 0.5]; target critic has offset 1:
# Q1' = [0 + 0 + 1, 2 + 0.5 + 1] = [1, 3.5], Q2' = [1 + 0 + 1, 2 + 0.5 + 1] = [2, 3.5] -> min [1, 3.5]
# target = [1 + 0.9 * 1, -1 + 0.5 * 3.5] = [1.9, 0.75]
# MSE q1: ((2 - 1.9)^2 + (2 - 0.75)^2) / 2 = (0.01 + 1.5625) / 2 = 0.78625
# MSE q2: ((3 - 1.9)^2 + (-1 - 0.75)^2) / 2 = (1.21 + 3.0625) / 2 = 2.13625  -> total 2.9225
DETERMINISTIC_CRITIC_LOSS = 2.9225


def critic_args():
    return (
        SumCritic(),
        SumCritic(offset=1.0),
        StateActor(),
        FEAT,
        STATE,
        ACTION,
        REWARD,
        DISCOUNT,
        NEXT_FEAT,
        NEXT_STATE,
    )


def test_drqv2_critic_target_and_mse():
    loss, metrics = drqv2.critic_loss(*critic_args(), std=0.0, std_clip=0.3)
    assert loss.item() == pytest.approx(DETERMINISTIC_CRITIC_LOSS, abs=1e-6)
    assert metrics["target_q_mean"] == pytest.approx((1.9 + 0.75) / 2)
    # Noise clipped to 0 whatever the std: the same target.
    loss, _ = drqv2.critic_loss(*critic_args(), std=100.0, std_clip=0.0)
    assert loss.item() == pytest.approx(DETERMINISTIC_CRITIC_LOSS, abs=1e-6)


def test_td3_critic_target_smoothing_is_clipped():
    loss, _ = td3.critic_loss(*critic_args(), policy_noise=0.0, noise_clip=0.5)
    assert loss.item() == pytest.approx(DETERMINISTIC_CRITIC_LOSS, abs=1e-6)
    loss, _ = td3.critic_loss(*critic_args(), policy_noise=100.0, noise_clip=0.0)
    assert loss.item() == pytest.approx(DETERMINISTIC_CRITIC_LOSS, abs=1e-6)


def test_actor_losses():
    state = t([0.5, 0.5], [0.0, -1.0])  # mu(s) = ACTION, so Q = q1 [2, 2], q2 [3, -1]
    loss, _ = drqv2.actor_loss(StateActor(), SumCritic(), FEAT, state, std=0.0, std_clip=0.3)
    assert loss.item() == pytest.approx(-0.5)  # -mean(min) = -(2 + -1) / 2
    loss, _ = td3.actor_loss(StateActor(), SumCritic(), FEAT, state)
    assert loss.item() == pytest.approx(-2.0)  # -mean(Q1) = -(2 + 2) / 2


def test_sac_critic_soft_target():
    # Target critic ignores the action (coef 0), offset 1: Q1' = [1, 3], Q2' = [2, 3] -> min [1, 3]
    # alpha 0: target = [1 + 0.9 * 1, -1 + 0.5 * 3] = [1.9, 0.5]
    # MSE q1: (0.1^2 + 1.5^2) / 2 = 1.13; MSE q2: (1.1^2 + 1.5^2) / 2 = 1.73 -> 2.86
    target_critic = SumCritic(offset=1.0, coef=0.0)
    args = (
        SumCritic(),
        target_critic,
        StateActor(stochastic=True),
        FEAT,
        STATE,
        ACTION,
        REWARD,
        DISCOUNT,
        NEXT_FEAT,
        NEXT_STATE,
    )
    loss, _ = sac.critic_loss(*args, alpha=0.0, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(2.86, abs=1e-6)
    # alpha 0.5: target = [1.9, 0.5] - discount * 0.5 * log pi(a'|s') for the same sampled a'.
    _, next_log_prob = tanh_gaussian_sample(NEXT_STATE[:, :2], NEXT_STATE[:, 2:4], torch.Generator().manual_seed(0))
    target = torch.tensor([1.9, 0.5]) - DISCOUNT * 0.5 * next_log_prob
    expected = ((torch.tensor([2.0, 2.0]) - target) ** 2).mean() + ((torch.tensor([3.0, -1.0]) - target) ** 2).mean()
    loss, _ = sac.critic_loss(*args, alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_sac_actor_loss_alpha_zero():
    # Critic ignores the action: min(Q1, Q2) = min(feat) = [1, 0] -> loss = -(1 + 0) / 2
    state = t([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    loss, metrics = sac.actor_loss(StateActor(stochastic=True), SumCritic(coef=0.0), FEAT, state, alpha=0.0)
    assert loss.item() == pytest.approx(-0.5)
    assert math.isfinite(metrics["log_prob"])


def test_sac_temperature_loss():
    # alpha = 0.5, log pi = [-1, -3], target entropy -2: 0.5 * mean([1 + 2, 3 + 2]) = 0.5 * 4 = 2
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    loss, metrics = sac.temperature_loss(log_alpha, torch.tensor([-1.0, -3.0]), target_entropy=-2.0)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(2.0)  # d/dlog_alpha alpha * 4 = alpha * 4
    assert metrics["alpha"] == pytest.approx(0.5)


def test_log_probs():
    # tanh-Gaussian at a = 0 with mean 0, std 1: 2 * log N(0; 0, 1) - 0 = -log(2 pi) = -1.8378771
    zeros = torch.zeros(1, 2)
    assert log_prob_of(zeros, zeros, zeros).item() == pytest.approx(-1.8378771, abs=1e-6)
    # Gaussian, std 0.1: a - mu = [0.2, 0]: (-2 + log 10 - 0.5 log 2 pi) + (log 10 - 0.5 log 2 pi)
    # = -0.6163534 + 1.3836466 = 0.7672931
    value = gaussian_log_prob(t([0.1, 0.1]), 0.1, t([0.3, 0.1]))
    assert value.item() == pytest.approx(0.7672931, abs=1e-5)
    assert drqv2.log_prob(StateActor(), FEAT[:1], t([0.1, 0.1]), t([0.3, 0.1]), 0.1).item() == pytest.approx(
        0.7672931, abs=1e-5
    )
    # The log-prob of a given action agrees with the sampler's own.
    mean, log_std = t([0.3, -0.2]), t([-1.0, -0.5])
    action, sampled = tanh_gaussian_sample(mean, log_std, torch.Generator().manual_seed(1))
    assert log_prob_of(action, mean, log_std).item() == pytest.approx(sampled.item(), abs=1e-4)


def test_vmr_masks_per_sample_and_averages_over_batch():
    # delta 2; row 0: head 1 (3 - (0.5 + 2))^2 = 0.25, head 2 (1 - (0 + 2))^2 = 1; row 1 masked.
    # (0.25 + 0) / 2 + (1 + 0) / 2 = 0.625
    q1_vlm = torch.tensor([3.0, 100.0], requires_grad=True)
    q1_pi = torch.tensor([0.5, 7.0], requires_grad=True)
    mask = torch.tensor([1.0, 0.0])
    loss, _ = guidance.vmr_loss(q1_vlm, torch.tensor([1.0, -50.0]), q1_pi, torch.tensor([0.0, 9.0]), mask, delta=2.0)
    assert loss.item() == pytest.approx(0.625)
    other, _ = guidance.vmr_loss(
        torch.tensor([3.0, -4.0]),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([0.5, 1e6]),
        torch.tensor([0.0, 3.0]),
        mask,
        delta=2.0,
    )
    assert other.item() == pytest.approx(0.625)  # the masked row's values do not matter at all
    loss.backward()
    assert q1_pi.grad is None  # the anchor is a stop-gradient
    assert q1_vlm.grad.tolist() == pytest.approx([2 * 0.5 / 2, 0.0])  # d/dq (q - 2.5)^2 / 2 at 3


def test_awag_gate_weight_clip_and_mask():
    # A = [1, -1, 50, 1]; gate [1, 0, 1, 1]; w = [e^0.5, -, min(e^25, 20) = 20, e^0.5]; mask [1, 1, 1, 0]
    # terms: [1.6487213 * 1, 0, 20 * 3, 0] -> (1.6487213 + 60) / 4 = 15.4121803
    log_prob = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    q_vlm, q_pi = torch.tensor([1.0, 0.0, 50.0, 5.0]), torch.tensor([0.0, 1.0, 0.0, 4.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    loss, metrics = guidance.awag_loss(q_vlm, q_pi, log_prob, mask, temperature=2.0, max_weight=20.0)
    assert loss.item() == pytest.approx(15.4121803, abs=1e-5)
    assert metrics["awag_gate_fraction"] == pytest.approx(2 / 3)
    loss.backward()
    assert log_prob.grad.tolist() == pytest.approx([-1.6487213 / 4, 0.0, -20 / 4, 0.0])
    # Masked row changed to anything (even -inf log-prob): unchanged. A <= 0 everywhere: exactly 0.
    changed, _ = guidance.awag_loss(
        q_vlm, torch.tensor([0.0, 1.0, 0.0, -100.0]), torch.tensor([-1.0, -2.0, -3.0, -float("inf")]), mask
    )
    assert changed.item() == pytest.approx(15.4121803, abs=1e-5)
    zero, _ = guidance.awag_loss(torch.zeros(2), torch.tensor([0.0, 1.0]), torch.tensor([-5.0, -5.0]), torch.ones(2))
    assert zero.item() == 0.0


def test_masked_rows_holding_inf_or_nan_give_zero_gradients():
    # The loss value ignored masked rows before; their gradient must be exactly 0 too, not nan
    # (a product with the mask would give d/dq (q - t)^2 * 0 = 2 * inf * 0 = nan).
    mask = torch.tensor([1.0, 0.0, 0.0])
    q1_vlm = torch.tensor([3.0, float("inf"), float("nan")], requires_grad=True)
    q2_vlm = torch.tensor([1.0, -float("inf"), float("nan")], requires_grad=True)
    loss, _ = guidance.vmr_loss(
        q1_vlm, q2_vlm, torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]), mask, delta=2.0
    )
    loss.backward()
    assert loss.item() == pytest.approx((0.25 + 1.0) / 3)
    assert q1_vlm.grad.tolist() == pytest.approx([2 * 0.5 / 3, 0.0, 0.0])
    assert q2_vlm.grad.tolist() == pytest.approx([2 * -1.0 / 3, 0.0, 0.0])

    log_prob = torch.tensor([-1.0, -float("inf"), float("nan")], requires_grad=True)
    loss, _ = guidance.awag_loss(torch.tensor([1.0, float("inf"), float("nan")]), torch.zeros(3), log_prob, mask)
    loss.backward()
    assert loss.item() == pytest.approx(math.exp(0.5) / 3)
    assert log_prob.grad.tolist() == pytest.approx([-math.exp(0.5) / 3, 0.0, 0.0])


def test_scaled_base_actor_loss():
    # mean|Q| = (2 + 4) / 2 = 3 -> -3 * 2.5 / 3 = -2.5
    loss, metrics = guidance.scaled_base_actor_loss(torch.tensor(-3.0), torch.tensor([2.0, -4.0]), alpha=2.5)
    assert loss.item() == pytest.approx(-2.5)
    assert metrics["actor_q_scale"] == pytest.approx(2.5 / 3)


def test_schedules():
    assert guidance.vmr_lambda(10_000, 1.0) == 1.0
    assert guidance.vmr_lambda(100_000, 1.0) == pytest.approx(0.5)  # (100k - 50k) / (150k - 50k) = 0.5
    assert guidance.vmr_lambda(150_000, 1.0) == 0.0
    assert guidance.vmr_lambda(400_000, 1.0) == 0.0
    # cosine at 75k: fraction 0.25 -> 0.5 * (1 + cos(pi / 4)) = 0.8535534
    assert guidance.vmr_lambda(75_000, 1.0, schedule="cosine") == pytest.approx(0.8535534)
    assert guidance.awag_iota(0, 0.3) == pytest.approx(0.3)
    # 150k: (0.5)^0.7 = 0.6155722 -> 0.5 * (1 + cos(pi * 0.6155722)) = 0.3224221
    assert guidance.awag_iota(150_000, 1.0) == pytest.approx(0.3224221)
    assert guidance.awag_iota(300_000, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert guidance.awag_iota(900_000, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert guidance.awag_iota(900_000, 0.3, schedule="constant") == 0.3
    # DrQ-v2 std: 1.0 -> 0.1 over 100k; at 50k: 0.5 * 1 + 0.5 * 0.1 = 0.55
    assert drqv2.exploration_std(0, 1.0, 0.1, 100_000) == 1.0
    assert drqv2.exploration_std(50_000, 1.0, 0.1, 100_000) == pytest.approx(0.55)
    assert drqv2.exploration_std(500_000, 1.0, 0.1, 100_000) == pytest.approx(0.1)
