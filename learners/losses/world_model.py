"""The world model's and the safe actor-critic's mathematics (learners/world_model): pure functions of
tensors, `(loss, metrics)` out where they are losses.

DreamerV3 (Hafner et al. 2023, arXiv 2301.04104) for the model and the critics:
- symlog(x) = sign(x) ln(1 + |x|) and its inverse symexp (eq. 1);
- two-hot targets over 255 bins equally spaced in symlog space from -20 to 20 (eq. 9-10);
- KL balancing with free bits: L_dyn = max(1, KL[sg(q) || p]), L_rep = max(1, KL[q || sg(p)]), scaled
  0.5 and 0.1 (eq. 5); categorical latents mixed with 1% uniform;
- lambda-returns R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) V_{t+1} + lambda R_{t+1}), R_H = V_H (eq. 7);
- return normalisation by S = EMA of the 95th minus the 5th percentile, advantages / max(1, S) (eq. 11).

VL-SAFE (Qu et al. 2025, arXiv 2505.16377, poster and project page; its code is not public) for the
policy: pi*(a|s) proportional to w(s, a) pi_b(a|s) with
    w = p(s) exp(beta1 A_r(s, a)) + (1 - p(s)) exp(-beta2 A_c(s, a)),
p the predicted safety probability, A_r and A_c the reward and cost advantages, w clipped (beta1, beta2
and the clip are not published). The policy is extracted by weighted maximum likelihood:
L = -mean[sg(w) log pi(a|s)] over the weighted samples.

SafeDreamer (Huang et al. 2024, arXiv 2307.07176) for the augmented-Lagrangian alternative: with
g = mean(C_lambda) - d, Psi = lambda g + c/2 g^2 if lambda + c g > 0 else -lambda^2 / (2c), and the
multiplier update lambda <- max(0, lambda + c g).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TWOHOT_BINS = 255
TWOHOT_LOW, TWOHOT_HIGH = -20.0, 20.0


# ------------------------------------------------------------------------------------ transforms


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(torch.abs(x))


def twohot_bins(n: int = TWOHOT_BINS, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bin centres in symlog space."""
    return torch.linspace(TWOHOT_LOW, TWOHOT_HIGH, n, device=device)


def twohot(value: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """[...] values (already in symlog space) -> [..., K] weights on the two nearest bins, summing to 1;
    values outside the bins put all weight on the edge bin."""
    value = value.clamp(bins[0], bins[-1])
    above = torch.bucketize(value, bins).clamp(1, len(bins) - 1)  # first bin >= value
    below = above - 1
    low, high = bins[below], bins[above]
    weight_high = (value - low) / (high - low)
    out = torch.zeros(*value.shape, len(bins), device=value.device, dtype=value.dtype)
    out.scatter_(-1, below.unsqueeze(-1), (1.0 - weight_high).unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), weight_high.unsqueeze(-1))
    return out


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The prediction of a two-hot head in the original space: symexp(E[bin])."""
    return symexp((logits.softmax(-1) * bins).sum(-1))


def twohot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per element [...] of a two-hot head to targets in the original space."""
    return -(twohot(symlog(target), bins) * logits.log_softmax(-1)).sum(-1)


# ------------------------------------------------------------------------------------ the model


def categorical_kl(post_logits: torch.Tensor, prior_logits: torch.Tensor) -> torch.Tensor:
    """KL[q || p] of [..., groups, classes] categoricals, summed over the groups -> [...]."""
    post_log, prior_log = post_logits.log_softmax(-1), prior_logits.log_softmax(-1)
    return (post_log.exp() * (post_log - prior_log)).sum((-2, -1))


