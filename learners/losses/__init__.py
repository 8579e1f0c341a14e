"""Pure loss functions: tensors and modules in, `(loss, metrics)` out; no optimiser steps, no state.

One module per algorithm (drqv2, sac, td3) plus the Found-RL guidance terms (guidance). Import them as
`from learners.losses import drqv2, guidance`. The shared TD regression lives here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def twin_q_regression(q1: torch.Tensor, q2: torch.Tensor,
                      target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of both Q heads to one (already detached) target: the clipped double-Q TD loss."""
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    metrics = {"critic_loss": loss.item(), "q_mean": torch.min(q1, q2).mean().item(),
               "q1_mean": q1.mean().item(), "q2_mean": q2.mean().item(), "target_q_mean": target.mean().item()}
    return loss, metrics
