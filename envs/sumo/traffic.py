"""Background traffic for the SUMO backend: spawning the preset counts (envs.traffic_presets) and
keeping them up."""

from __future__ import annotations

import logging

import numpy as np

from envs.geometry import point_along, polyline_length
from envs.traffic_presets import TrafficCounts

logger = logging.getLogger(__name__)

_SPAWN_CLEARANCE_M = 20.0  # keep background vehicles this far from the ego's start


class TrafficManager:
    """Spawns background vehicles and pedestrians on random routes and replaces arrivals."""

    def __init__(self, sumo, network, counts: TrafficCounts, rng: np.random.Generator):
        self._sumo = sumo
        self._counts = counts
        self._rng = rng
        self._serial = 0
        normal = [lane for lane in network.lanes.values() if not lane.internal and len(lane.shape) >= 2]
        self._vehicle_lanes = [lane for lane in normal if lane.drivable and _length(lane.shape) > 12.0]
        self._walk_edges = sorted({lane.edge for lane in normal if not lane.drivable and _length(lane.shape) > 8.0})

    def populate(self, ego_xy: tuple[float, float]) -> None:
        for _ in range(self._counts.vehicles):
            self._add_vehicle(ego_xy)
        for _ in range(self._counts.walkers):
            self._add_walker()

    def replenish(self, ego_xy: tuple[float, float]) -> None:
        # running vehicles less the ego, plus those still waiting for a free insertion spot
        present = self._sumo.vehicle.getIDCount() - 1 + len(self._sumo.simulation.getPendingVehicles())
        for _ in range(max(0, self._counts.vehicles - present)):
            self._add_vehicle(ego_xy)
        for _ in range(max(0, self._counts.walkers - self._sumo.person.getIDCount())):
            self._add_walker()

    def _next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    def _add_vehicle(self, ego_xy: tuple[float, float]) -> None:
        for _ in range(20):
            lane = self._vehicle_lanes[self._rng.integers(len(self._vehicle_lanes))]
            goal = self._vehicle_lanes[self._rng.integers(len(self._vehicle_lanes))]
            length = _length(lane.shape)
            pos = float(self._rng.uniform(5.0, length - 5.0))
            point = point_along(lane.shape, pos)
            if np.hypot(*(point - ego_xy)) < _SPAWN_CLEARANCE_M:
                continue
            edges = self._sumo.simulation.findRoute(lane.edge, goal.edge, "background").edges
            if len(edges) < 2:
                continue
            vid = self._next_id("v")
            self._sumo.route.add(f"r_{vid}", edges)
            self._sumo.vehicle.add(
                vid,
                f"r_{vid}",
                typeID="background",
                depart="now",
                departLane=str(lane.index),
                departPos=f"{pos:.2f}",
                departSpeed="0",
            )
            return
        logger.debug("no spawn place found for a background vehicle this step")

    def _add_walker(self) -> None:
        for _ in range(20):
            start, goal = (self._walk_edges[i] for i in self._rng.integers(len(self._walk_edges), size=2))
            stages = self._sumo.simulation.findIntermodalRoute(start, goal)
            if not stages or start == goal:
                continue
            pid = self._next_id("p")
            pos = float(self._rng.uniform(0.0, 1.0)) * self._sumo.lane.getLength(f"{start}_0")
            self._sumo.person.add(pid, start, pos, typeID="walker")
            for stage in stages:
                self._sumo.person.appendStage(pid, stage)
            return


def _length(shape: np.ndarray) -> float:
    return float(polyline_length(shape)[-1])
