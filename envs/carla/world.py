"""The live CARLA backend: a CARLA server drives the ego, background traffic and walkers.

Same interface as envs.sumo.simulation.SumoSimulation (`reset(seed, route)`, `step(control)`,
`static_layers`, `network`, `settings.dt`), so DrivingEnv's BEV, reward, criteria and metrics are
shared. This file is the thin part that needs a server (tests marked `carla`); the map, routes,
stop lines and value conversions it uses (town_map, signals, readout) are tested offline.

- synchronous mode at `dt` (0.1 s), the traffic manager in synchronous mode on its own port;
- the ego is a CARLA vehicle with CARLA's physics; background vehicles on the traffic manager's
  autopilot and walkers on CARLA's walker AI, in the NoCrash counts of envs.traffic_presets;
- collision and lane-invasion sensors on the ego; light states from each stop line's
  traffic-light actor; red-light and stop-sign rules judged as in the SUMO backend
  (envs.traffic_rules).

Server failures. The traffic manager runs inside this client process, in a table keyed by port,
and its thread keeps calling the server it was made for; once that server is gone the process
cannot get a working traffic manager again (its calls fail, and an unhandled failure on that
thread aborts the process; carla#4577, #6748). So:
- a failed tick or a dead server stops the server (through its supervisor,
  envs.carla.server.CarlaServer, passed in as `server`) and raises CarlaServerLost: the rollout
  actor fails and the driver replaces it with a fresh process and a fresh server;
- a periodic restart (the server still up) first shuts the traffic manager down, then restarts
  the server and reconnects, in the same process;
- an episode that cannot start (the ego's spawn point occupied) raises SimulatorError, and
  reset() may simply be called again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import carla
import numpy as np

from envs.carla import readout
from envs.carla.signals import TRAFFIC_LIGHT, SignalLine, lights_on_route, read_signal_lines, segments_array, stop_zones
from envs.carla.town_map import CarlaTownMap
from envs.collision import CollisionEvent
from envs.traffic_presets import traffic_counts
from envs.traffic_rules import WATCH_LIGHT_M, RedLightWatch, StopSignWatch, ego_front
from envs.types import Control, LightState, NextLight, Route, RouteSpec, SimulatorError, Snapshot, StopLines

logger = logging.getLogger(__name__)

_CONTEXT_RADIUS_M = 60.0
_SPAWN_CLEARANCE_M = 20.0  # background vehicles start at least this far from the ego
_SPAWN_LIFT_M = 0.5  # spawn above the road so the chassis does not start inside it
_ROUTE_WINDOW = 50  # route points (about 1 m apart) searched ahead for the ego's front each step
_LOAD_WORLD_TIMEOUT_S = 180.0
_WALKER_SPEED = 1.4  # m/s
_WALKER_CROSSING_FRACTION = 0.1  # share of walkers that cross roads (CARLA's example uses 0-0.1)


@dataclass(frozen=True)
class CarlaSettings:
    town: str = "Town01"
    traffic: str = "regular"
    host: str = "127.0.0.1"
    port: int = 2000
    tm_port: int = 8000
    dt: float = 0.1
    timeout_s: float = 20.0  # client calls, and each tick when no supervisor gives its own
    rendering: bool = False  # the BEV needs none; cameras would
    ego_blueprint: str = "vehicle.lincoln.mkz_2020"


class CarlaServerLost(RuntimeError):
    """The CARLA server died or stopped ticking; this process cannot continue with CARLA (see the
    module docstring). Not a SimulatorError on purpose: the rollout worker does not retry it, its
    actor fails and is replaced."""


class ServerSupervisor(Protocol):
    """What the world needs from envs.carla.server.CarlaServer."""

    rpc_port: int | None
    tm_port: int | None

    def restart(self, reason: str) -> None: ...

    def restart_due(self) -> bool: ...

    def stop(self) -> None: ...

    def tick_guard(self) -> contextlib.AbstractContextManager[float]: ...


class CarlaSimulation:
    def __init__(self, settings: CarlaSettings, server: ServerSupervisor | None = None):
        traffic_counts(settings.town, settings.traffic)  # validate the preset before connecting
        self.settings = settings
        self._server = server
        self._forget_episode()
        self._episode, self._step_count, self._seed = 0, 0, 0
        self._connect()
        self.network = self.town_map  # routes and random routes, like SumoSimulation.network

    # ----- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        s = self.settings
        # A supervised server may have moved to other ports when it restarted.
        port, tm_port = (
            (self._server.rpc_port, self._server.tm_port) if self._server is not None else (s.port, s.tm_port)
        )
        try:
            self.client = carla.Client(s.host, port)
            self.client.set_timeout(s.timeout_s)
            world = self.client.get_world()
            carla_map = world.get_map()
            if not carla_map.name.endswith(s.town):
                self.client.set_timeout(max(s.timeout_s, _LOAD_WORLD_TIMEOUT_S))  # a cold load reads the town from disk
                world = self.client.load_world(s.town)
                self.client.set_timeout(s.timeout_s)
                carla_map = world.get_map()
            settings = world.get_settings()
            settings.synchronous_mode, settings.fixed_delta_seconds = True, s.dt
            settings.no_rendering_mode = not s.rendering
            world.apply_settings(settings)
            self.traffic_manager = self.client.get_trafficmanager(tm_port)
            self.traffic_manager.set_synchronous_mode(True)
        except RuntimeError as exc:
            raise SimulatorError(
                f"cannot reach a CARLA server at {s.host}:{port} ({exc}); start one "
                "(CarlaUE4.sh -carla-rpc-port=...) or let the worker launch its own "
                "(env.carla.launch: true)"
            ) from exc
        self.world, self.carla_map, self._port = world, carla_map, port
        if not hasattr(self, "town_map"):  # the map's geometry does not change across restarts
            self.town_map = CarlaTownMap(s.town, self.carla_map)
            self.static_layers = self.town_map.static_layers
            self._lines = read_signal_lines(self.town_map)
            self._segments = segments_array(self._lines)
            self._zones = stop_zones(self._lines)
        self._lights = self._light_actors()
        self._connected = True

    def _light_actors(self) -> dict[str, carla.TrafficLight]:
        lights = {}
        for landmark in self.carla_map.get_all_landmarks_of_type(TRAFFIC_LIGHT):
            actor = self.world.get_traffic_light(landmark)
            if actor is not None:
                lights[str(landmark.id)] = actor
        return lights

    def close(self) -> None:
        if getattr(self, "_connected", False):
            self._release()

    def _release(self) -> None:
        """Leave the server as a new client expects it: no actors of ours, asynchronous, and this
        process's traffic manager shut down (else its thread keeps calling the server)."""
        try:
            self._destroy_episode()
            settings = self.world.get_settings()
            settings.synchronous_mode, settings.fixed_delta_seconds = False, None
            self.world.apply_settings(settings)  # an asynchronous server does not wait for a client
            self.traffic_manager.set_synchronous_mode(False)
            self.traffic_manager.shut_down()
        except RuntimeError:
            logger.debug("releasing the CARLA world failed (the server may be gone)", exc_info=True)
        self._connected = False

    # ----- episode ---------------------------------------------------------------------------
    def reset(self, seed: int, route: RouteSpec) -> tuple[Route, Snapshot]:
        self._seed, self._step_count = seed, 0
        self._episode += 1
        if not self._connected:
            raise CarlaServerLost("the CARLA world was closed or its server lost; make a new environment")
        if self._server is not None and self._server.restart_due():
            self._release()
            self._server.restart("periodic restart (contains CARLA's memory growth)")
            self._forget_episode()
            self._connect()
        try:
            self._destroy_episode()
            return self._begin_episode(seed, route)
        except SimulatorError:
            self._destroy_episode()  # e.g. the spawn point was taken: the server is fine
            raise
        except RuntimeError as exc:
            self._lost(exc)

    def _begin_episode(self, seed: int, spec: RouteSpec) -> tuple[Route, Snapshot]:
        start_x, start_y, _ = self.town_map.from_carla(*spec.start)
        goal_x, goal_y, _ = self.town_map.from_carla(*spec.goal, 0.0)
        self.route = self.town_map.plan((start_x, start_y), (goal_x, goal_y))
        self._route_lights = lights_on_route(self.route, self._lines)
        self.traffic_manager.set_random_device_seed(seed)
        self.world.set_pedestrians_seed(seed)
        rng = np.random.default_rng(seed)
        self._spawn_ego()
        counts = traffic_counts(self.settings.town, self.settings.traffic)
        self._spawn_vehicles(counts.vehicles, rng)
        self._spawn_walkers(counts.walkers)
        self._contact_frames: dict[str, int] = {}  # other actor -> last frame it touched the ego
        self._control = Control()
        self._red_light, self._stop_sign = RedLightWatch(), StopSignWatch()
        self._route_pos = 0
        self._tick()
        self._last_xy = None
        return self.route, self._snapshot()

    def _spawn_ego(self) -> None:
        x, y, yaw = float(self.route.xy[0, 0]), float(self.route.xy[0, 1]), float(self.route.yaw[0])
        ground = self.carla_map.get_waypoint(readout.to_carla_transform(self.town_map, x, y, yaw, 0.0).location)
        transform = readout.to_carla_transform(self.town_map, x, y, yaw, ground.transform.location.z + _SPAWN_LIFT_M)
        # A new actor's getters read the last world snapshot, which does not hold it yet: keep the pose.
        self._ego_start = transform.location
        blueprint = self.world.get_blueprint_library().find(self.settings.ego_blueprint)
        blueprint.set_attribute("role_name", "hero")
        self._ego = self.world.try_spawn_actor(blueprint, transform)
        if self._ego is None:
            raise SimulatorError(
                f"could not spawn the ego at the route's start {transform} in {self.settings.town} "
                "(something occupies it); reset() again picks another route or seed"
            )
        self._actors.append(self._ego.id)
        library = self.world.get_blueprint_library()
        self._events: list = []
        self._invasions: list[str] = []
        self._events_lock = threading.Lock()
        for name, callback in (
            ("sensor.other.collision", self._on_collision),
            ("sensor.other.lane_invasion", self._on_lane_invasion),
        ):
            sensor = self.world.spawn_actor(library.find(name), carla.Transform(), attach_to=self._ego)
            sensor.listen(callback)
            self._sensors.append(sensor)
            self._actors.append(sensor.id)

    def _on_collision(self, event: carla.CollisionEvent) -> None:
        with self._events_lock:
            self._events.append(
                (event.frame, readout.collision_kind(event.other_actor.type_id), str(event.other_actor.id))
            )

    def _on_lane_invasion(self, event: carla.LaneInvasionEvent) -> None:
        with self._events_lock:
            self._invasions.extend(str(marking.type) for marking in event.crossed_lane_markings)

    def _spawn_vehicles(self, count: int, rng: np.random.Generator) -> None:
        points = [
            p for p in self.carla_map.get_spawn_points() if p.location.distance(self._ego_start) > _SPAWN_CLEARANCE_M
        ]
        cars = [bp for bp in self.world.get_blueprint_library().filter("vehicle.*") if _is_car(bp)]
        batch = []
        for i in rng.permutation(len(points))[:count]:
            blueprint = cars[int(rng.integers(len(cars)))]
            blueprint.set_attribute("role_name", "autopilot")
            batch.append(
                carla.command.SpawnActor(blueprint, points[int(i)]).then(
                    carla.command.SetAutopilot(carla.command.FutureActor, True, self.traffic_manager.get_port())
                )
            )
        self._vehicle_ids = self._apply(batch)
        if len(self._vehicle_ids) < count:
            logger.info("spawned %d of %d background vehicles (spawn points taken)", len(self._vehicle_ids), count)

    def _spawn_walkers(self, count: int) -> None:
        library = self.world.get_blueprint_library()
        walkers = library.filter("walker.pedestrian.*")
        self.world.set_pedestrians_cross_factor(_WALKER_CROSSING_FRACTION)
        batch = []
        for i in range(count):
            location = self.world.get_random_location_from_navigation()
            if location is not None:
                blueprint = walkers[i % len(walkers)]
                if blueprint.has_attribute("is_invincible"):
                    blueprint.set_attribute("is_invincible", "false")
                batch.append(carla.command.SpawnActor(blueprint, carla.Transform(location)))
        self._walker_ids = self._apply(batch)
        controller = library.find("controller.ai.walker")
        self._controllers = self._apply(
            [carla.command.SpawnActor(controller, carla.Transform(), walker) for walker in self._walker_ids]
        )
        self._tick()  # controllers need a tick before they take orders
        for actor in self._actors_by_id(self._controllers):
            actor.start()
            goal = self.world.get_random_location_from_navigation()
            if goal is not None:
                actor.go_to_location(goal)
            actor.set_max_speed(_WALKER_SPEED)

    def _actors_by_id(self, ids: list[int]) -> list:
        # Never get_actors([]): an empty id list must not read as "all actors".
        return list(self.world.get_actors(ids)) if ids else []

    def _apply(self, batch: list) -> list[int]:
        ids = []
        for response in self.client.apply_batch_sync(batch, True):
            if response.error:
                logger.debug("CARLA batch command failed: %s", response.error)
            else:
                ids.append(response.actor_id)
        self._actors.extend(ids)
        return ids

    def _destroy_episode(self) -> None:
        for sensor in self._sensors:
            sensor.stop()
        for actor in self._actors_by_id(self._controllers):
            actor.stop()
        if self._actors:  # controllers before their walkers, sensors before the ego: reverse spawn order
            self.client.apply_batch_sync([carla.command.DestroyActor(i) for i in reversed(self._actors)], True)
        self._forget_episode()

    def _forget_episode(self) -> None:
        """Drop the episode's actor handles (destroyed, or gone with a restarted server)."""
        self._actors: list[int] = []
        self._sensors: list[carla.Sensor] = []
        self._controllers: list[int] = []
        self._vehicle_ids: list[int] = []
        self._walker_ids: list[int] = []
        self._ego: carla.Vehicle | None = None

    # ----- stepping --------------------------------------------------------------------------
    def step(self, control: Control) -> Snapshot:
        if not self._connected or self._ego is None:
            raise SimulatorError("no episode is running; call reset() first")
        self._step_count += 1
        self._control = control
        try:
            self._ego.apply_control(readout.vehicle_control(control))
            self._tick()
            return self._snapshot()
        except RuntimeError as exc:
            self._lost(exc)

    def _tick(self) -> None:
        with self._tick_guard() as timeout_s:
            self.world.tick(timeout_s)

    def _tick_guard(self) -> contextlib.AbstractContextManager[float]:
        if self._server is not None:
            return self._server.tick_guard()
        return _plain_guard(self.settings.timeout_s)

    def _lost(self, exc: Exception):
        context = (
            f"town={self.settings.town} traffic={self.settings.traffic} seed={self._seed} "
            f"episode={self._episode} step={self._step_count} server={self.settings.host}:{self._port}"
        )
        self._connected = False
        if self._server is not None:
            self._server.stop()  # its GPU memory and ports go now, not when the actor is reaped
        raise CarlaServerLost(
            f"CARLA failed ({context}): {type(exc).__name__}: {exc}. The server "
            + ("was stopped; " if self._server is not None else "")
            + "this process's traffic "
            "manager cannot be reused, so CARLA needs a new process: on Ray the driver "
            "replaces the rollout actor (and its server); a local run stops, resume it "
            "with train.py --resume"
        ) from exc

    # ----- observation of the world ----------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        # The applied control, not get_control(): that reads the last snapshot, a step behind.
        ego = readout.ego_state(
            self.town_map,
            self._ego.get_transform(),
            self._ego.bounding_box,
            self._ego.get_velocity(),
            self._ego.get_acceleration(),
            self._control,
            gear=self._ego.get_control().gear,
        )
        vehicles, walkers = self._near(self._vehicle_ids, ego.x, ego.y), self._near(self._walker_ids, ego.x, ego.y)
        vehicle_boxes, vehicle_speeds = readout.boxes(
            self.town_map, ((a.get_transform(), a.bounding_box, a.get_velocity()) for a in vehicles)
        )
        walker_boxes, walker_speeds = readout.boxes(
            self.town_map, ((a.get_transform(), a.bounding_box, a.get_velocity()) for a in walkers)
        )
        on_road = np.array(
            [
                self.carla_map.get_waypoint(a.get_location(), project_to_road=False, lane_type=carla.LaneType.Driving)
                is not None
                for a in walkers
            ],
            dtype=bool,
        )
        front = ego_front(ego)
        next_light = self._next_light(front)
        crossed = self._red_light.crossed(front)
        at_stop, ran_stop, stop_pending = self._stop_sign.update(ego.x, ego.y, ego.speed, self._zones)
        travelled = 0.0 if self._last_xy is None else math.hypot(ego.x - self._last_xy[0], ego.y - self._last_xy[1])
        self._last_xy = (ego.x, ego.y)
        collisions, invasions = self._sensor_events(ego.speed)
        return Snapshot(
            time=self._step_count * self.settings.dt,
            ego=ego,
            vehicles=vehicle_boxes,
            vehicle_speeds=vehicle_speeds,
            walkers=walker_boxes,
            walker_speeds=walker_speeds,
            walkers_on_road=on_road,
            stop_lines=self._stop_lines_near(ego.x, ego.y),
            next_light=next_light,
            stop_zones=self._zones_near(ego.x, ego.y),
            at_stop_sign=at_stop,
            stop_sign_pending=stop_pending,
            ran_stop_sign=ran_stop,
            on_drivable=self.static_layers.is_drivable(ego.x, ego.y),
            collisions=collisions,
            lane_invasions=invasions,
            ran_red_light=crossed is not None and self._state(crossed) == LightState.RED,
            travelled=travelled,
        )

    def _near(self, ids: list[int], x: float, y: float) -> list[carla.Actor]:
        found = []
        for actor in self._actors_by_id(ids):
            location = actor.get_location()
            ax, ay, _ = self.town_map.from_carla(location.x, location.y)
            if math.hypot(ax - x, ay - y) < _CONTEXT_RADIUS_M:
                found.append(actor)
        return found

    def _sensor_events(self, speed: float) -> tuple[tuple, tuple[str, ...]]:
        """New contacts and crossed markings. Event sensors cannot be waited for: an event of this
        frame may come after tick() returned and is then reported a step late. A contact is new
        when its other actor was not touching in the previous frame, so one contact is one event
        however its frames fall between steps."""
        with self._events_lock:
            events, self._events = self._events, []
            invasions, self._invasions = tuple(self._invasions), []
        new: dict[str, str] = {}
        for frame, kind, other in sorted(events):
            last = self._contact_frames.get(other)
            if last is None or frame - last > 1:
                new.setdefault(other, kind)
            self._contact_frames[other] = frame
        return tuple(CollisionEvent(kind=kind, other_id=other, speed=speed) for other, kind in new.items()), invasions

    def _state(self, line: SignalLine) -> LightState:
        actor = self._lights.get(line.landmark_id)
        return readout.light_state(actor.state) if actor is not None else LightState.NONE

    def _next_light(self, front: np.ndarray) -> NextLight | None:
        """The first light on the route ahead of the ego's front; watched for red-light runs once close."""
        window = slice(self._route_pos, self._route_pos + _ROUTE_WINDOW)
        self._route_pos += int(np.argmin(np.linalg.norm(self.route.xy[window] - front, axis=1)))
        front_s = float(self.route.s[self._route_pos])
        for line_s, line in self._route_lights:
            ahead = line_s - front_s
            if ahead < -1.0:
                continue
            if ahead < WATCH_LIGHT_M:
                self._red_light.watch(line)
            actor = self._lights.get(line.landmark_id)
            if actor is None:
                return None
            state = actor.state
            remaining = readout.phase_remaining(
                state, actor.get_elapsed_time(), actor.get_red_time(), actor.get_yellow_time(), actor.get_green_time()
            )
            return NextLight(state=readout.light_state(state), distance=max(0.0, ahead), phase_remaining=remaining)
        return None

    def _stop_lines_near(self, x: float, y: float) -> StopLines:
        near = np.flatnonzero(
            (np.abs(self._segments[:, 0] - x) < _CONTEXT_RADIUS_M)
            & (np.abs(self._segments[:, 1] - y) < _CONTEXT_RADIUS_M)
        )
        near = [i for i in near if self._lines[i].kind == "light"]
        if not near:
            return StopLines.empty()
        return StopLines(
            segments=self._segments[near], states=np.array([self._state(self._lines[i]) for i in near], dtype=np.int64)
        )

    def _zones_near(self, x: float, y: float) -> np.ndarray:
        zones = self._zones
        return zones[(np.abs(zones[:, 0] - x) < _CONTEXT_RADIUS_M) & (np.abs(zones[:, 1] - y) < _CONTEXT_RADIUS_M)]


def _is_car(blueprint: carla.ActorBlueprint) -> bool:
    """Cars only (no trucks, vans, buses or two-wheelers), as NoCrash's traffic."""
    if blueprint.has_attribute("base_type"):
        return blueprint.get_attribute("base_type").as_str().lower() == "car"
    return blueprint.has_attribute("number_of_wheels") and blueprint.get_attribute("number_of_wheels").as_int() == 4


@contextlib.contextmanager
def _plain_guard(timeout_s: float) -> Iterator[float]:
    yield timeout_s
