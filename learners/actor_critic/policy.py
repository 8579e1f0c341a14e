"""Acting with an actor-critic agent's encoder and actor: no critic, no optimisers. Feed-forward,
so the carry is None. Each algorithm's file supplies its exploration (`explore`)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from configs.schema import AgentConfig
from learners.actor_critic.networks import build, load_acting_weights, visible_state


class ActorCriticPolicy:
    stochastic_actor: ClassVar[bool] = False

    def __init__(self, config: AgentConfig, seed: int = 0, device: str = "cpu"):
        self.config = config
        self.params = config.params
        self.device = torch.device(device)
        self.encoder, self.actor, _ = build(config, seed, self.stochastic_actor, with_critic=False)
        self.encoder.to(self.device).eval()
        self.actor.to(self.device).eval()
        # Its own stream: exploring does not shift any other randomness of the process.
        self._rng = torch.Generator(device=self.device).manual_seed(seed + 1)

    def initial_carry(self, batch_size: int) -> None:
        return None

    @torch.no_grad()
    def act(self, carry: None, obs, is_first: np.ndarray, *, explore: bool, step: int) -> tuple[None, np.ndarray]:
        """Actions [B, 2] in [-1, 1] for observations bev [B, 15, 96, 96] uint8 and state [B, 10]."""
        feat = self.encoder(torch.as_tensor(obs["bev"], device=self.device))
        state = visible_state(torch.as_tensor(obs["state"], device=self.device, dtype=torch.float32), self.config)
        action = self.explore(feat, state, step) if explore else self.actor.mode(feat, state)
        return carry, action.cpu().numpy().astype(np.float32)

    def explore(self, feat: torch.Tensor, state: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        load_acting_weights(weights, self.encoder, self.actor)
