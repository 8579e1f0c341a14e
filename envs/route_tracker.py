"""Where the ego is along its planned route: progress, lateral offset, heading error, command."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.geometry import wrap_angle
from envs.types import Route, RouteCommand


@dataclass(frozen=True)
class RouteProgress:
    index: int  # route point the ego is at
    lateral: float  # signed metres from the centreline, positive to the route's left
    heading_error: float  # ego yaw minus route yaw, wrapped to [-pi, pi]
    completion: float  # fraction of the route length passed, in [0, 1]
    command: RouteCommand


class RouteTracker:
    """Follows the ego along the route, never jumping more than `window_m` ahead at once.

    The window keeps the match on the right part of routes that pass the same place twice.
    """

    def __init__(self, route: Route, window_m: float = 20.0, command_lookahead_m: float = 10.0):
        self.route = route
        self._window_m = window_m
        self._commands = _announced_commands(route, command_lookahead_m)
        self._index = 0

    def state_dict(self) -> dict:
        return {"index": self._index}

    def load_state_dict(self, state: dict) -> None:
        self._index = int(state["index"])

    def update(self, x: float, y: float, yaw: float) -> RouteProgress:
        route = self.route
        s0 = route.s[self._index]
        end = int(np.searchsorted(route.s, s0 + self._window_m, side="right"))
        start = max(0, self._index - 2)
        candidates = route.xy[start:end]
        d2 = np.sum((candidates - (x, y)) ** 2, axis=1)
        self._index = start + int(np.argmin(d2))
        return self._progress(x, y, yaw)

    def _progress(self, x: float, y: float, yaw: float) -> RouteProgress:
        route, i = self.route, self._index
        ryaw = float(route.yaw[i])
        dx, dy = x - route.xy[i, 0], y - route.xy[i, 1]
        lateral = -math.sin(ryaw) * dx + math.cos(ryaw) * dy
        along = math.cos(ryaw) * dx + math.sin(ryaw) * dy
        s = min(route.length, max(0.0, route.s[i] + along))
        return RouteProgress(
            index=i,
            lateral=lateral,
            heading_error=wrap_angle(yaw - ryaw),
            completion=s / route.length if route.length > 0 else 1.0,
            command=self.command_at(i),
        )

    def command_at(self, index: int) -> RouteCommand:
        """The command to follow now: a turn or lane change is announced `lookahead` before it."""
        return RouteCommand(int(self._commands[index]))


def _announced_commands(route: Route, lookahead_m: float) -> np.ndarray:
    """Per route point, the first non-follow command within `lookahead_m` ahead, else its own."""
    commands = route.commands.astype(np.int64)
    announced = commands.copy()
    next_event = -1  # index of the nearest non-follow point at or after i
    for i in range(len(commands) - 1, -1, -1):
        if commands[i] != RouteCommand.LANE_FOLLOW:
            next_event = i
        if next_event >= 0 and route.s[next_event] - route.s[i] <= lookahead_m:
            announced[i] = commands[next_event]
    return announced
