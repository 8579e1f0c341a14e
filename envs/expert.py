"""A privileged rule-based driver: pure pursuit on the route, IDM gap keeping, stops for lights
and pedestrians, yields to traffic predicted to cross its path.

A plain function of the ground truth, so it drives any backend and serves as the CPU stand-in for
the VLM advisor and as the source of demonstrations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.geometry import to_ego_frame
from envs.reward import MAX_SPEED
from envs.types import LightState, Route, Snapshot
from envs.vehicle_model import VehicleParams, pedals_for_accel


@dataclass(frozen=True)
class ExpertParams:
    cruise_speed: float = MAX_SPEED - 0.5  # m/s: a little under the reward's target speed
    max_lateral_accel: float = 1.5  # m/s^2, sets the speed through curves
    idm_accel: float = 1.5  # m/s^2
    idm_comfort_decel: float = 3.0  # m/s^2
    idm_min_gap: float = 2.5  # m kept to a stopped obstacle
    idm_headway: float = 1.0  # s
    corridor_m: float = 40.0  # how far along the route obstacles are searched
    vehicle_margin: float = 0.6  # m of lateral clearance added to the two half-widths
    walker_margin: float = 0.4  # m: pedestrians on the sidewalk beside the lane do not stop the car
    prediction_s: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)  # look-ahead times for crossing traffic
    light_stop_gap: float = 1.5  # m before the stop line
    vehicle: VehicleParams = VehicleParams()


def expert_action(snap: Snapshot, route: Route, route_index: int, params: ExpertParams = ExpertParams()) -> np.ndarray:
    """The expert's action [acc, steer] for this step."""
    steer = _pure_pursuit_steer(snap, route, route_index, params)
    target = min(params.cruise_speed, _curve_speed(route, route_index, params))
    gap, lead_speed = _nearest_obstacle(snap, route, route_index, params)
    accel = _idm(snap.ego.speed, target, gap, lead_speed, params)
    acc = pedals_for_accel(accel, snap.ego.speed, params.vehicle)
    return np.array([acc, steer], dtype=np.float32)


def _pure_pursuit_steer(snap: Snapshot, route: Route, i: int, p: ExpertParams) -> float:
    ego = snap.ego
    lookahead = float(np.clip(3.0 + 0.6 * ego.speed, 4.0, 9.0))
    j = min(int(np.searchsorted(route.s, route.s[i] + lookahead)), len(route.s) - 1)
    local = to_ego_frame(route.xy[j][None], ego.x, ego.y, ego.yaw)[0]
    distance2 = max(float(local @ local), 1.0)
    curvature = 2.0 * local[1] / distance2  # positive: target to the left
    delta = math.atan(curvature * p.vehicle.wheelbase)
    return float(np.clip(-delta / p.vehicle.max_steer_rad, -1.0, 1.0))  # positive steer turns right


def _curve_speed(route: Route, i: int, p: ExpertParams) -> float:
    """Speed limit from the sharpest heading change over the next 15 m."""
    end = int(np.searchsorted(route.s, route.s[i] + 15.0))
    yaw = np.unwrap(route.yaw[i:max(end, i + 2)])
    ds = np.diff(route.s[i:i + len(yaw)])
    if len(ds) == 0:
        return p.cruise_speed
    curvature = np.max(np.abs(np.diff(yaw)) / np.maximum(ds, 1e-3))
    return math.sqrt(p.max_lateral_accel / max(curvature, 1e-4))


def _nearest_obstacle(snap: Snapshot, route: Route, i: int, p: ExpertParams) -> tuple[float, float]:
    """(gap in metres, its speed along the route) of the closest thing blocking the route ahead."""
    end = int(np.searchsorted(route.s, route.s[i] + p.corridor_m))
    path, path_s = route.xy[i:end + 1], route.s[i:end + 1] - route.s[i]
    half_len = 0.5 * snap.ego.length
    best = (math.inf, 0.0)
    if len(path) < 2:
        return best
    for boxes, speeds, margin in ((snap.vehicles, snap.vehicle_speeds, p.vehicle_margin),
                                  (snap.walkers, snap.walker_speeds, p.walker_margin)):
        if len(boxes) == 0:
            continue
        clearance = 0.5 * snap.ego.width + 0.5 * boxes[:, 4] + margin
        for t in p.prediction_s:
            xy = boxes[:, :2] + (speeds * t)[:, None] * np.stack([np.cos(boxes[:, 2]), np.sin(boxes[:, 2])], axis=1)
            d = np.linalg.norm(xy[:, None, :] - path[None, :, :], axis=2)  # [N, P]
            nearest = np.argmin(d, axis=1)
            inside = d[np.arange(len(xy)), nearest] < clearance
            # Only what is (or will be) ahead of the front bumper and reachable by then.
            s_obj = path_s[nearest] - 0.5 * boxes[:, 3]
            ahead = s_obj > half_len
            reachable = s_obj - half_len <= max(snap.ego.speed * t * 1.5, 0.0) + 12.0 if t > 0 else True
            hit = inside & ahead & reachable
            for k in np.flatnonzero(hit):
                gap = float(s_obj[k] - half_len)
                along = speeds[k] * math.cos(boxes[k, 2] - route.yaw[i + nearest[k]]) if t == 0 else 0.0
                if gap < best[0]:
                    best = (gap, max(0.0, along))
    light = snap.next_light
    if light is not None and light.state in (LightState.RED, LightState.YELLOW):
        stopping = snap.ego.speed ** 2 / (2 * p.idm_comfort_decel)
        if light.state == LightState.RED or light.distance > stopping:
            gap = light.distance - p.light_stop_gap + p.idm_min_gap
            if gap < best[0]:
                best = (max(gap, 0.0), 0.0)
    return best


def _idm(speed: float, target: float, gap: float, lead_speed: float, p: ExpertParams) -> float:
    free = 1.0 - (speed / max(target, 0.1)) ** 4
    if not math.isfinite(gap):
        return float(np.clip(p.idm_accel * free, -p.vehicle.max_brake_decel, p.idm_accel))
    desired = p.idm_min_gap + speed * p.idm_headway + speed * (speed - lead_speed) / (
        2 * math.sqrt(p.idm_accel * p.idm_comfort_decel))
    interaction = (max(desired, p.idm_min_gap) / max(gap, 0.1)) ** 2
    return float(np.clip(p.idm_accel * (free - interaction), -p.vehicle.max_brake_decel, p.idm_accel))
