"""DriveVLM-RL's attention gate g_t, from privileged ground truth instead of a detector.

DriveVLM-RL (project page; DESIGN.md §10) opens its dynamic pathway (a VLM reads the last K+1
frames) when YOLOv8 detects a person, bike or motorcycle. Mentor knows where every walker is
(Snapshot.walkers), so the gate is geometry: g_t = 1 when some walker's nearest point on the
route ahead of the ego lies at most `max_ahead` metres along the route and the walker is at most
`max_lateral` metres from it.

Only walkers count: neither backend has cyclists or motorcyclists. SUMO's background traffic is
passenger cars and CARLA's spawns four-wheeled cars only (envs/carla/world.py `_is_car`), so no
vehicle box is a two-wheeler to include.
"""

from __future__ import annotations

import numpy as np

from envs.types import BOX_X, BOX_Y, Route, Snapshot


def route_projection(points: np.ndarray, route: Route) -> tuple[np.ndarray, np.ndarray]:
    """(along, lateral) of world points [N, 2] against a route polyline: `along` metres from the
    route's first point to the nearest point of the polyline (negative before its first point:
    the first segment is extended backwards), `lateral` the unsigned distance to that point (m)."""
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    xy = np.asarray(route.xy, dtype=np.float64)
    if len(points) == 0 or len(xy) == 0:
        return np.zeros(len(points)), np.full(len(points), np.inf)
    if len(xy) == 1:
        return np.zeros(len(points)), np.linalg.norm(points - xy[0], axis=1)
    start, seg = xy[:-1], np.diff(xy, axis=0)  # [S, 2]
    length2 = np.maximum(np.sum(seg**2, axis=1), 1e-12)
    rel = points[:, None, :] - start[None, :, :]  # [N, S, 2]
    t = np.sum(rel * seg[None], axis=2) / length2  # [N, S]
    low = np.zeros_like(t)
    low[:, 0] = -np.inf  # behind the first point: measured along the extended first segment
    t = np.clip(t, low, 1.0)
    nearest = start[None] + t[..., None] * seg[None]
    dist = np.linalg.norm(points[:, None, :] - nearest, axis=2)  # [N, S]
    k = np.argmin(dist, axis=1)
    rows = np.arange(len(points))
    along = route.s[k] + t[rows, k] * np.sqrt(length2[k])
    return along, dist[rows, k]


def attention_gate(snapshot: Snapshot, route_ahead: Route, *, max_ahead: float, max_lateral: float) -> bool:
    """g_t: a walker within `max_ahead` metres along the route ahead (from its first point, the ego's
    position on the route, onwards) and within `max_lateral` metres of it. Walkers behind the ego
    (along < 0) do not open the gate."""
    if len(snapshot.walkers) == 0 or len(route_ahead.xy) == 0:
        return False
    along, lateral = route_projection(snapshot.walkers[:, [BOX_X, BOX_Y]], route_ahead)
    return bool(np.any((along >= 0.0) & (along <= max_ahead) & (lateral <= max_lateral)))
