"""Where a scenario happens on a route: the hazard point (arc length along the planned route) and the
point at which the ego triggers it, chosen with the spec's seed among the places its type allows.

Straight-road types go where the route follows its lane for a while (not in the first 60 m, so the
ego is up to speed, nor in the last 40 m); junction types go to a junction the route crosses
(`oncoming_in_junction` needs one where the route turns left, across the oncoming lane).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.scenarios.library import ScenarioError, ScenarioSpec, scenario_type
from envs.types import Route, RouteCommand

_START_CLEAR_M = 60.0  # no hazard before the ego has driven this far
_END_CLEAR_M = 40.0  # ... nor this close to the goal
_STRAIGHT_BEFORE_M = 45.0  # a straight-road hazard has this much lane-following road before it
_STRAIGHT_AFTER_M = 25.0  # ... and after it
_STRAIGHT_ACROSS_M = 7.0  # going straight, the conflict point lies this far before the junction command ends
_TURN_STARTS_RAD = math.radians(5.0)  # a turn starts where the heading has changed this much
_JUNCTION_COMMANDS = (RouteCommand.LEFT, RouteCommand.RIGHT, RouteCommand.STRAIGHT)


@dataclass(frozen=True)
class Placement:
    hazard_s: float  # m along the route: where the conflict is
    trigger_s: float  # m along the route: where the ego starts the scenario
    junction_command: int = int(RouteCommand.LANE_FOLLOW)  # the route's command there (junction types)
    entry_s: float = 0.0  # junction types: where the ego's path starts to turn (or the conflict, straight)
    entry_yaw: float = 0.0  # junction types: the ego's heading as it comes into the junction


def place(spec: ScenarioSpec, route: Route) -> Placement:
    kind = scenario_type(spec.type)
    rng = np.random.default_rng(spec.seed)
    lead = spec.params.get("trigger_m", 0.0)  # types without it start where the hazard appears
    if kind.at_junction:
        hazard_s, command, entry_s, entry_yaw = _junction_point(spec, route, rng)
        return Placement(hazard_s, max(hazard_s - lead, 1.0), command, entry_s, entry_yaw)
    hazard_s = _straight_point(spec, route, rng)
    return Placement(hazard_s=hazard_s, trigger_s=max(hazard_s - lead, 1.0))


def _straight_point(spec: ScenarioSpec, route: Route, rng: np.random.Generator) -> float:
    follow = route.commands == RouteCommand.LANE_FOLLOW
    # a point qualifies when every route point within [s - before, s + after] follows its lane
    candidates = []
    for i in range(len(route.s)):
        s = route.s[i]
        if s < _START_CLEAR_M or s > route.length - _END_CLEAR_M:
            continue
        window = (route.s >= s - _STRAIGHT_BEFORE_M) & (route.s <= s + _STRAIGHT_AFTER_M)
        if follow[window].all():
            candidates.append(s)
    if not candidates:
        raise ScenarioError(
            f"scenario {spec.type} cannot be placed on this route ({route.length:.0f} m): it needs "
            f"{_STRAIGHT_BEFORE_M + _STRAIGHT_AFTER_M:.0f} m of lane-following road between "
            f"{_START_CLEAR_M:.0f} m from the start and {_END_CLEAR_M:.0f} m before the goal"
        )
    return float(candidates[int(rng.integers(len(candidates)))])


def _junction_point(spec: ScenarioSpec, route: Route, rng: np.random.Generator) -> tuple[float, int, float, float]:
    """A junction the route crosses: its conflict point (the middle of a turn; going straight,
    _STRAIGHT_ACROSS_M before the junction command ends), the command, where the turn starts and the
    heading coming in."""
    wanted = (RouteCommand.LEFT,) if spec.type == "oncoming_in_junction" else _JUNCTION_COMMANDS
    commands = route.commands
    runs, i = [], 1
    while i < len(commands):  # [first, last] index of each run of one junction command
        if commands[i] in wanted and commands[i - 1] != commands[i]:
            j = i
            while j + 1 < len(commands) and commands[j + 1] == commands[i]:
                j += 1
            runs.append((i, j))
            i = j
        i += 1
    runs = [(a, b) for a, b in runs if route.s[a] >= _START_CLEAR_M and route.s[b] < route.length - 10.0]
    if not runs:
        what = "a left turn" if spec.type == "oncoming_in_junction" else "a junction"
        raise ScenarioError(
            f"scenario {spec.type} cannot be placed on this route: it needs {what} at least "
            f"{_START_CLEAR_M:.0f} m from the start"
        )
    first, last = runs[int(rng.integers(len(runs)))]
    yaw_in = float(route.yaw[first])
    turned = np.abs(np.angle(np.exp(1j * (route.yaw[first : last + 1] - yaw_in))))
    if commands[first] == RouteCommand.STRAIGHT or turned[-1] < 2 * _TURN_STARTS_RAD:
        hazard = max(float(route.s[last]) - _STRAIGHT_ACROSS_M, float(route.s[first]))
        return hazard, int(commands[first]), hazard, yaw_in
    start = first + int(np.argmax(turned > _TURN_STARTS_RAD))
    middle = first + int(np.argmax(turned >= turned[-1] / 2))
    return float(route.s[middle]), int(commands[first]), float(route.s[start]), yaw_in
