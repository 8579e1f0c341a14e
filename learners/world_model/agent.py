"""VL-SAFE's agent: a world model that learns the dynamics with reward, cost, continue and safety, and a
reward and a cost critic that train the policy in imagined rollouts, weighted by the predicted safety.
The mathematics is in learners/losses/world_model.py; this file is bookkeeping.

One update, top to bottom (`update`, on a SequenceBatch of replayed rows):
  1. the world model filters the sequences (posterior states), reconstructs the BEV and the state, and
     predicts each step's reward, cost, continue and safety; safety only where a label exists;
  2. from every posterior state the actor imagines `horizon` steps in the prior (no gradient reaches
     the model); the reward and cost critics give lambda-returns and advantages there;
  3. both critics regress to their lambda-returns (plus the pull toward their slow copies);
  4. the actor moves toward w(s, a) pi_b(a|s): the weighted likelihood of the imagined actions, and of
     the replayed actions on the replayed states (pi_b, the data's behaviour) with the same weights.

Row convention (learners/replay.py): row t holds o_t and the transition from it (a_t, r_t, c_t). The
model's state s_t has seen o_t and a_{t-1}; its reward and cost heads predict what arriving at s_t
gave (r_{t-1}, c_{t-1}), its continue head whether s_t is not terminal, its safety head o_t's label.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from configs.schema import AgentConfig
from learners.actor_critic.agent import copy_tree, frozen_copy, soft_update
from learners.actor_critic.networks import visible_state
from learners.batches import SequenceBatch
from learners.losses import world_model as wm
from learners.networks import count_parameters
from learners.world_model.networks import mlp, zero_output
from learners.world_model.policy import WorldModelPolicy, acting_weights, build_acting
from learners.world_model.presets import PRESETS

logger = logging.getLogger(__name__)

ALGORITHM = "vlsafe"


class NonFiniteLoss(ArithmeticError):
    """A loss term is not finite: no optimiser stepped on it."""


def downsample_masks(bev: torch.Tensor, px: int) -> torch.Tensor:
    """uint8 masks [N, C, S, S] 2x max-pooled to [N, C, px, px] when px = S / 2 (the debug preset's
    target), as the maximum of the four strided views: ~10x faster than amax or max_pool2d here."""
    if px == bev.shape[-1]:
        return bev
    if 2 * px != bev.shape[-1]:
        raise ValueError(f"the decoder reconstructs {px} px, which is neither the BEV's {bev.shape[-1]} nor half of it")
    return torch.maximum(
        torch.maximum(bev[..., ::2, ::2], bev[..., 1::2, ::2]), torch.maximum(bev[..., ::2, 1::2], bev[..., 1::2, 1::2])
    )


def previous_step(x: torch.Tensor) -> torch.Tensor:
    """[B, T, ...] -> the value of step t - 1 at each t, zero at t = 0 (what led to, or arriving at, t gave)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)


