"""Found-RL's guidance from VLM action advice, shared by DrQ-v2, SAC and TD3.

VMR (Value-Margin Regularisation) shapes the critic: Q(s, a_vlm) is regressed to a margin `delta` above
the value of the data's own action. AWAG (Advantage-Weighted Action Guidance) pulls the actor towards
a_vlm where the critic thinks it is better than mu(s). Rows without advice (mask 0) contribute exactly 0,
and every average is over the whole batch, so the guidance strength follows the advice availability.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["constant", "linear", "cosine"]


def _select(mask: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor with its unadvised rows (mask 0) replaced by 0 BEFORE any arithmetic: a masked row
    holding inf or nan then gets an exactly zero gradient (a product with the mask would give 0 * inf)."""
    advised = mask > 0
    return tuple(torch.where(advised, v, torch.zeros_like(v)) for v in values)


def _masked_batch_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over the whole batch of mask * values; `values` must already be selected (finite)."""
    return torch.where(mask > 0, values * mask, torch.zeros_like(values)).sum() / values.shape[0]


def vmr_loss(
    q1_vlm: torch.Tensor,
    q2_vlm: torch.Tensor,
    q1_pi_detached: torch.Tensor,
    q2_pi_detached: torch.Tensor,
    mask: torch.Tensor,
    delta: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """sum_i mean_B[mask * (Q_i(s, a_vlm) - (sg(Q_i(s, a)) + delta))^2].

    `a` is the batch (behaviour) action, the one the TD loss evaluates the critic at, so the anchor
    sg(Q_i(s, a)) is the value the critic is already fitting. The error is masked PER SAMPLE and then
    averaged over the batch size (the published code averaged before masking, letting unadvised rows leak in).
    """
    q1_vlm, q2_vlm, q1_pi, q2_pi = _select(mask, q1_vlm, q2_vlm, q1_pi_detached.detach(), q2_pi_detached.detach())
    err1 = (q1_vlm - (q1_pi + delta)).pow(2)
    err2 = (q2_vlm - (q2_pi + delta)).pow(2)
    loss = _masked_batch_mean(err1, mask) + _masked_batch_mean(err2, mask)
    advised = mask > 0
    gap = (torch.min(q1_vlm, q2_vlm) - torch.min(q1_pi, q2_pi)).detach()
    gap_mean = gap[advised].mean().item() if bool(advised.any()) else 0.0
    return loss, {"vmr_loss": loss.item(), "vmr_q_gap": gap_mean}


def awag_loss(
    q_vlm_min: torch.Tensor,
    q_pi_min: torch.Tensor,
    log_prob_vlm: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 2.0,
    max_weight: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """mean_B[mask * 1{A > 0} * min(exp(A / T), max_weight) * -log pi(a_vlm | s)],
    A = min_i Q_i(s, a_vlm) - min_i Q_i(s, mu(s)). Only log pi carries a gradient."""
    q_vlm_min, q_pi_min, log_prob_vlm = _select(mask, q_vlm_min.detach(), q_pi_min.detach(), log_prob_vlm)
    advantage = q_vlm_min - q_pi_min
    gate = (advantage > 0).to(log_prob_vlm.dtype)
    # Clamp the exponent, not the exponential: exp(A/T) may overflow to inf, and 0 * inf is nan.
    weight = torch.exp(torch.clamp(advantage / temperature, max=math.log(max_weight)))
    loss = _masked_batch_mean(gate * weight * -log_prob_vlm, mask)
    advised = mask > 0
    gate_fraction = gate[advised].mean().item() if bool(advised.any()) else 0.0
    return loss, {
        "awag_loss": loss.item(),
        "awag_gate_fraction": gate_fraction,
        "awag_weight_mean": (gate * weight)[advised].mean().item() if bool(advised.any()) else 0.0,
    }


def scaled_base_actor_loss(
    base_loss: torch.Tensor, q_values: torch.Tensor, alpha: float = 2.5
) -> tuple[torch.Tensor, dict[str, float]]:
    """TD3+BC-style normalisation: base_loss * alpha / mean|Q| (detached), so the AWAG term's weight does
    not depend on the scale of the returns."""
    scale = alpha / q_values.detach().abs().mean().clamp_min(1e-6)
    return base_loss * scale, {"actor_q_scale": scale.item()}


def _decay(fraction: float, schedule: Schedule) -> float:
    """1 -> 0 as fraction goes 0 -> 1."""
    fraction = min(max(fraction, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - fraction
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * fraction))
    raise ValueError(f"unknown schedule {schedule!r}: use constant, linear or cosine")


def vmr_lambda(
    step: int, weight: float, hold_steps: int = 50_000, decay_end: int = 150_000, schedule: Schedule = "linear"
) -> float:
    """VMR weight: `weight` until hold_steps, then decays (linear or cosine) to 0 at decay_end."""
    if step <= hold_steps:
        return weight
    return weight * _decay((step - hold_steps) / max(decay_end - hold_steps, 1), schedule)


def awag_iota(
    step: int, weight: float, decay_steps: int = 300_000, power: float = 0.7, schedule: Schedule = "cosine"
) -> float:
    """AWAG weight: cosine: weight * 0.5 * (1 + cos(pi * min(1, (step / decay_steps) ** power)));
    constant: weight."""
    return weight * _decay((max(step, 0) / max(decay_steps, 1)) ** power, schedule)
