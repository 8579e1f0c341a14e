"""Plays one scenario in a SUMO simulation: scripted actors whose poses are functions of the time
since the ego triggered the scenario, moved in SUMO every step (so background traffic sees them) and
reported like any vehicle or walker.

Everything is deterministic given the spec, the placement and the ego's motion: the scripts read the
clock and, at the trigger, the ego's speed (a crossing actor is timed to reach the conflict point
when the ego would). Parked vehicles are occluders: a walker behind one is hidden from the
observation (envs/occlusion.py) until a line of sight from the ego reaches it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.scenarios.library import ScenarioSpec, scenario_type
from envs.scenarios.placement import Placement
from envs.types import Route

logger = logging.getLogger(__name__)

SCENARIO_PREFIX = "scenario_"  # every scripted actor's id starts with it
VEHICLE_SIZE = (4.6, 1.9)  # m, length and width of a scripted vehicle (the background's)
_KERB_OFFSET_M = 1.0  # a parked vehicle's centre lies this far beyond the lane's edge
_SIDEWALK_OFFSET_M = 3.0  # a walker waits this far beyond the lane's edge
_ARRIVAL_MIN_SPEED = 4.0  # m/s: an ego slower than this at the trigger is timed as if this fast
_NEAR_STOPPED_M = 25.0  # stopped_vehicle: its hold starts when the ego (centre) is this close to its rear
_DRIVE_OFF_ACCEL = 2.0  # m/s^2 of a scripted vehicle starting off
_LEAVE_AFTER_M = 80.0  # a scripted vehicle leaves the simulation after driving this far
_MOVING_MS = 2.0  # m/s: an ego at least this fast is moving towards the junction
_GREEN_BEFORE_M, _GREEN_AFTER_S = 40.0, 15.0  # red_light_runner: the ego's light is held green this long


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    yaw: float
    speed: float


@dataclass
class ScriptedActor:
    """One actor: `before(t)` its pose before the trigger (None: not there yet), `after(t)` after
    it (None: gone), t in seconds since the trigger."""

    actor_id: str
    kind: str  # "vehicle" or "walker"
    after: Callable[[float], Pose | None]
    before: Pose | None = None
    occluder: bool = False  # a parked vehicle that hides walkers behind it
    in_sumo: bool = False
    pose: Pose | None = None


class ScenarioDirector:
    def __init__(self, spec: ScenarioSpec, placement: Placement, route: Route, lane_width: float):
        self.spec, self.placement, self.route = spec, placement, route
        self.half_lane = 0.5 * lane_width
        self.triggered_at: float | None = None  # simulated time of the trigger
        self.trigger_speed = 0.0
        self._ego_index = 0
        self.actors = _SCRIPTS[spec.type](self)

    # ----- geometry along the route ------------------------------------------------------------
    def pose_on_route(self, s: float, lateral: float = 0.0, speed: float = 0.0) -> Pose:
        """The route's pose at arc length `s`, moved `lateral` metres to the left (negative: right)."""
        r = self.route
        s = float(np.clip(s, 0.0, r.length))
        x, y = np.interp(s, r.s, r.xy[:, 0]), np.interp(s, r.s, r.xy[:, 1])
        i = int(np.clip(np.searchsorted(r.s, s), 0, len(r.s) - 1))
        yaw = float(r.yaw[i])
        return Pose(float(x - lateral * math.sin(yaw)), float(y + lateral * math.cos(yaw)), yaw, speed)

    def kerb(self, side: float) -> float:
        """The lateral offset of a parked vehicle on `side` (+1: the ego's right)."""
        return -side * (self.half_lane + _KERB_OFFSET_M)

    def sidewalk(self, side: float) -> float:
        return -side * (self.half_lane + _SIDEWALK_OFFSET_M)

    def arrival_s(self) -> float:
        """Seconds the ego needs from the trigger to the hazard point at its trigger speed."""
        distance = self.placement.hazard_s - self.placement.trigger_s
        return distance / max(self.trigger_speed, _ARRIVAL_MIN_SPEED)

    # ----- stepping -----------------------------------------------------------------------------
    def ego_s(self, x: float, y: float) -> float:
        """The ego's arc length along the route (searched forward from the last step's)."""
        r = self.route
        lo, hi = max(self._ego_index - 5, 0), min(self._ego_index + 60, len(r.s))
        d = np.hypot(r.xy[lo:hi, 0] - x, r.xy[lo:hi, 1] - y)
        self._ego_index = lo + int(np.argmin(d))
        return float(r.s[self._ego_index])

    def update(self, time: float, ego_x: float, ego_y: float, ego_speed: float) -> list[ScriptedActor]:
        """Advance the scripts to `time`; every actor with its pose (None: not in the world now)."""
        ego_s = self.ego_s(ego_x, ego_y)
        if self.triggered_at is None and ego_s >= self._trigger_s() and self._may_trigger(ego_speed):
            self.triggered_at, self.trigger_speed = time, ego_speed
            logger.debug("scenario %s triggered at %.1f s, ego at %.1f m", self.spec.type, time, ego_s)
        for actor in self.actors:
            if self.triggered_at is None:
                actor.pose = actor.before
            else:
                actor.pose = actor.after(time - self.triggered_at)
        return self.actors

    def _may_trigger(self, ego_speed: float) -> bool:
        """A junction scenario waits for an ego that moves (not one held at a red light), so that its
        actor is timed against an ego that will enter the junction."""
        return not scenario_type(self.spec.type).at_junction or ego_speed > _MOVING_MS

    def _trigger_s(self) -> float:
        if self.spec.type == "stopped_vehicle":
            return self.placement.hazard_s - _NEAR_STOPPED_M - VEHICLE_SIZE[0]
        return self.placement.trigger_s

    @property
    def ego_to_hazard_m(self) -> float:
        """Metres along the route from the ego to the hazard point (negative once past it)."""
        return self.placement.hazard_s - float(self.route.s[self._ego_index])

    def holds_green_for_ego(self, time: float) -> bool:
        """red_light_runner: the ego's light is held green from _GREEN_BEFORE_M before the trigger
        until _GREEN_AFTER_S after it (the crossing road red), so the runner runs a red light into an
        ego that has right of way."""
        if self.spec.type != "red_light_runner":
            return False
        if self.triggered_at is None:
            return float(self.route.s[self._ego_index]) >= self._trigger_s() - _GREEN_BEFORE_M
        return time - self.triggered_at < _GREEN_AFTER_S

    def occluders(self) -> np.ndarray:
        """Boxes [K, 5] of the parked vehicles in the world now."""
        boxes = [
            (a.pose.x, a.pose.y, a.pose.yaw, *VEHICLE_SIZE) for a in self.actors if a.occluder and a.pose is not None
        ]
        return np.array(boxes, dtype=np.float64).reshape(-1, 5)


