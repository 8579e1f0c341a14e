"""Behaviour cloning: the encoder and the deterministic actor regressed to the imitation target
(learners/losses/offline.bc_loss), one optimiser for both, no critic training. The critic stays
in the checkpoint untrained: fine-tuning a BC actor online starts from a critic that knows nothing,
the naive hand-over that offline-to-online learning is measured against."""

from __future__ import annotations

import numpy as np
import torch

from configs.schema import AgentConfig
from learners.actor_critic.agent import ActorCriticAgent
from learners.actor_critic.td3 import Td3Policy
from learners.losses import offline, td3


class BcAgent(ActorCriticAgent):
    name = "bc"

    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        super().__init__(config, device, seed)
        self.bc_opt = torch.optim.Adam([*self.encoder.parameters(), *self.actor.parameters()], lr=config.lr)

    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        b = self._to_tensors(batch)
        predicted = self.actor.mode(self.encoder(self._augment(b["bev"])), b["state"])
        target = offline.imitation_target(b["action"], b["expert_action"], b["expert_action_mask"])
        loss, metrics = offline.bc_loss(predicted, target)
        self.bc_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.bc_opt.step()
        self.update_count += 1
        return metrics | {"expert_labels": b["expert_action_mask"].mean().item()}

    def log_prob(self, feat, state, action, step):
        return td3.log_prob(self.actor, feat, state, action, self.params.exploration_noise)

    def optimizers(self):
        return super().optimizers() | {"bc_opt": self.bc_opt}


class BcPolicy(Td3Policy):
    """Acts like TD3: mu(s) plus Gaussian noise (exploration_noise) when exploring."""


def make_agent(config: AgentConfig, device: str, seed: int) -> BcAgent:
    return BcAgent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> BcPolicy:
    return BcPolicy(config, seed)
