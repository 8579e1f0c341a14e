"""Route planning over the lanes of a CARLA town (no CARLA import here: plain lane data).

Like CARLA's GlobalRoutePlanner, written for Mentor: A* over lane segments (one per OpenDRIVE
road, lane section and lane), with lane changes where the map allows them, and route commands
that follow the SUMO backend's rules: junction turns (by heading change) only at junctions where
three or more roads meet, a lane change half-way between where the lane was entered and its end.

The cost is travel time, reckoned like SUMO's router on the same town timed at its driving
lanes' speeds (so that both backends pick the same of two near-equal routes in the grid-like
towns): lanes at a cruise speed, junction connectors no faster than a 5.5 m/s^2 lateral
acceleration allows on their radius (netconvert's --junctions.limit-turn-speed defaults).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from envs.geometry import polyline_length, route_from_pieces, slice_polyline, wrap_angle
from envs.sumo.network import RoutePlanningError
from envs.types import Route, RouteCommand

LaneKey = tuple[int, int, int]  # (road id, section id, lane id)

STRAIGHT_THRESHOLD = math.radians(35.0)  # junction heading change below this goes straight
LANE_CHANGE_COST_S = 0.1  # so that a route does not change lanes for nothing
CRUISE_SPEED = 13.89  # m/s, SUMO's default for OpenDRIVE driving lanes
TURN_LATERAL_ACCEL = 5.5  # m/s^2
TURN_MIN_ANGLE = math.radians(15.0)

_FOLLOW, _LEFT, _RIGHT = "follow", "left", "right"


@dataclass(frozen=True, eq=False)
class LaneSegment:
    """One drivable lane of one lane section, in Mentor's frame, in its driving direction."""

    key: LaneKey
    xy: np.ndarray  # [K, 2] centre line
    yaw: np.ndarray  # [K] heading, radians counter-clockwise
    width: np.ndarray  # [K] lane width, metres
    junction: int  # junction id, -1 outside junctions
    successors: tuple[LaneKey, ...]
    left: LaneKey | None = None  # same-direction neighbour a lane change may move to
    right: LaneKey | None = None
    s: np.ndarray = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "s", polyline_length(self.xy))

    @property
    def length(self) -> float:
        return float(self.s[-1])


def project(point: np.ndarray, shape: np.ndarray) -> tuple[float, float]:
    """(arc length of the nearest point on a polyline, distance to it)."""
    a, b = shape[:-1], shape[1:]
    d = b - a
    seg_len2 = np.maximum((d * d).sum(axis=1), 1e-12)
    t = np.clip(((point - a) * d).sum(axis=1) / seg_len2, 0.0, 1.0)
    dist = np.linalg.norm(a + t[:, None] * d - point, axis=1)
    i = int(np.argmin(dist))
    return float(polyline_length(shape)[i] + t[i] * math.sqrt(seg_len2[i])), float(dist[i])


