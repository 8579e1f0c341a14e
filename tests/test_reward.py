import math

import pytest

from envs.reward import desired_speed, roach_reward
from envs.route_tracker import RouteProgress
from envs.types import LightState, RouteCommand
from tests.snapshots import light, snapshot


def progress(lateral=0.0, heading=0.0):
    return RouteProgress(
        index=0, lateral=lateral, heading_error=heading, completion=0.0, command=RouteCommand.LANE_FOLLOW
    )


def test_free_road_at_target_speed_earns_one():
    terms = roach_reward(snapshot(speed=6.0), progress(), last_steer=0.0, terminated=False, severe_failure=False)
    assert terms.total == pytest.approx(1.0)


def test_each_term_by_hand():
    # speed 3 vs desired 6: 1 - 3/6 = 0.5; lateral 1 m: -0.5; heading 0.2 rad: -0.2; steer jump: -0.1
    terms = roach_reward(
        snapshot(speed=3.0, steer=0.3),
        progress(lateral=-1.0, heading=0.2),
        last_steer=0.0,
        terminated=False,
        severe_failure=False,
    )
    assert (terms.speed, terms.position, terms.rotation, terms.action) == pytest.approx((0.5, -0.5, -0.2, -0.1))
    assert terms.total == pytest.approx(-0.3)


def test_vehicle_ahead_lowers_desired_speed_linearly():
    # vehicle 10.5 m... beyond 9.5 m: ignored; at 9.0 m: 6 * clip(9 - 8, 0, 5) / 5 = 1.2
    assert desired_speed(snapshot(vehicles=[(10.5, 0, 0, 4.6, 1.9)]), False) == pytest.approx(6.0)
    assert desired_speed(snapshot(vehicles=[(9.0, 0, 0, 4.6, 1.9)]), False) == pytest.approx(1.2)
    # an oncoming vehicle (heading differs by 180 degrees) is not a hazard
    assert desired_speed(snapshot(vehicles=[(9.0, 0, math.pi, 4.6, 1.9)]), False) == pytest.approx(6.0)


def test_walker_on_road_vs_sidewalk():
    walker = [(8.0, 0.0, 0.0, 0.3, 0.5)]
    # 6 * clip(8 - 6, 0, 5) / 5 = 2.4
    assert desired_speed(snapshot(walkers=walker), False) == pytest.approx(2.4)
    assert desired_speed(snapshot(walkers=walker, walkers_on_road=[False]), False) == pytest.approx(6.0)


def test_red_light_distance_measured_from_behind_the_centre():
    # front-to-line 4 m + 0.5 * 4.9 + 0.4 * 4.9 = 8.41 m -> 6 * (8.41 - 5) / 5 = 4.092
    snap = snapshot(light=light(LightState.RED, 4.0))
    assert desired_speed(snap, False) == pytest.approx(4.092)
    assert desired_speed(snapshot(light=light(LightState.GREEN, 4.0)), False) == pytest.approx(6.0)
    assert desired_speed(snapshot(), stop_sign_pending=True) == 0.0


def test_terminal_penalty_includes_speed_for_severe_failures():
    terms = roach_reward(snapshot(speed=4.0), progress(), 0.0, terminated=True, severe_failure=True)
    assert terms.terminal == pytest.approx(-5.0)
    terms = roach_reward(snapshot(speed=4.0), progress(), 0.0, terminated=True, severe_failure=False)
    assert terms.terminal == pytest.approx(-1.0)