def check_finite(losses: dict[str, torch.Tensor]) -> None:
    bad = [name for name, value in losses.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise NonFiniteLoss(", ".join(f"{name}={losses[name].item()}" for name in bad))


class WorldModelAgent:
    name = ALGORITHM

    def __init__(self, config: AgentConfig, device: str = "cpu", seed: int = 0):
        self.config, self.params = config, config.params
        self.device = torch.device(device)
        self.batch = SequenceBatch(self.params.sequence_length)
        # The labels the objective needs (the Learner refuses a run that has no source of them).
        self.required_labels = ("safety",) if self.params.safety_weighting == "vlsafe" else ()
        self.size = PRESETS[self.params.preset]
        self.model, self.actor = build_acting(config, seed)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed + 7)
            self.reward_critic = zero_output(mlp(self.size.feature_dim, self.size.units, wm.TWOHOT_BINS))
            self.cost_critic = zero_output(mlp(self.size.feature_dim, self.size.units, wm.TWOHOT_BINS))
        self.reward_critic_slow = frozen_copy(self.reward_critic)
        self.cost_critic_slow = frozen_copy(self.cost_critic)
        for module in self.modules().values():
            module.to(self.device)
        p = self.params
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=p.model_lr, eps=1e-8)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=p.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(
            [*self.reward_critic.parameters(), *self.cost_critic.parameters()], lr=p.critic_lr, eps=1e-5
        )
        self.bins = wm.twohot_bins(device=self.device)
        self._rng = torch.Generator(device=self.device).manual_seed(seed)
        self.update_count = 0
        # Return scales (negative: not measured yet) and SafeDreamer's multiplier and penalty.
        self.reward_scale, self.cost_scale = -1.0, -1.0
        self.lagrange, self.penalty = p.lagrange_init, p.penalty_init
        self._cost_slope = 0.0  # dPsi/dg of the last update (lagrangian weighting)
        logger.info(
            "agent %s (%s, %s weighting): %d parameters on %s",
            self.name,
            p.preset,
            p.safety_weighting,
            self.parameter_count(),
            self.device,
        )

    @property
    def architecture(self) -> str:
        """What a checkpoint must match to load (agent.init_from and resumes)."""
        return f"world_model/{self.params.preset}"

    def parameter_count(self) -> int:
        return sum(count_parameters(m) for m in (self.model, self.actor, self.reward_critic, self.cost_critic))

    # ------------------------------------------------------------------------------ one update
    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        """One step of the model, the critics and the actor. A non-finite loss term stops the update
        before that term's optimiser steps (the steps before it in this update have happened) and is
        reported as a non-finite metric named after it: the learner then stops the run, and the last
        complete checkpoint is what a resume starts from."""
        b = self._to_tensors(batch)
        try:
            metrics, start, replayed = self._update_model(b)
            metrics |= self._update_behaviour(start, replayed, b)
            self.update_count += 1
        except NonFiniteLoss as err:
            logger.error(
                "update %d: non-finite loss %s; the update stopped before its optimiser step",
                self.update_count + 1,
                err,
            )
            return {f"nonfinite/{term.split('=')[0]}": float("nan") for term in str(err).split(", ")}
        return metrics

    def _to_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        t = {
            key: torch.as_tensor(batch[key], device=self.device)
            for key in ("bev", "is_first", "is_last", "is_terminal")
        }
        for key in ("state", "action", "reward", "cost", "safety", "safety_mask"):
            t[key] = torch.as_tensor(batch[key], device=self.device, dtype=torch.float32)
        t["state"] = visible_state(t["state"], self.config)
        # The action that led to each step: the previous row's (zero at the sequence start; the RSSM
        # zeroes it again at is_first).
        t["prev_action"] = previous_step(t["action"])
        return t

    def _update_model(self, b: dict[str, torch.Tensor]):
        p = self.params
        post = self.model.observe(b["bev"], b["state"], b["prev_action"], b["is_first"], self._rng)
        feat = self.model.features(post["h"], post["z"])
        losses, metrics = self._model_losses(feat, post, b)
        check_finite(losses)
        total = sum(losses.values())
        self.model_opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), p.grad_clip)
        self.model_opt.step()
        metrics |= {f"model/{name}": value.item() for name, value in losses.items()}
        metrics |= {"model/loss": total.item(), "model/grad_norm": grad_norm.item()}
        return metrics, (post["h"].detach(), post["z"].detach()), feat.detach()

    def _model_losses(self, feat: torch.Tensor, post: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
        p, m = self.params, self.model
        arrived = torch.ones_like(b["reward"])  # steps whose reward/cost target is the previous row's
        arrived[:, 0] = 0.0
        arrived = arrived * (~b["is_first"]).float()
        prev_reward, prev_cost = previous_step(b["reward"]), previous_step(b["cost"])
        flat = feat.flatten(0, 1)
        bev_target = downsample_masks(b["bev"].flatten(0, 1), self.size.decoder_px).float().div_(255.0)
        kl, kl_metrics = wm.kl_balance(post["post"], post["prior"], p.free_bits, p.kl_dynamics, p.kl_representation)
        losses = {
            "image": p.image_scale * wm.image_loss(torch.sigmoid(m.bev_decoder(flat)), bev_target),
            "state": (m.state_decoder(flat) - wm.symlog(b["state"].flatten(0, 1))).square().sum(-1).mean(),
            "reward": wm.masked_mean(wm.twohot_loss(m.reward_head(feat), prev_reward, self.bins), arrived),
            "cost": wm.bernoulli_loss(m.cost_head(feat).squeeze(-1), prev_cost.clamp(0, 1), arrived),
            "continue": F.binary_cross_entropy_with_logits(
                m.continue_head(feat).squeeze(-1), (~b["is_terminal"]).float()
            ),
            "safety": p.safety_scale
            * wm.bernoulli_loss(m.safety_head(feat).squeeze(-1), b["safety"], b["safety_mask"]),
            "kl": kl,
        }
        metrics = {"model/kl_value": kl_metrics["kl"], "safety_labels": b["safety_mask"].mean().item()}
        return losses, metrics

    # ------------------------------------------------------------------ critics and actor
    def _update_behaviour(
        self, start: tuple[torch.Tensor, torch.Tensor], replayed: torch.Tensor, b: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        p = self.params
        start_cont = (~b["is_terminal"]).float().flatten(0, 1)  # a terminal start imagines nothing real
        traj = self._imagine(start[0].flatten(0, 1), start[1].flatten(0, 1), start_cont)
        weight = wm.trajectory_weight(traj["cont"], self.config.gamma)
        r_value, c_value = self._values(traj["feat"])
        r_return = wm.lambda_returns(traj["reward"], traj["cont"], r_value, self.config.gamma, p.return_lambda)
        c_return = wm.lambda_returns(traj["cost"], traj["cont"], c_value, self.config.gamma, p.return_lambda)
        self.reward_scale = wm.percentile_scale(r_return, self.reward_scale, p.return_norm_decay)
        self.cost_scale = wm.percentile_scale(c_return, self.cost_scale, p.return_norm_decay)
        metrics = self._update_critics(traj["feat"][:, :-1], r_return, c_return, weight)
        weight_metrics = self._step_lagrangian(c_return) if p.safety_weighting == "lagrangian" else {}
        w = self._policy_weights(traj["safety"][:, :-1], r_return - r_value[:, :-1], c_return - c_value[:, :-1])
        actor_terms = {"imagined": (traj["feat"][:, :-1], traj["action"], w, weight)}
        if p.behaviour_weight > 0:
            actor_terms["replayed"] = self._replayed_term(replayed, b)
        metrics |= self._update_actor(actor_terms) | weight_metrics
        metrics |= {
            "imagined/reward": traj["reward"][:, 1:].mean().item(),
            "imagined/cost": traj["cost"][:, 1:].mean().item(),
            "imagined/safety": traj["safety"].mean().item(),
            "return_scale/reward": self.reward_scale,
            "return_scale/cost": self.cost_scale,
        }
        return metrics

    @torch.no_grad()
    def _imagine(self, h: torch.Tensor, z: torch.Tensor, start_cont: torch.Tensor) -> dict[str, torch.Tensor]:
        """`horizon` steps of the actor in the model from each start state: features [N, H+1, F],
        actions [N, H], and per arrived step reward, cost, continue [N, H+1] (index 0: the start,
        whose continue is `start_cont`, 0 at a terminal row) and safety [N, H+1]."""
        m, feats, actions = self.model, [self.model.features(h, z)], []
        for _ in range(self.params.horizon):
            action = self.actor.sample(feats[-1], self._rng)
            h, z, _ = m.rssm.imagine_step(h, z, action, generator=self._rng)
            feats.append(m.features(h, z))
            actions.append(action)
        feat = torch.stack(feats, 1)
        cont = torch.sigmoid(m.continue_head(feat).squeeze(-1))
        cont[:, 0] = start_cont
        return {
            "feat": feat,
            "action": torch.stack(actions, 1),
            "reward": wm.twohot_mean(m.reward_head(feat), self.bins),
            "cost": torch.sigmoid(m.cost_head(feat).squeeze(-1)),
            "cont": cont,
            "safety": torch.sigmoid(m.safety_head(feat).squeeze(-1)),
        }

    @torch.no_grad()
    def _values(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (wm.twohot_mean(self.reward_critic(feat), self.bins), wm.twohot_mean(self.cost_critic(feat), self.bins))

    def _update_critics(self, feat, r_return, c_return, weight) -> dict[str, float]:
        p = self.params
        with torch.no_grad():
            r_slow = wm.twohot_mean(self.reward_critic_slow(feat), self.bins)
            c_slow = wm.twohot_mean(self.cost_critic_slow(feat), self.bins)
        r_loss, r_metrics = wm.critic_loss(
            self.reward_critic(feat), r_return, r_slow, weight, self.bins, p.slow_critic_regulariser
        )
        c_loss, c_metrics = wm.critic_loss(
            self.cost_critic(feat), c_return, c_slow, weight, self.bins, p.slow_critic_regulariser
        )
        check_finite({"reward_critic": r_loss, "cost_critic": c_loss})
        self.critic_opt.zero_grad(set_to_none=True)
        (r_loss + c_loss).backward()
        self.critic_opt.step()
        soft_update(self.reward_critic_slow, self.reward_critic, p.critic_ema)
        soft_update(self.cost_critic_slow, self.cost_critic, p.critic_ema)
        return {f"reward_critic/{k}": v for k, v in r_metrics.items()} | {
            f"cost_critic/{k}": v for k, v in c_metrics.items()
        }

    def _step_lagrangian(self, cost_return: torch.Tensor) -> dict[str, float]:
        """SafeDreamer's multiplier update on the start states' cost lambda-returns; c grows toward 1."""
        p = self.params
        _, self._cost_slope, self.lagrange = wm.lagrangian_penalty(
            cost_return[:, 0], p.cost_limit, self.lagrange, self.penalty
        )
        self.penalty = min(1.0, self.penalty * (1.0 + p.penalty_growth))
        return {"lagrange/multiplier": self.lagrange, "lagrange/slope": self._cost_slope}

    def _policy_weights(
        self, safety: torch.Tensor, reward_advantage: torch.Tensor, cost_advantage: torch.Tensor
    ) -> torch.Tensor:
        """w per step from raw advantages (return - value), by agent.vlsafe.safety_weighting: vlsafe
        mixes by the predicted safety; none is the same with p = 1; lagrangian weighs
        exp(beta1 (A_r - Psi' A_c)), the penalty taken in return units before the normalisation."""
        p = self.params
        if p.safety_weighting == "lagrangian":
            reward_advantage = reward_advantage - self._cost_slope * cost_advantage
        a_r = wm.normalised_advantage(reward_advantage, self.reward_scale)
        a_c = wm.normalised_advantage(cost_advantage, self.cost_scale)
        safety = safety if p.safety_weighting == "vlsafe" else torch.ones_like(safety)
        return wm.vlsafe_weights(safety, a_r, a_c, p.beta1, p.beta2, p.weight_clip)

    @torch.no_grad()
    def _replayed_term(self, feat: torch.Tensor, b: dict[str, torch.Tensor]):
        """The replayed actions on the replayed states, weighted like imagined ones with one-step
        advantages r + gamma c V(s') - V(s) from the posterior states (transition rows only)."""
        m, gamma = self.model, self.config.gamma
        r_value, c_value = self._values(feat)
        nxt = feat[:, 1:]
        cont = torch.sigmoid(m.continue_head(nxt).squeeze(-1))
        reward = wm.twohot_mean(m.reward_head(nxt), self.bins)
        cost = torch.sigmoid(m.cost_head(nxt).squeeze(-1))
        a_r = reward + gamma * cont * r_value[:, 1:] - r_value[:, :-1]
        a_c = cost + gamma * cont * c_value[:, 1:] - c_value[:, :-1]
        safety = torch.sigmoid(m.safety_head(feat[:, :-1]).squeeze(-1))
        w = self._policy_weights(safety, a_r, a_c)
        transition = (~b["is_last"][:, :-1]).float() * self.params.behaviour_weight
        return feat[:, :-1], b["action"][:, :-1], w, transition

    def _update_actor(self, terms: dict[str, tuple]) -> dict[str, float]:
        metrics, total = {}, 0.0
        for name, (feat, action, w, step_weight) in terms.items():
            log_prob, entropy = self.actor.log_prob_entropy(feat.detach(), action)
            loss, term_metrics = wm.weighted_likelihood_loss(log_prob, w, step_weight, entropy, self.params.entropy)
            total = total + loss
            metrics |= {f"actor/{name}_{k}": v for k, v in term_metrics.items()}
        check_finite({"actor": total})
        self.actor_opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), 100.0)
        self.actor_opt.step()
        return metrics

    # ------------------------------------------------------------------------------ weights
    def policy_weights(self) -> dict[str, torch.Tensor]:
        return acting_weights(self.model, self.actor)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "model": self.model,
            "actor": self.actor,
            "reward_critic": self.reward_critic,
            "cost_critic": self.cost_critic,
            "reward_critic_slow": self.reward_critic_slow,
            "cost_critic_slow": self.cost_critic_slow,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model_opt": self.model_opt, "actor_opt": self.actor_opt, "critic_opt": self.critic_opt}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "algorithm": self.name,
            "network": self.architecture,
            "update_count": self.update_count,
            "rng": self._rng.get_state(),
            "scales": [self.reward_scale, self.cost_scale, self.lagrange, self.penalty, self._cost_slope],
        }
        state |= {name: module.state_dict() for name, module in self.modules().items()}
        state |= {name: opt.state_dict() for name, opt in self.optimizers().items()}
        return copy_tree(state, device="cpu")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        found = (state.get("algorithm"), state.get("network"))
        if found != (self.name, self.architecture):
            raise ValueError(
                f"checkpoint is {found[0]}/{found[1]} but this agent is {self.name}/{self.architecture}: "
                f"a world model of preset {str(found[1]).split('/')[-1]!r} cannot load into preset "
                f"{self.params.preset!r}; set agent.vlsafe.preset to match"
            )
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(copy_tree(state[name]))
        self.update_count = int(state["update_count"])
        rng = state["rng"].cpu()
        if rng.numel() == self._rng.get_state().numel():
            self._rng.set_state(rng)
        else:  # saved on another device kind (a GPU run inspected on a CPU): its sampling stream differs anyway
            logger.warning("the checkpoint's sampling generator is of another device; reseeding this one")
            self._rng.manual_seed(self.update_count)
        self.reward_scale, self.cost_scale, self.lagrange, self.penalty, self._cost_slope = (
            float(v) for v in state["scales"]
        )


def make_agent(config: AgentConfig, device: str, seed: int) -> WorldModelAgent:
    return WorldModelAgent(config, device, seed)


def make_policy(config: AgentConfig, seed: int) -> WorldModelPolicy:
    return WorldModelPolicy(config, seed)
