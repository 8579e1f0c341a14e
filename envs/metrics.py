"""Per-episode driving metrics in the style of the CARLA leaderboard and Found-RL.

Driving score = route completion (RC) x infraction penalty (IP), where IP multiplies one
leaderboard factor per infraction and scales by the fraction of driven distance that stayed
in lane. Energy (fuel and battery cell current) comes from `envs.energy`.

`EpisodeMetrics` is the only stateful piece: it folds each env step into an immutable
`EpisodeTotals` with the pure `accumulate_step`, and `episode_result` turns totals into the
flat dict of floats that `summarize` and `format_table` consume.

Safety metrics (VL-SAFE's, arXiv 2505.16377: cost, collision rate, time- and distance-based
collision frequency, collision speed), per episode:

- `cost` (steps): the number of env steps with at least one infraction of any kind in
  `Infraction`, TIMEOUT included. This is exactly the rule of the rollout worker's step cost
  (`1.0 if info["infractions"] else 0.0`, and the env lists a timeout in `info["infractions"]`),
  so an episode's `cost` equals the sum of the replay's cost column over its steps.
- `collisions` (events): collision_static + collision_vehicle + collision_pedestrian counts.
- `collision_rate` (0 or 1): 1.0 when the episode had at least one collision; `summarize`'s mean
  over episodes makes it the fraction of episodes with a collision.
- `collisions_per_km` (1/km; distance-based collision frequency): collisions / max(distance km,
  MIN_RATE_DISTANCE_KM), like the per-infraction per-km rates.
- `collisions_per_min` (1/min; time-based collision frequency): collisions / (duration_s / 60),
  0 for an empty episode.
- `collision_speed_kmh` (km/h): mean ego speed at the steps where a collision was reported, over
  the episode's collision events (a step reporting two collisions counts its speed twice). It is
  present only in episodes with a collision, so `summarize` averages it over those episodes only
  and `format_table` prints "-" when no episode has it.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from envs.energy import (
    DEFAULT_BATTERY,
    DEFAULT_FUEL,
    DEFAULT_VEHICLE,
    BatteryParams,
    FuelParams,
    VehicleEnergyParams,
    battery_cell_current,
    fuel_rate,
)

logger = logging.getLogger(__name__)


class Infraction(str, enum.Enum):
    """Infraction kinds; the value is the key used in counts and result dicts."""

    def __str__(self) -> str:  # like enum.StrEnum, which Python 3.10 lacks
        return self.value

    COLLISION_STATIC = "collision_static"
    COLLISION_VEHICLE = "collision_vehicle"
    COLLISION_PEDESTRIAN = "collision_pedestrian"
    RED_LIGHT = "red_light"
    STOP_SIGN = "stop_sign"
    ROUTE_DEVIATION = "route_deviation"
    BLOCKED = "blocked"
    OFF_ROAD = "off_road"
    TIMEOUT = "timeout"


# Leaderboard multiplicative penalty per occurrence; kinds not listed only end the episode
# or are reported, they do not scale the score.
PENALTY_FACTORS: Mapping[Infraction, float] = MappingProxyType(
    {
        Infraction.COLLISION_STATIC: 0.65,
        Infraction.COLLISION_VEHICLE: 0.60,
        Infraction.COLLISION_PEDESTRIAN: 0.50,
        Infraction.RED_LIGHT: 0.70,
        Infraction.STOP_SIGN: 0.80,
    }
)

_INFRACTION_INDEX: Mapping[Infraction, int] = MappingProxyType({kind: i for i, kind in enumerate(Infraction)})

COLLISION_KINDS: frozenset[Infraction] = frozenset(
    {
        Infraction.COLLISION_STATIC,
        Infraction.COLLISION_VEHICLE,
        Infraction.COLLISION_PEDESTRIAN,
    }
)

_MS_TO_KMH = 3.6

# Per-km rates divide by at least this distance, so an episode that ends a few metres after
# spawning reports a large but finite rate (count / 10 m) instead of infinity.
MIN_RATE_DISTANCE_KM = 0.01
# Route completion at or above this counts as arrived (float progress rarely hits exactly 1).
ARRIVED_THRESHOLD = 0.999

DEFAULT_TABLE_KEYS: tuple[str, ...] = (
    "return",
    "route_completion",
    "infraction_penalty",
    "driving_score",
    "arrived",
    "strict_success",
    "collision_vehicle_per_km",
    "collision_pedestrian_per_km",
    "cost",
    "collision_rate",
    "collisions_per_km",
    "collisions_per_min",
    "collision_speed_kmh",
    "red_light_per_km",
    "mean_speed",
    "fuel_rate",
    "battery_cell_current",
)


def infraction_penalty(counts: Mapping[str, int], off_lane_fraction: float) -> float:
    """Leaderboard infraction penalty: (1 - off-lane fraction) x prod(factor ** count)."""
    if math.isnan(off_lane_fraction):
        raise ValueError("off_lane_fraction is NaN")
    penalty = 1.0 - min(max(off_lane_fraction, 0.0), 1.0)
    for name, count in counts.items():
        kind = Infraction(name)  # unknown names raise ValueError: catches typos
        if count < 0:
            raise ValueError(f"negative count {count} for {kind}")
        penalty *= PENALTY_FACTORS.get(kind, 1.0) ** count
    return float(penalty)


@dataclass(frozen=True)
class EpisodeTotals:
    """Everything accumulated over an episode; counts follow `Infraction` declaration order."""

    route_length_m: float
    dt: float
    distance_m: float = 0.0
    duration_s: float = 0.0
    steps: int = 0
    fuel_kg: float = 0.0
    cell_current_sum: float = 0.0  # signed: regeneration lowers the mean
    off_lane_m: float = 0.0
    episode_return: float = 0.0
    route_completion: float = 0.0
    cost: float = 0.0  # steps with any infraction (the replay's step cost, summed)
    collision_speed_sum: float = 0.0  # m/s, ego speed summed over collision events
    counts: tuple[int, ...] = (0,) * len(Infraction)

    def count_map(self) -> dict[str, int]:
        return {kind.value: n for kind, n in zip(Infraction, self.counts)}


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")


def accumulate_step(
    totals: EpisodeTotals,
    speed: float,
    accel: float,
    distance_travelled: float,
    off_lane: bool,
    infractions: Iterable[Infraction | str],
    reward: float,
    vehicle: VehicleEnergyParams = DEFAULT_VEHICLE,
    fuel: FuelParams = DEFAULT_FUEL,
    battery: BatteryParams = DEFAULT_BATTERY,
) -> EpisodeTotals:
    """Totals after one more env step of length `totals.dt`."""
    _check_finite(speed=speed, accel=accel, distance_travelled=distance_travelled, reward=reward)
    if distance_travelled < 0.0:
        raise ValueError(f"distance_travelled must be >= 0, got {distance_travelled}")
    counts = list(totals.counts)
    kinds = [Infraction(name) for name in infractions]
    for kind in kinds:
        counts[_INFRACTION_INDEX[kind]] += 1
    step_collisions = sum(kind in COLLISION_KINDS for kind in kinds)
    return replace(
        totals,
        distance_m=totals.distance_m + distance_travelled,
        duration_s=totals.duration_s + totals.dt,
        steps=totals.steps + 1,
        fuel_kg=totals.fuel_kg + fuel_rate(speed, accel, vehicle, fuel) * totals.dt,
        cell_current_sum=totals.cell_current_sum + battery_cell_current(speed, accel, vehicle, battery),
        off_lane_m=totals.off_lane_m + (distance_travelled if off_lane else 0.0),
        episode_return=totals.episode_return + reward,
        cost=totals.cost + (1.0 if kinds else 0.0),
        collision_speed_sum=totals.collision_speed_sum + step_collisions * speed,
        counts=tuple(counts),
    )


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 for an empty episode."""
    return numerator / denominator if denominator > 0.0 else 0.0


