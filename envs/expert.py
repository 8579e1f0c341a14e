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
    best = (math.inf, 0.0)
    if len(path) < 2:
        return best
    boxes = np.concatenate([snap.vehicles, snap.walkers])
    if len(boxes):
        speeds = np.concatenate([snap.vehicle_speeds, snap.walker_speeds])
        margins = np.concatenate([np.full(len(snap.vehicles), p.vehicle_margin), np.full(len(snap.walkers), p.walker_margin)])
        best = _predicted_blocker(snap, route, i, path, path_s, boxes, speeds, margins, p)
    light = snap.next_light
    if light is not None and light.state in (LightState.RED, LightState.YELLOW):
        stopping = snap.ego.speed ** 2 / (2 * p.idm_comfort_decel)
        if light.state == LightState.RED or light.distance > stopping:
            gap = light.distance - p.light_stop_gap + p.idm_min_gap
            if gap < best[0]:
                best = (max(gap, 0.0), 0.0)
    return best


def _predicted_blocker(snap, route, i, path, path_s, boxes, speeds, margins, p: ExpertParams) -> tuple[float, float]:
    """Closest object whose box is, or at a look-ahead time will be, inside the ego's corridor ahead
    and reachable by then. Vectorised over look-ahead times [T], objects [N] and path points [P]."""
    half_len = 0.5 * snap.ego.length
    times = np.asarray(p.prediction_s)
    heading = np.stack([np.cos(boxes[:, 2]), np.sin(boxes[:, 2])], axis=1)
    xy = boxes[None, :, :2] + (times[:, None, None] * speeds[None, :, None]) * heading[None]  # [T, N, 2]
    d2 = np.sum((xy[:, :, None, :] - path[None, None]) ** 2, axis=3)  # [T, N, P]
    nearest = np.argmin(d2, axis=2)  # [T, N]
    distance = np.sqrt(np.take_along_axis(d2, nearest[..., None], axis=2)[..., 0])
    clearance = 0.5 * snap.ego.width + 0.5 * boxes[:, 4] + margins
    s_obj = path_s[nearest] - 0.5 * boxes[None, :, 3]  # where along the path its near end is
    reachable = (s_obj - half_len <= snap.ego.speed * times[:, None] * 1.5 + 12.0) | (times[:, None] == 0)
    # Only what is (or will be) ahead of the front bumper: braking for something alongside
    # only invites the car behind into the ego's boot.
    hit = (distance < clearance[None]) & (s_obj > half_len) & reachable
    if not hit.any():
        return math.inf, 0.0
    gaps = np.where(hit, s_obj - half_len, np.inf)
    t, k = np.unravel_index(np.argmin(gaps), gaps.shape)
    # Its speed along the route counts only where it is now (a predicted crossing is a stop).
    along = speeds[k] * math.cos(boxes[k, 2] - route.yaw[i + nearest[t, k]]) if times[t] == 0 else 0.0
    return float(gaps[t, k]), max(0.0, along)


def _idm(speed: float, target: float, gap: float, lead_speed: float, p: ExpertParams) -> float:
    free = 1.0 - (speed / max(target, 0.1)) ** 4
    if not math.isfinite(gap):
        return float(np.clip(p.idm_accel * free, -p.vehicle.max_brake_decel, p.idm_accel))
    desired = p.idm_min_gap + speed * p.idm_headway + speed * (speed - lead_speed) / (
        2 * math.sqrt(p.idm_accel * p.idm_comfort_decel))
    interaction = (max(desired, p.idm_min_gap) / max(gap, 0.1)) ** 2
    return float(np.clip(p.idm_accel * (free - interaction), -p.vehicle.max_brake_decel, p.idm_accel))
