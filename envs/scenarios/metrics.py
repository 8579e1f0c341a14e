"""Per-step and per-episode measures of a scenario: was it triggered, how close did the ego come to its
hazard (centre distance), and the smallest time-to-collision on the way (the gap between the two
boxes' bounding circles over the speed at which they close; infinite while they do not close)."""

from __future__ import annotations

import math

from envs.scenarios.director import VEHICLE_SIZE, ScenarioDirector
from envs.types import EgoState

_WALKER_RADIUS_M = 0.4
_NO_TTC_S = 99.0  # reported when the ego and the hazard never closed on each other


class ScenarioTracker:
    def __init__(self, director: ScenarioDirector):
        self.director = director
        self.min_distance_m = math.inf
        self.min_ttc_s = math.inf

    def step(self, ego: EgoState) -> dict[str, float | str | bool]:
        """This step's measures (for the step's info), folded into the episode's minima."""
        distance, ttc = math.inf, math.inf
        if self.director.triggered_at is not None:
            for actor in self.director.actors:
                if actor.pose is None or actor.occluder:
                    continue
                d, t = _distance_and_ttc(ego, actor.pose, actor.kind)
                distance, ttc = min(distance, d), min(ttc, t)
        self.min_distance_m = min(self.min_distance_m, distance)
        self.min_ttc_s = min(self.min_ttc_s, ttc)
        return {
            "type": self.director.spec.type,
            "triggered": self.director.triggered_at is not None,
            "distance_m": _finite(distance, 1e3),
            "ttc_s": _finite(ttc, _NO_TTC_S),
        }

    def result(self, episode: dict[str, float]) -> dict[str, float]:
        """The episode's scenario metrics, given its plain metrics (envs/metrics.py episode_result)."""
        return {
            "scenario_triggered": float(self.director.triggered_at is not None),
            "scenario_success": float(episode["arrived"] > 0 and episode["collisions"] == 0),
            "scenario_min_distance_m": _finite(self.min_distance_m, 1e3),
            "scenario_min_ttc_s": _finite(self.min_ttc_s, _NO_TTC_S),
        }


def _distance_and_ttc(ego: EgoState, pose, kind: str) -> tuple[float, float]:
    rx, ry = pose.x - ego.x, pose.y - ego.y
    distance = math.hypot(rx, ry)
    wx = pose.speed * math.cos(pose.yaw) - ego.speed * math.cos(ego.yaw)
    wy = pose.speed * math.sin(pose.yaw) - ego.speed * math.sin(ego.yaw)
    closing = -(rx * wx + ry * wy) / max(distance, 1e-6)
    radius = 0.5 * math.hypot(ego.length, ego.width) + (
        0.5 * math.hypot(*VEHICLE_SIZE) if kind == "vehicle" else _WALKER_RADIUS_M
    )
    gap = max(distance - radius, 0.0)
    return distance, (gap / closing if closing > 1e-6 else math.inf)


def _finite(value: float, cap: float) -> float:
    return float(min(value, cap))
