"""The SUMO backend: SUMO runs traffic, lights and pedestrians; Mentor drives the ego.

The first simulation of a process runs in libsumo, every further one in a SUMO server over TraCI
(envs/sumo/connection.py): any number of simulations can live in one process.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from envs import vehicle_model
from envs.bev import StaticLayers, render_static_layers
from envs.collision import CollisionEvent, colliding
from envs.maps import GENERATED_TOWN, MapSearch
from envs.occlusion import visible
from envs.scenarios.director import SCENARIO_PREFIX, VEHICLE_SIZE, ScenarioDirector
from envs.scenarios.placement import place
from envs.sumo.connection import SimulationInUseError, Transport, open_connection  # noqa: F401 (re-exported)
from envs.sumo.netbuild import build_net
from envs.sumo.network import TownNetwork
from envs.sumo.traffic import TrafficManager
from envs.traffic_presets import traffic_counts
from envs.traffic_rules import WATCH_LIGHT_M, RedLightWatch, StopSignWatch, distance_ahead, ego_front
from envs.types import Control, EgoState, LightState, NextLight, Route, RouteSpec, SimulatorError, Snapshot, StopLines

logger = logging.getLogger(__name__)

EGO_ID = "ego"
_CONTEXT_RADIUS_M = 60.0
_STOP_LINE_RADIUS_M = 60.0
_RED_STATES = frozenset("rRu")
_YELLOW_STATES = frozenset("yY")
_GREEN_STATES = frozenset("gG")


@dataclass(frozen=True)
class SumoSettings:
    town: str = "Town01"
    traffic: str = "regular"
    maps_dir: str | None = None
    dt: float = 0.1
    vehicle: vehicle_model.VehicleParams = vehicle_model.VehicleParams()
    background_max_speed: float = 8.33  # m/s, 30 km/h like CARLA's autopilot in towns
    # Jammed vehicles teleport after this long; longer than the 90 s blocked criterion, so the
    # ego itself is never teleported within an episode.
    time_to_teleport_s: float = 120.0
    # auto: libsumo when this process has none running, else a SUMO server over TraCI
    transport: Transport = "auto"


class SumoSimulation:
    """One embedded simulation. `reset(seed, route)` starts an episode; `step(control)` advances 0.1 s."""

    def __init__(self, settings: SumoSettings):
        self.settings = settings
        traffic_counts(settings.town, settings.traffic)  # validate the preset before starting anything
        self._maps = MapSearch.from_settings(settings.maps_dir)
        self.net_path = build_net(settings.town, self._maps)
        self._connection = open_connection(owner=f"{type(self).__name__}@{id(self):x}", transport=settings.transport)
        self._started = False
        self._director: ScenarioDirector | None = None  # the scenario of the episode, if its route has one
        self._episode = 0
        self._step_count = 0
        self._seed = 0
        try:
            self._start(seed=0)
            xodr = None if settings.town == GENERATED_TOWN else self._maps.xodr_path(settings.town)
            self.network = TownNetwork(self._connection, self.net_path, xodr)
            self.network.use_driving_lane_travel_times()
            self.static_layers: StaticLayers = render_static_layers(
                road_polygons=[],
                road_polylines=self.network.road_polylines(),
                lane_polylines=self.network.lane_markings(),
            )
        except Exception:
            self.close()
            raise

    # ----- lifecycle -------------------------------------------------------------------------
    @property
    def _sumo(self):
        """The TraCI domains (libsumo's module or a TraCI connection: the same API)."""
        return self._connection.api

    @property
    def transport(self) -> str:
        """Where this simulation runs: 'libsumo' (in this process) or 'traci' (a SUMO server)."""
        return self._connection.transport

    @property
    def server_pid(self) -> int | None:
        """The SUMO server's process id (TraCI), None in libsumo."""
        return self._connection.server_pid

    def close(self) -> None:
        if self._started:
            try:
                self._connection.close()
            except Exception:  # a crashed SUMO may refuse to close; the slot is freed regardless
                logger.debug("closing SUMO failed", exc_info=True)
            self._started = False
        self._connection.release()

    def _args(self, seed: int) -> list[str]:
        return [
            "sumo",
            "-n",
            str(self.net_path),
            "--step-length",
            str(self.settings.dt),
            "--seed",
            str(seed),
            "--no-step-log",
            "true",
            "--no-warnings",
            "true",
            "--collision.action",
            "none",
            "--time-to-teleport",
            str(self.settings.time_to_teleport_s),
            "--pedestrian.model",
            "striping",
            "--ignore-route-errors",
            "true",
        ]

    def _start(self, seed: int) -> None:
        if self._started:
            self._connection.load(self._args(seed))
            self.network.use_driving_lane_travel_times()  # load() resets the router's weights
        else:
            self._connection.start(self._args(seed))
            self._started = True
        self._define_types()

    def _define_types(self) -> None:
        s, v = self._sumo, self.settings.vehicle
        s.vehicletype.copy("DEFAULT_VEHTYPE", "ego")
        s.vehicletype.setLength("ego", v.length)
        s.vehicletype.setWidth("ego", v.width)
        s.vehicletype.copy("DEFAULT_VEHTYPE", "background")
        s.vehicletype.setMaxSpeed("background", self.settings.background_max_speed)
        s.vehicletype.setLength("background", 4.6)
        s.vehicletype.setWidth("background", 1.9)
        # Background drivers keep a 1.5 s headway and can brake as hard as the ego can (8 m/s^2),
        # so an ego emergency stop is not routinely rear-ended.
        s.vehicletype.setTau("background", 1.5)
        s.vehicletype.setDecel("background", 6.0)
        s.vehicletype.setEmergencyDecel("background", 9.0)
        s.vehicletype.copy("background", "scenario")  # a scenario's scripted vehicles
        s.vehicletype.setLength("scenario", VEHICLE_SIZE[0])
        s.vehicletype.setWidth("scenario", VEHICLE_SIZE[1])
        s.vehicletype.copy("DEFAULT_PEDTYPE", "walker")
        self._walker_size = (s.vehicletype.getLength("walker"), s.vehicletype.getWidth("walker"))

    # ----- episode ---------------------------------------------------------------------------
    def reset(self, seed: int, route: RouteSpec) -> tuple[Route, Snapshot]:
        self._seed, self._step_count = seed, 0
        self._episode += 1
        try:
            self._start(seed)  # load() when running; start() afresh after a crash
            return self._begin_episode(seed, route)
        except self._connection.errors as exc:
            self._crashed(exc)

    def _begin_episode(self, seed: int, spec: RouteSpec) -> tuple[Route, Snapshot]:
        start_x, start_y, _ = self.network.from_carla(*spec.start)
        goal_x, goal_y, _ = self.network.from_carla(*spec.goal, 0.0)
        edges, route = self.network.plan((start_x, start_y), (goal_x, goal_y))
        self.route = route
        s = self._sumo
        route_id = f"ego_route_{self._episode}"
        s.route.add(route_id, edges + self.network.continuation(edges[-1]))
        s.vehicle.add(EGO_ID, route_id, typeID="ego", depart="now", departSpeed="0")
        x0, y0 = route.xy[0]
        self._ego = vehicle_model.KinematicState(float(x0), float(y0), float(route.yaw[0]), 0.0)
        self._control, self._accel, self._v_lateral = Control(), 0.0, 0.0
        self._move_ego_in_sumo()
        self._route_id = route_id
        self._held_signal = None  # (light, its program) while a scenario holds the ego's light green
        self._director = self._direct(spec, route)
        self._play_scenario()
        self._traffic = TrafficManager(
            s, self.network, traffic_counts(self.settings.town, self.settings.traffic), np.random.default_rng(seed)
        )
        self._traffic.populate((x0, y0))
        s.simulationStep()
        s.vehicle.setSpeedMode(EGO_ID, 0)
        s.vehicle.setLaneChangeMode(EGO_ID, 0)
        tc = self._connection.constants
        s.vehicle.subscribeContext(
            EGO_ID,
            tc.CMD_GET_VEHICLE_VARIABLE,
            _CONTEXT_RADIUS_M,
            [tc.VAR_POSITION, tc.VAR_ANGLE, tc.VAR_SPEED, tc.VAR_LENGTH, tc.VAR_WIDTH],
        )
        s.vehicle.subscribeContext(
            EGO_ID,
            tc.CMD_GET_PERSON_VARIABLE,
            _CONTEXT_RADIUS_M,
            [tc.VAR_POSITION, tc.VAR_ANGLE, tc.VAR_SPEED, tc.VAR_LANE_ID],
        )
        self._touching: set[str] = set()
        self._red_light = RedLightWatch()
        self._stop_sign = StopSignWatch()
        return route, self._snapshot(travelled=0.0)

    def step(self, control: Control) -> Snapshot:
        if not self._started:
            raise SimulatorError("the simulation is closed or crashed; call reset() first")
        p = self.settings.vehicle
        previous = self._ego
        self._ego, self._accel, self._v_lateral = vehicle_model.step(previous, control, self.settings.dt, p)
        self._control = control
        self._step_count += 1
        try:
            self._move_ego_in_sumo()
            self._play_scenario()
            self._sumo.simulationStep()
            self._traffic.replenish((self._ego.x, self._ego.y))
            travelled = math.hypot(self._ego.x - previous.x, self._ego.y - previous.y)
            return self._snapshot(travelled)
        except self._connection.errors as exc:
            self._crashed(exc)

    def _crashed(self, exc: Exception):
        context = (
            f"town={self.settings.town} traffic={self.settings.traffic} seed={self._seed} "
            f"episode={self._episode} step={self._step_count}"
        )
        try:
            self._connection.close()
        except Exception:
            logger.debug("closing SUMO after a crash failed", exc_info=True)
        self._started = False
        raise SimulatorError(f"SUMO failed ({context}): {exc}. reset() restarts the simulation.") from exc

    def _move_ego_in_sumo(self) -> None:
        """Place SUMO's copy of the ego (front-bumper reference) where our dynamics put it.

        keepRoute=1 keeps it mapped onto its planned route so that junction foes see it coming.
        """
        e, half = self._ego, 0.5 * self.settings.vehicle.length
        fx, fy = e.x + half * math.cos(e.yaw), e.y + half * math.sin(e.yaw)
        # A huge match threshold: an ego far off the road is still mapped (criteria end the episode).
        self._sumo.vehicle.moveToXY(EGO_ID, "", -1, fx, fy, 90.0 - math.degrees(e.yaw), keepRoute=1, matchThreshold=1e5)

    # ----- scenarios ----------------------------------------------------------------------------
    @property
    def scenario_director(self) -> ScenarioDirector | None:
        """The scenario of the current episode (None: its route has none)."""
        return self._director

    def _direct(self, spec: RouteSpec, route: Route) -> ScenarioDirector | None:
        """The director of the route's scenario (ScenarioError when it cannot be placed on it)."""
        if spec.scenario is None:
            return None
        try:
            lane_width = self.network.lanes[self.network.locate(*route.xy[0])[0]].width
        except Exception:  # noqa: BLE001 - a start off the lanes' table: Town01's lane width
            lane_width = 4.0
        return ScenarioDirector(spec.scenario, place(spec.scenario, route), route, lane_width)

    def _play_scenario(self) -> None:
        """Move the scenario's scripted actors to this step's poses: added when they appear, removed
        when they leave."""
        if self._director is None:
            return
        e, now = self._ego, self._step_count * self.settings.dt
        actors = self._director.update(now, e.x, e.y, e.speed)
        self._hold_signal(self._director.holds_green_for_ego(now))
        for actor in actors:
            if actor.pose is None:
                if actor.in_sumo:
                    self._remove_actor(actor)
                continue
            if not actor.in_sumo:
                self._add_actor(actor)
            self._move_actor(actor)

    def _hold_signal(self, hold: bool) -> None:
        """Hold the ego's next light green for its link (the light's other links red) while `hold`
        (a state set once stays until the program is given back); then give that light back to its
        program."""
        tl = self._sumo.trafficlight
        if hold and self._held_signal is None:
            upcoming = self._sumo.vehicle.getNextTLS(EGO_ID)
            if upcoming:  # the light of the scenario's junction: the one nearest its hazard point
                ahead = self._director.ego_to_hazard_m
                tls, index, _, _ = min(upcoming, key=lambda light: abs(light[2] - ahead))
                self._held_signal = (tls, tl.getProgram(tls))  # its program, to give it back
                links = len(tl.getRedYellowGreenState(tls))
                tl.setRedYellowGreenState(tls, "".join("G" if i == index else "r" for i in range(links)))
        elif not hold and self._held_signal is not None:
            tl.setProgram(*self._held_signal)
            self._held_signal = None

    def _add_actor(self, actor) -> None:
        s = self._sumo
        if actor.kind == "vehicle":
            s.vehicle.add(actor.actor_id, self._route_id, typeID="scenario", depart="now", departSpeed="0")
        else:
            lane, pos = self._nearest_lane(actor.pose.x, actor.pose.y)
            s.person.add(actor.actor_id, lane.rsplit("_", 1)[0], pos, typeID="walker")
            s.person.appendWaitingStage(actor.actor_id, 1e6)
        actor.in_sumo = True

    def _nearest_lane(self, x: float, y: float) -> tuple[str, float]:
        edge, pos, index = self._sumo.simulation.convertRoad(x, y, False, "pedestrian")
        return f"{edge}_{index}", max(pos, 0.0)

    def _move_actor(self, actor) -> None:
        pose, angle = actor.pose, 90.0 - math.degrees(actor.pose.yaw)
        if actor.kind == "vehicle":  # SUMO places a vehicle by its front bumper
            half = 0.5 * VEHICLE_SIZE[0]
            fx, fy = pose.x + half * math.cos(pose.yaw), pose.y + half * math.sin(pose.yaw)
            self._sumo.vehicle.moveToXY(actor.actor_id, "", -1, fx, fy, angle, keepRoute=2, matchThreshold=1e5)
            self._sumo.vehicle.setSpeed(actor.actor_id, pose.speed)
        else:
            self._sumo.person.moveToXY(actor.actor_id, "", pose.x, pose.y, angle, keepRoute=2, matchThreshold=1e5)

    def _remove_actor(self, actor) -> None:
        domain = self._sumo.vehicle if actor.kind == "vehicle" else self._sumo.person
        if actor.actor_id in domain.getIDList():
            domain.remove(actor.actor_id)
        actor.in_sumo = False

    # ----- observation of the world ----------------------------------------------------------
    def _snapshot(self, travelled: float) -> Snapshot:
        self._signal_states: dict[str, str] = {}  # this step's, read once per light (a TraCI round trip each)
        p = self.settings.vehicle
        e = self._ego
        ego = EgoState(
            x=e.x,
            y=e.y,
            yaw=e.yaw,
            speed=e.speed,
            v_lateral=self._v_lateral,
            accel=self._accel,
            length=p.length,
            width=p.width,
            control=self._control,
            gear=vehicle_model.gear_for(e.speed, self._control.throttle),
        )
        front = ego_front(ego)
        vehicles_arr, vehicle_speeds, vehicle_ids, walkers_arr, walker_speeds, walker_ids, walker_lanes = (
            self._nearby_objects()
        )
        collisions = self._collisions(ego, vehicles_arr, vehicle_ids, walkers_arr, walker_ids)
        on_road = np.array(
            [
                bool(self.static_layers.is_drivable(box[0], box[1]))  # a scripted walker: where it stands
                if wid.startswith(SCENARIO_PREFIX)
                else self._walker_on_road(lane)
                for wid, lane, box in zip(walker_ids, walker_lanes, walkers_arr)
            ],
            dtype=bool,
        )
        seen = visible((e.x, e.y), walkers_arr, self._director.occluders() if self._director else np.zeros((0, 5)))
        next_light = self._next_light(front)
        at_stop, ran_stop, stop_pending = self._stop_sign.update(e.x, e.y, e.speed, self.network.stop_zones)
        return Snapshot(
            time=self._step_count * self.settings.dt,
            ego=ego,
            vehicles=vehicles_arr,
            vehicle_speeds=vehicle_speeds,
            walkers=walkers_arr[seen],
            walker_speeds=walker_speeds[seen],
            walkers_on_road=on_road[seen],
            hidden_walkers=walkers_arr[~seen],
            stop_lines=self._stop_lines_near(e.x, e.y),
            next_light=next_light,
            stop_zones=self._stop_zones_near(e.x, e.y),
            at_stop_sign=at_stop,
            stop_sign_pending=stop_pending,
            ran_stop_sign=ran_stop,
            on_drivable=self.static_layers.is_drivable(e.x, e.y),
            collisions=collisions,
            ran_red_light=self._ran_red_light(front),
            travelled=travelled,
        )

    def _nearby_objects(self):
        """Vehicles and walkers within the context radius, as centre boxes (SUMO reports the front)."""
        tc = self._connection.constants
        nearby = self._sumo.vehicle.getContextSubscriptionResults(EGO_ID) or {}
        vehicle_ids = [oid for oid, var in nearby.items() if oid != EGO_ID and tc.VAR_LANE_ID not in var]
        walker_ids = [oid for oid, var in nearby.items() if tc.VAR_LANE_ID in var]

        def boxes(ids, size=None):
            if not ids:
                return np.zeros((0, 5)), np.zeros(0)
            rows = np.array(
                [
                    (
                        *nearby[i][tc.VAR_POSITION],
                        nearby[i][tc.VAR_ANGLE],
                        nearby[i][tc.VAR_SPEED],
                        *(size or (nearby[i][tc.VAR_LENGTH], nearby[i][tc.VAR_WIDTH])),
                    )
                    for i in ids
                ]
            )
            yaw = np.radians(90.0 - rows[:, 2])
            half = 0.5 * rows[:, 4]
            out = np.stack(
                [rows[:, 0] - half * np.cos(yaw), rows[:, 1] - half * np.sin(yaw), yaw, rows[:, 4], rows[:, 5]], axis=1
            )
            return out, rows[:, 3]

        # a scenario's actors come from its director (exact, and SUMO's context search misses a
        # vehicle placed off the lanes, such as one parked at the kerb)
        vehicle_ids = [i for i in vehicle_ids if not i.startswith(SCENARIO_PREFIX)]
        walker_ids = [i for i in walker_ids if not i.startswith(SCENARIO_PREFIX)]
        vehicles, vehicle_speeds = boxes(vehicle_ids)
        walkers, walker_speeds = boxes(walker_ids, self._walker_size)
        walker_lanes = [nearby[i][tc.VAR_LANE_ID] for i in walker_ids]
        for actor in self._director.actors if self._director is not None else ():
            pose = actor.pose
            if pose is None or math.hypot(pose.x - self._ego.x, pose.y - self._ego.y) > _CONTEXT_RADIUS_M:
                continue
            box = np.array(
                [[pose.x, pose.y, pose.yaw, *(VEHICLE_SIZE if actor.kind == "vehicle" else self._walker_size)]]
            )
            if actor.kind == "vehicle":
                vehicles, vehicle_speeds = np.concatenate([vehicles, box]), np.append(vehicle_speeds, pose.speed)
                vehicle_ids.append(actor.actor_id)
            else:
                walkers, walker_speeds = np.concatenate([walkers, box]), np.append(walker_speeds, pose.speed)
                walker_ids.append(actor.actor_id)
                walker_lanes.append("")
        return vehicles, vehicle_speeds, vehicle_ids, walkers, walker_speeds, walker_ids, walker_lanes

    def _walker_on_road(self, lane_id: str) -> bool:
        lane = self.network.lanes.get(lane_id)
        return lane is not None and (lane.drivable or "_c" in lane.id)

    def _collisions(self, ego: EgoState, vehicles, vehicle_ids, walkers, walker_ids) -> tuple:
        """New contacts of the ego's box with other boxes (one event per contact, not per step)."""
        touching, events = set(), []
        for boxes, ids, kind in ((vehicles, vehicle_ids, "vehicle"), (walkers, walker_ids, "pedestrian")):
            if len(boxes) == 0:
                continue
            hits = colliding(ego.box, boxes)
            for i in np.flatnonzero(hits):
                touching.add(ids[i])
                if ids[i] not in self._touching:
                    events.append(CollisionEvent(kind=kind, other_id=ids[i], speed=ego.speed))
        self._touching = touching
        return tuple(events)

    def _next_light(self, front: np.ndarray) -> NextLight | None:
        """The light ahead: found through SUMO's route, then tracked on our own geometry once
        within reach (SUMO's mapping of the ego can jump onto the junction early)."""
        upcoming = self._sumo.vehicle.getNextTLS(EGO_ID)
        if upcoming:
            tls, index, distance, state = upcoming[0]
            line = self.network.stop_line(tls, index)
            if line is not None and distance < WATCH_LIGHT_M:
                self._red_light.watch(line)
        if self._red_light.line is not None:
            line = self._red_light.line
            tls, state = line.tls, self._link_state(line)
            distance = distance_ahead(front, line)[0]
        elif not upcoming:
            return None
        tl = self._sumo.trafficlight
        duration = max(tl.getPhaseDuration(tls), 1e-6)
        remaining = (tl.getNextSwitch(tls) - self._sumo.simulation.getTime()) / duration
        return NextLight(
            state=_light_state(state), distance=max(0.0, distance), phase_remaining=float(np.clip(remaining, 0.0, 1.0))
        )

    def _signal_state(self, tls: str) -> str:
        """The light program's state string this step (one query per light and step)."""
        if tls not in self._signal_states:
            self._signal_states[tls] = self._sumo.trafficlight.getRedYellowGreenState(tls)
        return self._signal_states[tls]

    def _link_state(self, line) -> str:
        return self._signal_state(line.tls)[line.link_index]

    def _ran_red_light(self, front: np.ndarray) -> bool:
        """The ego's front crossed the watched stop line this step while its signal showed red.

        Judged on our own geometry, not on SUMO's route mapping, which can jump near junctions.
        """
        crossed = self._red_light.crossed(front)
        return crossed is not None and self._link_state(crossed) in _RED_STATES

    def _stop_lines_near(self, x: float, y: float) -> StopLines:
        segments = self.network.stop_line_segments
        near = np.flatnonzero(
            (np.abs(segments[:, 0] - x) < _STOP_LINE_RADIUS_M) & (np.abs(segments[:, 1] - y) < _STOP_LINE_RADIUS_M)
        )
        if len(near) == 0:
            return StopLines.empty()
        lines = [self.network.stop_lines[i] for i in near]
        states = {tls: self._signal_state(tls) for tls in {line.tls for line in lines}}
        return StopLines(
            segments=segments[near],
            states=np.array([_light_state(states[line.tls][line.link_index]) for line in lines], dtype=np.int64),
        )

    def _stop_zones_near(self, x: float, y: float) -> np.ndarray:
        zones = self.network.stop_zones
        near = (np.abs(zones[:, 0] - x) < _STOP_LINE_RADIUS_M) & (np.abs(zones[:, 1] - y) < _STOP_LINE_RADIUS_M)
        return zones[near]


def _light_state(char: str) -> LightState:
    if char in _RED_STATES:
        return LightState.RED
    if char in _YELLOW_STATES:
        return LightState.YELLOW
    if char in _GREEN_STATES:
        return LightState.GREEN
    return LightState.NONE
