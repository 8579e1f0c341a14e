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
# model sends beside its semantic_score (inference/drivevlm_feedback.py) for the worker's report.
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


def validate(field_name: str, value) -> tuple[np.ndarray | float | None, bool]:
    """(value, available): the value when well-formed, else (None, False)."""
    if value is None:
        return None, False
    try:
        if field_name == "vlm_action":
            arr = np.asarray(value, dtype=np.float32)
            ok = arr.shape == (2,) and bool(np.all(np.isfinite(arr))) and bool(np.all(np.abs(arr) <= 1.0))
            return (arr, True) if ok else (None, False)
        if field_name == "semantic_score" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            return None, False  # a real number only: no strings, arrays or bools
        number = float(value)
    except (TypeError, ValueError):
        return None, False
    if not math.isfinite(number):
        return None, False
    if field_name == "safety" and not 0.0 <= number <= 1.0:
        return None, False
    return number, True
