"""Networks of the learner (DrQ-v2 layout): a conv encoder of the BEV, an actor and a twin critic that
each have their own trunk on the encoder features, plus the action distributions the three algorithms
use (DrQ-v2's clipped truncated normal, SAC's tanh-Gaussian) and DrQ-v2's random-shift augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from envs.spaces import ACTION_SIZE, BEV_SHAPE, STATE_SIZE

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
ATANH_CLAMP = 0.999  # a given action is pulled inside (-1, 1) before atanh so its log-prob stays finite


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class Preset:
    convs: tuple[ConvSpec, ...]
    feature_dim: int
    hidden_dim: int


PRESETS: dict[str, Preset] = {
    # CPU quickstart: 96 -> 23 -> 11 -> 5, i.e. 32*5*5 = 800 features.
    "small": Preset((ConvSpec(16, 5, 4), ConvSpec(32, 3, 2), ConvSpec(32, 3, 2)), feature_dim=50, hidden_dim=256),
    # DrQ-v2 stack, padded so the map halves cleanly: 96 -> 48 -> 24 -> 12 -> 12, i.e. 32*12*12 = 4608
    # features; with 1024-wide heads the whole agent has ~3.8M parameters like Found-RL's (3.82M).
    "foundrl": Preset(
        (ConvSpec(32, 3, 2, 1), ConvSpec(32, 3, 2, 1), ConvSpec(32, 3, 2, 1), ConvSpec(32, 3, 1, 1)),
        feature_dim=50,
        hidden_dim=1024,
    ),
}


def weight_init(module: nn.Module) -> None:
    """DrQ-v2's initialisation: orthogonal weights (ReLU gain for convs), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, nn.init.calculate_gain("relu"))
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Encoder(nn.Module):
    """BEV masks [B, 15, 96, 96] (uint8, or float in [0, 255]) -> flat features [B, repr_dim]."""

    def __init__(self, preset: str, in_channels: int = BEV_SHAPE[0], size: int = BEV_SHAPE[1]):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in PRESETS[preset].convs:
            layers += [nn.Conv2d(channels, spec.out_channels, spec.kernel, spec.stride, spec.padding), nn.ReLU()]
            channels = spec.out_channels
            size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
        self.convnet = nn.Sequential(*layers)
        self.repr_dim = channels * size * size
        self.apply(weight_init)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        x = bev.float().mul_(1.0 / 255.0).sub_(0.5)  # centre the masks around 0, as DrQ-v2 does for pixels
        return self.convnet(x).flatten(1)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


def trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    # LayerNorm + Tanh bounds the features whatever the conv output scale (DrQ-v2).
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class Actor(nn.Module):
    """Policy head. forward -> (mean, log_std):
    deterministic (DrQ-v2, TD3): mean is the tanh-squashed action and log_std is None;
    stochastic (SAC): mean and log_std of the Gaussian before the tanh, log_std within [-5, 2]."""

    def __init__(
        self,
        repr_dim: int,
        state_dim: int = STATE_SIZE,
        action_dim: int = ACTION_SIZE,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        stochastic: bool = False,
    ):
        super().__init__()
        self.stochastic = stochastic
        self.trunk = trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim + state_dim, hidden_dim, action_dim * (2 if stochastic else 1))
        self.apply(weight_init)

    def forward(self, feat: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.policy(torch.cat([self.trunk(feat), state], dim=-1))
        if not self.stochastic:
            return torch.tanh(out), None
        mean, raw_log_std = out.chunk(2, dim=-1)
        # A smooth clamp to [LOG_STD_MIN, LOG_STD_MAX]: unlike a hard clamp it keeps a gradient at the edges.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1.0)
        return mean, log_std

    def mode(self, feat: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The deterministic action mu(s) in [-1, 1]."""
        mean, _ = self(feat, state)
        return torch.tanh(mean) if self.stochastic else mean


class Critic(nn.Module):
    """Twin Q heads on [trunk(feat), state, action]; forward -> (Q1, Q2), each [B]."""

    def __init__(
        self,
        repr_dim: int,
        state_dim: int = STATE_SIZE,
        action_dim: int = ACTION_SIZE,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
    ):
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.q1 = mlp(feature_dim + state_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + state_dim + action_dim, hidden_dim, 1)
        self.apply(weight_init)

    def forward(
        self, feat: torch.Tensor, state: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.trunk(feat), state, action], dim=-1)
        return self.q1(h).squeeze(-1), self.q2(h).squeeze(-1)


def gaussian_log_prob(mean: torch.Tensor, std: float | torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log N(action; mean, std), summed over the action dimensions -> [B]."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    z = (action - mean) / std
    return (-0.5 * z.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


class TruncatedNormal:
    """DrQ-v2's exploration distribution: mean + clipped Gaussian noise, kept inside (-1, 1) with a
    straight-through clamp so the actor still gets the gradient of the mean at the boundary."""

    def __init__(
        self, mean: torch.Tensor, std: float | torch.Tensor, low: float = -1.0, high: float = 1.0, eps: float = 1e-6
    ):
        self.mean, self.std = mean, std
        self.low, self.high = low + eps, high - eps

    def sample(self, clip: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = (
            torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype) * self.std
        )
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        x = self.mean + noise
        return x - x.detach() + x.detach().clamp(self.low, self.high)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """Gaussian log-density (DrQ-v2 ignores the truncation's normaliser; so do we)."""
        return gaussian_log_prob(self.mean, self.std, action)


def _log_tanh_jacobian(u: torch.Tensor) -> torch.Tensor:
    # log(1 - tanh(u)^2) written stably: 2 * (log 2 - u - softplus(-2u)).
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


def tanh_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised SAC sample: a = tanh(mean + std * eps) and its log-prob [B] with the tanh correction."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * eps
    log_prob = gaussian_log_prob(mean, log_std.exp(), u) - _log_tanh_jacobian(u).sum(-1)
    return torch.tanh(u), log_prob


def log_prob_of(action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(action | s) [B] of a GIVEN action in [-1, 1] under the tanh-Gaussian (AWAG with SAC)."""
    u = torch.atanh(action.clamp(-ATANH_CLAMP, ATANH_CLAMP))
    return gaussian_log_prob(mean, log_std.exp(), u) - _log_tanh_jacobian(u).sum(-1)


def random_shift(bev: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-v2 augmentation: replicate-pad by `pad` pixels and crop back at a random integer offset
    per sample. Works on any dtype; run it on the uint8 masks (4x less memory traffic than floats)."""
    if pad <= 0:
        return bev
    n, _, h, w = bev.shape
    padded = F.pad(bev, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=bev.device).tolist()
    out = torch.empty_like(bev)
    for i, (dy, dx) in enumerate(offsets):  # one strided copy per sample, no index tensors
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


class ValueHead(nn.Module):
    """V(s) on [trunk(feat), state] (IQL's state value)."""

    def __init__(self, repr_dim: int, state_dim: int = STATE_SIZE, feature_dim: int = 50, hidden_dim: int = 1024):
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.v = mlp(feature_dim + state_dim, hidden_dim, 1)

    def forward(self, feat: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.v(torch.cat([self.trunk(feat), state], dim=-1)).squeeze(-1)
