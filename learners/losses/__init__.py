"""Pure loss functions: tensors and modules in, `(loss, metrics)` out; no optimiser steps, no state.

One module per algorithm (drqv2, sac, td3) plus the Found-RL guidance terms (guidance). Import them as
`from learners.losses import drqv2, guidance`. The shared TD regression lives here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def twin_q_regression(
    q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of both Q heads to one (already detached) target: the clipped double-Q TD loss."""
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    # One device -> host copy for the five numbers (on a GPU each .item() would wait for the device).
    values = torch.stack([loss, torch.min(q1, q2).mean(), q1.mean(), q2.mean(), target.mean()]).detach().tolist()
    return loss, dict(zip(("critic_loss", "q_mean", "q1_mean", "q2_mean", "target_q_mean"), values))
