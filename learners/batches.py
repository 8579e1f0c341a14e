"""What an agent asks the replay for: its batch kind (the agent owns its batch, the learner only
samples it). Both kinds come from the same stored rows and links, and both add the per-step
reward-shaping terms (learners/reward_shaping.py) before the agent sees the batch.

- `TransitionBatch`: n-step transitions for actor-critic agents (DrQ-v2, SAC, TD3).
- `SequenceBatch`: fixed-length runs of consecutive rows with is_first / is_last / is_terminal, for
  world models (an RSSM replays sequences, DreamerV3 style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from learners.replay import ReplayBuffer
from learners.reward_shaping import STEP_FIELDS


class RewardTerms(Protocol):
    """Per-step reward terms from feedback (learners.reward_shaping.RewardShaper)."""

    active: bool

    def terms(self, steps: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def stats(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class TransitionBatch:
    """Keys: bev, state, action, next_bev, next_state [B, ...]; reward = sum_k gamma^k r_k over the
    path (shaping terms included, discounted the same way); discount = gamma^n, or 0 after a true
    terminal; the start row's feedback (vlm_action, clip_margin, safety and masks), cost,
    policy_version, episode_id, step, index; nstep_* [B, n] the per-step feedback along the path."""

    n_step: int
    gamma: float

    def can_sample(self, replay: ReplayBuffer, batch_size: int) -> bool:
        return replay.can_sample(batch_size)

    def sample(
        self, replay: ReplayBuffer, batch_size: int, shaping: RewardTerms | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        batch = replay.sample(batch_size, self.n_step, self.gamma)
        if shaping is None or not shaping.active:
            return batch, {}
        terms = shaping.terms({key: batch[f"nstep_{key}"] for key in STEP_FIELDS})
        weight = batch["nstep_weight"]
        added = {name: np.sum(weight * values, axis=1) for name, values in terms.items()}
        batch["reward"] = (batch["reward"] + sum(added.values())).astype(np.float32)
        return batch, {name: float(value.mean()) for name, value in added.items()} | shaping.stats()


@dataclass(frozen=True)
class SequenceBatch:
    """Every row field as [B, length, ...] plus is_terminal and index (ReplayBuffer.sample_sequences);
    `reward` holds each row's env reward plus that step's shaping terms (0 on is_last rows, which
    carry no transition)."""

    length: int

    def can_sample(self, replay: ReplayBuffer, batch_size: int) -> bool:
        return replay.can_sample_sequences(batch_size, self.length)

    def sample(
        self, replay: ReplayBuffer, batch_size: int, shaping: RewardTerms | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        batch = replay.sample_sequences(batch_size, self.length)
        if shaping is None or not shaping.active:
            return batch, {}
        terms = shaping.terms({key: batch[key] for key in STEP_FIELDS})
        transition = ~batch["is_last"]
        added = {name: np.where(transition, values, 0.0) for name, values in terms.items()}
        batch["reward"] = (batch["reward"] + sum(added.values())).astype(np.float32)
        return batch, {name: float(value.sum(1).mean()) for name, value in added.items()} | shaping.stats()
