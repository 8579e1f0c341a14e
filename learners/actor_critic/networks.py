"""The networks of an actor-critic agent, built identically by the agent and by its policy: the
same seed gives the same encoder and actor weights on both sides."""

from __future__ import annotations

import torch
from torch import nn

from configs.schema import AgentConfig
from learners.networks import PRESETS, Actor, Critic, Encoder


def build(config: AgentConfig, seed: int, stochastic: bool, with_critic: bool) -> tuple[Encoder, Actor, Critic | None]:
    """Encoder, actor (and critic) initialised from `seed`, on the CPU, without touching the
    caller's global RNG."""
    preset = PRESETS[config.network]
    dims = {"feature_dim": preset.feature_dim, "hidden_dim": preset.hidden_dim}
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        encoder = Encoder(config.network)
        actor = Actor(encoder.repr_dim, stochastic=stochastic, **dims)
        critic = Critic(encoder.repr_dim, **dims) if with_critic else None
    return encoder, actor, critic


CONTROL_FEATURES = slice(0, 3)  # envs/observation.state_vector: throttle, steer, brake of the last action


def visible_state(state: torch.Tensor, config: AgentConfig) -> torch.Tensor:
    """The state the networks see: without the previous control when agent.control_inputs is false."""
    if config.control_inputs:
        return state
    state = state.clone()
    state[..., CONTROL_FEATURES] = 0.0
    return state


def acting_weights(encoder: nn.Module, actor: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of what acting needs, keyed `encoder.*` and `actor.*`."""
    return {
        f"{name}.{key}": value.detach().to("cpu", copy=True)
        for name, module in (("encoder", encoder), ("actor", actor))
        for key, value in module.state_dict().items()
    }


def load_acting_weights(weights: dict[str, torch.Tensor], encoder: nn.Module, actor: nn.Module) -> None:
    for name, module in (("encoder", encoder), ("actor", actor)):
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
