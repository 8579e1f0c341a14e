"""DriveVLM-RL's hierarchical reward synthesis, as pure functions of one step.

The semantic score (R_static + R_dyn, answered by feedback/drivevlm_feedback.py) sets a target
speed, and VLM-RL's lane factors scale how well the ego meets it:

    R_norm = (clip(score, lo, hi) - lo) / (hi - lo)          DriveVLM-RL (project page, DESIGN.md §10)
    v_des = R_norm * v_max
    r_speed = 1 - |v - v_des| / v_max
    reward = r_speed * f_center * f_angle * f_stability       or `penalty` when a failure ends the episode

The last three lines and the factors are VLM-RL's published code (github zihaosheng/VLM-RL,
clip/clip_rewarded_sac.py `_compute_clip_rewards` and carla_env/rewards.py `reward_fn5`, constants
from config.py `reward_fn_5_default`: target_speed 25 km/h, max_distance 3 m,
max_angle_center_lane 90 deg, max_std_center_lane 0.4 m, penalty_reward -10, and a distance
history of 30 steps, carla_route_env.py):

    f_center = max(1 - d / max_center_distance, 0)
    f_angle = max(1 - |angle| / max_angle, 0)
    f_stability = max(1 - std(last distances from the centre) / max_center_std, 0)

VLM-RL clips sim(neg) - sim(pos) to [0, 0.03] and takes R_norm = 1 - z / 0.03; with
score = sim(pos) - sim(neg), lo = -0.03 and hi = 0 this is the same number.

Mentor's equivalents: d = |RouteProgress.lateral| (distance from the route's centreline, where VLM-RL
measures the distance to the line through the current and next route waypoints) and the angle is
RouteProgress.heading_error (the ego's yaw against the route's, where VLM-RL uses the velocity's
direction against the waypoint's). Both reach the worker through the env's info ("lateral",
"heading_error").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the env package does not depend on the run config at run time
    from configs.schema import DriveVlmConfig


@dataclass(frozen=True)
class StepFactors:
    """What the synthesis needs of one env step besides the score."""

    speed: float  # m/s
    center_distance: float  # m from the route's centreline, unsigned
    heading_error: float  # rad, ego yaw minus route yaw
    center_std: float  # m, std of the latest distances from the centreline (this episode)
    catastrophic: bool  # a failure ended the episode at this step (collision, off road, ...)

    @classmethod
    def from_info(cls, info, center_std: float, terminated: bool) -> "StepFactors":
        """From the driving env's step info (speed, signed `lateral` and `heading_error` to the route)."""
        return cls(
            speed=float(info["speed"]),
            center_distance=abs(float(info["lateral"])),
            heading_error=float(info["heading_error"]),
            center_std=center_std,
            catastrophic=bool(terminated),
        )


def centering_factor(center_distance: float, max_center_distance: float) -> float:
    return max(1.0 - abs(center_distance) / max_center_distance, 0.0)


def angle_factor(heading_error: float, max_angle_deg: float) -> float:
    return max(1.0 - abs(heading_error) / math.radians(max_angle_deg), 0.0)


def stability_factor(center_std: float, max_center_std: float) -> float:
    return max(1.0 - abs(center_std) / max_center_std, 0.0)


def normalised_score(score: float, lo: float, hi: float) -> float:
    """R_norm in [0, 1]: 1 at or above hi (safe: full target speed), 0 at or below lo."""
    return (min(max(score, lo), hi) - lo) / (hi - lo)


def target_speed(score: float | None, config: DriveVlmConfig) -> float:
    """v_des in m/s. No score (the feedback was unavailable): R_norm = 1, the plain target speed
    v_max, i.e. VLM-RL's reward without a semantic slowdown."""
    r_norm = 1.0 if score is None else normalised_score(score, config.lo, config.hi)
    return r_norm * config.v_max


def synthesize(score: float | None, factors: StepFactors, config: DriveVlmConfig) -> float:
    """The step's reward: `config.penalty` on a catastrophic step, else
    r_speed * f_center * f_angle * f_stability (r_speed may be negative above 2 v_des, as in VLM-RL)."""
    if factors.catastrophic:
        return float(config.penalty)
    r_speed = 1.0 - abs(factors.speed - target_speed(score, config)) / config.v_max
    return float(
        r_speed
        * centering_factor(factors.center_distance, config.max_center_distance)
        * angle_factor(factors.heading_error, config.max_angle)
        * stability_factor(factors.center_std, config.max_center_std)
    )


class CenterHistory:
    """The latest distances from the centreline of one episode (VLM-RL's
    distance_from_center_history, a deque of 30 cleared at reset) and their population std."""

    def __init__(self, window: int):
        self._values: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        self._values.clear()

    def push(self, center_distance: float) -> float:
        """Add this step's distance; the std including it."""
        self._values.append(abs(float(center_distance)))
        return float(np.std(self._values))
