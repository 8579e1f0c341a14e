"""Offline RL losses for the actor-critic family: behaviour cloning, TD3+BC and IQL.

- BC: mean squared error of the deterministic actor to the imitation target.
- TD3+BC (Fujimoto & Gu 2021, Algorithm 1; sfujim/TD3_BC `TD3_BC.py`):
  actor loss = -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2, lambda = alpha / mean |Q1| (detached).
- IQL (Kostrikov et al. 2022, eqs. 5-7; ikostrikov/implicit_q_learning `critic.py`, `actor.py`):
  V regressed to min(Q1', Q2')(s, a) with the expectile loss |tau - 1(u < 0)| u^2, Q to r + gamma V(s'),
  and the actor by advantage-weighted regression, weights exp(beta (Q' - V)) capped at 100. With
  Mentor's deterministic actor, -log pi(a|s) of a fixed-std Gaussian is the squared error up to scale.

The imitation target is the expert's action where the row has one (DART data: the executed action
carries the perturbation, the label does not), else the executed action.
"""

from __future__ import annotations

import torch

from learners.losses import twin_q_regression

IQL_MAX_WEIGHT = 100.0  # exp-advantage cap of the published code


def imitation_target(action: torch.Tensor, expert_action: torch.Tensor, expert_mask: torch.Tensor) -> torch.Tensor:
    """[B, 2]: the expert's action on rows that have it, the executed action elsewhere."""
    return torch.where(expert_mask[:, None] > 0, expert_action, action)


def bc_loss(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over batch and action dims of (pi(s) - target)^2."""
    loss = torch.mean((predicted - target) ** 2)
    return loss, {"bc_loss": loss.item()}


def td3bc_actor_loss(
    q_pi: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """-lambda * mean Q(s, pi(s)) + mean (pi(s) - a)^2 with lambda = alpha / mean |Q(s, pi(s))|."""
    lam = alpha / q_pi.abs().mean().detach().clamp_min(1e-6)
    bc, _ = bc_loss(predicted, target)
    loss = -lam * q_pi.mean() + bc
    return loss, {"actor_loss": loss.item(), "bc_loss": bc.item(), "td3bc_lambda": float(lam)}


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean |expectile - 1(diff < 0)| * diff^2."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return torch.mean(weight * diff**2)


def iql_value_loss(
    q_target_min: torch.Tensor, value: torch.Tensor, expectile: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """V(s) toward the expectile of min(Q1', Q2')(s, a) (already detached)."""
    loss = expectile_loss(q_target_min - value, expectile)
    return loss, {"value_loss": loss.item(), "v_mean": value.mean().item()}


def iql_critic_loss(
    q1: torch.Tensor, q2: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, next_value: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Both Q heads to r + discount * V(s') (n-step reward and gamma^n discount, 0 after a terminal)."""
    return twin_q_regression(q1, q2, (reward + discount * next_value).detach())


def iql_actor_loss(
    predicted: torch.Tensor, action: torch.Tensor, advantage: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """mean exp(temperature * A).clamp(max=100) * ||pi(s) - a||^2 (A detached)."""
    weight = torch.exp(temperature * advantage.detach()).clamp(max=IQL_MAX_WEIGHT)
    loss = torch.mean(weight * torch.sum((predicted - action) ** 2, dim=-1))
    return loss, {
        "actor_loss": loss.item(),
        "awr_weight_mean": weight.mean().item(),
        "advantage_mean": advantage.mean().item(),
    }
