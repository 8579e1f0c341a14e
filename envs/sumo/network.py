"""Static geometry of a SUMO town read through libsumo: road surface, markings, lights, routing.

Everything here is read once after the simulation starts and never changes during a run.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.geometry import polyline_length, route_from_pieces, slice_polyline
from envs.types import Route, RouteCommand

VEHICLE_CLASS = "passenger"
_STOP_ZONE_M = 4.0  # length of the zone before a stop-sign line where the ego must halt


class RoutePlanningError(ValueError):
    """A start or goal is not on the road network, or no route connects them."""


@dataclass(frozen=True)
class Lane:
    id: str
    edge: str
    index: int
    shape: np.ndarray  # [K, 2]
    width: float
    drivable: bool
    internal: bool


@dataclass(frozen=True, eq=False)
class StopLine:
    tls: str
    link_index: int
    in_lane: str
    segment: np.ndarray  # [4]: x0, y0, x1, y1
    direction: np.ndarray  # [2] unit vector of travel across the line
    half_width: float

    @property
    def centre(self) -> np.ndarray:
        return 0.5 * (self.segment[:2] + self.segment[2:])


def offset_polyline(shape: np.ndarray, offset: float) -> np.ndarray:
    """Shift a polyline sideways, positive to its left."""
    d = np.gradient(shape, axis=0) if len(shape) > 2 else np.repeat(np.diff(shape, axis=0), 2, axis=0)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    return shape + offset * np.stack([-d[:, 1], d[:, 0]], axis=1)


def net_offset(net_path: Path) -> tuple[float, float]:
    """SUMO's netOffset: net coordinates = original (OpenDRIVE/CARLA-mirrored) + offset."""
    with open(net_path, "rb") as f:
        head = f.read(4096).decode(errors="replace")
    m = re.search(r'netOffset="([-\d.e+]+),([-\d.e+]+)"', head)
    return (float(m.group(1)), float(m.group(2))) if m else (0.0, 0.0)


def centre_line_marks(xodr_path: Path | None) -> dict[str, str]:
    """Road id -> marking type ('solid' or 'broken') of the line between opposite directions."""
    if xodr_path is None:
        return {}
    marks: dict[str, str] = {}
    for road in ET.parse(xodr_path).getroot().iter("road"):
        centre = road.find("lanes/laneSection/center/lane/roadMark")
        if centre is not None:
            kind = centre.get("type", "none")
            marks[road.get("id")] = "broken" if "broken" in kind else ("solid" if "solid" in kind else "none")
    return marks


