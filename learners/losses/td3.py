"""TD3 (Fujimoto et al. 2018): target policy smoothing, clipped double Q, delayed actor on Q1."""

from __future__ import annotations

import torch
from torch import nn

from learners.losses import twin_q_regression
from learners.networks import gaussian_log_prob


def critic_loss(
    critic: nn.Module,
    critic_target: nn.Module,
    actor_target: nn.Module,
    feat: torch.Tensor,
    state: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    next_feat: torch.Tensor,
    next_state: torch.Tensor,
    policy_noise: float,
    noise_clip: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """target = r + discount * min(Q1', Q2')(s', clip(mu'(s') + clip(N(0, policy_noise), +-noise_clip), +-1))."""
    with torch.no_grad():
        next_mu, _ = actor_target(next_feat, next_state)
        noise = torch.randn(next_mu.shape, generator=generator, device=next_mu.device, dtype=next_mu.dtype)
        noise = (noise * policy_noise).clamp(-noise_clip, noise_clip)
        next_action = (next_mu + noise).clamp(-1.0, 1.0)
        target_q1, target_q2 = critic_target(next_feat, next_state, next_action)
        target = reward + discount * torch.min(target_q1, target_q2)
    q1, q2 = critic(feat, state, action)
    return twin_q_regression(q1, q2, target)


def actor_loss(
    actor: nn.Module, critic: nn.Module, feat: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """-Q1(s, mu(s)): TD3 follows the first head only."""
    mu, _ = actor(feat, state)
    q1, _ = critic(feat, state, mu)
    loss = -q1.mean()
    return loss, {"actor_loss": loss.item()}


def log_prob(
    actor: nn.Module, feat: torch.Tensor, state: torch.Tensor, action: torch.Tensor, std: float
) -> torch.Tensor:
    """log pi(action | s) [B]: Gaussian N(mu(s), std) with std = the exploration noise."""
    mu, _ = actor(feat, state)
    return gaussian_log_prob(mu, std, action)
