"""Backend-neutral driving data: what a simulator backend reports each step.

Frame convention (all backends convert into it): right-handed world frame, x east, y north,
metres; yaw in radians counter-clockwise from +x. Boxes are centred on the object's centre.
The CARLA backend converts from CARLA's left-handed frame (y -> -y, yaw -> -yaw).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class SimulatorError(RuntimeError):
    """The simulator failed but can go on (SUMO crashed, a CARLA ego spawn point was taken); the
    message carries the town, seed and step. `reset()` starts afresh. A lost CARLA server is not
    one of these (envs.carla.world.CarlaServerLost: its process must be replaced)."""


class RouteCommand(enum.IntEnum):
    """The six route commands, numbered like CARLA's RoadOption."""

    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANE_FOLLOW = 4
    CHANGE_LANE_LEFT = 5
    CHANGE_LANE_RIGHT = 6

    @property
    def phrase(self) -> str:
        return _COMMAND_PHRASES[self]


_COMMAND_PHRASES = {
    RouteCommand.LEFT: "turn left at the intersection",
    RouteCommand.RIGHT: "turn right at the intersection",
    RouteCommand.STRAIGHT: "go straight at the intersection",
    RouteCommand.LANE_FOLLOW: "follow the current lane",
    RouteCommand.CHANGE_LANE_LEFT: "change to the left lane",
    RouteCommand.CHANGE_LANE_RIGHT: "change to the right lane",
}


class LightState(enum.IntEnum):
    """Traffic-light state as the state vector encodes it."""

    NONE = 0
    RED = 1
    YELLOW = 2
    GREEN = 3


# Columns of a boxes array: one row per object.
BOX_X, BOX_Y, BOX_YAW, BOX_LENGTH, BOX_WIDTH = range(5)


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float64)


@dataclass(frozen=True)
class Control:
    """The control that was applied: throttle, steer in [-1, 1] (positive right), brake."""

    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0

    @staticmethod
    def from_action(action: np.ndarray) -> "Control":
        acc, steer = float(action[0]), float(action[1])
        return Control(throttle=max(acc, 0.0), steer=steer, brake=max(-acc, 0.0))


@dataclass(frozen=True)
class EgoState:
    x: float
    y: float
    yaw: float
    speed: float  # m/s along the heading (never negative: no reverse gear)
    v_lateral: float  # m/s, ego frame, positive to the left
    accel: float  # m/s^2 along the heading
    length: float
    width: float
    control: Control = Control()
    gear: int = 0

    @property
    def box(self) -> np.ndarray:
        return np.array([self.x, self.y, self.yaw, self.length, self.width])


@dataclass(frozen=True)
class NextLight:
    """The traffic light that governs the ego's lane ahead."""

    state: LightState
    distance: float  # metres from the ego's front to the stop line
    phase_remaining: float  # fraction of the current phase still to run, in [0, 1]


@dataclass(frozen=True)
class StopLines:
    """Traffic-light stop lines as segments [N, 4] (x0, y0, x1, y1) with a LightState each."""

    segments: np.ndarray
    states: np.ndarray  # int, LightState per segment

    @staticmethod
    def empty() -> "StopLines":
        return StopLines(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Route:
    """A planned route as a dense polyline (about 1 m spacing) with a command per point."""

    xy: np.ndarray  # [N, 2]
    yaw: np.ndarray  # [N]
    commands: np.ndarray  # [N] int, RouteCommand values
    s: np.ndarray = field(init=False)  # [N] cumulative arc length

    def __post_init__(self):
        seg = np.linalg.norm(np.diff(self.xy, axis=0), axis=1)
        object.__setattr__(self, "s", np.concatenate([[0.0], np.cumsum(seg)]))

    @property
    def length(self) -> float:
        return float(self.s[-1])


@dataclass(frozen=True)
class RouteSpec:
    """Start pose and goal in CARLA coordinates (x, y metres, yaw degrees), as suites store them, and
    the scenario played on the route (envs/scenarios/library.py ScenarioSpec), if any."""

    start: tuple[float, float, float]
    goal: tuple[float, float]
    scenario: object | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything privileged about one simulation step, shared by BEV, reward, criteria, expert."""

    time: float  # simulated seconds since reset
    ego: EgoState
    vehicles: np.ndarray  # boxes [N, 5] of the other vehicles
    vehicle_speeds: np.ndarray  # [N] m/s
    walkers: np.ndarray  # boxes [M, 5]
    walker_speeds: np.ndarray  # [M] m/s
    walkers_on_road: np.ndarray  # [M] bool: on a road or crossing, not on a sidewalk
    stop_lines: StopLines  # all traffic-light stop lines near the ego with their states
    next_light: NextLight | None
    stop_zones: np.ndarray  # boxes [K, 5] of active stop-sign zones
    at_stop_sign: bool
    on_drivable: bool  # the ego's centre is on a drivable surface
    collisions: tuple = ()  # CollisionEvent objects that began this step
    ran_red_light: bool = False  # the ego crossed a stop line on red this step
    ran_stop_sign: bool = False  # the ego left a stop-sign zone without having stopped in it
    travelled: float = 0.0  # metres the ego moved this step
    stop_sign_pending: bool = False  # inside a stop-sign zone and not yet stopped there
    lane_invasions: tuple[str, ...] = ()  # lane markings the ego crossed this step (CARLA's sensor)
    # walkers that exist but that no line of sight from the ego reaches (behind a scenario's parked
    # vehicle: envs/occlusion.py): in the ground truth, not in the observation
    hidden_walkers: np.ndarray = field(default_factory=empty_boxes)
