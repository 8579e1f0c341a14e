"""The Agent: networks, optimisers and the update step of DrQ-v2, SAC or TD3 with Found-RL guidance.

Bookkeeping only (augmentation, optimiser steps, target updates, schedules); the mathematics is in
learners/losses. As in DrQ-v2 the encoder is trained by the critic only, the actor sees detached
features, and the target critic reuses the online encoder's features of the next observation.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from configs.schema import AgentConfig
from learners.losses import drqv2, guidance, sac, td3
from learners.networks import (
    ACTION_DIM,
    PRESETS,
    Actor,
    Critic,
    Encoder,
    TruncatedNormal,
    count_parameters,
    random_shift,
    tanh_gaussian_sample,
)

logger = logging.getLogger(__name__)

FLOAT_KEYS = ("state", "next_state", "action", "reward", "discount", "vlm_action", "vlm_action_mask")


def _copy_tree(obj: Any, device: str | None = None) -> Any:
    """Deep copy of nested dicts/lists with every tensor cloned (to `device` if given), so that neither
    side's later in-place updates (Adam moments, parameters) can reach the other."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device or obj.device, copy=True)
    if isinstance(obj, dict):
        return {key: _copy_tree(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_tree(value, device) for value in obj)
    return copy.deepcopy(obj)


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for target_param, param in zip(target.parameters(), online.parameters()):
            target_param.lerp_(param, tau)


class Agent:
    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        self.config = config
        self.device = torch.device(device)
        self.algorithm = config.algorithm
        preset = PRESETS[config.network]
        # Seed the initialisation without disturbing the caller's global RNG; build on the CPU so the
        # initial weights are the same whatever the device.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            self.encoder = Encoder(config.network)
            dims = {"feature_dim": preset.feature_dim, "hidden_dim": preset.hidden_dim}
            self.actor = Actor(self.encoder.repr_dim, stochastic=self.algorithm == "sac", **dims)
            self.critic = Critic(self.encoder.repr_dim, **dims)
        self.critic_target = self._frozen_copy(self.critic)
        self.actor_target = self._frozen_copy(self.actor) if self.algorithm == "td3" else None
        for module in (self.encoder, self.actor, self.critic):
            module.to(self.device)

        # One optimiser for encoder + critic: the encoder learns from the critic's loss only.
        self.critic_opt = torch.optim.Adam([*self.encoder.parameters(), *self.critic.parameters()], lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.log_alpha: torch.Tensor | None = None
        self.alpha_opt: torch.optim.Optimizer | None = None
        if self.algorithm == "sac":
            self.log_alpha = torch.tensor(math.log(config.init_temperature), device=self.device, requires_grad=True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.lr)
        self.target_entropy = -float(ACTION_DIM)

        # Separate streams so acting does not shift the randomness of the updates (and vice versa).
        self._update_rng = torch.Generator(device=self.device).manual_seed(seed)
        self._act_rng = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.update_count = 0
        logger.info("agent %s/%s: %d parameters on %s", self.algorithm, config.network,
                    self.parameter_count(), self.device)

    def _frozen_copy(self, module: nn.Module) -> nn.Module:
        target = copy.deepcopy(module).to(self.device)
        target.requires_grad_(False)
        return target

    def parameter_count(self) -> int:
        """Trainable parameters of encoder + actor + critic (targets and temperature excluded)."""
        return sum(count_parameters(m) for m in (self.encoder, self.actor, self.critic))

    # ----------------------------------------------------------------------------------------- acting
    def exploration_std(self, step: int) -> float:
        c = self.config
        return drqv2.exploration_std(step, c.std_start, c.std_end, c.std_steps)

    @torch.no_grad()
    def act(self, bev: np.ndarray, state: np.ndarray, step: int, explore: bool) -> np.ndarray:
        """Actions [B, 2] in [-1, 1] for observations bev [B, 15, 96, 96] uint8 and state [B, 10]."""
        feat = self.encoder(torch.as_tensor(bev, device=self.device))
        state_t = torch.as_tensor(state, device=self.device, dtype=torch.float32)
        if not explore:
            action = self.actor.mode(feat, state_t)
        elif self.algorithm == "sac":
            mean, log_std = self.actor(feat, state_t)
            action, _ = tanh_gaussian_sample(mean, log_std, self._act_rng)
        elif self.algorithm == "drqv2":
            mu, _ = self.actor(feat, state_t)
            action = TruncatedNormal(mu, self.exploration_std(step)).sample(generator=self._act_rng)
        else:  # td3: Gaussian exploration noise around the deterministic action
            mu, _ = self.actor(feat, state_t)
            noise = torch.randn(mu.shape, generator=self._act_rng, device=self.device)
            action = (mu + self.config.exploration_noise * noise).clamp(-1.0, 1.0)
        return action.cpu().numpy().astype(np.float32)

    # --------------------------------------------------------------------------------------- updating
    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        """One gradient step on a replay batch; `step` (env steps) drives the schedules."""
        b = self._to_tensors(batch)
        obs = self._augment(b["bev"])
        feat = self.encoder(obs)
        with torch.no_grad():
            next_feat = self.encoder(self._augment(b["next_bev"]))

        metrics = self._update_critic(feat, next_feat, b, step)
        # TD3 delays the actor and the targets; DrQ-v2 and SAC update them every step.
        if self.algorithm != "td3" or self.update_count % self.config.policy_delay == 0:
            metrics |= self._update_actor(feat.detach(), b, step)
            soft_update(self.critic_target, self.critic, self.config.tau)
            if self.actor_target is not None:
                soft_update(self.actor_target, self.actor, self.config.tau)
        self.update_count += 1
        metrics["vlm_available"] = b["vlm_action_mask"].mean().item()
        return metrics

    def _to_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        n = len(batch["reward"])
        out = {key: torch.as_tensor(batch[key], device=self.device) for key in ("bev", "next_bev")}
        for key in FLOAT_KEYS:
            value = batch.get(key)
            if value is None and key.startswith("vlm_"):  # no advice in this batch: a zero mask
                value = np.zeros((n, ACTION_DIM) if key == "vlm_action" else (n,), np.float32)
            out[key] = torch.as_tensor(value, device=self.device, dtype=torch.float32)
        # Unadvised rows may hold anything; zero them so no nan reaches a (masked) loss term.
        advised = out["vlm_action_mask"][:, None] > 0
        out["vlm_action"] = torch.where(advised, out["vlm_action"], torch.zeros_like(out["vlm_action"]))
        return out

    def _augment(self, bev: torch.Tensor) -> torch.Tensor:
        return random_shift(bev, self.config.augment_pad, self._update_rng)  # on uint8: the encoder scales

    def _update_critic(self, feat: torch.Tensor, next_feat: torch.Tensor, b: dict[str, torch.Tensor],
                       step: int) -> dict[str, float]:
        loss, metrics = self._critic_loss(feat, next_feat, b, step)
        g = self.config.guidance
        if g.vmr_weight > 0:
            lam = guidance.vmr_lambda(step, g.vmr_weight, g.vmr_hold_steps, g.vmr_decay_end, g.vmr_schedule)
            vmr, vmr_metrics = self._vmr_loss(feat, b)
            loss = loss + lam * vmr
            metrics |= vmr_metrics | {"vmr_lambda": lam}
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return metrics

    def _critic_loss(self, feat: torch.Tensor, next_feat: torch.Tensor, b: dict[str, torch.Tensor],
                     step: int) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        args = (feat, b["state"], b["action"], b["reward"], b["discount"], next_feat, b["next_state"])
        if self.algorithm == "drqv2":
            return drqv2.critic_loss(self.critic, self.critic_target, self.actor, *args,
                                     std=self.exploration_std(step), std_clip=c.std_clip, generator=self._update_rng)
        if self.algorithm == "sac":
            return sac.critic_loss(self.critic, self.critic_target, self.actor, *args,
                                   alpha=self.log_alpha.exp().detach(), generator=self._update_rng)
        return td3.critic_loss(self.critic, self.critic_target, self.actor_target, *args,
                               policy_noise=c.policy_noise, noise_clip=c.noise_clip, generator=self._update_rng)

    def _vmr_loss(self, feat: torch.Tensor, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        q1_vlm, q2_vlm = self.critic(feat, b["state"], b["vlm_action"])
        with torch.no_grad():  # the anchor: the critic at the batch action
            q1_data, q2_data = self.critic(feat, b["state"], b["action"])
        return guidance.vmr_loss(q1_vlm, q2_vlm, q1_data, q2_data, b["vlm_action_mask"], self.config.guidance.vmr_delta)

    def _update_actor(self, feat: torch.Tensor, b: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        loss, metrics = self._actor_loss(feat, b["state"], step)
        g = self.config.guidance
        if g.awag_weight > 0:
            iota = guidance.awag_iota(step, g.awag_weight, g.awag_decay_steps, g.awag_power, g.awag_schedule)
            loss, awag_metrics = self._add_awag(loss, feat, b, step, iota)
            metrics |= awag_metrics | {"awag_iota": iota}
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        if self.algorithm == "sac":
            metrics |= self._update_temperature(metrics["log_prob"])
        return metrics

    def _actor_loss(self, feat: torch.Tensor, state: torch.Tensor,
                    step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.algorithm == "drqv2":
            return drqv2.actor_loss(self.actor, self.critic, feat, state, std=self.exploration_std(step),
                                    std_clip=self.config.std_clip, generator=self._update_rng)
        if self.algorithm == "sac":
            return sac.actor_loss(self.actor, self.critic, feat, state, alpha=self.log_alpha.exp().detach(),
                                  generator=self._update_rng)
        return td3.actor_loss(self.actor, self.critic, feat, state)

    def _add_awag(self, base_loss: torch.Tensor, feat: torch.Tensor, b: dict[str, torch.Tensor], step: int,
                  iota: float) -> tuple[torch.Tensor, dict[str, float]]:
        g, state, vlm_action = self.config.guidance, b["state"], b["vlm_action"]
        with torch.no_grad():  # the advantage of the advice over mu(s) only weighs the term
            q_pi_min = torch.min(*self.critic(feat, state, self.actor.mode(feat, state)))
            q_vlm_min = torch.min(*self.critic(feat, state, vlm_action))
        scaled, metrics = guidance.scaled_base_actor_loss(base_loss, q_pi_min, self.config.bc_alpha)
        awag, awag_metrics = guidance.awag_loss(q_vlm_min, q_pi_min, self._vlm_log_prob(feat, state, vlm_action, step),
                                                b["vlm_action_mask"], g.awag_temperature, g.awag_max_weight)
        return scaled + iota * awag, metrics | awag_metrics

    def _vlm_log_prob(self, feat: torch.Tensor, state: torch.Tensor, vlm_action: torch.Tensor,
                      step: int) -> torch.Tensor:
        if self.algorithm == "sac":
            return sac.log_prob(self.actor, feat, state, vlm_action)
        if self.algorithm == "drqv2":
            return drqv2.log_prob(self.actor, feat, state, vlm_action, self.exploration_std(step))
        return td3.log_prob(self.actor, feat, state, vlm_action, self.config.exploration_noise)

    def _update_temperature(self, mean_log_prob: float) -> dict[str, float]:
        loss, metrics = sac.temperature_loss(self.log_alpha, mean_log_prob, self.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.alpha_opt.step()
        return metrics

    # ------------------------------------------------------------------------------------ checkpoints
    def policy_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of what acting needs: the encoder and the actor."""
        modules = {"encoder": self.encoder, "actor": self.actor}
        return {f"{name}.{key}": value.detach().to("cpu", copy=True)
                for name, module in modules.items() for key, value in module.state_dict().items()}

    def load_policy_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in (("encoder", self.encoder), ("actor", self.actor)):
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def _modules(self) -> dict[str, nn.Module]:
        modules = {"encoder": self.encoder, "actor": self.actor, "critic": self.critic,
                   "critic_target": self.critic_target}
        if self.actor_target is not None:
            modules["actor_target"] = self.actor_target
        return modules

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt}
        if self.alpha_opt is not None:
            optimizers["alpha_opt"] = self.alpha_opt
        return optimizers

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training exactly, as a CPU snapshot."""
        state: dict[str, Any] = {"algorithm": self.algorithm, "network": self.config.network,
                                 "update_count": self.update_count,
                                 "update_rng": self._update_rng.get_state(), "act_rng": self._act_rng.get_state()}
        state |= {name: module.state_dict() for name, module in self._modules().items()}
        state |= {name: opt.state_dict() for name, opt in self._optimizers().items()}
        if self.log_alpha is not None:
            state["log_alpha"] = self.log_alpha
        return _copy_tree(state, device="cpu")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        found = (state["algorithm"], state["network"])
        if found != (self.algorithm, self.config.network):
            raise ValueError(f"checkpoint is {found[0]}/{found[1]} but this agent is "
                             f"{self.algorithm}/{self.config.network}")
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        for name, opt in self._optimizers().items():
            # Optimizer.load_state_dict keeps tensors already on the right device by reference: copy them.
            opt.load_state_dict(_copy_tree(state[name]))
        if self.log_alpha is not None:
            with torch.no_grad():  # in place: alpha_opt holds this very tensor
                self.log_alpha.copy_(state["log_alpha"])
        self.update_count = int(state["update_count"])
        # Generator states must be CPU byte tensors even if the checkpoint was mapped to a GPU.
        self._update_rng.set_state(state["update_rng"].cpu())
        self._act_rng.set_state(state["act_rng"].cpu())