# --------------------------------------------------------------------------------------- scripts


def _along(director: ScenarioDirector, start_s: float, speed_at: Callable[[float], tuple[float, float]], lateral=None):
    """A vehicle driving along the route: `speed_at(t)` gives (distance from start_s, speed) at t;
    `lateral(t)` its offset (default: in the lane). Gone after _LEAVE_AFTER_M or the route's end."""

    def after(t: float) -> Pose | None:
        travelled, speed = speed_at(t)
        s = start_s + travelled
        if travelled > _LEAVE_AFTER_M or s > director.route.length - 1.0:
            return None
        return director.pose_on_route(s, lateral(t) if lateral else 0.0, speed)

    return after


def _straight_line(origin: tuple[float, float], yaw: float, speed: float, start_offset: float, length: float):
    """An actor moving along a straight line through `origin` with heading `yaw`, `start_offset`
    metres before it at t = 0; gone after `length` metres."""

    def after(t: float) -> Pose | None:
        d = speed * t
        if d > length:
            return None
        along = d - start_offset
        return Pose(origin[0] + along * math.cos(yaw), origin[1] + along * math.sin(yaw), yaw, speed)

    return after


def _pedestrian_crossing(d: ScenarioDirector) -> list[ScriptedActor]:
    side, speed = d.spec.params["side"], d.spec.params["walker_speed"]
    start = d.pose_on_route(d.placement.hazard_s, d.sidewalk(side))
    heading = start.yaw + side * math.pi / 2  # from the ego's right (+1) the walker heads left
    return [_TimedWalker(d, start, heading, speed, abs(d.sidewalk(side))).actor()]