def distance_to_polyline(
    points: np.ndarray, shape: np.ndarray, chunk: int = 256, simplify_m: float = 0.01
) -> np.ndarray:
    """Distance [N] from each point [N, 2] to a polyline [K, 2].

    The polyline is first simplified (Douglas-Peucker, simplify_m) so that dense routes cost
    little; the distances are exact to within simplify_m.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    shape = np.asarray(shape, dtype=np.float64).reshape(-1, 2)
    if simplify_m > 0 and len(shape) > 2:
        origin = shape[0]
        kept = cv2.approxPolyDP((shape - origin).astype(np.float32).reshape(-1, 1, 2), simplify_m, False)
        shape = kept.reshape(-1, 2).astype(np.float64) + origin
    if len(shape) == 1:
        return np.linalg.norm(points - shape[0], axis=1)
    a, d = shape[:-1], np.diff(shape, axis=0)
    seg_len2 = np.maximum((d * d).sum(axis=1), 1e-12)
    out = np.empty(len(points))
    for i in range(0, len(points), chunk):
        p = points[i : i + chunk, None, :]  # [n, 1, 2]
        t = np.clip(((p - a) * d).sum(axis=2) / seg_len2, 0.0, 1.0)
        out[i : i + chunk] = np.linalg.norm(a + t[..., None] * d - p, axis=2).min(axis=1)
    return out


def lane_speed(seg: LaneSegment) -> float:
    """Cruise speed, or the curvature-limited speed on a junction connector (m/s), as netconvert
    limits turns: angle = turn - 15 degrees, radius = length / angle + width / 4."""
    if seg.junction < 0:
        return CRUISE_SPEED
    angle = abs(wrap_angle(float(seg.yaw[-1] - seg.yaw[0]))) - TURN_MIN_ANGLE
    if angle <= 0.0 or seg.length <= 1.0:
        return CRUISE_SPEED
    radius = seg.length / angle + float(seg.width.mean()) / 4.0
    return min(CRUISE_SPEED, math.sqrt(TURN_LATERAL_ACCEL * radius))


class LaneGraph:
    """Successor and lane-change links between lane segments, and the A* planner over them."""

    def __init__(self, segments: dict[LaneKey, LaneSegment]):
        self.segments = segments
        self.intersections = self._intersections()
        self.speed = {key: lane_speed(seg) for key, seg in segments.items()}

    def _intersections(self) -> set[int]:
        """Junctions where three or more roads meet (others just join two road pieces)."""
        roads: dict[int, set[int]] = {}
        for seg in self.segments.values():
            for nxt in (self.segments[k] for k in seg.successors):
                if seg.junction < 0 <= nxt.junction:  # a road entering a junction
                    roads.setdefault(nxt.junction, set()).add(seg.key[0])
                if nxt.junction < 0 <= seg.junction:  # a road leaving one
                    roads.setdefault(seg.junction, set()).add(nxt.key[0])
        return {j for j, r in roads.items() if len(r) >= 3}

    def junction_command(self, seg: LaneSegment) -> RouteCommand:
        if seg.junction < 0 or seg.junction not in self.intersections:
            return RouteCommand.LANE_FOLLOW
        turn = wrap_angle(float(seg.yaw[-1] - seg.yaw[0]))
        if abs(turn) < STRAIGHT_THRESHOLD:
            return RouteCommand.STRAIGHT
        return RouteCommand.LEFT if turn > 0 else RouteCommand.RIGHT

    # ----- search ------------------------------------------------------------------------------
    def plan(self, start: tuple[LaneKey, float], goal: tuple[LaneKey, float]) -> Route:
        """Dense route from (lane, arc position) to (lane, arc position)."""
        path = self.search(start, goal)
        return route_from_pieces(self._pieces(path, start[1], goal[1]))

    def search(self, start: tuple[LaneKey, float], goal: tuple[LaneKey, float]) -> list[tuple[LaneKey, str]]:
        """Lanes from start to goal, each with how it was entered ('start', 'follow', 'left', 'right')."""
        (k0, pos0), (kg, posg) = start, goal
        if k0 == kg and posg >= pos0:
            return [(k0, "start")]
        seg0, goal_seg = self.segments[k0], self.segments[kg]
        goal_xy = goal_seg.xy[int(np.searchsorted(goal_seg.s, posg).clip(0, len(goal_seg.s) - 1))]
        goal_frac = posg / max(goal_seg.length, 1e-9)

        def h(key: LaneKey) -> float:
            return float(np.linalg.norm(self.segments[key].xy[-1] - goal_xy)) / CRUISE_SPEED

        def time(key: LaneKey, metres: float) -> float:
            return metres / self.speed[key]

        # g(key): seconds driven to the end of that lane; entry: fraction of the lane where it was entered.
        best = {k0: time(k0, seg0.length - pos0)}
        entry = {k0: pos0 / max(seg0.length, 1e-9)}
        parent: dict[LaneKey, tuple[LaneKey, str] | None] = {k0: None}
        goal_cost, goal_parent = math.inf, None
        heap = [(best[k0] + h(k0), best[k0], 0, k0)]
        counter = 1
        while heap:
            f, g, _, key = heapq.heappop(heap)
            if f >= goal_cost:
                break
            if g > best[key] + 1e-9:
                continue  # stale entry
            seg = self.segments[key]
            moves = [(k, _FOLLOW) for k in seg.successors]
            moves += [(k, how) for k, how in ((seg.left, _LEFT), (seg.right, _RIGHT)) if k is not None]
            for nxt, how in moves:
                nseg = self.segments[nxt]
                if how == _FOLLOW:
                    ng, nfrac = g + time(nxt, nseg.length), 0.0
                    reach_goal = g + time(nxt, posg) if nxt == kg else math.inf
                else:
                    ng, nfrac = g + LANE_CHANGE_COST_S, 0.5 * (entry[key] + 1.0)
                    reach_goal = (
                        g - time(key, seg.length * (1.0 - goal_frac)) + LANE_CHANGE_COST_S
                        if nxt == kg and entry[key] < goal_frac
                        else math.inf
                    )
                if reach_goal < goal_cost:
                    goal_cost, goal_parent = reach_goal, (key, how)
                if ng < best.get(nxt, math.inf) and nxt != k0:
                    best[nxt], entry[nxt], parent[nxt] = ng, nfrac, (key, how)
                    heapq.heappush(heap, (ng + h(nxt), ng, counter, nxt))
                    counter += 1
        if goal_parent is None:
            raise RoutePlanningError(f"no route from lane {k0} to lane {kg}")
        path = [(kg, goal_parent[1])]
        node: tuple[LaneKey, str] | None = (goal_parent[0], "")
        while node is not None:
            key = node[0]
            step = parent[key]
            path.append((key, step[1] if step else "start"))
            node = step
        return path[::-1]

    def _pieces(self, path: list[tuple[LaneKey, str]], start_pos: float, goal_pos: float):
        """(polyline, command) pieces along the lanes of a searched path."""
        pieces = []
        seg = self.segments[path[0][0]]
        frac = start_pos / max(seg.length, 1e-9)
        goal_seg = self.segments[path[-1][0]]
        goal_frac = goal_pos / max(goal_seg.length, 1e-9)
        for i, (key, how) in enumerate(path):
            seg = self.segments[key]
            next_how = path[i + 1][1] if i + 1 < len(path) else None
            if next_how is None:
                end = goal_frac
            elif next_how == _FOLLOW:
                end = 1.0
            else:  # change lanes half-way to the lane's end (or to the goal, if only changes remain)
                only_changes = all(h in (_LEFT, _RIGHT) for _, h in path[i + 1 :])
                end = 0.5 * (frac + (goal_frac if only_changes else 1.0))
            if how == _LEFT:
                command = RouteCommand.CHANGE_LANE_LEFT
            elif how == _RIGHT:
                command = RouteCommand.CHANGE_LANE_RIGHT
            else:
                command = self.junction_command(seg)
            pieces.append((slice_polyline(seg.xy, frac * seg.length, end * seg.length), command))
            frac = 0.0 if next_how == _FOLLOW else end
        return pieces
