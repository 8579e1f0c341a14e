"""Red-light and stop-sign rules (envs/traffic_rules.py) against hand-worked positions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.traffic_rules import RedLightWatch, StopSignWatch, distance_ahead, ego_front, inside_boxes
from envs.types import EgoState


@dataclass
class Line:
    centre: np.ndarray
    direction: np.ndarray
    half_width: float = 1.75


EAST_LINE = Line(np.array([10.0, 0.0]), np.array([1.0, 0.0]))  # traffic crosses it heading east


def test_distance_ahead_and_across():
    assert distance_ahead(np.array([4.0, 1.0]), EAST_LINE) == (6.0, 1.0)
    assert distance_ahead(np.array([12.0, -2.0]), EAST_LINE) == (-2.0, 2.0)


def test_ego_front_is_half_a_length_ahead():
    ego = EgoState(x=1.0, y=2.0, yaw=math.pi / 2, speed=0, v_lateral=0, accel=0, length=4.0, width=2.0)
    np.testing.assert_allclose(ego_front(ego), [1.0, 4.0], atol=1e-12)


def test_crossing_is_reported_once_then_forgotten():
    watch = RedLightWatch()
    watch.watch(EAST_LINE)
    assert watch.crossed(np.array([9.5, 0.0])) is None  # still 0.5 m before it
    assert watch.crossed(np.array([10.3, 0.5])) is EAST_LINE
    assert watch.line is None and watch.crossed(np.array([11.0, 0.0])) is None


def test_passing_beside_the_line_is_not_a_crossing():
    watch = RedLightWatch()
    watch.watch(EAST_LINE)
    watch.crossed(np.array([9.0, 3.0]))
    # 3 m to the side: beyond half the lane (1.75) plus the 1 m slack.
    assert watch.crossed(np.array([10.5, 3.0])) is None


def test_a_line_passed_at_the_side_is_forgotten_ten_metres_later():
    watch = RedLightWatch()
    watch.watch(EAST_LINE)
    assert watch.crossed(np.array([5.0, 5.0])) is None
    assert watch.crossed(np.array([15.0, 5.0])) is None and watch.line is EAST_LINE  # beside it, 5 m past
    assert watch.crossed(np.array([20.5, 5.0])) is None and watch.line is None  # 10.5 m past: forgotten


def test_watching_starts_with_the_line_ahead():
    # Backends start watching a line their route says is ahead; a front already past it on the
    # first look has therefore crossed it.
    watch = RedLightWatch()
    watch.watch(EAST_LINE)
    assert watch.crossed(np.array([10.5, 0.0])) is EAST_LINE


def test_inside_boxes():
    zone = np.array([[0.0, 0.0, math.pi / 2, 4.0, 2.0]])  # 4 m along y, 2 m along x
    assert inside_boxes(0.9, 1.9, zone)
    assert not inside_boxes(1.1, 0.0, zone)
    assert not inside_boxes(0.0, 0.0, np.zeros((0, 5)))


def test_stop_sign_run_unless_stopped_inside():
    zone = np.array([[0.0, 0.0, 0.0, 4.0, 3.0]])
    watch = StopSignWatch()
    assert watch.update(-5.0, 0.0, 5.0, zone) == (False, False, False)
    assert watch.update(-1.0, 0.0, 5.0, zone) == (True, False, True)
    assert watch.update(3.0, 0.0, 5.0, zone) == (False, True, False)  # left without stopping

    watch = StopSignWatch()
    watch.update(-1.0, 0.0, 2.0, zone)
    assert watch.update(0.0, 0.0, 0.05, zone) == (True, False, False)  # stopped: no longer pending
    assert watch.update(3.0, 0.0, 3.0, zone) == (False, False, False)
