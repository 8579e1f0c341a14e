"""A privileged rule-based driver: pure pursuit on the route, IDM gap keeping, stops for lights
and pedestrians (also before the crossing of one standing at the kerb facing the road), yields to
traffic predicted to cross its path.

A plain function of the ground truth, so it drives any backend and serves as the CPU stand-in for
the VLM advisor and as the source of demonstrations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from envs.geometry import to_ego_frame
from envs.reward import MAX_SPEED
from envs.types import LightState, Route, RouteCommand, Snapshot
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
    prediction_s: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)  # s, look-ahead times
    vehicle_horizon_s: float = 2.5  # s: vehicles are predicted this far ahead
    walker_horizon_s: float = 2.5  # s: walkers this far
    # A pedestrian standing still beside the route and facing it is waiting at a crossing: SUMO's
    # walkers hold back for an approaching car and step out once its front has passed, into its side.
    # Such a walker is predicted to walk on at this speed, so the car stops and lets it cross first.
    walker_walk_speed: float = 1.3  # m/s
    walker_still_speed: float = 0.3  # m/s: slower than this counts as standing
    walker_facing_cos: float = 0.5  # cos of the largest angle between its heading and the way to the route
    walker_commit_m: float = 1.0  # m: a waiting walker closer than this to the front bumper is passed
    # m kept, on top of idm_min_gap, to a walker's crossing point: the car stops before the whole
    # crossing (about 4 m wide), as other walkers on it walk into a car standing on it.
    walker_extra_gap: float = 2.5
    light_stop_gap: float = 1.5  # m before the stop line
    vehicle: VehicleParams = field(default_factory=VehicleParams)


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
    yaw = np.unwrap(route.yaw[i : max(end, i + 2)])
    ds = np.diff(route.s[i : i + len(yaw)])
    if len(ds) == 0:
        return p.cruise_speed
    curvature = np.max(np.abs(np.diff(yaw)) / np.maximum(ds, 1e-3))
    return math.sqrt(p.max_lateral_accel / max(curvature, 1e-4))


def _nearest_obstacle(snap: Snapshot, route: Route, i: int, p: ExpertParams) -> tuple[float, float]:
    """(gap in metres, its speed along the route) of the closest thing blocking the route ahead."""
    end = int(np.searchsorted(route.s, route.s[i] + p.corridor_m))
    path, path_s = route.xy[i : end + 1], route.s[i : end + 1] - route.s[i]
    best = (math.inf, 0.0)
    if len(path) < 2:
        return best
    path_yaw = route.yaw[i : i + len(path)]
    walker_speeds = snap.walker_speeds
    # In a junction the car drives on to clear it: stopping there for a walker who waits at the far
    # crossing (for the car, or for its own signal) leaves the car in the way of crossing traffic.
    if route.commands[i] == RouteCommand.LANE_FOLLOW:
        walker_speeds = _walker_intent_speeds(snap, path, path_s, path_yaw, p)
    boxes = np.concatenate([snap.vehicles, snap.walkers])
    speeds = np.concatenate([snap.vehicle_speeds, walker_speeds])
    n_vehicles, n_walkers = len(snap.vehicles), len(snap.walkers)

    def per_kind(vehicle_value: float, walker_value: float) -> np.ndarray:
        return np.concatenate([np.full(n_vehicles, vehicle_value), np.full(n_walkers, walker_value)])

    kinds = _KindParams(
        margin=per_kind(p.vehicle_margin, p.walker_margin),
        extra_gap=per_kind(0.0, p.walker_extra_gap),
        horizon=per_kind(p.vehicle_horizon_s, p.walker_horizon_s),
    )
    # Only what can reach the path within its horizon (m): a cheap cut before the [T, N, P] prediction.
    reach = speeds * kinds.horizon + 0.5 * (boxes[:, 3] + boxes[:, 4] + snap.ego.width) + kinds.margin
    lo, hi = path.min(axis=0), path.max(axis=0)
    near = np.all((boxes[:, :2] > lo - reach[:, None]) & (boxes[:, :2] < hi + reach[:, None]), axis=1)
    if near.any():
        best = _predicted_blocker(
            snap, path, path_s, path_yaw, boxes[near], speeds[near], _KindParams(*(a[near] for a in kinds)), p
        )
    light = snap.next_light
    if light is not None and light.state in (LightState.RED, LightState.YELLOW):
        stopping = snap.ego.speed**2 / (2 * p.idm_comfort_decel)
        if light.state == LightState.RED or light.distance > stopping:
            gap = light.distance - p.light_stop_gap + p.idm_min_gap
            if gap < best[0]:
                best = (max(gap, 0.0), 0.0)
    return best


def _walker_intent_speeds(
    snap: Snapshot, path: np.ndarray, path_s: np.ndarray, path_yaw: np.ndarray, p: ExpertParams
) -> np.ndarray:
    """Walker speeds (m/s) for the prediction: a walker standing still and facing the route (waiting
    to cross) gets a walking speed, the others keep their own. Not one the front bumper is already
    at: it waits for the car to pass, and the car standing on its crossing would wait for ever."""
    walkers, speeds = snap.walkers, snap.walker_speeds
    if len(walkers) == 0:
        return speeds
    along, lateral = _path_coordinates(walkers[:, :2], path, path_s, path_yaw)  # [M] metres
    ego = snap.ego
    ego_s = _path_coordinates(np.array([ego.x, ego.y]), path, path_s, path_yaw)[0]
    heading = walkers[:, 2] - path_yaw[np.clip(np.searchsorted(path_s, along), 0, len(path_s) - 1)]
    towards = -np.sign(lateral) * np.sin(heading)  # component of its heading towards the route
    waiting = (speeds < p.walker_still_speed) & (towards > p.walker_facing_cos)
    waiting &= along - (ego_s + 0.5 * ego.length) > p.walker_commit_m
    return np.where(waiting, p.walker_walk_speed, speeds)


class _KindParams(NamedTuple):
    """Per-object [N] settings that depend on whether it is a vehicle or a walker."""

    margin: np.ndarray  # m of lateral clearance added to the two half-widths
    extra_gap: np.ndarray  # m kept to it on top of idm_min_gap
    horizon: np.ndarray  # s: how far ahead its motion is predicted


def _predicted_blocker(
    snap, path, path_s, path_yaw, boxes, speeds, kinds: _KindParams, p: ExpertParams
) -> tuple[float, float]:
    """Closest object whose box is, or at a look-ahead time within its horizon will be, inside the
    ego's corridor ahead and reachable by then. Vectorised over look-ahead times [T], objects [N]
    and path points [P]."""
    ego = snap.ego
    times = np.asarray(p.prediction_s)
    heading = np.stack([np.cos(boxes[:, 2]), np.sin(boxes[:, 2])], axis=1)
    xy = boxes[None, :, :2] + (times[:, None, None] * speeds[None, :, None]) * heading[None]  # [T, N, 2]
    along, lateral = _path_coordinates(xy, path, path_s, path_yaw)  # [T, N] metres
    ego_s = _path_coordinates(np.array([ego.x, ego.y]), path, path_s, path_yaw)[0]
    clearance = 0.5 * ego.width + 0.5 * boxes[:, 4] + kinds.margin
    ahead = along - 0.5 * boxes[None, :, 3] - (ego_s + 0.5 * ego.length)  # m from the front bumper to its near end
    reachable = (ahead <= ego.speed * times[:, None] * 1.5 + 12.0) | (times[:, None] == 0)
    # Only what is (or will be) ahead of the front bumper: braking for something alongside
    # only invites the car behind into the ego's boot.
    in_horizon = times[:, None] <= kinds.horizon[None]
    on_path = (np.abs(lateral) < clearance[None]) & (along <= path_s[-1] + 1.0)  # not beyond its far end
    hit = on_path & (ahead > 0.0) & reachable & in_horizon
    if not hit.any():
        return math.inf, 0.0
    gaps = np.where(hit, ahead - kinds.extra_gap[None], np.inf)
    t, k = np.unravel_index(np.argmin(gaps), gaps.shape)
    # Its speed along the route counts only where it is now (a predicted crossing is a stop).
    lead_speed = speeds[k] * math.cos(boxes[k, 2] - ego.yaw) if times[t] == 0 else 0.0
    return max(float(gaps[t, k]), 0.0), max(0.0, lead_speed)


def _path_coordinates(xy: np.ndarray, path: np.ndarray, path_s: np.ndarray, path_yaw: np.ndarray):
    """(arc length along the path, signed offset to its left), both in metres, of points xy [..., 2]:
    projected on the tangent at the nearest path point, so not rounded to the ~1 m point spacing."""
    d = xy[..., None, :] - path  # [..., P, 2]
    nearest = np.argmin(np.sum(d * d, axis=-1), axis=-1)  # [...]
    offset = np.take_along_axis(d, nearest[..., None, None], axis=-2)[..., 0, :]  # [..., 2]
    c, s = np.cos(path_yaw[nearest]), np.sin(path_yaw[nearest])
    return path_s[nearest] + offset[..., 0] * c + offset[..., 1] * s, offset[..., 1] * c - offset[..., 0] * s


def _idm(speed: float, target: float, gap: float, lead_speed: float, p: ExpertParams) -> float:
    free = 1.0 - (speed / max(target, 0.1)) ** 4
    if not math.isfinite(gap):
        return float(np.clip(p.idm_accel * free, -p.vehicle.max_brake_decel, p.idm_accel))
    desired = (
        p.idm_min_gap
        + speed * p.idm_headway
        + speed * (speed - lead_speed) / (2 * math.sqrt(p.idm_accel * p.idm_comfort_decel))
    )
    interaction = (max(desired, p.idm_min_gap) / max(gap, 0.1)) ** 2
    return float(np.clip(p.idm_accel * (free - interaction), -p.vehicle.max_brake_decel, p.idm_accel))
