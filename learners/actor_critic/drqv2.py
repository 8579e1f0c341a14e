"""DrQ-v2 (Yarats et al. 2021): a deterministic actor explored with a scheduled, clipped Gaussian.
The exploration std follows the run's global env-step clock, on the learner and on every worker."""

from __future__ import annotations

import torch

from configs.schema import AgentConfig
from learners.actor_critic.agent import ActorCriticAgent
from learners.actor_critic.policy import ActorCriticPolicy
from learners.losses import drqv2
from learners.networks import TruncatedNormal


def exploration_std(params, step: int) -> float:
    return drqv2.exploration_std(step, params.std_start, params.std_end, params.std_steps)


class DrQv2Agent(ActorCriticAgent):
    name = "drqv2"

    def critic_loss(self, feat, next_feat, b, step):
        return drqv2.critic_loss(
            self.critic,
            self.critic_target,
            self.actor,
            feat,
            b["state"],
            b["action"],
            b["reward"],
            b["discount"],
            next_feat,
            b["next_state"],
            std=exploration_std(self.params, step),
            std_clip=self.params.std_clip,
            generator=self._update_rng,
        )

    def actor_loss(self, feat, b, step):
        return drqv2.actor_loss(
            self.actor,
            self.critic,
            feat,
            b["state"],
            std=exploration_std(self.params, step),
            std_clip=self.params.std_clip,
            generator=self._update_rng,
        )

    def log_prob(self, feat, state, action, step):
        return drqv2.log_prob(self.actor, feat, state, action, exploration_std(self.params, step))


class DrQv2Policy(ActorCriticPolicy):
    def explore(self, feat: torch.Tensor, state: torch.Tensor, step: int) -> torch.Tensor:
        mu, _ = self.actor(feat, state)
        return TruncatedNormal(mu, exploration_std(self.params, step)).sample(generator=self._rng)


def make_agent(config: AgentConfig, device: str, seed: int) -> DrQv2Agent:
    return DrQv2Agent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> DrQv2Policy:
    return DrQv2Policy(config, seed)
