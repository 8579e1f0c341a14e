"""The scenario types: safety-critical situations of the CARLA Leaderboard 2.0 / Bench2Drive kind,
each a parametrised trigger along a route, scripted on the embedded simulator.

A `ScenarioSpec` names a type and its parameters; every parameter has a range and a unit, and a
spec is reproducible from its seed (envs/scenarios/placement.py places it on a route, the
director (envs/scenarios/director.py) plays it). Bad input stops with the name and the allowed
values (`ScenarioError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


class ScenarioError(ValueError):
    """A scenario that cannot run: the message names the type, parameter or route and what is allowed."""


@dataclass(frozen=True)
class Param:
    low: float
    high: float
    unit: str
    doc: str

    def check(self, scenario: str, name: str, value: float) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
            raise ScenarioError(f"scenario {scenario}: {name} = {value!r} is not a number ({self.doc})")
        if not self.low <= value <= self.high:
            raise ScenarioError(
                f"scenario {scenario}: {name} = {value} is outside [{self.low}, {self.high}] {self.unit} ({self.doc})"
            )
        return float(value)


@dataclass(frozen=True)
class ScenarioType:
    name: str
    summary: str
    carla_equivalent: str  # the Leaderboard 2.0 / Bench2Drive scenario closest to it
    params: Mapping[str, Param]
    at_junction: bool = False  # placed where the route crosses a junction (else on a straight stretch)
    hazard: str = "vehicle"  # what the ego meets: "vehicle" or "pedestrian"


_TRIGGER = Param(12.0, 40.0, "m", "the ego's distance to the hazard point when the scenario starts")
_WALK = Param(1.0, 2.5, "m/s", "the walker's speed")
_SIDE = Param(-1.0, 1.0, "", "which side the actor comes from: +1 the ego's right, -1 its left")

SCENARIO_TYPES: dict[str, ScenarioType] = {
    t.name: t
    for t in (
        ScenarioType(
            "pedestrian_crossing",
            "a walker steps off the kerb and crosses the ego's lane ahead",
            "PedestrianCrossing",
            {"trigger_m": _TRIGGER, "walker_speed": _WALK, "side": _SIDE},
            hazard="pedestrian",
        ),
        ScenarioType(
            "occluded_pedestrian",
            "a walker steps out from behind a vehicle parked at the kerb, hidden until it emerges",
            "DynamicObjectCrossing (with a parked blocker)",
            {"trigger_m": _TRIGGER, "walker_speed": _WALK},
            hazard="pedestrian",
        ),
        ScenarioType(
            "lead_vehicle_brake",
            "a vehicle ahead in the ego's lane brakes hard to a stop, waits, then drives on",
            "HardBreakRoute",
            {
                "gap_m": Param(10.0, 30.0, "m", "the lead vehicle's distance ahead when it appears"),
                "speed": Param(4.0, 9.0, "m/s", "its speed before it brakes"),
                "brake_after_s": Param(1.0, 6.0, "s", "how long it drives before it brakes"),
                "decel": Param(3.0, 8.0, "m/s^2", "its braking deceleration"),
                "stop_s": Param(2.0, 8.0, "s", "how long it stands before it drives on"),
            },
        ),
        ScenarioType(
            "cut_in",
            "a vehicle parked at the kerb ahead pulls out into the ego's lane",
            "ParkingCutIn",
            {
                "trigger_m": _TRIGGER,
                "speed": Param(2.0, 7.0, "m/s", "the speed it pulls out and drives on with"),
                "merge_s": Param(1.5, 4.0, "s", "how long its move into the lane takes"),
            },
        ),
        ScenarioType(
            "stopped_vehicle",
            "a vehicle stands in the ego's lane ahead and drives off some seconds after the ego reaches it",
            "ParkedObstacle / StaticCutIn (it clears the lane)",
            {
                "hold_s": Param(2.0, 10.0, "s", "how long it stays after the ego is within 25 m of its rear"),
                "speed": Param(3.0, 8.0, "m/s", "the speed it drives off with"),
            },
        ),
        ScenarioType(
            "slow_lead",
            "a slow vehicle appears ahead in the ego's lane and drives along the route for a while",
            "(NoCrash's dense traffic, one vehicle)",
            {
                "gap_m": Param(10.0, 30.0, "m", "its distance ahead when it appears"),
                "speed": Param(1.5, 4.0, "m/s", "its speed"),
                "distance_m": Param(40.0, 120.0, "m", "how far it drives before it leaves the road"),
            },
        ),
        ScenarioType(
            "oncoming_in_junction",
            "an oncoming vehicle goes straight through the junction as the ego enters it",
            "NonSignalizedJunctionLeftTurn / SignalizedJunctionLeftTurn",
            {"trigger_m": _TRIGGER, "speed": Param(4.0, 9.0, "m/s", "the oncoming vehicle's speed")},
            at_junction=True,
        ),
        ScenarioType(
            "red_light_runner",
            "a vehicle on the crossing road runs through the junction as the ego enters it",
            "OppositeVehicleRunningRedLight / OppositeVehicleTakingPriority",
            {"trigger_m": _TRIGGER, "speed": Param(5.0, 10.0, "m/s", "its speed"), "side": _SIDE},
            at_junction=True,
        ),
    )
}


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario on one route: its type, its parameters (every one of the type's, in range) and the
    seed that places it (which junction or stretch, within the allowed band)."""

    type: str
    params: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0

    def to_json(self) -> dict:
        return {"type": self.type, "params": dict(self.params), "seed": self.seed}


def scenario_type(name: str) -> ScenarioType:
    try:
        return SCENARIO_TYPES[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario type {name!r}; the types are: {', '.join(SCENARIO_TYPES)}") from None


def make_spec(name: str, params: Mapping[str, float] | None = None, seed: int = 0) -> ScenarioSpec:
    """A checked spec: parameters not given are drawn from their range with `seed`."""
    kind = scenario_type(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(kind.params))
    if unknown:
        raise ScenarioError(
            f"scenario {name}: unknown parameter(s) {', '.join(unknown)}; its parameters are: "
            + ", ".join(f"{p} [{r.low}, {r.high}] {r.unit}" for p, r in kind.params.items())
        )
    rng = np.random.default_rng(seed)
    full = {}
    for key, rule in kind.params.items():  # drawn in a fixed order: the same seed, the same values
        drawn = float(rng.uniform(rule.low, rule.high))
        full[key] = rule.check(name, key, params[key]) if key in params else drawn
    if "side" in full:
        full["side"] = 1.0 if full["side"] >= 0 else -1.0
    return ScenarioSpec(name, full, int(seed))


def spec_from_json(data: Mapping, where: str) -> ScenarioSpec:
    """A spec from a route suite's entry; `where` (file and route) is named in every error."""
    if not isinstance(data, Mapping) or "type" not in data:
        raise ScenarioError(f"{where}: a scenario is an object with a 'type' (one of: {', '.join(SCENARIO_TYPES)})")
    try:
        return make_spec(str(data["type"]), data.get("params"), int(data.get("seed", 0)))
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