class TownNetwork:
    """Lanes, markings, stop lines and the route planner of one town."""

    def __init__(self, connection, net_path: Path, xodr_path: Path | None):
        """`connection`: the simulation's envs.sumo.connection.SumoConnection (its `api` is replaced when a
        crashed TraCI server is restarted, so it is looked up on every use)."""
        self._connection = connection
        self.offset = net_offset(net_path)
        self.lanes = {lid: self._read_lane(lid) for lid in self._sumo.lane.getIDList()}
        self.lanes_by_edge: dict[str, list[Lane]] = {}
        for lane in self.lanes.values():
            self.lanes_by_edge.setdefault(lane.edge, []).append(lane)
        self._centre_marks = centre_line_marks(xodr_path)
        self._default_centre_mark = "broken" if xodr_path is not None else "solid"
        self.stop_lines = self._read_stop_lines()
        self._stop_line_index = {(line.tls, line.link_index): line for line in self.stop_lines}
        self.stop_line_segments = np.array([line.segment for line in self.stop_lines]).reshape(-1, 4)
        self.stop_zones = self._read_stop_zones()
        self.intersections = self._read_intersections()

    @property
    def _sumo(self):
        return self._connection.api

    def _read_lane(self, lane_id: str) -> Lane:
        s = self._sumo.lane
        return Lane(
            id=lane_id,
            edge=s.getEdgeID(lane_id),
            index=int(lane_id.rsplit("_", 1)[1]),
            shape=np.asarray(s.getShape(lane_id), dtype=np.float64),
            width=s.getWidth(lane_id),
            drivable=VEHICLE_CLASS in s.getAllowed(lane_id) or not s.getAllowed(lane_id),
            internal=lane_id.startswith(":"),
        )

    def _read_stop_lines(self) -> list[StopLine]:
        lines = []
        for tls in self._sumo.trafficlight.getIDList():
            for index, links in enumerate(self._sumo.trafficlight.getControlledLinks(tls)):
                if not links:
                    continue
                lane = self.lanes[links[0][0]]
                if lane.drivable:
                    lines.append(self._stop_line_at_end(tls, index, lane))
        return lines

    def stop_line(self, tls: str, link_index: int) -> StopLine | None:
        return self._stop_line_index.get((tls, link_index))

    def _read_stop_zones(self) -> np.ndarray:
        """Boxes [K, 5] before stop-sign lines (links in state 's' or 'w' are stop signs)."""
        zones = []
        for lane in self.lanes.values():
            if lane.internal or not lane.drivable:
                continue
            if any(link[5] in ("s", "w") for link in self._sumo.lane.getLinks(lane.id)):
                end = polyline_length(lane.shape)[-1]
                part = slice_polyline(lane.shape, end - _STOP_ZONE_M, end)
                (x0, y0), (x1, y1) = part[0], part[-1]
                zones.append([(x0 + x1) / 2, (y0 + y1) / 2, math.atan2(y1 - y0, x1 - x0), _STOP_ZONE_M, lane.width])
        return np.asarray(zones, dtype=np.float64).reshape(-1, 5)

    def _read_intersections(self) -> set[str]:
        """Junctions where three or more roads meet (others just join two road pieces)."""
        found = set()
        for junction in self._sumo.junction.getIDList():
            if junction.startswith(":"):
                continue
            incoming = [
                e
                for e in self._sumo.junction.getIncomingEdges(junction)
                if not e.startswith(":") and self._edge_drivable(e)
            ]
            outgoing = [
                e
                for e in self._sumo.junction.getOutgoingEdges(junction)
                if not e.startswith(":") and self._edge_drivable(e)
            ]
            roads = {_road_of(e) for e in incoming + outgoing}
            if len(roads) >= 3:
                found.add(junction)
        return found

    def _edge_drivable(self, edge: str) -> bool:
        return any(lane.drivable for lane in self.lanes_by_edge.get(edge, ()))

    @staticmethod
    def _stop_line_at_end(tls: str, index: int, lane: Lane) -> StopLine:
        """The line across the lane's end, perpendicular to its last segment."""
        (x0, y0), (x1, y1) = lane.shape[-2], lane.shape[-1]
        direction = np.array([x1 - x0, y1 - y0]) / max(math.hypot(x1 - x0, y1 - y0), 1e-9)
        nx, ny = -direction[1] * lane.width / 2, direction[0] * lane.width / 2
        segment = np.array([x1 + nx, y1 + ny, x1 - nx, y1 - ny])
        return StopLine(tls, index, lane.id, segment, direction, lane.width / 2)

    # ----- drawing inputs for the BEV static layer -------------------------------------------
    def road_polylines(self) -> list[tuple[np.ndarray, float]]:
        return [(lane.shape, lane.width) for lane in self.lanes.values() if lane.drivable and len(lane.shape) >= 2]

    def lane_markings(self) -> list[tuple[np.ndarray, str]]:
        """Broken lines between same-direction lanes, the xodr's type between opposite ones."""
        marks = []
        by_edge: dict[str, list[Lane]] = {}
        for lane in self.lanes.values():
            if lane.drivable and not lane.internal:
                by_edge.setdefault(lane.edge, []).append(lane)
        for edge, lanes in by_edge.items():
            lanes.sort(key=lambda lane: lane.index)
            for lane in lanes[:-1]:
                marks.append((offset_polyline(lane.shape, lane.width / 2), "broken"))
            leftmost = lanes[-1]
            if self._has_opposite(edge):
                kind = self._centre_marks.get(_road_of(edge), self._default_centre_mark)
                if kind != "none":
                    marks.append((offset_polyline(leftmost.shape, leftmost.width / 2), kind))
        return marks

    def _has_opposite(self, edge: str) -> bool:
        other = edge[1:] if edge.startswith("-") else "-" + edge
        return any(lane.drivable for lane in self.lanes_by_edge.get(other, ())) or _is_grid_pair(
            edge, self.lanes_by_edge
        )

    # ----- coordinates ---------------------------------------------------------------------
    def from_carla(self, x: float, y: float, yaw_deg: float = 0.0) -> tuple[float, float, float]:
        """CARLA (left-handed, vehicle centre) -> net frame (right-handed)."""
        return x + self.offset[0], self.offset[1] - y, math.radians(-yaw_deg)

    def to_carla(self, x: float, y: float, yaw: float = 0.0) -> tuple[float, float, float]:
        return x - self.offset[0], -(y - self.offset[1]), -math.degrees(yaw)

    # ----- routing -------------------------------------------------------------------------
    def locate(self, x: float, y: float) -> tuple[str, float]:
        """The drivable lane and position on it nearest to a point."""
        edge, pos, index = self._sumo.simulation.convertRoad(x, y, False, VEHICLE_CLASS)
        lane_id = f"{edge}_{index}"
        if edge.startswith(":") or lane_id not in self.lanes or not self.lanes[lane_id].drivable:
            raise RoutePlanningError(
                f"point ({x:.1f}, {y:.1f}) is not on a drivable lane outside junctions "
                f"(nearest: {lane_id}); pick a start or goal on a road"
            )
        return lane_id, pos

    def use_driving_lane_travel_times(self) -> None:
        """Make SUMO's router time each edge at its drivable lanes' speed.

        SUMO times an edge by its first lane's speed limit; in the CARLA towns that lane is the
        sidewalk (2.78 m/s), while junction connections are timed at road speed, so the plain router
        treats every road as five times longer than a turn and prefers turning to going straight.
        The weights last until the next simulation.load: call this after each (re)start.
        """
        for edge, lanes in self.lanes_by_edge.items():
            times = [
                self._sumo.lane.getLength(lane.id) / self._sumo.lane.getMaxSpeed(lane.id)
                for lane in lanes
                if lane.drivable
            ]
            if times:
                self._sumo.edge.adaptTraveltime(edge, min(times))

    def route_lanes(self) -> list[np.ndarray]:
        """Centre lines of the drivable lanes outside junctions (where random routes start and end)."""
        return [
            lane.shape for lane in self.lanes.values() if lane.drivable and not lane.internal and len(lane.shape) >= 2
        ]

    def plan_route(self, start_xy: tuple[float, float], goal_xy: tuple[float, float]) -> Route:
        return self.plan(start_xy, goal_xy)[1]

    def plan(self, start_xy: tuple[float, float], goal_xy: tuple[float, float]) -> tuple[list[str], Route]:
        """Edges and the dense route polyline from start to goal."""
        start_lane, start_pos = self.locate(*start_xy)
        goal_lane, goal_pos = self.locate(*goal_xy)
        edges = list(
            self._sumo.simulation.findRoute(
                self.lanes[start_lane].edge, self.lanes[goal_lane].edge, "DEFAULT_VEHTYPE"
            ).edges
        )
        if not edges:
            raise RoutePlanningError(f"no route from {start_lane} to {goal_lane}")
        if len(edges) == 1 and goal_pos < start_pos:
            raise RoutePlanningError(f"goal lies behind the start on {start_lane}")
        pieces = self._lane_pieces(edges, start_lane, start_pos, goal_pos)
        return edges, route_from_pieces(pieces)

    def _lane_pieces(self, edges: list[str], start_lane: str, start_pos: float, goal_pos: float):
        """(polyline, command) pieces along the lanes the route uses."""
        pieces = []
        lane = self.lanes[start_lane]
        pos = start_pos
        for i, edge in enumerate(edges):
            last = i == len(edges) - 1
            target = lane if last else self._lane_towards(edge, edges[i + 1], lane.index)
            end = goal_pos if last else polyline_length(target.shape)[-1]
            if target.id != lane.id:  # change lanes half-way along the edge
                mid = 0.5 * (pos + end)
                command = RouteCommand.CHANGE_LANE_LEFT if target.index > lane.index else RouteCommand.CHANGE_LANE_RIGHT
                pieces.append((slice_polyline(lane.shape, pos, mid), RouteCommand.LANE_FOLLOW))
                pieces.append((slice_polyline(target.shape, mid, end), command))
            else:
                pieces.append((slice_polyline(lane.shape, pos, end), RouteCommand.LANE_FOLLOW))
            if last:
                break
            lane = self._follow_link(target, edges[i + 1], pieces)
            pos = 0.0
        return pieces

    def continuation(self, edge: str, metres: float = 300.0) -> list[str]:
        """Edges that follow `edge` (straight on where possible) for about `metres`.

        Appended to the ego's route in SUMO so that SUMO's copy does not arrive and vanish
        at the goal before the episode has ended.
        """
        edges, travelled = [], 0.0
        while travelled < metres:
            lanes = [lane for lane in self.lanes_by_edge.get(edge, ()) if lane.drivable]
            links = sorted(
                (
                    k
                    for lane in lanes
                    for k in self._sumo.lane.getLinks(lane.id)
                    if not self.lanes[k[0]].internal and self.lanes[k[0]].drivable
                ),
                key=lambda k: "srlLRt".find(k[6]) % 7,
            )
            if not links:
                break
            edge = self.lanes[links[0][0]].edge
            edges.append(edge)
            travelled += polyline_length(self.lanes[links[0][0]].shape)[-1]
        return edges

    def _lane_towards(self, edge: str, next_edge: str, preferred_index: int) -> Lane:
        options = [
            lane
            for lane in self.lanes_by_edge.get(edge, ())
            if lane.drivable and any(self.lanes[k[0]].edge == next_edge for k in self._sumo.lane.getLinks(lane.id))
        ]
        if not options:
            raise RoutePlanningError(f"no lane of {edge} leads to {next_edge}")
        return min(options, key=lambda lane: abs(lane.index - preferred_index))

    def _follow_link(self, lane: Lane, next_edge: str, pieces: list) -> Lane:
        """Append the junction's internal lanes to `pieces`; return the lane entered on next_edge."""
        link = next(k for k in self._sumo.lane.getLinks(lane.id) if self.lanes[k[0]].edge == next_edge)
        junction_command = self._junction_command(lane.edge, link[6])
        via = link[4]
        while via:
            pieces.append((self.lanes[via].shape, junction_command))
            via = next((k[4] for k in self._sumo.lane.getLinks(via) if k[0] == link[0]), "")
        return self.lanes[link[0]]

    def _junction_command(self, edge: str, direction: str) -> RouteCommand:
        junction = self._sumo.edge.getToJunction(edge)
        if junction not in self.intersections:
            return RouteCommand.LANE_FOLLOW
        if direction in ("l", "L", "t"):
            return RouteCommand.LEFT
        if direction in ("r", "R"):
            return RouteCommand.RIGHT
        return RouteCommand.STRAIGHT


def _road_of(edge: str) -> str:
    """OpenDRIVE road id of a netconvert edge id like '-12_3' (generated towns: the edge itself)."""
    m = re.fullmatch(r"-?(\d+)_\d+", edge)
    return m.group(1) if m else edge.lstrip("-")


def _is_grid_pair(edge: str, lanes_by_edge: dict[str, list[Lane]]) -> bool:
    """netgenerate names opposite edges A0B0 / B0A0."""
    m = re.fullmatch(r"([A-Z]+\d+)([A-Z]+\d+)", edge)
    return bool(m) and (m.group(2) + m.group(1)) in lanes_by_edge
