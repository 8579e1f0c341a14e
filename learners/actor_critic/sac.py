"""SAC (Haarnoja et al. 2018): a tanh-Gaussian actor, the soft clipped double-Q target, and a
temperature learned toward the target entropy -|A|."""

from __future__ import annotations

import math

import torch

from configs.schema import AgentConfig
from envs.spaces import ACTION_SIZE
from learners.actor_critic.agent import ActorCriticAgent
from learners.actor_critic.policy import ActorCriticPolicy
from learners.losses import sac
from learners.networks import tanh_gaussian_sample


class SacAgent(ActorCriticAgent):
    name = "sac"
    stochastic_actor = True

    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        super().__init__(config, device, seed)
        self.log_alpha = torch.tensor(math.log(self.params.init_temperature), device=self.device, requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.lr)
        self.target_entropy = -float(ACTION_SIZE)

    def _alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def critic_loss(self, feat, next_feat, b, step):
        return sac.critic_loss(
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
            alpha=self._alpha(),
            generator=self._update_rng,
        )

    def actor_loss(self, feat, b, step):
        return sac.actor_loss(
            self.actor, self.critic, feat, b["state"], alpha=self._alpha(), generator=self._update_rng
        )

    def log_prob(self, feat, state, action, step):
        return sac.log_prob(self.actor, feat, state, action)

    def after_actor_step(self, metrics: dict[str, float]) -> dict[str, float]:
        loss, temperature_metrics = sac.temperature_loss(self.log_alpha, metrics["log_prob"], self.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.alpha_opt.step()
        return temperature_metrics

    def optimizers(self):
        return super().optimizers() | {"alpha_opt": self.alpha_opt}

    def extra_state(self):
        return {"log_alpha": self.log_alpha}

    def load_extra_state(self, state):
        with torch.no_grad():  # in place: alpha_opt holds this very tensor
            self.log_alpha.copy_(state["log_alpha"])


class SacPolicy(ActorCriticPolicy):
    stochastic_actor = True

    def explore(self, feat: torch.Tensor, state: torch.Tensor, step: int) -> torch.Tensor:
        mean, log_std = self.actor(feat, state)
        action, _ = tanh_gaussian_sample(mean, log_std, self._rng)
        return action


def make_agent(config: AgentConfig, device: str, seed: int) -> SacAgent:
    return SacAgent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> SacPolicy:
    return SacPolicy(config, seed)