def _occluded_pedestrian(d: ScenarioDirector) -> list[ScriptedActor]:
    speed, side = d.spec.params["walker_speed"], 1.0  # from behind a vehicle parked at the right kerb
    parked = d.pose_on_route(d.placement.hazard_s - 3.5, d.kerb(side))
    hidden = d.pose_on_route(d.placement.hazard_s, d.kerb(side))  # just past its front, in its shadow
    heading = hidden.yaw + side * math.pi / 2
    return [
        ScriptedActor("scenario_parked", "vehicle", lambda t: parked, before=parked, occluder=True),
        _TimedWalker(d, hidden, heading, speed, abs(d.kerb(side))).actor(),
    ]


class _TimedWalker:
    """A walker who stands at `start` and steps out so as to reach the ego's lane centre (`to_lane`
    metres away) when the ego, at its trigger speed, would reach the hazard point; then crosses to
    the far side and leaves."""

    def __init__(self, director: ScenarioDirector, start: Pose, heading: float, speed: float, to_lane: float):
        self.director, self.start, self.heading, self.speed, self.to_lane = director, start, heading, speed, to_lane

    def actor(self) -> ScriptedActor:
        standing = Pose(self.start.x, self.start.y, self.heading, 0.0)
        return ScriptedActor("scenario_walker", "walker", self, before=standing)

    def __call__(self, t: float) -> Pose | None:
        delay = max(self.director.arrival_s() - self.to_lane / self.speed, 0.0)
        walked = self.speed * max(t - delay, 0.0)
        if walked > 2 * self.to_lane + 1.0:
            return None
        c, s = math.cos(self.heading), math.sin(self.heading)
        return Pose(
            self.start.x + walked * c, self.start.y + walked * s, self.heading, self.speed if t >= delay else 0.0
        )


def _lead_vehicle_brake(d: ScenarioDirector) -> list[ScriptedActor]:
    p = d.spec.params
    speed, t_brake, decel, stop_s = p["speed"], p["brake_after_s"], p["decel"], p["stop_s"]
    t_stop = speed / decel
    braked = speed * t_brake + speed * t_stop / 2

    def motion(t: float) -> tuple[float, float]:
        if t < t_brake:
            return speed * t, speed
        if t < t_brake + t_stop:
            u = t - t_brake
            return speed * t_brake + speed * u - decel * u * u / 2, speed - decel * u
        u = max(t - t_brake - t_stop - stop_s, 0.0)
        v = min(_DRIVE_OFF_ACCEL * u, speed)
        accel_t = speed / _DRIVE_OFF_ACCEL
        extra = _DRIVE_OFF_ACCEL * u * u / 2 if u < accel_t else speed * accel_t / 2 + speed * (u - accel_t)
        return braked + extra, v

    return [ScriptedActor("scenario_lead", "vehicle", _LazyStart(d, p["gap_m"], motion))]


def _cut_in(d: ScenarioDirector) -> list[ScriptedActor]:
    p, side = d.spec.params, 1.0
    parked = d.pose_on_route(d.placement.hazard_s, d.kerb(side))
    kerb = d.kerb(side)

    def lateral(t: float) -> float:
        u = min(t / p["merge_s"], 1.0)
        return kerb * (1.0 - (3 * u * u - 2 * u * u * u))  # smoothstep from the kerb into the lane

    return [
        ScriptedActor(
            "scenario_cut_in",
            "vehicle",
            _along(d, d.placement.hazard_s, lambda t: (p["speed"] * t, p["speed"]), lateral),
            before=parked,
        )
    ]