def kl_balance(
    post_logits: torch.Tensor, prior_logits: torch.Tensor, free_bits: float, dyn_scale: float, rep_scale: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """DreamerV3's dynamics and representation losses with free bits, averaged over [...]."""
    dyn = categorical_kl(post_logits.detach(), prior_logits)
    rep = categorical_kl(post_logits, prior_logits.detach())
    loss = dyn_scale * dyn.clamp(min=free_bits).mean() + rep_scale * rep.clamp(min=free_bits).mean()
    return loss, {"kl": dyn.mean().item()}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the entries where mask > 0 (0 when there are none): masked entries never act as labels."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def bernoulli_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy to soft targets in [0, 1], averaged over the masked entries. Targets under
    mask 0 are replaced by 0.5 first so that a NaN there cannot leak into the gradient."""
    target = torch.where(mask > 0, target, torch.full_like(target, 0.5))
    return masked_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), mask)


def image_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over an image's channels and pixels, averaged over images [..., C, H, W]."""
    return (predicted - target).square().sum((-3, -2, -1)).mean()


# --------------------------------------------------------------------------------- imagination


def lambda_returns(
    reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """[N, H+1] rewards, continues and values along imagined trajectories, where reward[:, t] and
    cont[:, t] are what arriving at step t gave (index 0 unused) -> returns [N, H] of steps 0..H-1."""
    horizon = value.shape[1] - 1
    returns = [value[:, -1]]
    for t in reversed(range(horizon)):
        bootstrap = (1.0 - lam) * value[:, t + 1] + lam * returns[-1]
        returns.append(reward[:, t + 1] + gamma * cont[:, t + 1] * bootstrap)
    return torch.stack(returns[::-1][:-1], 1)


def trajectory_weight(cont: torch.Tensor, gamma: float) -> torch.Tensor:
    """[N, H+1] continues -> [N, H] the weight of each step's loss: the discounted chance the imagined
    episode is still running there. cont[:, 0] is the start state's (0 for a terminal start: nothing
    after it is real, DreamerV3 weighs such rollouts 0)."""
    return torch.cumprod(torch.cat([cont[:, :1], gamma * cont[:, 1:-1]], 1), 1)


def percentile_scale(
    returns: torch.Tensor, previous: float, decay: float, low: float = 0.05, high: float = 0.95
) -> float:
    """DreamerV3's return scale: EMA of the high minus the low percentile (the first call, previous < 0,
    starts the EMA at the batch's value)."""
    flat = returns.detach().flatten().float()
    spread = (torch.quantile(flat, high) - torch.quantile(flat, low)).item()
    return spread if previous < 0 else decay * previous + (1.0 - decay) * spread


def normalised_advantage(advantage: torch.Tensor, scale: float) -> torch.Tensor:
    """DreamerV3's normalisation: advantages divided by max(1, S), so small returns are not blown up."""
    return advantage / max(1.0, scale)


def critic_loss(
    logits: torch.Tensor,
    returns: torch.Tensor,
    slow_mean: torch.Tensor,
    weight: torch.Tensor,
    bins: torch.Tensor,
    slow_regulariser: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """A two-hot critic regressed to lambda-returns plus DreamerV3's pull toward its slow EMA copy's
    prediction, weighted per step; all [N, H] (logits [N, H, K])."""
    per_step = twohot_loss(logits, returns.detach(), bins) + slow_regulariser * twohot_loss(
        logits, slow_mean.detach(), bins
    )
    loss = (weight.detach() * per_step).mean()
    return loss, {
        "loss": loss.item(),
        "value": twohot_mean(logits, bins).mean().item(),
        "return": returns.mean().item(),
    }


# --------------------------------------------------------------------------------- the policy


def vlsafe_weights(
    safety: torch.Tensor,
    reward_advantage: torch.Tensor,
    cost_advantage: torch.Tensor,
    beta1: float,
    beta2: float,
    clip: float,
) -> torch.Tensor:
    """w = clip(p exp(beta1 A_r) + (1 - p) exp(-beta2 A_c), 0, clip) (VL-SAFE's weight). Where the state is
    safe the weight follows the reward advantage; where it is not, it favours actions of low cost
    advantage. Computed as exp(min(logaddexp(log p + beta1 A_r, log(1 - p) - beta2 A_c), log clip)):
    exact for every p (capping each exponent before the sum is not: p = 0.5, A_r = 10, A_c = 0, clip 20
    gives 10.5 instead of 20) and no inf ever enters (log 0 = -inf drops its term)."""
    log_reward = torch.log(safety) + beta1 * reward_advantage
    log_cost = torch.log1p(-safety) - beta2 * cost_advantage
    log_weight = torch.logaddexp(log_reward, log_cost)
    cap = math.log(clip) if clip > 0 else -math.inf
    # Exactly `clip` where it binds (exp(log(clip)) is clip only to rounding).
    return torch.where(log_weight >= cap, torch.full_like(log_weight, clip), torch.exp(log_weight))


def lagrangian_penalty(
    cost_return: torch.Tensor, limit: float, multiplier: float, penalty: float
) -> tuple[torch.Tensor, float, float]:
    """SafeDreamer's augmented Lagrangian on g = mean(C_lambda) - d: returns (Psi, dPsi/dg, the updated
    multiplier max(0, lambda + c g)). dPsi/dg = lambda + c g where that is positive, else 0."""
    g = cost_return.mean() - limit
    active = multiplier + penalty * g.item() > 0
    psi = multiplier * g + 0.5 * penalty * g * g if active else torch.full_like(g, -(multiplier**2) / (2 * penalty))
    slope = multiplier + penalty * g.item() if active else 0.0
    return psi, float(slope), max(0.0, multiplier + penalty * g.item())


def weighted_likelihood_loss(
    log_prob: torch.Tensor, weight: torch.Tensor, step_weight: torch.Tensor, entropy: torch.Tensor, entropy_scale: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """-mean[step_weight * (sg(w) log pi(a|s) + eta H(pi(.|s)))]: the policy moves toward w pi_b."""
    step_weight = step_weight.detach()
    loss = -(step_weight * (weight.detach() * log_prob + entropy_scale * entropy)).mean()
    return loss, {
        "loss": loss.item(),
        "weight_mean": weight.mean().item(),
        "weight_max": weight.max().item(),
        "entropy": entropy.mean().item(),
        "log_prob": log_prob.mean().item(),
    }
