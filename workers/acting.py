"""Acting policies for dataset collection (collect.policy), as Policy roles (core.py): the expert
(optionally with DART-style held perturbations), uniform random actions, or a trained agent's
policy loaded from a checkpoint. The expert reads the environment's ground truth, so it is built
with the environment it drives."""

from __future__ import annotations

import numpy as np
import torch

from configs.schema import CollectConfig, Config
from core import Policy
from learners.registry import make_agent, make_policy
from learners.warm_start import agent_file


class ExpertPolicy:
    """The privileged expert. With perturb_std > 0, each window of perturb_hold_steps is, with
    perturb_probability, perturbed by one Gaussian draw held over the window (DART, Laskey et al.
    2017, with held noise so the car really drifts and the data show the recovery)."""

    def __init__(self, env, settings: CollectConfig, seed: int):
        self._env = env
        self._settings = settings
        self._rng = np.random.default_rng(seed)
        self._noise = np.zeros(2, np.float32)
        self._held = 0

    def initial_carry(self, batch_size: int) -> None:
        return None

    def act(self, carry, obs, is_first: np.ndarray, *, explore: bool, step: int):
        action = self._env.unwrapped.expert_action()
        if explore and self._settings.perturb_std > 0:
            action = np.clip(action + self._perturbation(bool(is_first[0])), -1.0, 1.0)
        return carry, action[None].astype(np.float32)

    def _perturbation(self, is_first: bool) -> np.ndarray:
        s = self._settings
        if is_first or self._held >= s.perturb_hold_steps:
            perturbed = self._rng.random() < s.perturb_probability
            self._noise = (self._rng.normal(0.0, s.perturb_std, 2) if perturbed else np.zeros(2)).astype(np.float32)
            self._held = 0
        self._held += 1
        return self._noise

    def load_weights(self, weights) -> None:
        """The expert has no weights; a collection publishes none."""


class RandomPolicy:
    """Uniform actions in [-1, 1]^2."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def initial_carry(self, batch_size: int) -> None:
        return None

    def act(self, carry, obs, is_first: np.ndarray, *, explore: bool, step: int):
        return carry, self._rng.uniform(-1.0, 1.0, (len(is_first), 2)).astype(np.float32)

    def load_weights(self, weights) -> None:
        """Random actions have no weights."""


def checkpoint_policy(config: Config, path: str, seed: int) -> Policy:
    """The configured algorithm's policy with the acting weights of a checkpoint (run or checkpoint dir)."""
    state = torch.load(agent_file(path), map_location="cpu", weights_only=True)
    agent = make_agent(config.agent, "cpu", seed)  # the agent knows which of its modules acting needs
    agent.load_state_dict(state)
    policy = make_policy(config.agent, seed)
    policy.load_weights(agent.policy_weights())
    return policy


def collection_policy(config: Config, env, seed: int) -> Policy:
    """The acting policy collect.policy names, for a worker driving `env`."""
    settings = config.collect
    if settings.policy == "expert":
        return ExpertPolicy(env, settings, seed)
    if settings.policy == "random":
        return RandomPolicy(seed)
    return checkpoint_policy(config, settings.checkpoint, seed)
