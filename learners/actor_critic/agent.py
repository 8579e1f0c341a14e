"""The actor-critic update shared by DrQ-v2, SAC and TD3, with Found-RL's guidance (VMR on the
critic, AWAG on the actor). Bookkeeping only: augmentation, optimiser steps, target updates and
schedules; the mathematics is in learners/losses, and each algorithm's file says which losses.

One gradient step, top to bottom (`update`):
  1. augment the BEV (DrQ random shift) and encode it; the next observation without gradient;
  2. critic: the algorithm's TD loss (+ lambda * VMR toward the advisor's action); the encoder
     learns from the critic's loss only;
  3. actor (every step, or every policy_delay steps for TD3) on detached features: the algorithm's
     actor loss (+ iota * AWAG), then the soft target updates; SAC then steps its temperature.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from configs.schema import AgentConfig
from learners.actor_critic.networks import acting_weights, build, visible_state
from learners.batches import TransitionBatch
from learners.losses import guidance
from learners.networks import count_parameters, random_shift

logger = logging.getLogger(__name__)

FLOAT_KEYS = (
    "state",
    "next_state",
    "action",
    "reward",
    "discount",
    "vlm_action",
    "vlm_action_mask",
    "expert_action",
    "expert_action_mask",
)


def copy_tree(obj: Any, device: str | None = None) -> Any:
    """Deep copy of nested dicts/lists with every tensor cloned (to `device` if given), so that neither
    side's later in-place updates (Adam moments, parameters) can reach the other."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device or obj.device, copy=True)
    if isinstance(obj, dict):
        return {key: copy_tree(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(copy_tree(value, device) for value in obj)
    return copy.deepcopy(obj)


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- target + tau * (online - target), all tensors in one foreach call (the same values
    as one lerp_ per tensor, without a Python-level op per parameter)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


class ActorCriticAgent:
    """Subclasses (one file per algorithm) provide `critic_loss`, `actor_loss` and `log_prob`."""

    name: ClassVar[str]
    stochastic_actor: ClassVar[bool] = False
    required_labels: ClassVar[tuple[str, ...]] = ()  # the feedback it trains on is optional (masked)

    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        self.config = config
        self.params = config.params  # this algorithm's own section
        self.device = torch.device(device)
        self.batch = TransitionBatch(config.n_step, config.gamma)
        # Built on the CPU so the initial weights are the same whatever the device.
        self.encoder, self.actor, self.critic = build(config, seed, self.stochastic_actor, with_critic=True)
        self.critic_target = frozen_copy(self.critic)
        for module in (self.encoder, self.actor, self.critic, self.critic_target):
            module.to(self.device)
        # One optimiser for encoder + critic: the encoder learns from the critic's loss only. foreach:
        # one kernel per step over all tensors, as torch already does on a GPU (the same values).
        self.critic_opt = torch.optim.Adam(
            [*self.encoder.parameters(), *self.critic.parameters()], lr=config.lr, foreach=True
        )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr, foreach=True)
        self._update_rng = torch.Generator(device=self.device).manual_seed(seed)
        self.update_count = 0
        logger.info("agent %s/%s: %d parameters on %s", self.name, config.network, self.parameter_count(), self.device)

    @property
    def architecture(self) -> str:
        return self.config.network

    def parameter_count(self) -> int:
        """Trainable parameters of encoder + actor + critic (targets and temperature excluded)."""
        return sum(count_parameters(m) for m in (self.encoder, self.actor, self.critic))

    # ------------------------------------------------------------------------ the algorithm's part
    def critic_loss(
        self, feat: torch.Tensor, next_feat: torch.Tensor, b: dict[str, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def actor_loss(
        self, feat: torch.Tensor, b: dict[str, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """On detached features; `b` is the batch (state, and for offline losses the data actions)."""
        raise NotImplementedError

    def log_prob(self, feat: torch.Tensor, state: torch.Tensor, action: torch.Tensor, step: int) -> torch.Tensor:
        """log pi(action | s) [B] of a given action (AWAG's imitation term)."""
        raise NotImplementedError

    def actor_turn(self) -> bool:
        """Whether this update also steps the actor and the targets (TD3 delays them)."""
        return True

    def after_actor_step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Anything stepped after the actor (SAC: the temperature)."""
        return {}

    # ------------------------------------------------------------------------------ one update
    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        """One gradient step on a TransitionBatch; `step` (the global env-step clock) drives the schedules."""
        b = self._to_tensors(batch)
        feat = self.encoder(self._augment(b["bev"]))
        with torch.no_grad():
            next_feat = self.encoder(self._augment(b["next_bev"]))
        metrics = self._update_critic(feat, next_feat, b, step)
        if self.actor_turn():
            metrics |= self._update_actor(feat.detach(), b, step)
            self.update_targets()
        self.update_count += 1
        metrics["vlm_available"] = b["vlm_action_mask"].mean().item()
        return metrics

    def update_targets(self) -> None:
        soft_update(self.critic_target, self.critic, self.config.tau)

    def _to_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        n = len(batch["reward"])
        out = {key: torch.as_tensor(batch[key], device=self.device) for key in ("bev", "next_bev")}
        for key in FLOAT_KEYS:
            value = batch.get(key)
            if value is None and key.startswith(("vlm_", "expert_")):  # no advice or label: a zero mask
                value = np.zeros((n,) if key.endswith("_mask") else (n, 2), np.float32)
            out[key] = torch.as_tensor(value, device=self.device, dtype=torch.float32)
        out["state"], out["next_state"] = (
            visible_state(out["state"], self.config),
            visible_state(out["next_state"], self.config),
        )
        # Unadvised rows may hold anything; zero them so no nan reaches the critic through them.
        advised = out["vlm_action_mask"][:, None] > 0
        out["vlm_action"] = torch.where(advised, out["vlm_action"], torch.zeros_like(out["vlm_action"]))
        return out

    def _augment(self, bev: torch.Tensor) -> torch.Tensor:
        return random_shift(bev, self.config.augment_pad, self._update_rng)  # on uint8: the encoder scales

    def _update_critic(
        self, feat: torch.Tensor, next_feat: torch.Tensor, b: dict[str, torch.Tensor], step: int
    ) -> dict[str, float]:
        loss, metrics = self.critic_loss(feat, next_feat, b, step)
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

    def _vmr_loss(self, feat: torch.Tensor, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        q1_vlm, q2_vlm = self.critic(feat, b["state"], b["vlm_action"])
        with torch.no_grad():  # the anchor: the critic at the batch action
            q1_data, q2_data = self.critic(feat, b["state"], b["action"])
        return guidance.vmr_loss(q1_vlm, q2_vlm, q1_data, q2_data, b["vlm_action_mask"], self.config.guidance.vmr_delta)

    def _update_actor(self, feat: torch.Tensor, b: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        loss, metrics = self.actor_loss(feat, b, step)
        g = self.config.guidance
        if g.awag_weight > 0:
            iota = guidance.awag_iota(step, g.awag_weight, g.awag_decay_steps, g.awag_power, g.awag_schedule)
            loss, awag_metrics = self._add_awag(loss, feat, b, step, iota)
            metrics |= awag_metrics | {"awag_iota": iota}
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return metrics | self.after_actor_step(metrics)

    def _add_awag(
        self, base_loss: torch.Tensor, feat: torch.Tensor, b: dict[str, torch.Tensor], step: int, iota: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        g, state, vlm_action = self.config.guidance, b["state"], b["vlm_action"]
        with torch.no_grad():  # the advantage of the advice over mu(s) only weighs the term
            q_pi_min = torch.min(*self.critic(feat, state, self.actor.mode(feat, state)))
            q_vlm_min = torch.min(*self.critic(feat, state, vlm_action))
        scaled, metrics = guidance.scaled_base_actor_loss(base_loss, q_pi_min, g.bc_alpha)
        awag, awag_metrics = guidance.awag_loss(
            q_vlm_min,
            q_pi_min,
            self.log_prob(feat, state, vlm_action, step),
            b["vlm_action_mask"],
            g.awag_temperature,
            g.awag_max_weight,
        )
        return scaled + iota * awag, metrics | awag_metrics

    # -------------------------------------------------------------------------------- weights
    def policy_weights(self) -> dict[str, torch.Tensor]:
        """CPU copies of what acting needs: the encoder and the actor."""
        return acting_weights(self.encoder, self.actor)

    def modules(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond modules and optimisers (SAC: log_alpha)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training exactly, as a CPU snapshot (tensors, numbers, strings)."""
        state: dict[str, Any] = {
            "algorithm": self.name,
            "network": self.architecture,
            "update_count": self.update_count,
            "update_rng": self._update_rng.get_state(),
        }
        state |= {name: module.state_dict() for name, module in self.modules().items()}
        state |= {name: opt.state_dict() for name, opt in self.optimizers().items()}
        state |= self.extra_state()
        return copy_tree(state, device="cpu")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        found = (state.get("algorithm"), state.get("network"))
        if found != (self.name, self.architecture):
            raise ValueError(f"checkpoint is {found[0]}/{found[1]} but this agent is {self.name}/{self.architecture}")
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        for name, opt in self.optimizers().items():
            # Optimizer.load_state_dict keeps tensors already on the right device by reference: copy them.
            opt.load_state_dict(copy_tree(state[name]))
        self.load_extra_state(state)
        self.update_count = int(state["update_count"])
        # Generator states must be CPU byte tensors even if the checkpoint was mapped to a GPU.
        self._update_rng.set_state(state["update_rng"].cpu())
