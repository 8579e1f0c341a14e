"""TD3+BC (Fujimoto & Gu 2021): TD3's critic, and an actor loss that adds behaviour cloning to the
normalised Q term (learners/losses/offline.td3bc_actor_loss). Acts like TD3."""

from __future__ import annotations

from configs.schema import AgentConfig
from learners.actor_critic.td3 import Td3Agent, Td3Policy
from learners.losses import offline


class Td3BcAgent(Td3Agent):
    name = "td3bc"

    def actor_loss(self, feat, b, step):
        mu, _ = self.actor(feat, b["state"])
        q1, _ = self.critic(feat, b["state"], mu)
        target = offline.imitation_target(b["action"], b["expert_action"], b["expert_action_mask"])
        return offline.td3bc_actor_loss(q1, mu, target, self.params.alpha)


def make_agent(config: AgentConfig, device: str, seed: int) -> Td3BcAgent:
    return Td3BcAgent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> Td3Policy:
    return Td3Policy(config, seed)
