"""Reward terms from feedback, added when the learner samples (so their scale can change without
recollecting data). They are computed per step, from each step's own feedback, so that any batch
kind can use them: an n-step transition discounts them along its path exactly like the env reward,
a sequence adds them step by step (learners/batches.py).

CLIP action alignment (Found-RL §4.3): bonus_t = clip((margin_t - mean) / std, -1, 1) with a running
mean/std of every margin inserted so far; r += clip_scale * bonus. Semantic goals (VLM-RL style):
r += semantic_scale * (2 * p_goal - 1), p_goal the CLIP probability of the positive goals. A step
without the feedback (mask 0) adds exactly nothing, whatever its stored value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# The per-step feedback fields the terms read (each with its `_mask`).
STEP_FIELDS = ("clip_margin", "clip_margin_mask", "safety", "safety_mask")


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask > 0, values, 0.0)


class RunningMeanStd:
    """Running mean and variance over everything seen (parallel-update form, Chan et al.)."""

    def __init__(self, epsilon: float = 1e-4):
        self.mean, self.var, self.count = 0.0, 1.0, epsilon

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        batch_mean, batch_var, n = float(values.mean()), float(values.var()), values.size
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def bonus(self, values: np.ndarray, clip: float = 1.0) -> np.ndarray:
        """clip((x - mean) / std, -clip, clip): the normalised CLIP reward bonus."""
        return np.clip((np.asarray(values) - self.mean) / np.sqrt(self.var + 1e-8), -clip, clip)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


class RewardShaper:
    def __init__(self, clip_scale: float = 0.0, semantic_scale: float = 0.0):
        self.clip_scale, self.semantic_scale = clip_scale, semantic_scale
        self.margins = RunningMeanStd()

    @property
    def active(self) -> bool:
        return self.clip_scale > 0 or self.semantic_scale > 0

    def observe(self, chunk: Mapping[str, np.ndarray]) -> None:
        """Fold a chunk's available margins into the running statistics."""
        seen = (chunk["clip_margin_mask"] > 0) & ~chunk["is_last"]
        self.margins.update(chunk["clip_margin"][seen])

    def terms(self, steps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each active term per step, shaped like the feedback arrays ([B, n] or [B, T]); 0 where masked."""
        out = {}
        if self.clip_scale > 0:
            bonus = self.margins.bonus(_masked(steps["clip_margin"], steps["clip_margin_mask"]))
            out["clip_bonus"] = self.clip_scale * _masked(bonus, steps["clip_margin_mask"])
        if self.semantic_scale > 0:
            goal = 2.0 * _masked(steps["safety"], steps["safety_mask"]) - 1.0
            out["semantic_reward"] = self.semantic_scale * _masked(goal, steps["safety_mask"])
        return out

    def stats(self) -> dict[str, float]:
        return {"clip_margin_mean": self.margins.mean} if self.clip_scale > 0 else {}

    def state_dict(self) -> dict:
        return {"margins": self.margins.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.margins.load_state_dict(state["margins"])
