import math

import numpy as np
import pytest

from envs.geometry import wrap_angle
from envs.route_tracker import RouteTracker
from envs.types import Route, RouteCommand


def straight_route(length=100, turn_at=None):
    xy = np.stack([np.arange(length + 1.0), np.zeros(length + 1)], axis=1)
    commands = np.full(length + 1, int(RouteCommand.LANE_FOLLOW))
    if turn_at is not None:
        commands[turn_at : turn_at + 5] = int(RouteCommand.LEFT)
    return Route(xy=xy, yaw=np.zeros(length + 1), commands=commands)


def test_progress_lateral_and_heading():
    tracker = RouteTracker(straight_route())
    p = tracker.update(10.2, 1.5, 0.1)
    assert p.index == 10
    assert p.lateral == pytest.approx(1.5)  # left of the route is positive
    assert p.heading_error == pytest.approx(0.1)
    assert p.completion == pytest.approx(0.102)


def test_window_stops_jumps_ahead():
    tracker = RouteTracker(straight_route(), window_m=20)
    assert tracker.update(60.0, 0.0, 0.0).index <= 20


def test_turn_is_announced_ten_metres_before():
    tracker = RouteTracker(straight_route(turn_at=50), command_lookahead_m=10)
    assert tracker.update(30.0, 0, 0).command == RouteCommand.LANE_FOLLOW
    tracker.update(38.0, 0, 0)
    assert tracker.update(41.0, 0, 0).command == RouteCommand.LEFT


def test_wrap_angle():
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
