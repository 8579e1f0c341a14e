"""The Roach reward (Zhang et al., 2021) as Found-RL uses it, a pure function of one step.

reward = r_speed + r_position + r_rotation + r_action + terminal, with the desired speed cut
linearly to zero as a hazard vehicle, pedestrian, red/yellow light or pending stop sign nears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.geometry import to_ego_frame
from envs.route_tracker import RouteProgress
from envs.types import LightState, Snapshot

MAX_SPEED = 6.0  # m/s, Roach's target speed
_PROXIMITY = 9.5  # m, Roach's hazard search radius
_LIGHT_RANGE = 18.0  # m, Roach's traffic-light search distance


@dataclass(frozen=True)
class RewardTerms:
    speed: float
    position: float
    rotation: float
    action: float
    terminal: float
    desired_speed: float

    @property
    def total(self) -> float:
        return self.speed + self.position + self.rotation + self.action + self.terminal


def _within_ahead(local: np.ndarray, max_distance: float, max_angle_deg: np.ndarray | float) -> np.ndarray:
    dist = np.linalg.norm(local, axis=1)
    angle = np.degrees(np.abs(np.arctan2(local[:, 1], local[:, 0])))
    return (dist < 1e-3) | ((dist <= max_distance) & (angle < max_angle_deg))


def hazard_vehicle_distance(snap: Snapshot) -> float | None:
    """Distance to the nearest same-direction vehicle ahead within 9.5 m and 60 degrees."""
    if len(snap.vehicles) == 0:
        return None
    e = snap.ego
    local = to_ego_frame(snap.vehicles[:, :2], e.x, e.y, e.yaw)
    rel_yaw = np.degrees(np.abs((snap.vehicles[:, 2] - e.yaw + math.pi) % (2 * math.pi) - math.pi))
    hit = (rel_yaw <= 150.0) & _within_ahead(local, _PROXIMITY, 60.0)
    return float(np.min(np.linalg.norm(local[hit], axis=1))) if hit.any() else None


def hazard_walker_distance(snap: Snapshot) -> float | None:
    """Distance to the nearest walker on the road ahead, in a cone that widens as it nears."""
    if len(snap.walkers) == 0:
        return None
    e = snap.ego
    local = to_ego_frame(snap.walkers[:, :2], e.x, e.y, e.yaw)
    dist = np.linalg.norm(local, axis=1)
    cone = 162.0 / (np.clip(dist, 1.5, 10.5) + 0.3)
    hit = snap.walkers_on_road & _within_ahead(local, _PROXIMITY, cone)
    return float(np.min(dist[hit])) if hit.any() else None


def light_distance(snap: Snapshot) -> float | None:
    """Distance of a red or yellow stop line, measured as Roach does from 0.8 half-lengths behind the centre."""
    light = snap.next_light
    if light is None or light.state not in (LightState.RED, LightState.YELLOW):
        return None
    d = light.distance + 0.5 * snap.ego.length + 0.4 * snap.ego.length
    return d if d <= _LIGHT_RANGE else None


def _ramp(distance: float | None, clearance: float) -> float:
    if distance is None:
        return MAX_SPEED
    return MAX_SPEED * float(np.clip(max(0.0, distance - clearance), 0.0, 5.0)) / 5.0


def desired_speed(snap: Snapshot, stop_sign_pending: bool) -> float:
    return min(
        MAX_SPEED,
        _ramp(hazard_vehicle_distance(snap), 8.0),
        _ramp(hazard_walker_distance(snap), 6.0),
        _ramp(light_distance(snap), 5.0),
        0.0 if stop_sign_pending else MAX_SPEED,
    )


def roach_reward(
    snap: Snapshot,
    progress: RouteProgress,
    last_steer: float,
    terminated: bool,
    severe_failure: bool,
    stop_sign_pending: bool = False,
) -> RewardTerms:
    """`severe_failure`: a collision, red light or stop sign, which also costs the ego's speed."""
    target = desired_speed(snap, stop_sign_pending)
    terminal = (-1.0 if terminated else 0.0) - (snap.ego.speed if severe_failure else 0.0)
    return RewardTerms(
        speed=1.0 - abs(snap.ego.speed - target) / MAX_SPEED,
        position=-abs(progress.lateral) / 2.0,
        rotation=-abs(progress.heading_error),
        action=-0.1 if abs(snap.ego.control.steer - last_steer) > 0.01 else 0.0,
        terminal=terminal,
        desired_speed=target,
    )
