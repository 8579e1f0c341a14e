"""DrQ-v2 (Yarats et al. 2021): deterministic actor explored with a scheduled, clipped Gaussian."""

from __future__ import annotations

import torch
from torch import nn

from learners.losses import twin_q_regression
from learners.networks import TruncatedNormal


def exploration_std(step: int, start: float, end: float, duration: int) -> float:
    """Linear std schedule from `start` to `end` over `duration` steps, then constant."""
    mix = min(max(step / max(duration, 1), 0.0), 1.0)
    return (1.0 - mix) * start + mix * end


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
    std: float,
    std_clip: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """target = r + discount * min(Q1', Q2')(s', a'), a' ~ TruncatedNormal(mu(s'), std) with clipped noise."""
    with torch.no_grad():
        next_mu, _ = actor(next_feat, next_state)
        next_action = TruncatedNormal(next_mu, std).sample(clip=std_clip, generator=generator)
        target_q1, target_q2 = critic_target(next_feat, next_state, next_action)
        target = reward + discount * torch.min(target_q1, target_q2)
    q1, q2 = critic(feat, state, action)
    return twin_q_regression(q1, q2, target)


def actor_loss(
    actor: nn.Module,
    critic: nn.Module,
    feat: torch.Tensor,
    state: torch.Tensor,
    std: float,
    std_clip: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """-min(Q1, Q2)(s, a), a ~ TruncatedNormal(mu(s), std): the noise is part of the policy DrQ-v2 optimises."""
    mu, _ = actor(feat, state)
    action = TruncatedNormal(mu, std).sample(clip=std_clip, generator=generator)
    q1, q2 = critic(feat, state, action)
    loss = -torch.min(q1, q2).mean()
    return loss, {"actor_loss": loss.item(), "actor_std": float(std)}


def log_prob(
    actor: nn.Module, feat: torch.Tensor, state: torch.Tensor, action: torch.Tensor, std: float
) -> torch.Tensor:
    """log pi(action | s) [B] of a given action: Gaussian N(mu(s), std) at the current exploration std."""
    mu, _ = actor(feat, state)
    return TruncatedNormal(mu, std).log_prob(action)