def episode_result(totals: EpisodeTotals) -> dict[str, float]:
    """Flat metrics dict (all floats) for one episode."""
    counts = totals.count_map()
    off_lane_fraction = _ratio(totals.off_lane_m, totals.distance_m)
    penalty = infraction_penalty(counts, off_lane_fraction)
    arrived = totals.route_completion >= ARRIVED_THRESHOLD
    rate_km = max(totals.distance_m / 1000.0, MIN_RATE_DISTANCE_KM)
    result = {
        "return": float(totals.episode_return),
        "route_completion": float(totals.route_completion),
        "infraction_penalty": penalty,
        "driving_score": float(totals.route_completion * penalty),
        "arrived": float(arrived),
        "strict_success": float(arrived and sum(totals.counts) == 0),
        "route_length_m": float(totals.route_length_m),
        "distance_m": float(totals.distance_m),
        "duration_s": float(totals.duration_s),
        "mean_speed": _ratio(totals.distance_m, totals.duration_s),
        "off_lane_fraction": off_lane_fraction,
        "fuel_rate": _ratio(totals.fuel_kg, totals.duration_s),
        "fuel_per_100km": float(totals.fuel_kg / rate_km * 100.0),  # kg per 100 km
        "battery_cell_current": _ratio(totals.cell_current_sum, float(totals.steps)),
    }
    for name, count in counts.items():
        result[f"{name}_per_km"] = count / rate_km
    for name, count in counts.items():
        result[name] = float(count)
    collisions = sum(counts[kind.value] for kind in COLLISION_KINDS)
    result["cost"] = float(totals.cost)
    result["collisions"] = float(collisions)
    result["collision_rate"] = float(collisions > 0)
    result["collisions_per_km"] = collisions / rate_km
    result["collisions_per_min"] = _ratio(collisions * 60.0, totals.duration_s)
    if collisions > 0:
        result["collision_speed_kmh"] = totals.collision_speed_sum / collisions * _MS_TO_KMH
    return result