def _stopped_vehicle(d: ScenarioDirector) -> list[ScriptedActor]:
    p = d.spec.params
    standing = d.pose_on_route(d.placement.hazard_s)

    def motion(t: float) -> tuple[float, float]:
        u = max(t - p["hold_s"], 0.0)
        accel_t = p["speed"] / _DRIVE_OFF_ACCEL
        if u < accel_t:
            return _DRIVE_OFF_ACCEL * u * u / 2, _DRIVE_OFF_ACCEL * u
        return p["speed"] * accel_t / 2 + p["speed"] * (u - accel_t), p["speed"]

    return [ScriptedActor("scenario_stopped", "vehicle", _along(d, d.placement.hazard_s, motion), before=standing)]


def _slow_lead(d: ScenarioDirector) -> list[ScriptedActor]:
    p = d.spec.params

    def motion(t: float) -> tuple[float, float]:
        travelled = p["speed"] * t
        return (travelled if travelled <= p["distance_m"] else _LEAVE_AFTER_M + 1.0), p["speed"]

    return [ScriptedActor("scenario_slow", "vehicle", _LazyStart(d, p["gap_m"], motion))]


def _oncoming_in_junction(d: ScenarioDirector) -> list[ScriptedActor]:
    p = d.spec.params
    entry = d.pose_on_route(d.placement.entry_s)  # where the ego's left turn begins
    yaw = d.placement.entry_yaw
    lane = 2 * d.half_lane  # the oncoming lane's centre: one lane to the ego's left
    origin = (entry.x - lane * math.sin(yaw), entry.y + lane * math.cos(yaw))
    return [ScriptedActor("scenario_oncoming", "vehicle", _Timed(d, origin, yaw + math.pi, p["speed"], 0.0))]


def _red_light_runner(d: ScenarioDirector) -> list[ScriptedActor]:
    p = d.spec.params
    conflict = d.pose_on_route(d.placement.hazard_s)
    heading = d.placement.entry_yaw + p["side"] * math.pi / 2  # from the ego's right (+1) it drives to the left
    return [ScriptedActor("scenario_runner", "vehicle", _Timed(d, (conflict.x, conflict.y), heading, p["speed"], 0.0))]


class _LazyStart:
    """A vehicle that appears `gap` metres ahead of where the ego is at the trigger and then moves
    by `motion(t)` = (distance, speed) along the route."""

    def __init__(self, director: ScenarioDirector, gap: float, motion):
        self.director, self.gap, self.motion = director, gap, motion
        self._after = None

    def __call__(self, t: float) -> Pose | None:
        if self._after is None:
            start = self.director.route.s[self.director._ego_index] + self.gap
            self._after = _along(self.director, start, self.motion)
        return self._after(t)


class _Timed:
    """A vehicle on a straight line through `origin` (reached `past_m` metres after the conflict
    point's equivalent on its line), timed to get there when the ego, at its trigger speed, would."""

    def __init__(self, director: ScenarioDirector, origin, heading: float, speed: float, past_m: float):
        self.director, self.origin, self.heading, self.speed, self.past_m = director, origin, heading, speed, past_m
        self._line = None

    def __call__(self, t: float) -> Pose | None:
        if self._line is None:
            lead = self.speed * self.director.arrival_s() + self.past_m
            self._line = _straight_line(self.origin, self.heading, self.speed, lead, 2 * lead + 40.0)
        return self._line(t)


_SCRIPTS: dict[str, Callable[[ScenarioDirector], list[ScriptedActor]]] = {
    "pedestrian_crossing": _pedestrian_crossing,
    "occluded_pedestrian": _occluded_pedestrian,
    "lead_vehicle_brake": _lead_vehicle_brake,
    "cut_in": _cut_in,
    "stopped_vehicle": _stopped_vehicle,
    "slow_lead": _slow_lead,
    "oncoming_in_junction": _oncoming_in_junction,
    "red_light_runner": _red_light_runner,
}
