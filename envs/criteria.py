"""Terminal criteria and infractions (Roach / Found-RL), a stateful check over one episode."""

from __future__ import annotations

from dataclasses import dataclass, field

from envs.metrics import Infraction
from envs.route_tracker import RouteProgress
from envs.types import Snapshot

_COLLISION_INFRACTIONS = {
    "vehicle": Infraction.COLLISION_VEHICLE,
    "pedestrian": Infraction.COLLISION_PEDESTRIAN,
    "static": Infraction.COLLISION_STATIC,
}
_FAILURES = frozenset(
    {
        Infraction.COLLISION_VEHICLE,
        Infraction.COLLISION_PEDESTRIAN,
        Infraction.COLLISION_STATIC,
        Infraction.RED_LIGHT,
        Infraction.STOP_SIGN,
        Infraction.ROUTE_DEVIATION,
        Infraction.BLOCKED,
        Infraction.OFF_ROAD,
    }
)


@dataclass(frozen=True)
class CriteriaConfig:
    blocked_speed: float = 0.1  # m/s
    blocked_seconds: float = 90.0  # Roach's Blocked criterion
    min_lateral_threshold: float = 3.5  # m, Roach's adaptive route-deviation threshold floor
    off_lane_lateral: float = 2.5  # m from the route centreline counts as outside the route's lane
    timeout_base_s: float = 60.0  # time budget = base + route length / min average speed
    timeout_min_speed: float = 2.0  # m/s
    completion_threshold: float = 0.99  # route fraction that counts as arrived (route ends ~1 m short)
    terminate_on: frozenset = field(default_factory=lambda: _FAILURES)


@dataclass(frozen=True)
class StepVerdict:
    infractions: tuple[Infraction, ...]
    terminated: bool  # a failure ended the episode
    truncated: bool  # timeout or route completed: the world goes on, bootstrap from here
    route_completed: bool
    off_lane: bool


class Criteria:
    def __init__(self, route_length: float, config: CriteriaConfig = CriteriaConfig()):
        self.config = config
        self.time_limit = config.timeout_base_s + route_length / config.timeout_min_speed
        self._slow_since: float | None = None
        self._last_lateral = 0.0

    def state_dict(self) -> dict:
        return {"slow_since": self._slow_since, "last_lateral": self._last_lateral}

    def load_state_dict(self, state: dict) -> None:
        self._slow_since, self._last_lateral = state["slow_since"], state["last_lateral"]

    def check(self, snap: Snapshot, progress: RouteProgress) -> StepVerdict:
        found = [_COLLISION_INFRACTIONS[c.kind] for c in snap.collisions]
        if snap.ran_red_light:
            found.append(Infraction.RED_LIGHT)
        if snap.ran_stop_sign:
            found.append(Infraction.STOP_SIGN)
        if self._deviated(abs(progress.lateral)):
            found.append(Infraction.ROUTE_DEVIATION)
        if self._blocked(snap.time, snap.ego.speed):
            found.append(Infraction.BLOCKED)
        if not snap.on_drivable:
            found.append(Infraction.OFF_ROAD)
        completed = progress.completion >= self.config.completion_threshold
        timed_out = snap.time >= self.time_limit and not completed
        if timed_out:
            found.append(Infraction.TIMEOUT)
        terminated = any(i in self.config.terminate_on for i in found)
        return StepVerdict(
            infractions=tuple(found),
            terminated=terminated,
            truncated=not terminated and (timed_out or completed),
            route_completed=completed,
            off_lane=(not snap.on_drivable) or abs(progress.lateral) > self.config.off_lane_lateral,
        )

    def _deviated(self, lateral: float) -> bool:
        """Roach's adaptive threshold: a sudden jump of > 0.8 m is judged against itself + 0.5 m."""
        if lateral - self._last_lateral > 0.8:
            threshold = lateral + 0.5
        else:
            threshold = max(self.config.min_lateral_threshold, self._last_lateral)
        self._last_lateral = lateral
        return lateral > threshold + 1e-2

    def _blocked(self, time: float, speed: float) -> bool:
        if speed >= self.config.blocked_speed:
            self._slow_since = None
            return False
        if self._slow_since is None:
            self._slow_since = time
        return time - self._slow_since >= self.config.blocked_seconds
