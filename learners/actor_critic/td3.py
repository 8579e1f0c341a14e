"""TD3 (Fujimoto et al. 2018): target policy smoothing, clipped double Q, and an actor (with the
targets) updated every policy_delay critic updates; Gaussian exploration noise when acting."""

from __future__ import annotations

import torch

from configs.schema import AgentConfig
from learners.actor_critic.agent import ActorCriticAgent, frozen_copy, soft_update
from learners.actor_critic.policy import ActorCriticPolicy
from learners.losses import td3


class Td3Agent(ActorCriticAgent):
    name = "td3"

    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        super().__init__(config, device, seed)
        self.actor_target = frozen_copy(self.actor).to(self.device)

    def critic_loss(self, feat, next_feat, b, step):
        return td3.critic_loss(
            self.critic,
            self.critic_target,
            self.actor_target,
            feat,
            b["state"],
            b["action"],
            b["reward"],
            b["discount"],
            next_feat,
            b["next_state"],
            policy_noise=self.params.policy_noise,
            noise_clip=self.params.noise_clip,
            generator=self._update_rng,
        )

    def actor_loss(self, feat, b, step):
        return td3.actor_loss(self.actor, self.critic, feat, b["state"])

    def log_prob(self, feat, state, action, step):
        return td3.log_prob(self.actor, feat, state, action, self.params.exploration_noise)

    def actor_turn(self) -> bool:
        return self.update_count % self.params.policy_delay == 0

    def update_targets(self) -> None:
        super().update_targets()
        soft_update(self.actor_target, self.actor, self.config.tau)

    def modules(self):
        return super().modules() | {"actor_target": self.actor_target}


class Td3Policy(ActorCriticPolicy):
    def explore(self, feat: torch.Tensor, state: torch.Tensor, step: int) -> torch.Tensor:
        mu, _ = self.actor(feat, state)
        noise = torch.randn(mu.shape, generator=self._rng, device=self.device)
        return (mu + self.params.exploration_noise * noise).clamp(-1.0, 1.0)


def make_agent(config: AgentConfig, device: str, seed: int) -> Td3Agent:
    return Td3Agent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> Td3Policy:
    return Td3Policy(config, seed)