class EpisodeMetrics:
    """Accumulates one episode's metrics step by step; checkpointable via state_dict()."""

    def __init__(
        self,
        route_length_m: float,
        dt: float,
        vehicle: VehicleEnergyParams = DEFAULT_VEHICLE,
        fuel: FuelParams = DEFAULT_FUEL,
        battery: BatteryParams = DEFAULT_BATTERY,
    ) -> None:
        _check_finite(route_length_m=route_length_m, dt=dt)
        if route_length_m < 0.0:
            raise ValueError(f"route_length_m must be >= 0, got {route_length_m}")
        if dt <= 0.0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self._vehicle, self._fuel, self._battery = vehicle, fuel, battery
        self._totals = EpisodeTotals(route_length_m=float(route_length_m), dt=float(dt))

    @property
    def totals(self) -> EpisodeTotals:
        return self._totals

    @property
    def counts(self) -> dict[str, int]:
        return self._totals.count_map()

    def step(
        self,
        speed: float,
        accel: float,
        distance_travelled: float,
        off_lane: bool,
        infractions: Iterable[Infraction | str],
        reward: float,
    ) -> None:
        """Fold one env step (speed m/s, accel m/s^2, distance m) into the totals."""
        self._totals = accumulate_step(
            self._totals,
            speed,
            accel,
            distance_travelled,
            off_lane,
            infractions,
            reward,
            self._vehicle,
            self._fuel,
            self._battery,
        )

    def set_route_completion(self, fraction: float) -> None:
        """Set the completed fraction of the route; clamped to [0, 1], non-finite raises.

        It overwrites the previous value: the route tracker owns monotonicity.
        """
        if not math.isfinite(fraction):
            raise ValueError(f"route completion must be finite, got {fraction}")
        clamped = min(max(float(fraction), 0.0), 1.0)
        if clamped != fraction:
            logger.debug("route completion %.6f clamped to %.6f", fraction, clamped)
        self._totals = replace(self._totals, route_completion=clamped)

    def set_route_progress_m(self, progress_m: float) -> None:
        """Set route completion from metres along the route (progress / route length)."""
        if self._totals.route_length_m <= 0.0:
            raise ValueError("route length is 0: cannot convert progress to a fraction")
        self.set_route_completion(progress_m / self._totals.route_length_m)

    def result(self) -> dict[str, float]:
        return episode_result(self._totals)

    def state_dict(self) -> dict[str, Any]:
        """Plain (JSON-serialisable) copy of the totals; counts keyed by infraction name."""
        state = asdict(self._totals)
        state["counts"] = self._totals.count_map()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore totals from `state_dict()` output (dt and route length included).

        `cost` and `collision_speed_sum` default to 0 so states saved before they existed load.
        """
        counts = dict(state["counts"])
        unknown = set(counts) - {kind.value for kind in Infraction}
        if unknown:
            raise ValueError(f"unknown infraction kinds in state: {sorted(unknown)}")
        self._totals = EpisodeTotals(
            route_length_m=float(state["route_length_m"]),
            dt=float(state["dt"]),
            distance_m=float(state["distance_m"]),
            duration_s=float(state["duration_s"]),
            steps=int(state["steps"]),
            fuel_kg=float(state["fuel_kg"]),
            cell_current_sum=float(state["cell_current_sum"]),
            off_lane_m=float(state["off_lane_m"]),
            episode_return=float(state["episode_return"]),
            route_completion=float(state["route_completion"]),
            cost=float(state.get("cost", 0.0)),
            collision_speed_sum=float(state.get("collision_speed_sum", 0.0)),
            counts=tuple(int(counts.get(kind.value, 0)) for kind in Infraction),
        )


def summarize(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of every key over episodes, plus `episodes`; a key missing from some episodes is
    averaged over the episodes that have it."""
    keys: dict[str, None] = {}
    for result in results:
        keys.update(dict.fromkeys(result))
    summary = {key: float(np.mean([r[key] for r in results if key in r])) for key in keys}
    summary["episodes"] = float(len(results))
    return summary


def _format_cell(value: Any) -> str:
    """3 decimals, 4 below 0.1 (cell currents are a few mA); tiny non-zero values (e.g. fuel in kg/s)
    in 3-decimal scientific so they do not read as 0."""
    if value is None:
        return "-"
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if number != 0.0 and abs(number) < 5e-4:
            return f"{number:.3e}"
        return f"{number:.4f}" if abs(number) < 0.1 else f"{number:.3f}"
    return str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None) -> str:
    """Plain-text table: one row per name, one right-aligned 3-decimal column per key.

    Missing values print as "-". Headers are the full key names so columns are unambiguous.
    """
    columns = list(DEFAULT_TABLE_KEYS if keys is None else keys)
    header = ["name", *columns]
    body = [[str(name), *(_format_cell(row.get(key)) for key in columns)] for name, row in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in body)])
