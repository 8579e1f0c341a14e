"""A CARLA town read offline through `carla.Map` (built from OpenDRIVE text; no server needed).

Provides what the CARLA backend needs from the map, in Mentor's frame (envs.types: right-handed,
yaw counter-clockwise; CARLA is left-handed: y -> -y, yaw -> -yaw), optionally shifted by an
offset so that it coincides with another frame (the SUMO net's netOffset, for parity checks):
- the static BEV layers (road, lane markings) as envs.bev.StaticLayers, drawn from waypoints
  every `resolution` metres of each driving lane with its lane width, like Roach;
- route planning over the lane topology (envs.carla.routing).

Lane markings follow the SUMO backend's rule so that both backends draw the same kind of
picture: only lines between drivable lanes (between same-direction lanes the map's marking type,
between opposite directions the centre line's type), none along the road's outer edges and none
inside junctions.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path

import carla
import numpy as np

from envs.bev import StaticLayers, render_static_layers
from envs.carla.routing import LaneGraph, LaneKey, LaneSegment, project
from envs.maps import MapSearch
from envs.sumo.network import RoutePlanningError
from envs.types import Route

DEFAULT_RESOLUTION_M = 1.0


def lane_key(wp: carla.Waypoint) -> LaneKey:
    return (wp.road_id, wp.section_id, wp.lane_id)


def marking_kind(marking: carla.LaneMarking) -> str:
    """'solid' | 'broken' | 'none', by the same rule as the SUMO backend reads xodr road marks."""
    name = str(marking.type)
    return "broken" if "Broken" in name or "BottsDots" in name else ("solid" if "Solid" in name else "none")


def _driving_neighbour(wp: carla.Waypoint, side: str) -> carla.Waypoint | None:
    nb = wp.get_left_lane() if side == "left" else wp.get_right_lane()
    if nb is None or nb.lane_type != carla.LaneType.Driving or nb.road_id != wp.road_id:
        return None
    return nb


class CarlaTownMap:
    """Static layers and routes of one CARLA town, from its OpenDRIVE description."""

    def __init__(
        self,
        town: str,
        carla_map: carla.Map,
        offset: tuple[float, float] = (0.0, 0.0),
        resolution: float = DEFAULT_RESOLUTION_M,
    ):
        self.town = town
        self.map = carla_map
        self.offset = (float(offset[0]), float(offset[1]))
        self.resolution = float(resolution)
        self._marks: list[tuple[np.ndarray, str]] = []
        self.segments = self._read_segments()
        self.graph = LaneGraph(self.segments)

    @classmethod
    def from_xodr(
        cls,
        town: str,
        xodr_text: str,
        offset: tuple[float, float] = (0.0, 0.0),
        resolution: float = DEFAULT_RESOLUTION_M,
    ) -> CarlaTownMap:
        """Build the map offline (carla.Map parses the OpenDRIVE text itself)."""
        return cls(town, carla.Map(town, xodr_text), offset, resolution)

    @classmethod
    def from_maps(cls, town: str, maps: MapSearch | None = None, **kwargs) -> CarlaTownMap:
        """Find the town's .xodr like the SUMO backend does (config dir, $MENTOR_MAPS_DIR, $CARLA_ROOT)."""
        path = Path((maps or MapSearch.from_settings()).xodr_path(town))
        return cls.from_xodr(town, path.read_text(), **kwargs)

    # ----- frames ------------------------------------------------------------------------------
    def from_carla(self, x: float, y: float, yaw_deg: float = 0.0) -> tuple[float, float, float]:
        """CARLA (left-handed, yaw in degrees) -> Mentor frame (right-handed, radians)."""
        return x + self.offset[0], self.offset[1] - y, math.radians(-yaw_deg)

    def to_carla(self, x: float, y: float, yaw: float = 0.0) -> tuple[float, float, float]:
        return x - self.offset[0], -(y - self.offset[1]), -math.degrees(yaw)

    def _waypoint_arrays(self, wps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raw = np.array(
            [(w.transform.location.x, w.transform.location.y, w.transform.rotation.yaw, w.lane_width) for w in wps],
            dtype=np.float64,
        )
        xy = np.stack([raw[:, 0] + self.offset[0], self.offset[1] - raw[:, 1]], axis=1)
        return xy, np.radians(-raw[:, 2]), raw[:, 3]

    # ----- lanes -------------------------------------------------------------------------------
    def _read_segments(self) -> dict[LaneKey, LaneSegment]:
        topology = self.map.get_topology()  # (lane start, start of a successor lane) pairs
        starts: dict[LaneKey, carla.Waypoint] = {}
        successors: dict[LaneKey, list[LaneKey]] = {}
        for a, b in topology:
            starts.setdefault(lane_key(a), a)
            if lane_key(b) != lane_key(a):
                successors.setdefault(lane_key(a), []).append(lane_key(b))
        segments = {}
        for key, start in starts.items():
            wps, xy, yaw, width = self._sample_lane(start)
            keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
            xy, yaw, width = xy[keep], yaw[keep], width[keep]
            if len(xy) < 2:  # a lane shorter than a millimetre: keep it routable
                xy = np.vstack([xy, xy[-1] + 1e-3 * np.array([math.cos(yaw[-1]), math.sin(yaw[-1])])])
                yaw, width = np.append(yaw, yaw[-1]), np.append(width, width[-1])
            mid = wps[len(wps) // 2]
            junction = start.junction_id if start.is_junction else -1
            left, right = (self._change_target(mid, side) if junction < 0 else None for side in ("left", "right"))
            segments[key] = LaneSegment(
                key, xy, yaw, width, junction, tuple(dict.fromkeys(successors.get(key, ()))), left, right
            )
            if junction < 0:
                self._marks.extend(self._left_marks(mid, [w for w, k in zip(wps, keep) if k], xy, yaw, width))
        # Drop links to lanes the topology did not list as starts (none in CARLA's towns).
        for key, seg in segments.items():
            if any(k not in segments for k in seg.successors + (seg.left, seg.right) if k is not None):
                segments[key] = LaneSegment(
                    key,
                    seg.xy,
                    seg.yaw,
                    seg.width,
                    seg.junction,
                    tuple(k for k in seg.successors if k in segments),
                    seg.left if seg.left in segments else None,
                    seg.right if seg.right in segments else None,
                )
        return segments

    def _sample_lane(self, start: carla.Waypoint):
        """Waypoints of one lane at most `resolution` apart, with their arrays."""
        key, step = lane_key(start), self.resolution
        for _ in range(3):
            # Waypoints step along the road's reference line; on a curve, a lane outside it runs
            # further (up to 1.5 times in the junctions): sample such lanes more densely.
            wps = [start] + [w for w in start.next_until_lane_end(step) if lane_key(w) == key]
            xy, yaw, width = self._waypoint_arrays(wps)
            longest = float(np.max(np.linalg.norm(np.diff(xy, axis=0), axis=1), initial=0.0))
            if longest <= self.resolution * 1.001:
                break
            step *= 0.98 * self.resolution / longest
        return wps, xy, yaw, width

    @staticmethod
    def _change_target(wp: carla.Waypoint, side: str) -> LaneKey | None:
        """The same-direction driving lane beside wp that the map allows changing into."""
        allowed = carla.LaneChange.Left if side == "left" else carla.LaneChange.Right
        if not (wp.lane_change & allowed):
            return None
        nb = _driving_neighbour(wp, side)
        if nb is None or (nb.lane_id > 0) != (wp.lane_id > 0):
            return None
        return lane_key(nb)

    @staticmethod
    def _left_marks(mid, wps, xy, yaw, width) -> list[tuple[np.ndarray, str]]:
        """The line along a lane's left edge, split where its marking type changes."""
        nb = _driving_neighbour(mid, "left")
        if nb is None:
            return []  # no drivable lane beside it: the road's edge, which SUMO does not draw
        if (nb.lane_id > 0) != (mid.lane_id > 0) and mid.lane_id > 0:
            return []  # the centre line is drawn once, by the negative-id lane
        normal = np.stack([-np.sin(yaw), np.cos(yaw)], axis=1)
        edge = xy + 0.5 * width[:, None] * normal
        kinds = [marking_kind(w.left_lane_marking) for w in wps]
        marks, begin = [], 0
        for i in range(1, len(kinds) + 1):
            if i == len(kinds) or kinds[i] != kinds[begin]:
                piece = edge[begin : i + 1]  # through the first point of the next run: no gaps
                if kinds[begin] != "none" and len(piece) >= 2:
                    marks.append((piece, kinds[begin]))
                begin = i
        return marks

    # ----- static BEV layers -------------------------------------------------------------------
    def road_polygons(self) -> list[np.ndarray]:
        """Quadrilaterals [4, 2] between consecutive waypoints of every driving lane."""
        polys = []
        for seg in self.segments.values():
            normal = np.stack([-np.sin(seg.yaw), np.cos(seg.yaw)], axis=1) * (0.5 * seg.width)[:, None]
            left, right = seg.xy + normal, seg.xy - normal
            quads = np.stack([left[:-1], left[1:], right[1:], right[:-1]], axis=1)
            polys.extend(quads)
        return polys

    def lane_markings(self) -> list[tuple[np.ndarray, str]]:
        return list(self._marks)

    @cached_property
    def static_layers(self) -> StaticLayers:
        return render_static_layers(road_polygons=self.road_polygons(), lane_polylines=self.lane_markings())

    def lane_poses(self, junctions: bool = True) -> np.ndarray:
        """All lane centre-line poses [N, 3] (x, y, yaw), about `resolution` metres apart."""
        parts = [np.column_stack([s.xy, s.yaw]) for s in self.segments.values() if junctions or s.junction < 0]
        return np.concatenate(parts)

    # ----- routing -----------------------------------------------------------------------------
    def locate(self, x: float, y: float) -> tuple[LaneKey, float]:
        """The driving lane nearest to a point and the arc position on it."""
        cx, cy, _ = self.to_carla(x, y)
        wp = self.map.get_waypoint(
            carla.Location(x=cx, y=cy, z=0.0), project_to_road=True, lane_type=carla.LaneType.Driving
        )
        if wp is None or lane_key(wp) not in self.segments:
            raise RoutePlanningError(f"point ({x:.1f}, {y:.1f}) is not near a driving lane of {self.town}")
        key = lane_key(wp)
        pos, _ = project(np.array([x, y], dtype=np.float64), self.segments[key].xy)
        return key, pos

    def route_lanes(self) -> list[np.ndarray]:
        """Centre lines of the driving lanes outside junctions (where random routes start and end)."""
        return [seg.xy for seg in self.segments.values() if seg.junction < 0]

    def plan_route(self, start_xy: tuple[float, float], goal_xy: tuple[float, float]) -> Route:
        return self.plan(start_xy, goal_xy)

    def plan(self, start_xy: tuple[float, float], goal_xy: tuple[float, float]) -> Route:
        """Dense route (about 1 m spacing) with a command per point, in Mentor's frame."""
        return self.graph.plan(self.locate(*start_xy), self.locate(*goal_xy))
