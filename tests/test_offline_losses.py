"""The offline losses against values computed by hand (learners/losses/offline.py)."""

import math

import pytest
import torch

from learners.losses import offline


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_imitation_target_prefers_the_expert_label():
    action = t([0.5, 0.5], [0.1, -0.1])
    expert = t([1.0, 0.0], [-1.0, 1.0])
    target = offline.imitation_target(action, expert, t(1.0, 0.0))
    assert target.tolist() == [[1.0, 0.0], [pytest.approx(0.1), pytest.approx(-0.1)]]


def test_bc_loss_is_the_mean_squared_error():
    loss, metrics = offline.bc_loss(t([0.0, 1.0], [1.0, 1.0]), t([1.0, 1.0], [1.0, -1.0]))
    assert loss.item() == pytest.approx((1 + 0 + 0 + 4) / 4) and metrics["bc_loss"] == pytest.approx(1.25)


def test_td3bc_actor_loss_normalises_q():
    # lambda = 2.5 / mean|Q| = 2.5 / 3; -lambda * mean Q = -(2.5 / 3) * 1 ; bc = ((0.5)^2 + 0) / 2 = 0.125
    q = t(2.0, -4.0, 5.0)  # mean 1, mean |Q| 11/3
    lam = 2.5 / (11 / 3)
    loss, metrics = offline.td3bc_actor_loss(q, t([0.5, 0.0]), t([0.0, 0.0]), alpha=2.5)
    assert loss.item() == pytest.approx(-lam * 1.0 + 0.125)
    assert metrics["td3bc_lambda"] == pytest.approx(lam) and metrics["bc_loss"] == pytest.approx(0.125)


def test_td3bc_lambda_carries_no_gradient():
    q = torch.tensor([2.0, 4.0], requires_grad=True)
    loss, _ = offline.td3bc_actor_loss(q, t([0.0, 0.0]), t([0.0, 0.0]), alpha=3.0)
    loss.backward()
    assert q.grad.tolist() == pytest.approx([-3.0 / 3.0 / 2, -3.0 / 3.0 / 2])  # -lambda / B, lambda = 3 / 3


def test_expectile_loss_weighs_the_two_sides():
    # diff 2 (above): 0.7 * 4 = 2.8 ; diff -1 (below): 0.3 * 1 = 0.3 ; mean 1.55
    assert offline.expectile_loss(t(2.0, -1.0), 0.7).item() == pytest.approx(1.55)
    assert offline.expectile_loss(t(2.0, -1.0), 0.5).item() == pytest.approx(0.5 * 5 / 2)


def test_iql_value_loss_targets_q_minus_v():
    loss, metrics = offline.iql_value_loss(t(3.0, 0.0), t(1.0, 1.0), expectile=0.9)
    assert loss.item() == pytest.approx((0.9 * 4 + 0.1 * 1) / 2) and metrics["v_mean"] == 1.0


def test_iql_critic_loss_bootstraps_from_the_next_value():
    # targets r + discount * V' = 1 + 0.5 * 2 = 2 and 0 + 0 * 5 = 0
    loss, metrics = offline.iql_critic_loss(t(2.0, 1.0), t(1.0, 0.0), t(1.0, 0.0), t(0.5, 0.0), t(2.0, 5.0))
    assert metrics["target_q_mean"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx((0 + 1) / 2 + (1 + 0) / 2)


def test_iql_actor_loss_is_advantage_weighted_and_capped():
    predicted, action = t([0.0, 0.0], [0.0, 0.0]), t([1.0, 0.0], [1.0, 1.0])
    loss, metrics = offline.iql_actor_loss(predicted, action, t(0.0, 10.0), temperature=1.0)
    # weights exp(0) = 1 and exp(10) capped at 100; squared errors 1 and 2
    assert loss.item() == pytest.approx((1 * 1 + 100 * 2) / 2)
    assert metrics["awr_weight_mean"] == pytest.approx(50.5)
    assert math.isfinite(metrics["advantage_mean"])
