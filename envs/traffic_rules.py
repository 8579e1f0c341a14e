"""Red-light and stop-sign rules judged on Mentor's own geometry, shared by both backends.

A backend says which stop line the ego is approaching and what its light shows; these classes
decide when the ego's front crossed that line (a red-light run) and whether it stopped inside a
stop-sign zone before leaving it. Frames as in envs.types.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from envs.types import EgoState

WATCH_LIGHT_M = 30.0  # start watching a stop line for red-light runs this far ahead
_FORGET_BEHIND_M = 10.0  # stop watching a line the ego is this far past without crossing it
_LATERAL_SLACK_M = 1.0  # a front this far beside the line's end still crosses it
STOPPED_SPEED = 0.1  # m/s: slower than this counts as having stopped at a stop sign


class LineGeometry(Protocol):
    """A stop line: where it is, which way traffic crosses it, and half its width."""

    @property
    def centre(self) -> np.ndarray: ...

    direction: np.ndarray
    half_width: float


def ego_front(ego: EgoState) -> np.ndarray:
    half = 0.5 * ego.length
    return np.array([ego.x + half * math.cos(ego.yaw), ego.y + half * math.sin(ego.yaw)])


def distance_ahead(front: np.ndarray, line: LineGeometry) -> tuple[float, float]:
    """(distance from the ego's front to the line along its direction, lateral offset from its centre)."""
    ahead = float((line.centre - front) @ line.direction)
    across = abs(float((front - line.centre) @ np.array([-line.direction[1], line.direction[0]])))
    return ahead, across


class RedLightWatch:
    """Follows one stop line at a time and reports the step the ego's front crosses it."""

    def __init__(self):
        self.line: LineGeometry | None = None
        self._was_ahead = False

    def watch(self, line: LineGeometry) -> None:
        """Start watching `line` (the backend calls this when the ego comes within WATCH_LIGHT_M)."""
        if line is not self.line:
            self.line, self._was_ahead = line, True

    def crossed(self, front: np.ndarray) -> LineGeometry | None:
        """The watched line if the front crossed it since the last call (then it is forgotten)."""
        line = self.line
        if line is None:
            return None
        ahead, across = distance_ahead(front, line)
        crossed = self._was_ahead and ahead <= 0.0 and across <= line.half_width + _LATERAL_SLACK_M
        self._was_ahead = ahead > 0.0
        if crossed or ahead < -_FORGET_BEHIND_M:
            self.line = None
        return line if crossed else None


def inside_boxes(x: float, y: float, boxes: np.ndarray) -> bool:
    """Whether the point lies in any of the oriented boxes [K, 5]."""
    if len(boxes) == 0:
        return False
    dx, dy = x - boxes[:, 0], y - boxes[:, 1]
    c, s = np.cos(boxes[:, 2]), np.sin(boxes[:, 2])
    along, across = c * dx + s * dy, -s * dx + c * dy
    return bool(np.any((np.abs(along) <= boxes[:, 3] / 2) & (np.abs(across) <= boxes[:, 4] / 2)))


class StopSignWatch:
    """Whether the ego stopped inside a stop-sign zone before it left the zone."""

    def __init__(self):
        self._inside = False
        self._stopped = False

    def update(self, x: float, y: float, speed: float, zones: np.ndarray) -> tuple[bool, bool, bool]:
        """(inside a zone now, left one this step without having stopped, inside and not yet stopped)."""
        inside = inside_boxes(x, y, zones)
        ran = self._inside and not inside and not self._stopped
        if inside and not self._inside:
            self._stopped = False
        self._stopped = self._stopped or (inside and speed < STOPPED_SPEED)
        self._inside = inside
        return inside, ran, inside and not self._stopped
