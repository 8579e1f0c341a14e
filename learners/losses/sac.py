"""SAC (Haarnoja et al. 2018): tanh-Gaussian actor, soft clipped double-Q target, learned temperature."""

from __future__ import annotations

import torch
from torch import nn

from learners.losses import twin_q_regression
from learners.networks import log_prob_of, tanh_gaussian_sample


def critic_loss(
    critic: nn.Module,
    critic_target: nn.Module,
    actor: nn.Module,
    feat: torch.Tensor,
    state: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    next_feat: torch.Tensor,
    next_state: torch.Tensor,
    alpha: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """target = r + discount * (min(Q1', Q2')(s', a') - alpha * log pi(a'|s')), a' ~ pi(s')."""
    with torch.no_grad():
        mean, log_std = actor(next_feat, next_state)
        next_action, next_log_prob = tanh_gaussian_sample(mean, log_std, generator)
        target_q1, target_q2 = critic_target(next_feat, next_state, next_action)
        target = reward + discount * (torch.min(target_q1, target_q2) - alpha * next_log_prob)
    q1, q2 = critic(feat, state, action)
    return twin_q_regression(q1, q2, target)


def actor_loss(
    actor: nn.Module,
    critic: nn.Module,
    feat: torch.Tensor,
    state: torch.Tensor,
    alpha: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha * log pi(a|s) - min(Q1, Q2)(s, a), a ~ pi(s) reparameterised. metrics["log_prob"] is the
    batch mean of log pi, all that temperature_loss needs (its log-prob term is detached)."""
    mean, log_std = actor(feat, state)
    action, log_prob = tanh_gaussian_sample(mean, log_std, generator)
    q1, q2 = critic(feat, state, action)
    loss = (alpha * log_prob - torch.min(q1, q2)).mean()
    mean_log_prob = log_prob.mean().item()
    return loss, {"actor_loss": loss.item(), "log_prob": mean_log_prob, "entropy": -mean_log_prob}


def temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor | float, target_entropy: float = -2.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha * (-log pi - target_entropy): raises alpha while the entropy is below its target."""
    log_prob = torch.as_tensor(log_prob, dtype=log_alpha.dtype, device=log_alpha.device)
    alpha = log_alpha.exp()
    loss = (alpha * (-log_prob - target_entropy).detach()).mean()
    return loss, {"alpha_loss": loss.item(), "alpha": alpha.item()}


def log_prob(actor: nn.Module, feat: torch.Tensor, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log pi(action | s) [B] of a given action under the tanh-Gaussian policy."""
    mean, log_std = actor(feat, state)
    return log_prob_of(action, mean, log_std)
