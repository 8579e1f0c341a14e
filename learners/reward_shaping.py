"""Reward terms from feedback, added when the learner samples (so their scale can change without
recollecting data), discounted along the n-step path exactly like the env reward.

CLIP action alignment (Found-RL §4.3): bonus_t = clip((margin_t - mean) / std, -1, 1) with a running
mean/std of every margin inserted so far; r += clip_scale * bonus. Semantic goals (VLM-RL style):
r += semantic_scale * (2 * p_goal - 1), p_goal the CLIP probability of the positive goals. A step
without the feedback (mask 0) adds nothing.
"""
from __future__ import annotations

import numpy as np

from inference.clip_prompts import RunningMeanStd


def nstep_bonus(values: np.ndarray, masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k weights[:, k] * masks[:, k] * values[:, k]: [B, n] -> [B]."""
    return np.sum(np.where(masks > 0, weights * values, 0.0), axis=1)


class RewardShaper:
    def __init__(self, clip_scale: float = 0.0, semantic_scale: float = 0.0):
        self.clip_scale, self.semantic_scale = clip_scale, semantic_scale
        self.margins = RunningMeanStd()

    @property
    def active(self) -> bool:
        return self.clip_scale > 0 or self.semantic_scale > 0

    def observe(self, chunk: dict) -> None:
        """Fold a chunk's available margins into the running statistics."""
        seen = (chunk["clip_margin_mask"] > 0) & ~chunk["is_last"]
        self.margins.update(chunk["clip_margin"][seen])

    def __call__(self, batch: dict) -> tuple[np.ndarray, dict[str, float]]:
        """The shaped n-step reward [B] of a replay batch, and what each term added on average."""
        reward = batch["reward"].astype(np.float64)
        metrics = {}
        if self.clip_scale > 0:
            bonus = self.margins.bonus(batch["nstep_clip_margin"])
            added = self.clip_scale * nstep_bonus(bonus, batch["nstep_clip_margin_mask"], batch["nstep_weight"])
            reward = reward + added
            metrics |= {"clip_bonus": float(added.mean()), "clip_margin_mean": self.margins.mean}
        if self.semantic_scale > 0:
            goal = 2.0 * batch["nstep_safety"] - 1.0
            added = self.semantic_scale * nstep_bonus(goal, batch["nstep_safety_mask"], batch["nstep_weight"])
            reward = reward + added
            metrics["semantic_reward"] = float(added.mean())
        return reward.astype(np.float32), metrics

    def state_dict(self) -> dict:
        return {"margins": self.margins.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.margins.load_state_dict(state["margins"])
