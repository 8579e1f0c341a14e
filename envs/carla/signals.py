"""Traffic-light stop lines and stop-sign zones of a CARLA town, read offline from `carla.Map`.

CARLA's towns place each signal (OpenDRIVE landmark) on the junction connector lanes it governs,
at the connector's start: the stop line crosses those lanes there. The live world then only has to
look up each landmark's traffic-light actor for its state (`world.get_traffic_light(landmark)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import carla
import numpy as np

from envs.carla.town_map import CarlaTownMap
from envs.geometry import wrap_angle
from envs.types import Route

TRAFFIC_LIGHT = "1000001"  # OpenDRIVE signal types as CARLA's towns use them
STOP_SIGN = "206"
STOP_ZONE_M = 4.0  # the zone before a stop-sign line where the ego must halt (as the SUMO backend)
_SAME_LINE_M = 0.5  # connectors that start together share one stop line
_ON_ROUTE_HEADING = math.radians(30.0)


@dataclass(frozen=True, eq=False)
class SignalLine:
    """One stop line across one lane, in Mentor's frame."""

    landmark_id: str
    kind: str  # "light" or "stop"
    segment: np.ndarray  # [4] x0, y0, x1, y1
    direction: np.ndarray  # [2] unit vector of travel across the line
    half_width: float
    centre: np.ndarray = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "centre", 0.5 * (self.segment[:2] + self.segment[2:]))


def read_signal_lines(town: CarlaTownMap) -> list[SignalLine]:
    """Every traffic-light and stop-sign line of the town, one per lane it governs."""
    lines: list[SignalLine] = []
    for signal_type, kind in ((TRAFFIC_LIGHT, "light"), (STOP_SIGN, "stop")):
        for landmark in town.map.get_all_landmarks_of_type(signal_type):
            for line in _landmark_lines(town, landmark, kind):
                if not any(
                    o.landmark_id == line.landmark_id and np.linalg.norm(o.centre - line.centre) < _SAME_LINE_M
                    for o in lines
                ):
                    lines.append(line)
    return lines


def _landmark_lines(town: CarlaTownMap, landmark: carla.Landmark, kind: str) -> list[SignalLine]:
    lines = []
    for low, high in landmark.get_lane_validities():
        for lane in range(low, high + 1):
            wp = town.map.get_waypoint_xodr(landmark.road_id, lane, landmark.s) if lane != 0 else None
            if wp is None or wp.lane_type != carla.LaneType.Driving:
                continue
            loc, rot = wp.transform.location, wp.transform.rotation
            x, y, yaw = town.from_carla(loc.x, loc.y, rot.yaw)
            direction = np.array([math.cos(yaw), math.sin(yaw)])
            normal = np.array([-direction[1], direction[0]]) * 0.5 * wp.lane_width
            centre = np.array([x, y])
            lines.append(
                SignalLine(
                    str(landmark.id),
                    kind,
                    np.concatenate([centre + normal, centre - normal]),
                    direction,
                    0.5 * wp.lane_width,
                )
            )
    return lines


def stop_zones(lines: list[SignalLine]) -> np.ndarray:
    """Boxes [K, 5] of STOP_ZONE_M before each stop-sign line."""
    zones = [
        [
            *(line.centre - 0.5 * STOP_ZONE_M * line.direction),
            math.atan2(line.direction[1], line.direction[0]),
            STOP_ZONE_M,
            2.0 * line.half_width,
        ]
        for line in lines
        if line.kind == "stop"
    ]
    return np.asarray(zones, dtype=np.float64).reshape(-1, 5)


def segments_array(lines: list[SignalLine]) -> np.ndarray:
    return np.array([line.segment for line in lines], dtype=np.float64).reshape(-1, 4)


def lights_on_route(route: Route, lines: list[SignalLine]) -> list[tuple[float, SignalLine]]:
    """The traffic-light lines the route crosses, as (arc length along the route, line), in order;
    one per landmark and crossing."""
    found: list[tuple[float, SignalLine]] = []
    for line in lines:
        if line.kind != "light":
            continue
        d = np.linalg.norm(route.xy - line.centre, axis=1)
        i = int(np.argmin(d))
        heading = math.atan2(line.direction[1], line.direction[0])
        if d[i] > line.half_width or abs(wrap_angle(route.yaw[i] - heading)) > _ON_ROUTE_HEADING:
            continue
        s = float(route.s[i] + (line.centre - route.xy[i]) @ line.direction)
        if not any(other.landmark_id == line.landmark_id and abs(s - s0) < 5.0 for s0, other in found):
            found.append((s, line))
    return sorted(found, key=lambda item: item[0])
