"""IQL (Kostrikov et al. 2022) on the actor-critic skeleton: the critic step also fits a state
value V by expectile regression to the target critic, the Q heads regress to r + gamma V(s'), and
the actor is advantage-weighted regression to the data action (learners/losses/offline.py). No
action is ever evaluated outside the data. Acts like TD3 (Gaussian noise around mu(s))."""

from __future__ import annotations

import torch

from configs.schema import AgentConfig
from learners.actor_critic.agent import ActorCriticAgent
from learners.actor_critic.td3 import Td3Policy
from learners.losses import offline, td3
from learners.networks import PRESETS, ValueHead


class IqlAgent(ActorCriticAgent):
    name = "iql"

    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        super().__init__(config, device, seed)
        preset = PRESETS[config.network]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed + 1)
            self.value = ValueHead(
                self.encoder.repr_dim, feature_dim=preset.feature_dim, hidden_dim=preset.hidden_dim
            ).to(self.device)
        self.critic_opt.add_param_group({"params": list(self.value.parameters())})

    def critic_loss(self, feat, next_feat, b, step):
        state, action = b["state"], b["action"]
        with torch.no_grad():
            q_target = torch.min(*self.critic_target(feat, state, action))
            next_value = self.value(next_feat, b["next_state"])
        # V on detached features: the encoder learns from the TD loss only, as in every agent here.
        value_loss, metrics = offline.iql_value_loss(q_target, self.value(feat.detach(), state), self.params.expectile)
        q1, q2 = self.critic(feat, state, action)
        q_loss, q_metrics = offline.iql_critic_loss(q1, q2, b["reward"], b["discount"], next_value)
        return q_loss + value_loss, metrics | q_metrics

    def actor_loss(self, feat, b, step):
        state = b["state"]
        with torch.no_grad():
            advantage = torch.min(*self.critic_target(feat, state, b["action"])) - self.value(feat, state)
        return offline.iql_actor_loss(self.actor.mode(feat, state), b["action"], advantage, self.params.temperature)

    def log_prob(self, feat, state, action, step):
        return td3.log_prob(self.actor, feat, state, action, self.params.exploration_noise)

    def modules(self):
        return super().modules() | {"value": self.value}


def make_agent(config: AgentConfig, device: str, seed: int) -> IqlAgent:
    return IqlAgent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> Td3Policy:
    return Td3Policy(config, seed)
