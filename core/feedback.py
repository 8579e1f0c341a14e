"""The feedback contract between rollout workers and feedback models.

A worker sends one `FeedbackItem` per env step, keyed by (env_id, step); a model (core.FeedbackModel)
takes a batch of items and returns one `FeedbackResult` per item, in any order. Values that are missing or
malformed are never replaced by defaults: `validate` turns them into "unavailable" (mask 0).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np

# Not a feedback field: the seconds of the VLM call that described a gated item, which the DriveVLM
# model sends beside its semantic_score (feedback/drivevlm_feedback.py) for the worker's report.
VLM_LATENCY = "vlm_latency_s"


@dataclass(frozen=True)
class FeedbackItem:
    env_id: int
    step: int
    wanted: tuple[str, ...]
    command: int  # RouteCommand of the observation
    speed: float  # m/s
    action: np.ndarray  # [2] the action executed from this observation (CLIP scores it)
    image: np.ndarray | None = None  # uint8 [192, 192, 3] RGB BEV, for image models
    forward: tuple[float, float] | None = None  # ego unit forward vector, CARLA world frame (VLM prompt)
    # float32 [2]: the privileged expert's action at this observation (the env's, computed once per
    # step), for the expert advisor
    privileged: np.ndarray | None = None
    expires_at: float = math.inf  # wall-clock time (time.time()) after which an answer is useless
    # DriveVLM-RL's dynamic pathway: the last K+1 RGB BEVs (uint8 [192, 192, 3], oldest first, this
    # item's image last), attached only where the attention gate is open (envs/attention_gate.py).
    frames: tuple[np.ndarray, ...] | None = None
    gate: bool = False  # g_t: a walker near the route ahead

    def expired(self, now: float) -> bool:
        return now > self.expires_at

    @property
    def key(self) -> tuple[int, int]:
        return self.env_id, self.step


@dataclass(frozen=True)
class FeedbackResult:
    env_id: int
    step: int
    values: dict = field(default_factory=dict)  # field -> raw value (validated by the worker)

    @property
    def key(self) -> tuple[int, int]:
        return self.env_id, self.step


def unexpired(items: list[FeedbackItem]) -> list[FeedbackItem]:
    """The items still worth model time: one past its deadline would be answered too late to be used
    (its worker ships the row with mask 0 at the deadline), so it is skipped, not computed."""
    now = time.time()
    return [item for item in items if not item.expired(now)]


# What each feedback field must be to count as answered; anything else is unavailable (mask 0) and
# counted as malformed by the worker. Scalars: a finite real (not a bool, string, bytes or array) in
# [low, high]. clip_margin is max(0, p[a] - max p[non-neighbours]) of a softmax, so in [0, 1]; safety
# is a probability; semantic_score is alpha sim(+) - beta sim(-) summed over two pathways, whose scale
# the config's alpha and beta set, so only what float32 holds (the replay's dtype: 1e39 would be inf).
FLOAT32_MAX = float(np.finfo(np.float32).max)
SCALAR_RANGES = {"clip_margin": (0.0, 1.0), "safety": (0.0, 1.0), "semantic_score": (-FLOAT32_MAX, FLOAT32_MAX)}
# vlm_action: [acc, steer], two such reals in [-1, 1] (a list, tuple or numeric array of shape (2,)).
ACTION_SIZE, ACTION_RANGE = 2, (-1.0, 1.0)


def validate(field_name: str, value) -> tuple[np.ndarray | float | None, bool]:
    """(value, available): the value when well-formed (SCALAR_RANGES, or a vlm_action), else (None, False).
    Never raises: a model's answer cannot stop a worker."""
    if field_name == "vlm_action":
        action = _action(value)
        return (action, True) if action is not None else (None, False)
    if field_name not in SCALAR_RANGES:
        return None, False
    number = _real(value, *SCALAR_RANGES[field_name])
    return (number, True) if number is not None else (None, False)


def _real(value, low: float, high: float) -> float | None:
    """`value` as a float when it is a finite real number in [low, high] (Python or NumPy scalar)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):  # 10**400 does not fit a float
        return None
    return number if math.isfinite(number) and low <= number <= high else None


def _action(value) -> np.ndarray | None:
    """float32 [2] when `value` is a list, tuple or numeric array of ACTION_SIZE reals in ACTION_RANGE."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu" or value.shape != (ACTION_SIZE,):
            return None
        elements = value.tolist()
    elif isinstance(value, (list, tuple)) and len(value) == ACTION_SIZE:
        elements = list(value)
    else:
        return None
    numbers_ = [_real(element, *ACTION_RANGE) for element in elements]
    return None if any(n is None for n in numbers_) else np.asarray(numbers_, dtype=np.float32)
